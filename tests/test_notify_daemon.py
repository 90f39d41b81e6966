"""Notifications end to end through the daemon: a TCP check's target goes down, a rule fires,
a local webhook receives Alertmanager's payload; then the faults the outbox must survive."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.alertmanager_server import alertmanager_process
from tests.support import free_port, wait_for
from tests.test_daemon import Running, start_daemon

__all__ = ["start_daemon"]  # the fixture, used by name

CONFIG = """
server:
  listen: 127.0.0.1:{{port}}
state_dir: {{state}}
global:
  evaluation_interval: 15s
checks:
  - name: target
    type: tcp
    address: 127.0.0.1:{target}
    interval: 1s
    timeout: 900ms
rule_files: [rules.yml]
alerting:
  route:
    receiver: hook
    group_by: [alertname]
    group_wait: 0s
    group_interval: 1s
  receivers:
    - name: hook
      webhook_configs:
        - url: http://127.0.0.1:{hook}/alerts
  delivery:
    initial_backoff: 500ms
    max_backoff: 3s
"""

RULES = """
groups:
  - name: targets
    rules:
      - alert: TargetDown
        expr: probe_success{check="target"} == 0
        labels: {severity: page}
        annotations: {summary: "{{ $labels.check }} is down"}
"""


@dataclass
class Hook:
    """A webhook receiver on a thread: records what it accepts, answers ``status``."""

    port: int
    status: int = 200
    received: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = hook.status
                hook.received.append((arrived, status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[tuple[float, dict[str, Any]]]:
        return [(at, body) for at, status, body in self.received if status == 200]


class Target:
    """A TCP listener the check connects to; ``down()`` closes it, ``up()`` opens it again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.up()

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def down(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook(free_port())
    yield receiver
    receiver.stop()


@pytest.fixture
def target() -> Iterator[Target]:
    listener = Target()
    yield listener
    listener.down()


def start(start_daemon: Any, tmp_path: Path, target: Target, hook: Hook) -> Running:
    (tmp_path / "rules.yml").write_text(RULES)
    daemon: Running = start_daemon(CONFIG.format(target=target.port, hook=hook.port))
    daemon.notifications(until="READY=1")
    return daemon


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def firing(body: dict[str, Any]) -> bool:
    return body["status"] == "firing"


def test_a_breach_reaches_the_webhook_within_a_second_and_its_end_follows(
    start_daemon: Any, tmp_path: Path, target: Target, hook: Hook
) -> None:
    hook.start()
    daemon = start(start_daemon, tmp_path, target, hook)
    wait_for(lambda: daemon.metric("probe_success", check="target") == 1.0, timeout=15)

    target.down()
    wait_for(lambda: hook.accepted(), timeout=15)
    arrived, body = hook.accepted()[0]
    assert body["version"] == "4" and body["status"] == "firing", body
    assert body["receiver"] == "hook"
    assert body["groupKey"] == '{}:{alertname="TargetDown"}'
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "TargetDown", "check": "target", "severity": "page"}
    assert alert["annotations"] == {"summary": "target is down"}
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert "/graph?g0.expr=" in alert["generatorURL"]
    # startsAt is the timestamp of the breaching check result: the rule group is evaluated
    # on its arrival, at its timestamp, though the group's interval is 15 s.
    latency = arrived - parse_time(alert["startsAt"])
    assert 0 <= latency < 1.0, latency

    target.up()
    wait_for(lambda: not firing(hook.accepted()[-1][1]), timeout=15)
    _, resolved = hook.accepted()[-1]
    (alert,) = resolved["alerts"]
    assert alert["status"] == "resolved" and alert["endsAt"] != "0001-01-01T00:00:00Z"
    assert sum(1 for _, b in hook.accepted() if firing(b)) == 1  # no duplicate
    assert (
        daemon.metric(
            "monitord_notifications_total",
            receiver="hook",
            integration="webhook",
            outcome="delivered",
        )
        == 2.0
    )


def test_a_receiver_failing_for_30s_gets_the_notification_once_after_it_recovers(
    start_daemon: Any, tmp_path: Path, target: Target, hook: Hook
) -> None:
    hook.status = 500
    hook.start()
    daemon = start(start_daemon, tmp_path, target, hook)
    wait_for(lambda: daemon.metric("probe_success", check="target") == 1.0, timeout=15)
    target.down()
    wait_for(lambda: hook.received, timeout=15)
    failing_since = time.time()
    time.sleep(max(0.0, failing_since + 30 - time.time()))
    attempts = len(hook.received)
    assert attempts >= 5, hook.received  # retried while failing, with backoff
    hook.status = 200
    recovered = time.time()
    wait_for(lambda: hook.accepted(), timeout=10)
    time.sleep(3)  # nothing more arrives: the group's flushes do not repeat it
    accepted = hook.accepted()
    assert len(accepted) == 1, accepted
    assert accepted[0][0] >= recovered
    failed = daemon.metric(
        "monitord_notifications_total", receiver="hook", integration="webhook", outcome="failed"
    )
    assert failed is not None and failed >= attempts


