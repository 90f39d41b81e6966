"""The command check: real Monitoring Plugins, and plugins that misbehave."""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.command import CommandCheck, CommandConfig
from monitor.model import CheckResult, Labels, Status
from tests.support import REQUIRE_INTEGRATION, free_port, wait_for

PLUGINS = Path("/usr/lib/nagios/plugins")


def plugin(name: str) -> str:
    """The path of a Monitoring Plugins plugin; skip (fail under CI) when it is missing."""
    path = PLUGINS / name
    if path.exists():
        return str(path)
    reason = f"{path} is not installed (install the Debian package monitoring-plugins)"
    if REQUIRE_INTEGRATION:
        pytest.fail(f"MONITORD_REQUIRE_INTEGRATION=1 but {reason}")
    pytest.skip(reason)


def make_check(command: list[str], **options: Any) -> CommandCheck:
    environ = options.pop("environ", None)
    options.setdefault("timeout", "5s")
    config = CommandConfig(name="plug", type="command", command=command, **options)
    return CommandCheck(config, environ=environ)


def values(result: CheckResult, name: str) -> dict[str, float]:
    """The samples named ``name``, by their ``label`` label."""
    return {s.labels.get("label", ""): s.value for s in result.samples if s.name == name}


def sample_labels(result: CheckResult, name: str, label: str) -> Labels:
    return next(s.labels for s in result.samples if s.name == name and s.labels["label"] == label)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int) -> None:
    """Wait for ``pid`` to be gone (the kernel delivers SIGKILL at once, reaping may lag)."""
    wait_for(lambda: not pid_alive(pid), timeout=2.0)


