"""``monitord silence add/ls/expire`` and ``monitord alerts`` run in-process against a real
daemon (started by ``start_daemon``) whose rule fires at once, like amtool against Alertmanager."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from tests.support import free_port, wait_for
from tests.test_daemon import Running, start_daemon

__all__ = ["start_daemon"]  # the fixture, used by name

CONFIG = """
server:
  listen: 127.0.0.1:{{port}}
{auth}state_dir: {{state}}
checks:
  - name: host
    type: system
    interval: 1s
rule_files: [rules.yml]
alerting:
  route:
    receiver: nobody
    group_wait: 0s
  receivers:
    - name: nobody
"""

RULES = """
groups:
  - name: host
    rules:
      - alert: HostSeen
        expr: node_load1 >= 0
        annotations: {summary: "the host reports its load"}
"""

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def start(start_daemon: Any, tmp_path: Path, auth: str = "") -> Running:
    (tmp_path / "rules.yml").write_text(RULES)
    daemon: Running = start_daemon(CONFIG.format(auth=auth))
    daemon.notifications(until="READY=1")
    return daemon


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``monitord argv...`` in-process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def firing_alerts(capsys: pytest.CaptureFixture[str], url: str) -> list[dict[str, Any]]:
    code, out, err = cli(capsys, "alerts", "--json", "--url", url)
    assert code == 0, err
    return [a for a in json.loads(out) if a["labels"]["alertname"] == "HostSeen"]


def alert_line(table: str) -> str:
    """The row of ``monitord alerts``' table for HostSeen."""
    (line,) = [line for line in table.splitlines() if line.startswith("HostSeen")]
    return line


def test_silence_add_ls_alerts_and_expire_against_the_daemon(
    start_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start(start_daemon, tmp_path)
    url = daemon.url("")
    wait_for(lambda: firing_alerts(capsys, url), timeout=15)

    code, out, err = cli(
        capsys,
        "silence",
        "add",
        'alertname="HostSeen"',
        "--duration",
        "2h",
        "--comment",
        "planned work",
        "--author",
        "alice",
        "--url",
        url,
    )
    assert code == 0, err
    silence_id = out.strip()
    assert UUID.match(silence_id), out

    code, out, _ = cli(capsys, "silence", "ls", "--url", url)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:2] == ["ID", "Matchers"]
    assert row.startswith(silence_id)
    assert 'alertname="HostSeen"' in row and "alice" in row and row.endswith("planned work")
    assert cli(capsys, "silence", "ls", "-q", "--url", url)[1] == f"{silence_id}\n"

    code, out, _ = cli(capsys, "alerts", "--url", url)
    assert code == 0
    line = alert_line(out)
    assert "the host reports its load" in line
    assert line.endswith(f"suppressed (silenced by {silence_id})")
    (alert,) = firing_alerts(capsys, url)
    assert alert["status"] == {"inhibitedBy": [], "silencedBy": [silence_id], "state": "suppressed"}

    code, out, err = cli(capsys, "silence", "expire", silence_id, "--url", url)
    assert (code, out) == (0, ""), err
    assert cli(capsys, "silence", "ls", "-q", "--url", url)[1] == ""
    assert cli(capsys, "silence", "ls", "--expired", "-q", "--url", url)[1] == f"{silence_id}\n"
    (alert,) = firing_alerts(capsys, url)
    assert alert["status"]["state"] == "active"
    code, out, _ = cli(capsys, "alerts", "--url", url)
    assert alert_line(out).endswith("active")


def test_the_url_comes_from_the_config_and_a_silence_survives_a_restart(
    start_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start(start_daemon, tmp_path)
    config = str(daemon.config)
    code, out, err = cli(
        capsys, "silence", "add", "alertname=HostSeen", "-d", "1h", "--comment", "c", "-c", config
    )
    assert code == 0, err
    silence_id = out.strip()

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=15) == 0
    restarted = start(start_daemon, tmp_path)  # same state dir, another port
    code, out, err = cli(capsys, "silence", "ls", "-q", "-c", str(restarted.config))
    assert (code, out) == (0, f"{silence_id}\n"), err
    code, out, _ = cli(capsys, "silence", "ls", "--json", "--url", restarted.url(""))
    (silence,) = json.loads(out)
    assert silence["matchers"] == [
        {"name": "alertname", "value": "HostSeen", "isRegex": False, "isEqual": True}
    ]
    assert silence["comment"] == "c" and silence["status"]["state"] == "active"


def test_with_a_token_set_the_token_file_is_used_and_a_wrong_token_is_refused(
    start_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    daemon = start(start_daemon, tmp_path, auth="  auth_token_file: token\n")
    url = daemon.url("")
    good, wrong = tmp_path / "good-token", tmp_path / "wrong-token"
    good.write_text("s3cret\n")
    wrong.write_text("guess\n")
    add = ["silence", "add", "alertname=HostSeen", "--comment", "c", "--url", url]

    code, out, err = cli(capsys, *add, "--token-file", str(wrong))
    assert code == 1 and out == ""
    assert "HTTP 401" in err and "s3cret" not in err and "guess" not in err

    code, out, err = cli(capsys, *add)  # no token at all
    assert code == 1 and "HTTP 401" in err

    code, out, err = cli(capsys, *add, "--token-file", str(good))
    assert code == 0, err
    silence_id = out.strip()
    # -c reads the token from the config (server.auth_token_file) as well as the URL.
    code, out, err = cli(capsys, "silence", "expire", silence_id, "-c", str(daemon.config))
    assert code == 0, err
    assert cli(capsys, "silence", "ls", "--expired", "-q", "--url", url)[1] == f"{silence_id}\n"


def test_errors_exit_1_with_a_message(
    start_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = cli(capsys, "silence", "ls", "--url", nowhere)
    assert (code, out) == (1, "")
    assert f"cannot reach monitord at {nowhere}" in err
    code, _, err = cli(capsys, "alerts", "--url", nowhere)
    assert code == 1 and nowhere in err

    daemon = start(start_daemon, tmp_path)
    url = daemon.url("")
    code, out, err = cli(capsys, "silence", "add", "foo!!bar", "--comment", "c", "--url", url)
    assert (code, out) == (1, "")
    assert "'foo!!bar': expected a matcher like name=\"value\"" in err
    code, _, err = cli(capsys, "silence", "add", 'job=~"("', "--comment", "c", "--url", url)
    assert code == 1 and "invalid regular expression '('" in err
    assert cli(capsys, "silence", "ls", "-q", "--url", url)[1] == ""  # nothing was created

    code, _, err = cli(capsys, "silence", "expire", "no-such-id", "--url", url)
    assert code == 1 and "HTTP 404" in err
