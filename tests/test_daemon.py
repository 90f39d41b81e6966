"""The daemon as a user runs it: a real process, signals, systemd notifications, /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, require_program, wait_for

GOOD_CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {state}
checks:
  - name: host
    type: system
    interval: 1s
"""


@dataclass
class Running:
    """A monitord process started by a test, with its notify socket and address."""

    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    notify: socket.socket
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, accept: str | None = None) -> tuple[int, str, str]:
        request = urllib.request.Request(self.url(path))
        if accept:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read().decode()
                return response.status, response.headers["Content-Type"], body
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def post(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url(path), method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def notifications(self, until: str, timeout: float = 10.0) -> list[str]:
        """Datagrams received until one contains ``until``."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got.append(self.notify.recv(4096).decode().strip())
            except TimeoutError:
                break
            if until in got[-1]:
                return got
        pytest.fail(
            f"no {until!r} notification within {timeout}s; got {got}; log:\n" + self.log.read_text()
        )

    def metric(self, name: str, **labels: str) -> float | None:
        """The first sample of ``name`` whose labels include ``labels``; None if none."""
        _, _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return None


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[object]:
    """Factory: start monitord with a config text; every process is stopped afterwards."""
    started: list[Running] = []

    def start(config_text: str = GOOD_CONFIG, extra_env: dict[str, str] | None = None) -> Running:
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(config_text.format(port=port, state=tmp_path / "state"))
        notify_path = tmp_path / f"notify-{len(started)}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update({"NOTIFY_SOCKET": str(notify_path), **(extra_env or {})})
        log = tmp_path / f"monitord-{len(started)}.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "run", "-c", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        running = Running(proc, port, config, notify, log)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(timeout=10)
        running.notify.close()


def test_it_starts_serves_metrics_and_stops_on_sigterm_with_exit_0(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Running = start_daemon()
    first = daemon.notifications(until="READY=1")
    assert any(msg.startswith("READY=1") for msg in first)
    assert daemon.get("/-/healthy")[0] == 200
    assert daemon.get("/-/ready") == (200, "text/plain; charset=utf-8", "monitord is Ready.\n")
    wait_for(lambda: daemon.metric("node_load1") is not None)
    assert daemon.metric("monitord_check_up") == 1.0
    assert daemon.metric("monitord_config_last_reload_successful") == 1.0

    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert daemon.notifications(until="STOPPING=1")[-1] == "STOPPING=1"


def test_sighup_with_a_broken_config_keeps_the_old_one_running(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Running = start_daemon()
    daemon.notifications(until="READY=1")
    wait_for(lambda: daemon.metric("node_load1") is not None)

    daemon.config.write_text(daemon.config.read_text() + "  - name: x\n    type: sytem\n")
    daemon.proc.send_signal(signal.SIGHUP)
    reload_msgs = daemon.notifications(until="READY=1")
    reloading = [m for m in reload_msgs if "RELOADING=1" in m]
    assert reloading and "MONOTONIC_USEC=" in reloading[0]
    wait_for(lambda: daemon.metric("monitord_config_last_reload_successful") == 0.0)
    assert daemon.proc.poll() is None
    assert daemon.metric("node_load1") is not None
    assert daemon.get("/-/ready")[0] == 200
    log = daemon.log.read_text()
    assert "reload failed, keeping the running config" in log
    assert "checks[1].type: unknown check type 'sytem'; did you mean 'system'?" in log

    status, body = daemon.post("/-/reload")
    assert status == 500 and "unknown check type 'sytem'" in body

    daemon.config.write_text(
        GOOD_CONFIG.format(port=daemon.port, state="state").replace("name: host", "name: host2")
    )
    status, body = daemon.post("/-/reload")
    assert (status, body) == (200, "config reloaded\n")
    assert daemon.metric("monitord_config_last_reload_successful") == 1.0
    wait_for(lambda: 'check="host2"' in daemon.get("/metrics")[2])


def test_reload_requires_the_token_when_one_is_set(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "token").write_text("s3cret\n")
    with_token = GOOD_CONFIG.replace("state_dir:", "  auth_token_file: token\nstate_dir:")
    daemon: Running = start_daemon(with_token)
    daemon.notifications(until="READY=1")
    assert daemon.post("/-/reload")[0] == 401
    assert daemon.post("/-/reload", {"Authorization": "Bearer wrong"})[0] == 401
    assert daemon.post("/-/reload", {"Authorization": "Bearer s3cret"})[0] == 200


def test_a_bad_config_at_start_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("store:\n  max_series: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert (
        f"{config}:2: store.max_series: Input should be greater than or equal to 1" in proc.stderr
    )


def test_the_watchdog_is_fed_at_half_its_period(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Running = start_daemon(extra_env={"WATCHDOG_USEC": "400000"})
    daemon.notifications(until="READY=1")
    pings = daemon.notifications(until="WATCHDOG=1", timeout=2)
    assert pings[-1] == "WATCHDOG=1"


def test_openmetrics_is_served_when_asked_for(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Running = start_daemon()
    daemon.notifications(until="READY=1")
    wait_for(lambda: daemon.metric("node_load1") is not None)
    status, content_type, body = daemon.get(
        "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "# TYPE node_cpu_seconds counter" in body
    _, plain_type, plain = daemon.get("/metrics")
    assert plain_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE node_cpu_seconds_total counter" in plain


def test_metrics_pass_promtool_check_metrics(start_daemon) -> None:  # type: ignore[no-untyped-def]
    promtool = require_program("promtool", "prometheus")
    daemon: Running = start_daemon()
    daemon.notifications(until="READY=1")
    wait_for(lambda: daemon.metric("node_load1") is not None)
    _, _, body = daemon.get("/metrics")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    findings = (checked.stdout + checked.stderr).strip().splitlines()
    assert checked.returncode in (0, 3), findings  # 1 would be a parse error
    # node_exporter's own MemTotal-style names draw this one lint; nothing else may.
    unexpected = [f for f in findings if "metric names should be written in 'snake_case'" not in f]
    assert unexpected == []
    assert all(f.startswith("node_memory_") for f in findings), findings


def test_external_labels_are_not_added_to_metrics(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Running = start_daemon("global:\n  external_labels: {{dc: east}}\n" + GOOD_CONFIG)
    daemon.notifications(until="READY=1")
    wait_for(lambda: daemon.metric("node_load1") is not None)
    assert 'dc="east"' not in daemon.get("/metrics")[2]
