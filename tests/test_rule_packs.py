"""The shipped rule packs: valid, fully unit-tested, on names monitord exports, and found by name.

Each pack's unit tests (``rules/packs/tests/<name>_test.yml``, promtool's format) run
through monitord's runner and through the real ``promtool test rules`` (Debian package
``prometheus``, 2.42); both must pass, and both ``check rules`` must accept the pack.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.cluster import CLUSTER_LABELS
from checks.procfs import parse_meminfo
from checks.system import FAMILIES
from monitor.cli import main
from monitor.exporter import ReloadStatus, build_registry
from monitor.query import selectors
from monitor.scheduler import CHECK_METADATA
from monitor.store import Store
from rules.files import AlertingRuleSpec, load_rule_file
from rules.metrics import RuleCollector
from rules.packs import PACKS, RulePack, rule_pack_files, rule_packs
from rules.unittest import run_test_files
from tests.support import require_program

PACK_DIR = Path(__file__).resolve().parent.parent / "rules" / "packs"

# Named by the notifications issue (not exported yet), with their label names.
NOTIFICATION_METRICS = {
    "monitord_notifications_total": {"receiver", "integration", "outcome"},
    "monitord_outbox_pending": set(),
}


def pack_params() -> list[Any]:
    return [pytest.param(pack, id=f"the {name} pack") for name, pack in rule_packs().items()]


def alerting_rules(pack: RulePack) -> list[AlertingRuleSpec]:
    rule_file = load_rule_file(pack.path)
    return [r for g in rule_file.groups for r in g.rules if isinstance(r, AlertingRuleSpec)]


# --- the files ----------------------------------------------------------------------------


def test_every_pack_file_is_named_in_the_catalogue_and_has_its_tests() -> None:
    assert sorted(p.stem for p in PACK_DIR.glob("*.yml")) == sorted(PACKS)
    assert sorted(p.name for p in (PACK_DIR / "tests").glob("*.yml")) == sorted(
        f"{name}_test.yml" for name in PACKS
    )
    for pack in rule_packs().values():
        assert pack.path == PACK_DIR / f"{pack.name}.yml"
        assert pack.tests == PACK_DIR / "tests" / f"{pack.name}_test.yml"
    assert rule_pack_files() == {name: pack.path for name, pack in rule_packs().items()}


@pytest.mark.parametrize("pack", pack_params())
def test_monitord_check_rules_prints_what_promtool_prints(
    pack: RulePack, capsys: pytest.CaptureFixture[str]
) -> None:
    promtool = require_program("promtool", "prometheus")
    theirs = subprocess.run(
        [promtool, "check", "rules", str(pack.path)], capture_output=True, text=True, check=False
    )
    assert theirs.returncode == 0, theirs.stderr
    assert main(["check-rules", str(pack.path)]) == 0
    ours = capsys.readouterr()
    assert ours.err == ""
    assert ours.out == theirs.stdout
    assert f"SUCCESS: {len(alerting_rules(pack))} rules found" in ours.out


# --- unit tests, both runners -------------------------------------------------------------


@pytest.mark.parametrize("pack", pack_params())
def test_the_pack_passes_its_unit_tests_in_monitord(pack: RulePack) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_test_files([str(pack.tests)], out, err) == 0, err.getvalue()
    assert out.getvalue() == f"Unit Testing:  {pack.tests}\n  SUCCESS\n\n"


@pytest.mark.parametrize("pack", pack_params())
def test_the_pack_passes_its_unit_tests_in_promtool(pack: RulePack) -> None:
    promtool = require_program("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "test", "rules", str(pack.tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _cases(pack: RulePack) -> list[tuple[int, dict[str, Any]]]:
    """Every alert_rule_test of the pack's test file, with its eval_time in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    spec = yaml.safe_load(pack.tests.read_text(encoding="utf-8"))
    cases = []
    for group in spec["tests"]:
        for case in group.get("alert_rule_test", []):
            match = re.fullmatch(r"(\d+)([smh])", case["eval_time"])
            assert match is not None, case["eval_time"]
            cases.append((int(match[1]) * units[match[2]], case))
    return cases


@pytest.mark.parametrize("pack", pack_params())
def test_the_unit_tests_cover_every_alert_firing_not_yet_firing_and_its_annotations(
    pack: RulePack,
) -> None:
    cases = _cases(pack)
    for rule in alerting_rules(pack):
        severity = rule.labels["severity"]

        def fired(case: dict[str, Any], rule: AlertingRuleSpec = rule) -> list[dict[str, Any]]:
            return [
                alert
                for alert in case.get("exp_alerts") or []
                if case["alertname"] == rule.name
                and alert["exp_labels"].get("severity") == rule.labels["severity"]
            ]

        firing = [(t, alert) for t, case in cases for alert in fired(case)]
        assert firing, f"{rule.name} ({severity}) is never expected to fire"
        for _, alert in firing:
            assert set(alert.get("exp_annotations", {})) == set(rule.annotations), rule.name
        if rule.for_:
            first = min(t for t, _ in firing)
            assert any(
                case["alertname"] == rule.name and t < first and not fired(case)
                for t, case in cases
            ), f"{rule.name} ({severity}): no case shows it not firing before its for"