@pytest.fixture
def http_port() -> Iterator[int]:
    """A small HTTP server on 127.0.0.1 answering 200 with a fixed body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the test\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- real Monitoring Plugins -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        pytest.param("0", Status.OK, id="check_dummy 0 is OK"),
        pytest.param("1", Status.WARNING, id="check_dummy 1 is WARNING"),
        pytest.param("2", Status.CRITICAL, id="check_dummy 2 is CRITICAL"),
        pytest.param("3", Status.UNKNOWN, id="check_dummy 3 is UNKNOWN"),
    ],
)
async def test_check_dummy_status_and_message(code: str, status: Status) -> None:
    result = await make_check([plugin("check_dummy"), code, "all is fine"]).run()
    assert result.status is status
    assert result.message == f"{status.name}: all is fine"
    assert values(result, "monitord_command_exit_code") == {"": float(code)}
    assert values(result, "monitord_command_perfdata") == {}


async def test_check_tcp_against_a_local_listener(http_port: int) -> None:
    result = await make_check([plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(http_port)]).run()
    assert result.status is Status.OK
    assert result.message.startswith("TCP OK - ")
    assert result.message.endswith(f"second response time on 127.0.0.1 port {http_port}")
    assert 0 <= values(result, "monitord_command_perfdata")["time"] < 5
    assert sample_labels(result, "monitord_command_perfdata", "time") == Labels.of(
        check="plug", label="time", uom="s"
    )
    assert values(result, "monitord_command_perfdata_min") == {"time": 0.0}
    assert values(result, "monitord_command_perfdata_max") == {"time": 10.0}
    assert values(result, "monitord_command_perfdata_warning") == {}
    assert values(result, "monitord_command_perfdata_invalid") == {"": 0.0}


async def test_check_tcp_refused_is_critical() -> None:
    port = free_port()
    result = await make_check([plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(port)]).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"connect to address 127.0.0.1 and port {port}: Connection refused"


async def test_check_http_against_a_local_server(http_port: int) -> None:
    result = await make_check(
        [plugin("check_http"), "-H", "127.0.0.1", "-p", str(http_port), "-u", "/"]
    ).run()
    assert result.status is Status.OK
    assert result.message.startswith("HTTP OK: HTTP/1.0 200 OK - ")
    perf = values(result, "monitord_command_perfdata")
    assert set(perf) == {"time", "size"}
    assert 0 <= perf["time"] < 5
    # The whole response: status line, headers and the 20-byte body.
    assert perf["size"] > 20
    assert sample_labels(result, "monitord_command_perfdata", "size")["uom"] == "B"


async def test_check_http_warning_on_an_expected_string_missing(http_port: int) -> None:
    argv = [plugin("check_http"), "-H", "127.0.0.1", "-p", str(http_port), "-s", "absent"]
    result = await make_check(argv).run()
    assert result.status is Status.CRITICAL
    assert "string 'absent' not found" in result.message


async def test_check_load_thresholds_are_exported() -> None:
    argv = [plugin("check_load"), "-w", "1000,900,800", "-c", "2000,1900,1800"]
    result = await make_check(argv).run()
    assert result.status is Status.OK
    assert result.message.startswith("LOAD OK - total load average: ")
    perf = values(result, "monitord_command_perfdata")
    assert set(perf) == {"load1", "load5", "load15"}
    assert perf["load15"] == pytest.approx(os.getloadavg()[2], abs=0.5)
    assert values(result, "monitord_command_perfdata_warning") == {
        "load1": 1000.0,
        "load5": 900.0,
        "load15": 800.0,
    }
    assert values(result, "monitord_command_perfdata_critical") == {
        "load1": 2000.0,
        "load5": 1900.0,
        "load15": 1800.0,
    }
    assert values(result, "monitord_command_perfdata_min") == {
        "load1": 0.0,
        "load5": 0.0,
        "load15": 0.0,
    }
    assert "uom" not in sample_labels(result, "monitord_command_perfdata", "load1")


async def test_check_disk_bytes_and_critical() -> None:
    # Less than 100% free is always true, so this is CRITICAL on any machine.
    argv = [plugin("check_disk"), "-w", "100%", "-c", "100%", "-p", "/"]
    result = await make_check(argv).run()
    assert result.status is Status.CRITICAL
    assert result.message.startswith("DISK CRITICAL - free space: / ")
    st = os.statvfs("/")
    total = st.f_blocks * st.f_frsize
    used = values(result, "monitord_command_perfdata")["/"]
    size = values(result, "monitord_command_perfdata_max")["/"]
    assert size == pytest.approx(total, rel=0.01)
    assert 0 < used <= size
    assert sample_labels(result, "monitord_command_perfdata", "/")["uom"] == "B"


async def test_check_procs_range_threshold_is_not_a_number() -> None:
    argv = [plugin("check_procs"), "-c", "1:1", "-C", "no-such-process-name"]
    result = await make_check(argv).run()
    assert result.status is Status.CRITICAL
    assert result.message == "PROCS CRITICAL: 0 processes with command name 'no-such-process-name'"
    assert values(result, "monitord_command_perfdata") == {"procs": 0.0}
    # crit is the range 1:1, which no single number says: not exported.
    assert values(result, "monitord_command_perfdata_critical") == {}
    assert values(result, "monitord_command_perfdata_min") == {"procs": 0.0}


async def test_check_procs_upper_bound_thresholds() -> None:
    result = await make_check([plugin("check_procs"), "-w", "100000", "-c", "200000"]).run()
    assert result.status is Status.OK
    assert result.message.startswith("PROCS OK: ")
    assert values(result, "monitord_command_perfdata")["procs"] >= 1
    assert values(result, "monitord_command_perfdata_warning") == {"procs": 100000.0}
    assert values(result, "monitord_command_perfdata_critical") == {"procs": 200000.0}


# --- plugins that misbehave ------------------------------------------------------------


async def test_hanging_plugin_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; sleep 60"
    check = make_check(["/bin/sh", "-c", script], timeout="1s")
    started = time.monotonic()
    result = await check.run()
    elapsed = time.monotonic() - started
    assert result.status is Status.CRITICAL
    assert result.message == "plugin timed out after 0.95s and was killed"
    assert elapsed < 3
    child, shell = map(int, pids.read_text().split())
    for pid in (child, shell):
        wait_dead(pid)


async def test_cancelled_run_kills_the_plugin(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; sleep 60"
    task = asyncio.create_task(make_check(["/bin/sh", "-c", script]).run())
    for _ in range(200):
        if pidfile.exists():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    wait_dead(int(pidfile.read_text()))


async def test_children_left_behind_by_a_finished_plugin_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # The background sleep closes its copy of stdout so the run ends when the shell does.
    script = f"sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}; echo 'OK done'"
    result = await make_check(["/bin/sh", "-c", script]).run()
    assert result.status is Status.OK
    assert result.message == "OK done"
    wait_dead(int(pidfile.read_text()))


@pytest.mark.parametrize(
    ("mode", "content", "reason"),
    [
        pytest.param(None, b"", "No such file or directory", id="missing file"),
        pytest.param(0o644, b"#!/bin/sh\n", "Permission denied", id="file not executable"),
        pytest.param(0o755, b"\x00\x01binary", "Exec format error", id="not a program"),
    ],
)
async def test_plugin_that_cannot_start_is_unknown(
    tmp_path: Path, mode: int | None, content: bytes, reason: str
) -> None:
    path = tmp_path / "check_x"
    if mode is not None:
        path.write_bytes(content)
        path.chmod(mode)
    result = await make_check([str(path)]).run()
    assert result.status is Status.UNKNOWN
    assert result.message == f"cannot start {path}: {reason}"


async def test_huge_output_is_capped() -> None:
    script = "echo 'OK lots|a=1s'; head -c 20000000 /dev/zero | tr '\\0' x; exit 0"
    started = time.monotonic()
    result = await make_check(["/bin/sh", "-c", script], max_output_bytes=1000).run()
    assert time.monotonic() - started < 4
    assert result.status is Status.OK
    assert result.message == "OK lots [output cut at 1000 bytes]"
    assert values(result, "monitord_command_perfdata") == {"a": 1.0}


@pytest.mark.parametrize(
    ("script", "message"),
    [
        pytest.param("echo hi; exit 4", "plugin exited with code 4: hi", id="exit code 4"),
        pytest.param("echo hi; exit 127", "plugin exited with code 127: hi", id="exit code 127"),
        pytest.param("echo hi; kill -TERM $$", "plugin killed by SIGTERM: hi", id="a signal"),
    ],
)
async def test_exit_codes_outside_0_to_3_are_unknown(script: str, message: str) -> None:
    result = await make_check(["/bin/sh", "-c", script]).run()
    assert result.status is Status.UNKNOWN
    assert result.message == message


async def test_no_stdout_shows_stderr() -> None:
    result = await make_check(["/bin/sh", "-c", "echo 'it broke' >&2; exit 2"]).run()
    assert result.status is Status.CRITICAL
    assert result.message == "(no output on stdout) stderr: it broke"


async def test_environment_is_the_allowlist_and_env_only() -> None:
    environ = {"PATH": "/usr/bin:/bin", "SECRET_TOKEN": "hunter2", "LANG": "C"}
    script = 'echo "OK ${SECRET_TOKEN:-unset} $FOO $LANG $PATH"'
    check = make_check(["/bin/sh", "-c", script], environ=environ, env={"FOO": "bar"})
    result = await check.run()
    assert result.message == "OK unset bar C /usr/bin:/bin"


async def test_shell_true_runs_one_string_with_sh() -> None:
    result = await make_check(["echo 'WARNING: two|x=5KB;10;20' && exit 1"], shell=True).run()
    assert result.status is Status.WARNING
    assert result.message == "WARNING: two"
    assert values(result, "monitord_command_perfdata") == {"x": 5120.0}
    assert values(result, "monitord_command_perfdata_warning") == {"x": 10240.0}


async def test_invalid_and_repeated_perfdata_items_are_counted() -> None:
    result = await make_check(["/bin/sh", "-c", "echo 'OK | a=1 b=zz a=2 c=3'"]).run()
    assert values(result, "monitord_command_perfdata") == {"a": 1.0, "c": 3.0}
    assert values(result, "monitord_command_perfdata_invalid") == {"": 2.0}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"command": []}, "at least 1 item", id="empty command"),
        pytest.param(
            {"command": ["a", "b"], "shell": True}, "must be one string", id="shell with argv"
        ),
        pytest.param({"command": ["x"], "env": {"1BAD": "x"}}, "pattern", id="bad env name"),
        pytest.param({"command": ["x"], "max_output_bytes": 0}, "greater than 0", id="no output"),
    ],
)
def test_config_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        CommandConfig(name="c", type="command", **options)
