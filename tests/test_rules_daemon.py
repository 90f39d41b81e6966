"""Rules in the running daemon: alerts in the API, rule metrics, reloads and restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support import require_program, wait_for
from tests.test_daemon import Running, start_daemon

__all__ = ["start_daemon"]  # the fixture, used by name

CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {state}
global:
  evaluation_interval: 1s
  external_labels: {{dc: lab}}
checks:
  - name: host
    type: system
    interval: 1s
rule_files: [rules.yml]
"""

RULES = """
groups:
  - name: checks
    rules:
      - record: checks:up:sum
        expr: sum(monitord_check_up)
      - alert: CheckIsUp
        expr: monitord_check_up == 1 and on() checks:up:sum > 0
        labels: {severity: info}
        annotations:
          summary: "check {{ $labels.check }} is up ({{ $value }})"
          total: '{{ with query "count(monitord_check_up)" }}{{ . | first | value }}{{ end }}'
      - alert: CheckUpForAnHour
        expr: monitord_check_up == 1
        for: 1h
        labels: {severity: page}
"""


def get_json(daemon: Running, path: str) -> Any:
    status, content_type, body = daemon.get(path)
    assert status == 200, body
    assert content_type.startswith("application/json")
    return json.loads(body)


def alerts(daemon: Running) -> dict[str, dict[str, Any]]:
    data = get_json(daemon, "/api/v1/alerts")
    assert data["status"] == "success"
    return {a["labels"]["alertname"]: a for a in data["data"]["alerts"]}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def start(start_daemon: Any, tmp_path: Path, rules: str = RULES) -> Running:
    (tmp_path / "rules.yml").write_text(rules)
    daemon: Running = start_daemon(CONFIG)
    daemon.notifications(until="READY=1")
    return daemon


def test_an_alert_on_check_up_fires_and_shows_in_the_api(start_daemon: Any, tmp_path: Path) -> None:
    daemon = start(start_daemon, tmp_path)
    wait_for(lambda: alerts(daemon).get("CheckIsUp", {}).get("state") == "firing")
    firing = alerts(daemon)["CheckIsUp"]
    assert firing["labels"] == {
        "alertname": "CheckIsUp",
        "check": "host",
        "kind": "system",
        "severity": "info",
    }
    assert firing["annotations"] == {"summary": "check host is up (1)", "total": "1"}
    assert firing["value"] == "1e+00"
    assert firing["activeAt"].endswith("Z")
    assert alerts(daemon)["CheckUpForAnHour"]["state"] == "pending"

    rules = get_json(daemon, "/api/v1/rules")["data"]["groups"]
    (group,) = rules
    assert group["name"] == "checks"
    assert group["file"] == str(tmp_path / "rules.yml")
    assert (group["interval"], group["limit"]) == (1, 0)
    record, up, hour = group["rules"]
    assert record == {
        "name": "checks:up:sum",
        "query": "sum(monitord_check_up)",
        "health": "ok",
        "evaluationTime": record["evaluationTime"],
        "lastEvaluation": record["lastEvaluation"],
        "type": "recording",
    }
    assert up["type"] == "alerting" and up["state"] == "firing" and up["health"] == "ok"
    assert up["annotations"]["summary"] == "check {{ $labels.check }} is up ({{ $value }})"
    assert (hour["duration"], hour["keepFiringFor"], hour["state"]) == (3600, 0, "pending")
    only_alerts = get_json(daemon, "/api/v1/rules?type=alert")["data"]["groups"][0]["rules"]
    assert [r["name"] for r in only_alerts] == ["CheckIsUp", "CheckUpForAnHour"]
    status, _, body = daemon.get("/api/v1/rules?type=bogus")
    assert status == 400 and json.loads(body)["errorType"] == "bad_data"

    # ALERTS is written from the second evaluation on, once the for state is restored.
    firing_series = 'ALERTS{alertname="CheckIsUp",alertstate="firing"'
    wait_for(lambda: firing_series in daemon.get("/metrics")[2])
    _, _, metrics = daemon.get("/metrics")
    key = f'rule_group="{tmp_path / "rules.yml"};checks"'
    for name in (
        "monitord_rule_group_last_duration_seconds",
        "monitord_rule_group_last_evaluation_timestamp_seconds",
        "monitord_rule_group_iterations_missed_total",
        "monitord_rule_evaluation_failures_total",
    ):
        assert f"{name}{{{key}}}" in metrics, name
    assert f"monitord_rule_evaluation_failures_total{{{key}}} 0.0" in metrics