@pytest.mark.parametrize("pack", pack_params())
def test_the_unit_tests_fail_when_the_rules_lose_their_for(pack: RulePack, tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    text = pack.path.read_text(encoding="utf-8")
    mutant = re.sub(r"(?m)^ +for: .*\n", "", text)
    assert mutant != text
    (tmp_path / pack.path.name).write_text(mutant, encoding="utf-8")
    shutil.copy(pack.tests, tmp_path / "tests" / pack.tests.name)
    out, err = io.StringIO(), io.StringIO()
    assert run_test_files([str(tmp_path / "tests" / pack.tests.name)], out, err) == 1
    assert "FAILED" in err.getvalue()


# --- names ---------------------------------------------------------------------------------


def _exported_self_metrics() -> dict[str, set[str]]:
    """Names (counters with ``_total``) on monitord's /metrics, with their label names."""
    registry = build_registry(Store(), dict, ReloadStatus())
    registry.register(RuleCollector(list))
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        names[name] = {"rule_group"} if name.startswith("monitord_rule_") else set()
    return names


def _database_labels() -> dict[str, tuple[Any, dict[str, set[str]]]]:
    """Per database pack: the collector's families, and the label names (beside ``check``)
    of those the packs read, as the collectors' side-by-side tests show them."""
    from checks.mysql import MYSQL_FAMILIES
    from checks.postgres import POSTGRES_FAMILIES
    from checks.redis import REDIS_FAMILIES

    server = {"server"}
    database = {"datid", "datname", "server"}
    replica = {"master_host", "master_uuid", "channel_name", "connection_name"}
    slave_status_columns = (
        "seconds_behind_master",
        "sql_delay",
        "slave_io_running",
        "slave_sql_running",
    )
    return {
        "postgres": (
            POSTGRES_FAMILIES,
            {
                "pg_settings_max_connections": server,
                "pg_replication_lag_seconds": server,
                "pg_replication_is_replica": server,
                "pg_stat_activity_count": {"datname", "state", "server"},
                "pg_stat_database_blks_hit": database,
                "pg_stat_database_blks_read": database,
                "pg_stat_database_deadlocks": database,
            },
        ),
        "mysql": (
            # SHOW GLOBAL STATUS, SHOW GLOBAL VARIABLES and SHOW SLAVE STATUS give one family
            # per row or column, so those names are what MariaDB 10.11 has (the mysql
            # collector's side-by-side test compares them with mysqld_exporter's).
            {
                **MYSQL_FAMILIES,
                **dict.fromkeys(
                    (
                        "mysql_global_status_threads_connected",
                        "mysql_global_status_innodb_deadlocks",
                        "mysql_global_status_innodb_buffer_pool_reads",
                        "mysql_global_status_innodb_buffer_pool_read_requests",
                        "mysql_global_variables_max_connections",
                        *(f"mysql_slave_status_{c}" for c in slave_status_columns),
                    )
                ),
            },
            {f"mysql_slave_status_{c}": replica for c in slave_status_columns},
        ),
        "redis": (REDIS_FAMILIES, {}),
    }


DATABASE_LABELS = _database_labels()


def _exported_names(pack: str) -> dict[str, set[str]]:
    """Metric names a pack may select, with the label names their series carry."""
    if pack == "host":
        meminfo = parse_meminfo(Path("/proc/meminfo").read_text(encoding="ascii"))
        labels = {
            "node_cpu_seconds_total": {"cpu", "mode"},
            **{n: {"device", "fstype", "mountpoint"} for n in FAMILIES if "_filesystem_" in n},
            **{n: {"device"} for n in FAMILIES if "_network_" in n or "_disk_" in n},
        }
        names = [*FAMILIES, *(f"node_memory_{key}" for key in meminfo)]
        return {name: labels.get(name, set()) for name in names}
    if pack == "checks":
        return {name: {"check", "kind"} for name in CHECK_METADATA}
    if pack in DATABASE_LABELS:
        families, labels = DATABASE_LABELS[pack]
        return {name: {"check", *labels.get(name, ())} for name in families}
    cluster = {name: {*labels, "check"} for name, labels in CLUSTER_LABELS.items()}
    return {**_exported_self_metrics(), **NOTIFICATION_METRICS, **cluster}


@pytest.mark.parametrize("pack", pack_params())
def test_every_metric_and_label_name_is_one_monitord_exports(pack: RulePack) -> None:
    exported = _exported_names(pack.name)
    for rule in alerting_rules(pack):
        used: set[str] = set()
        for matchers in selectors(rule.expr):
            name = next(m.value for m in matchers if m.name == "__name__")
            assert name in exported, f"{rule.name}: {name} is not exported"
            used |= exported[name]
            for matcher in matchers:
                assert matcher.name in {"__name__", *exported[name]}, (rule.name, matcher)
        for text in rule.annotations.values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in used, f"{rule.name}: $labels.{label} is on none of its series"


# --- the CLI -------------------------------------------------------------------------------


def test_rule_packs_lists_every_pack_with_its_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rule-packs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3 * len(PACKS)
    for pack in rule_packs().values():
        count = len(alerting_rules(pack))
        head = lines.index(f"{pack.name}: {pack.description} ({count} rules)")
        assert lines[head + 1 : head + 3] == [f"  rules: {pack.path}", f"  tests: {pack.tests}"]


def test_rule_packs_paths_prints_only_the_named_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rule-packs", "--paths", "monitord", "host", "monitord"]) == 0
    assert capsys.readouterr().out == f"{PACK_DIR / 'monitord.yml'}\n{PACK_DIR / 'host.yml'}\n"


def test_rule_packs_refuses_an_unknown_name_with_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["rule-packs", "hots"])
    assert info.value.code == 2
    assert (
        "unknown rule pack 'hots'; did you mean 'host'? "
        "(known: checks, host, monitord, mysql, postgres, redis)" in capsys.readouterr().err
    )