def test_a_pending_notification_survives_sigkill_and_goes_out_after_the_restart(
    start_daemon: Any, tmp_path: Path, target: Target, hook: Hook
) -> None:
    daemon = start(start_daemon, tmp_path, target, hook)  # the hook is down
    wait_for(lambda: daemon.metric("probe_success", check="target") == 1.0, timeout=15)
    target.down()
    wait_for(lambda: (daemon.metric("monitord_outbox_pending") or 0) >= 1, timeout=15)
    daemon.proc.kill()
    daemon.proc.wait(timeout=10)

    hook.start()
    restarted: Running = start_daemon(CONFIG.format(target=target.port, hook=hook.port))
    restarted.notifications(until="READY=1")
    wait_for(lambda: hook.accepted(), timeout=15)
    time.sleep(3)  # the restarted rules fire again: the notification log keeps it to one
    firings = [b for _, b in hook.accepted() if firing(b)]
    assert len(firings) == 1, firings
    assert firings[0]["alerts"][0]["labels"]["alertname"] == "TargetDown"


def test_a_400_is_not_retried(
    start_daemon: Any, tmp_path: Path, target: Target, hook: Hook
) -> None:
    hook.status = 400
    hook.start()
    daemon = start(start_daemon, tmp_path, target, hook)
    wait_for(lambda: daemon.metric("probe_success", check="target") == 1.0, timeout=15)
    target.down()
    wait_for(lambda: hook.received, timeout=15)
    time.sleep(3)
    assert len(hook.received) == 1
    assert (
        daemon.metric(
            "monitord_notifications_total",
            receiver="hook",
            integration="webhook",
            outcome="rejected",
        )
        == 1.0
    )
    log = daemon.log.read_text()
    assert "HTTP 400" in log and "/alerts" not in log  # the URL's path is redacted


AM_CONFIG = """
server:
  listen: 127.0.0.1:{{port}}
state_dir: {{state}}
global:
  evaluation_interval: 15s
  external_labels:
    dc: lab
checks:
  - name: target
    type: tcp
    address: 127.0.0.1:{target}
    interval: 1s
    timeout: 900ms
rule_files: [rules.yml]
alerting:
  route:
    receiver: am
    group_wait: 0s
  receivers:
    - name: am
      alertmanager_configs:
        - urls: ["{am}"]
"""


@pytest.fixture
def real_alertmanager(tmp_path: Path) -> Iterator[str]:
    """The Debian Alertmanager, routing to a black hole; its base URL."""
    config = "route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n"
    with alertmanager_process(tmp_path, config) as base:
        yield base


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            raw = response.read()
    except OSError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def test_the_real_alertmanager_shows_the_alert_and_then_its_resolution(
    start_daemon: Any, tmp_path: Path, target: Target, real_alertmanager: str
) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    config = AM_CONFIG.format(target=target.port, am=real_alertmanager)
    daemon: Running = start_daemon(config)
    daemon.notifications(until="READY=1")
    wait_for(lambda: daemon.metric("probe_success", check="target") == 1.0, timeout=15)
    target.down()

    def in_alertmanager() -> list[dict[str, Any]]:
        alerts = _get_json(f"{real_alertmanager}/api/v2/alerts") or []
        return [a for a in alerts if a["labels"].get("alertname") == "TargetDown"]

    wait_for(in_alertmanager, timeout=15)
    (shown,) = in_alertmanager()
    assert shown["labels"] == {
        "alertname": "TargetDown",
        "check": "target",
        "severity": "page",
        "dc": "lab",
    }
    assert shown["annotations"] == {"summary": "target is down"}
    assert shown["status"]["state"] == "active"
    _, _, body = daemon.get("/api/v1/alerts")
    (ours,) = json.loads(body)["data"]["alerts"]
    assert parse_time(shown["startsAt"]) == pytest.approx(parse_time(ours["activeAt"]), abs=0.001)

    target.up()
    wait_for(lambda: not in_alertmanager(), timeout=15)  # resolved: no longer active there
    everything = _get_json(f"{real_alertmanager}/api/v2/alerts?active=false&unprocessed=false")
    assert not [a for a in everything if a["labels"].get("alertname") == "TargetDown"]


SECRETS_CONFIG = """
server:
  listen: 127.0.0.1:{port}
  auth_token: token-s3cret
state_dir: {state}
checks:
  - name: api
    type: http
    url: http://127.0.0.1:1/
    basic_auth: {{username: u, password: http-s3cret}}
alerting:
  route: {{receiver: all}}
  receivers:
    - name: all
      webhook_configs: [{{url: "http://127.0.0.1:1/hook/webhook-s3cret"}}]
      slack_configs: [{{api_url: "https://hooks.example.org/services/slack-s3cret"}}]
      pagerduty_configs: [{{routing_key: "pagerduty-s3cret-0123456789abcdef"}}]
      email_configs:
        - {{to: a@example.org, from: b@example.org, smarthost: "127.0.0.1:1",
            auth_username: u, auth_password: smtp-s3cret}}
"""


def test_the_config_dump_shows_no_secret(start_daemon: Any) -> None:
    daemon: Running = start_daemon(SECRETS_CONFIG)
    daemon.notifications(until="READY=1")
    status, content_type, body = daemon.get("/api/v1/status/config")
    assert status == 200 and content_type.startswith("application/json")
    dump = json.loads(body)["data"]["yaml"]
    assert "webhook_configs" in dump and "**********" in dump
    assert "s3cret" not in dump, dump
    assert "s3cret" not in daemon.log.read_text()