def test_a_reload_keeps_the_state_of_rules_that_did_not_change(
    start_daemon: Any, tmp_path: Path
) -> None:
    daemon = start(start_daemon, tmp_path)
    wait_for(lambda: "CheckUpForAnHour" in alerts(daemon))
    before = alerts(daemon)["CheckUpForAnHour"]["activeAt"]

    changed = RULES.replace("labels: {severity: info}", "labels: {severity: warning}")
    changed += "      - record: another\n        expr: vector(1)\n"
    (tmp_path / "rules.yml").write_text(changed)
    status, body = daemon.post("/-/reload")
    assert (status, body) == (200, "config reloaded\n")

    def relabelled() -> bool:
        labels = alerts(daemon).get("CheckIsUp", {}).get("labels", {})
        return bool(labels.get("severity") == "warning")

    wait_for(relabelled)
    assert alerts(daemon)["CheckUpForAnHour"]["activeAt"] == before

    (tmp_path / "rules.yml").write_text(RULES.replace("expr: sum(", "expr: sum((("))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.metric("monitord_config_last_reload_successful") == 0.0)
    assert alerts(daemon)["CheckUpForAnHour"]["activeAt"] == before  # old rules keep running
    assert "checks:up:sum" in daemon.get("/api/v1/rules")[2]


def test_a_pending_alert_keeps_its_for_clock_across_a_restart(
    start_daemon: Any, tmp_path: Path
) -> None:
    daemon = start(start_daemon, tmp_path)
    wait_for(lambda: "CheckUpForAnHour" in alerts(daemon))
    first = parse_time(alerts(daemon)["CheckUpForAnHour"]["activeAt"]).timestamp()

    def evaluated_since(seconds: float) -> bool:
        last = daemon.metric("monitord_rule_group_last_evaluation_timestamp_seconds")
        return last is not None and last > first + seconds

    wait_for(lambda: evaluated_since(4.0))  # pending for a while before going down
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=15) == 0
    assert (tmp_path / "state" / "monitord.db").exists()

    restart_moment = time.time()
    again: Running = start_daemon(CONFIG)
    again.notifications(until="READY=1")
    wait_for(lambda: "CheckUpForAnHour" in alerts(again))

    def active_at() -> float:
        return parse_time(alerts(again)["CheckUpForAnHour"]["activeAt"]).timestamp()

    # Restored (once samples have arrived and the group evaluated twice): the old activeAt,
    # moved on by the downtime, so the 4 s and more spent pending before the restart still
    # count. An alert that started afresh could not be active before the process started.
    wait_for(lambda: active_at() < restart_moment)
    assert first - 1 <= active_at()


SELF_CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {state}
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [self.yml]
rule_packs: [monitord]
"""

SELF_RULES = """
groups:
  - name: self
    rules:
      - record: self_rule_group_rules
        expr: monitord_rule_group_rules
      - alert: ReloadFailed
        expr: monitord_config_last_reload_successful == 0
"""


def test_self_metrics_reach_rules_and_are_on_metrics_once(
    start_daemon: Any, tmp_path: Path
) -> None:
    promtool = require_program("promtool", "prometheus")
    (tmp_path / "self.yml").write_text(SELF_RULES)
    daemon: Running = start_daemon(SELF_CONFIG)
    daemon.notifications(until="READY=1")
    # A recording rule over a self metric: the self-scrape put it in the store.
    wait_for(lambda: "self_rule_group_rules{" in daemon.get("/metrics")[2])
    assert "ReloadFailed" not in alerts(daemon)

    _, _, body = daemon.get("/metrics")
    types = Counter(line.split()[2] for line in body.splitlines() if line.startswith("# TYPE "))
    assert [name for name, n in types.items() if n > 1] == []
    assert types["monitord_config_last_reload_successful"] == 1
    assert types["monitord_rule_evaluation_failures_total"] == 1
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    groups = get_json(daemon, "/api/v1/rules")["data"]["groups"]
    pack = next(g for g in groups if g["name"] == "monitord")
    assert {r["health"] for r in pack["rules"]} == {"ok"}

    daemon.config.write_text(daemon.config.read_text() + "checks:\n  - name: x\n    type: sytem\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: alerts(daemon).get("ReloadFailed", {}).get("state") == "firing")
    assert alerts(daemon)["ReloadFailed"]["value"] == "0e+00"
