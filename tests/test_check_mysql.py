"""The mysql check against a real MariaDB (tests/mysql_server.py) and, side by side, the real
prometheus-mysqld-exporter 0.14: families, values, faults, timeouts, the pool, thresholds,
a real replica's slave status, and TLS."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from checks.mysql import (
    MySQLCheck,
    MySQLConfig,
    global_status_samples,
    global_variables_samples,
    parse_status,
    slave_status_samples,
)
from monitor.model import CheckResult, Labels, MetricType, Status
from tests import certs
from tests.mysql_server import MariaDB, mariadb, mariadb_server  # noqa: F401 (fixture)
from tests.support import free_port, require_program, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::pymysql.Warning")

MakeCheck = Callable[..., MySQLCheck]


@pytest.fixture
async def make_check(mariadb: MariaDB) -> AsyncIterator[MakeCheck]:  # noqa: F811
    """Build mysql checks against the module's server; every one is closed afterwards."""
    made: list[MySQLCheck] = []

    def make(server: MariaDB | None = None, **options: Any) -> MySQLCheck:
        server = server or mariadb
        config = {
            "name": "db",
            "type": "mysql",
            "dsn": server.dsn(),
            "password": server.password,
            "interval": "30s",
            "timeout": "5s",
            **options,
        }
        check = MySQLCheck(MySQLConfig.model_validate(config))
        made.append(check)
        return check

    yield make
    for check in made:
        await check.aclose()


def plain(result: CheckResult) -> dict[str, float]:
    return {s.name: s.value for s in result.samples if not s.labels}


def labelled(result: CheckResult, name: str) -> dict[Labels, float]:
    return {s.labels: s.value for s in result.samples if s.name == name}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"dsn": "mysql://u:pw@h:3306/"}, "no password", id="a password in the DSN"),
        pytest.param({"dsn": "postgresql://u@h/"}, "mysql://", id="another scheme"),
        pytest.param({"dsn": "mysql://h:3306/"}, "no user", id="no user"),
        pytest.param({"dsn": "mysql://u@h:99999/"}, "port", id="a port out of range"),
        pytest.param({"pool_size": 0}, "pool_size", id="an empty pool"),
        pytest.param({"ca_file": "/x.pem"}, "needs tls", id="a CA without tls"),
        pytest.param(
            {"connections": {"warning": 90, "critical": 80}}, "above critical", id="limits reversed"
        ),
        pytest.param(
            {
                "queries": {
                    "bad-name": {"query": "SELECT 1", "metrics": [{"a": {"usage": "GAUGE"}}]}
                }
            },
            "namespace",
            id="a bad namespace",
        ),
    ],
)
def test_bad_configs_are_refused(options: dict[str, Any], error: str) -> None:
    config = {"name": "db", "type": "mysql", "dsn": "mysql://u@h:3306/", **options}
    with pytest.raises(ValidationError, match=error):
        MySQLConfig.model_validate(config)


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    config = {"name": "db", "type": "mysql", "dsn": "mysql://u@h/", "password_file": str(secret)}
    assert MySQLConfig.model_validate(config).secret == "x"
    with pytest.raises(ValidationError, match="not both"):
        MySQLConfig.model_validate({**config, "password": "y"})


# --- parsing, as mysqld_exporter's parseStatus and collectors ----------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param("42", 42.0, id="an integer"),
        pytest.param("0.25", 0.25, id="a decimal"),
        pytest.param("ON", 1.0, id="ON is 1"),
        pytest.param("OFF", 0.0, id="OFF is 0"),
        pytest.param("Yes", 1.0, id="Yes is 1"),
        pytest.param("Connecting", 0.0, id="Connecting is 0"),
        pytest.param("Primary", 1.0, id="Primary is 1"),
        pytest.param("Non-Primary", 0.0, id="non-Primary in any case is 0"),
        pytest.param("on", 1.0, id="on in any case is 1"),
        pytest.param("DISABLED", 0.0, id="DISABLED (have_ssl) is 0"),
        pytest.param("mysql-bin.000003", None, id="a binlog file name is skipped"),
        pytest.param("", None, id="an empty value is skipped"),
        pytest.param(None, None, id="NULL is skipped"),
        pytest.param("1_000", None, id="Go rejects underscores"),
        pytest.param(" 1", None, id="Go rejects spaces"),
        pytest.param("1e400", None, id="out of range is skipped"),
        pytest.param(18446744073709551615, 1.8446744073709552e19, id="an unsigned bigint"),
    ],
)
def test_parse_status_as_the_exporter(raw: object, value: float | None) -> None:
    assert parse_status(raw) == value


def test_global_status_grouping() -> None:
    rows = [
        ("Com_select", "5"),
        ("Handler_read_key", "7"),
        ("Connection_errors_accept", "0"),
        ("Innodb_buffer_pool_pages_data", "73"),
        ("Innodb_buffer_pool_pages_dirty", "2"),
        ("Innodb_buffer_pool_pages_total", "1014"),
        ("Innodb_buffer_pool_pages_flushed", "130"),
        ("Innodb_rows_read", "9"),
        ("Performance_schema_users_lost", "0"),
        ("Threads_connected", "3"),
        ("Ssl_cipher", ""),
        ("wsrep_local_state_uuid", "abc-uuid"),
        ("wsrep_evs_repl_latency", "0.1/0.2/0.3/0.01/5"),
    ]
    samples, metadata = global_status_samples(rows)
    got = {(s.name, tuple(s.labels.items())): s.value for s in samples}
    assert got == {
        ("mysql_global_status_commands_total", (("command", "select"),)): 5,
        ("mysql_global_status_handlers_total", (("handler", "read_key"),)): 7,
        ("mysql_global_status_connection_errors_total", (("error", "accept"),)): 0,
        ("mysql_global_status_buffer_pool_pages", (("state", "data"),)): 73,
        ("mysql_global_status_buffer_pool_dirty_pages", ()): 2,
        ("mysql_global_status_buffer_pool_page_changes_total", (("operation", "flushed"),)): 130,
        ("mysql_global_status_innodb_row_ops_total", (("operation", "read"),)): 9,
        (
            "mysql_global_status_performance_schema_lost_total",
            (("instrumentation", "users_lost"),),
        ): 0,
        ("mysql_global_status_threads_connected", ()): 3,
        (
            "mysql_galera_status_info",
            (
                ("wsrep_cluster_state_uuid", ""),
                ("wsrep_local_state_uuid", "abc-uuid"),
                ("wsrep_provider_version", ""),
            ),
        ): 1,
        ("mysql_galera_evs_repl_latency_min_seconds", ()): 0.1,
        ("mysql_galera_evs_repl_latency_avg_seconds", ()): 0.2,
        ("mysql_galera_evs_repl_latency_max_seconds", ()): 0.3,
        ("mysql_galera_evs_repl_latency_stdev", ()): 0.01,
        ("mysql_galera_evs_repl_latency_sample_size", ()): 5,
    }
    assert metadata["mysql_global_status_threads_connected"].type is MetricType.UNKNOWN
    assert metadata["mysql_global_status_commands_total"].type is MetricType.COUNTER


def test_global_variables_info_families() -> None:
    rows = [
        ("max_connections", "151"),
        ("read_only", "OFF"),
        ("version", "10.11.19-MariaDB"),
        ("version_comment", "Debian 12"),
        ("tx_isolation", "REPEATABLE-READ"),
        ("wsrep_provider_options", "base_dir = /x; gcache.size = 128M; gcache.dir = /y;"),
    ]
    samples, _ = global_variables_samples(rows)
    got = {(s.name, tuple(s.labels.items())): s.value for s in samples}
    assert got == {
        ("mysql_global_variables_max_connections", ()): 151,
        ("mysql_global_variables_read_only", ()): 0,
        (
            "mysql_version_info",
            (
                ("innodb_version", ""),
                ("version", "10.11.19-MariaDB"),
                ("version_comment", "Debian 12"),
            ),
        ): 1,
        ("mysql_transaction_isolation", (("level", "REPEATABLE-READ"),)): 1,
        ("mysql_galera_gcache_size_bytes", ()): 128 * 2**20,
    }


def test_slave_status_columns_and_labels() -> None:
    columns = [
        "Connection_name",
        "Master_Host",
        "Slave_IO_Running",
        "Slave_SQL_Running",
        "Seconds_Behind_Master",
        "Master_Log_File",
        "Exec_Master_Log_Pos",
    ]
    rows = [("", "10.0.0.1", "Yes", "No", None, "mysql-bin.000002", 345)]
    samples, metadata = slave_status_samples(columns, rows)
    labels = Labels.of(master_host="10.0.0.1", master_uuid="", channel_name="", connection_name="")
    assert {s.name: s.value for s in samples} == {
        "mysql_slave_status_slave_io_running": 1,
        "mysql_slave_status_slave_sql_running": 0,
        "mysql_slave_status_exec_master_log_pos": 345,
    }
    assert {s.labels for s in samples} == {labels}
    assert all(m.help == "Generic metric from SHOW SLAVE STATUS." for m in metadata.values())


# --- against a real MariaDB --------------------------------------------------------------------


async def test_families_from_a_real_mariadb(make_check: MakeCheck) -> None:
    result = await make_check().run()
    assert result.status is Status.OK, result.message
    assert "MariaDB" in result.message and "connections" in result.message
    values = plain(result)
    assert values["mysql_up"] == 1
    assert values["mysql_global_variables_max_connections"] == 151
    assert values["mysql_global_status_uptime"] >= 0  # seconds; 0 in its first second
    assert values["mysql_global_status_threads_connected"] >= 1
    commands = labelled(result, "mysql_global_status_commands_total")
    assert commands[Labels.of(command="show_status")] >= 1
    assert Labels.of(state="free") in labelled(result, "mysql_global_status_buffer_pool_pages")
    (version,) = labelled(result, "mysql_version_info")
    assert "MariaDB" in version["version"]
    # A source with no replica configured: no slave status families.
    assert not any(s.name.startswith("mysql_slave_status_") for s in result.samples)
    assert result.metadata["mysql_up"].help == "Whether the MySQL server is up."


def _scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    # The parser names a counter family without its _total; key it by its series' name.
    return {
        family.name + ("_total" if family.type == "counter" else ""): family
        for family in text_string_to_metric_families(text)
    }


def _answering(port: int) -> bool:
    try:
        return "mysql_up" in _scrape(port)
    except OSError:
        return False


@contextmanager
def run_exporter(server: MariaDB) -> Iterator[int]:
    """The real prometheus-mysqld-exporter against ``server``, as its own user; its port."""
    program = require_program("prometheus-mysqld-exporter", "prometheus-mysqld-exporter")
    server.add_user("exporter", "exp-pw")
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": server.exporter_dsn("exporter", "exp-pw")}
    process = subprocess.Popen(
        [program, f"--web.listen-address=127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answering(port), timeout=20)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.admin("DROP USER 'exporter'@'127.0.0.1'")


@pytest.fixture
def exporter(mariadb: MariaDB) -> Iterator[int]:  # noqa: F811
    """The exporter against the module's server."""
    with run_exporter(mariadb) as port:
        yield port


# Families of the exporter's other default collectors and of itself, which this check does not
# produce.
_NOT_OURS = ("mysql_exporter_", "mysqld_exporter_", "mysql_info_schema_")


# The exporter opens a connection per scrape and closes it after; the check keeps its pool's
# open. Each reading counts its reader, so these differ by that one connection.
_OWN_CONNECTION = {"mysql_global_status_threads_connected", "mysql_global_status_threads_cached"}


def _exporter_type(our_type: MetricType) -> str:
    return "unknown" if our_type is MetricType.UNKNOWN else our_type.value


async def test_side_by_side_with_mysqld_exporter(make_check: MakeCheck, exporter: int) -> None:
    check = make_check()
    await check.run()  # the pool's connection is open, as it stays between runs
    before = _scrape(exporter)
    result = await check.run()
    after = _scrape(exporter)
    assert result.status is Status.OK, result.message

    ours: dict[str, dict[Labels, float]] = {}
    for sample in result.samples:
        ours.setdefault(sample.name, {})[sample.labels] = sample.value
    theirs = {
        name for name in before if name.startswith("mysql") and not name.startswith(_NOT_OURS)
    }
    assert theirs - set(ours) == set(), "families the exporter has and the check lacks"
    assert set(ours) - theirs == set(), "families the check has and the exporter lacks"

    mismatches: list[str] = []
    for name, series in ours.items():
        meta = result.metadata[name]
        family_a, family_b = before[name], after[name]
        if family_a.type != _exporter_type(meta.type):
            mismatches.append(f"{name}: type {meta.type} vs {family_a.type}")
        if family_a.documentation != meta.help:
            mismatches.append(f"{name}: help {meta.help!r} vs {family_a.documentation!r}")
        a = {Labels(s.labels): s.value for s in family_a.samples}
        b = {Labels(s.labels): s.value for s in family_b.samples}
        if {tuple(k) for k in series} != {tuple(k) for k in a}:
            mismatches.append(f"{name}: label sets {set(series)} vs {set(a)}")
            continue
        for labels, value in series.items():
            low, high = min(a[labels], b[labels]), max(a[labels], b[labels])
            if name.startswith("mysql_global_variables_") or name.endswith("_info"):
                ok = value == a[labels] == b[labels]
            elif meta.type is MetricType.COUNTER:
                ok = low <= value <= high
            else:  # gauges and the untyped status values: within 5 % of the two readings
                slack = 1 if name in _OWN_CONNECTION else 0
                ok = low - 0.05 * abs(low) - slack <= value <= high + 0.05 * abs(high) + slack
            if not ok:
                mismatches.append(f"{name}{dict(labels)}: {value} not within {low}..{high}")
    assert mismatches == []
    assert len(ours) > 500  # the families compared, series aside


async def test_wrong_password_is_critical_and_redacted(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    wrong = "Wr0ng-Pa55word"
    result = await make_check(password=wrong).run()
    assert result.status is Status.CRITICAL
    assert "Access denied" in result.message and "1045" in result.message
    assert wrong not in result.message
    assert plain(result) == {"mysql_up": 0}


async def test_server_stopped_mid_run_then_recovery(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    check = make_check(timeout="3s")
    assert (await check.run()).status is Status.OK
    mariadb.stop()
    try:
        down = await check.run()
        assert down.status is Status.CRITICAL
        assert plain(down) == {"mysql_up": 0}
        assert "Can't connect" in down.message or "Lost connection" in down.message, down.message
        assert mariadb.password not in down.message
    finally:
        mariadb.start()
    up = await check.run()
    assert up.status is Status.OK, up.message
    assert plain(up)["mysql_up"] == 1


async def test_a_query_past_the_timeout_is_killed_on_the_server(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    sleepy = {"query": "SELECT SLEEP(30) AS slept", "metrics": [{"slept": {"usage": "GAUGE"}}]}
    check = make_check(timeout="5s", query_timeout="1s", queries={"sleepy": sleepy})
    backstop = "SHOW GLOBAL STATUS LIKE 'Max_statement_time_exceeded'"
    backstop_before = mariadb.admin(backstop)
    started = time.monotonic()
    result = await check.run()
    elapsed = time.monotonic() - started
    assert result.status is Status.CRITICAL
    assert "query sleepy ran past 1s and was killed" in result.message
    assert 0.9 <= elapsed < 2.5
    assert plain(result)["mysql_up"] == 1  # the rest was collected

    def sleeping() -> list[Any]:
        return [row for row in mariadb.processlist() if row[3] and "SLEEP" in row[3]]

    await asyncio.to_thread(wait_for, lambda: not sleeping(), 2.0)
    # Killed by the check's KILL QUERY, not by the session's server-side backstop.
    assert mariadb.admin(backstop) == backstop_before
    # No connection beyond the pool's one is left behind, and the next run works.
    await asyncio.to_thread(wait_for, lambda: len(mariadb.processlist()) <= 1, 2.0)
    again = await check.run()
    assert "ran past" in again.message and plain(again)["mysql_up"] == 1


async def test_writes_are_refused_in_custom_queries(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    mariadb.admin("CREATE DATABASE IF NOT EXISTS scratch")
    mariadb.admin("CREATE TABLE IF NOT EXISTS scratch.t (n INT)")
    mariadb.admin(f"GRANT ALL ON scratch.* TO '{mariadb.user}'@'127.0.0.1'")
    writer = {
        "query": "INSERT INTO scratch.t VALUES (1) RETURNING n",
        "metrics": [{"n": {"usage": "GAUGE"}}],
    }
    reader = {
        "query": "SELECT COUNT(*) AS rows_, 'x' AS kind FROM scratch.t",
        "metrics": [{"rows_": {"usage": "GAUGE"}}, {"kind": {"usage": "LABEL"}}],
    }
    result = await make_check(queries={"writer": writer, "reader": reader}).run()
    assert result.status is Status.WARNING
    assert "query writer" in result.message and "READ ONLY" in result.message
    assert mariadb.admin("SELECT COUNT(*) FROM scratch.t") == [(0,)]
    assert labelled(result, "reader_rows_") == {Labels.of(kind="x"): 0}


async def test_the_pool_bounds_connections(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    nap = {"query": "SELECT SLEEP(0.4) AS z", "metrics": [{"z": {"usage": "GAUGE"}}]}
    queries = {f"nap{i}": nap for i in range(4)}
    for pool_size in (1, 2):
        check = make_check(pool_size=pool_size, queries=queries)
        counts: list[int] = []
        run = asyncio.create_task(check.run())
        while not run.done():
            counts.append(len(await asyncio.to_thread(mariadb.processlist)))
            await asyncio.sleep(0.05)
        result = run.result()
        assert result.status is Status.OK, result.message
        assert max(counts) == pool_size, counts
        await check.aclose()
        await asyncio.to_thread(wait_for, lambda: mariadb.processlist() == [], 2.0)


async def test_connection_thresholds(
    make_check: MakeCheck,
    mariadb: MariaDB,  # noqa: F811
) -> None:
    mariadb.admin("SET GLOBAL max_connections = 20")
    held: list[Any] = []
    try:
        limits = {"warning": 20, "critical": 40}
        check = make_check(connections=limits)
        ok = await check.run()
        # Threads_connected counts the check's own connection: 1-2 of 20.
        assert ok.status is Status.OK, ok.message
        held = [mariadb.connect() for _ in range(4)]  # 5-6 of 20: over 20 %
        warning = await check.run()
        assert warning.status is Status.WARNING, warning.message
        assert "of max_connections in use" in warning.message
        held += [mariadb.connect() for _ in range(4)]  # 9-10 of 20: over 40 %
        critical = await check.run()
        assert critical.status is Status.CRITICAL, critical.message
    finally:
        for conn in held:
            conn.close()
        mariadb.admin("SET GLOBAL max_connections = 151")


async def test_aclose_closes_the_pool(make_check: MakeCheck, mariadb: MariaDB) -> None:  # noqa: F811
    check = make_check(pool_size=2)
    await check.run()
    assert mariadb.processlist() != []
    await check.aclose()
    await asyncio.to_thread(wait_for, lambda: mariadb.processlist() == [], 2.0)
    with pytest.raises(RuntimeError, match="closed"):
        await check.run()


# --- replication: a second mariadbd as a replica of the module's server ------------------------


@pytest.fixture
def replica(mariadb: MariaDB, tmp_path: Path) -> Iterator[MariaDB]:  # noqa: F811
    """A second MariaDB replicating from the module's server (GTID), both threads running."""
    mariadb.admin("CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-pw'")
    mariadb.admin("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    with mariadb_server(tmp_path / "replica", ["--server-id=2", "--read-only"]) as server:
        # Start from the source's current position: its users exist on the replica already.
        ((position,),) = mariadb.admin("SELECT @@GLOBAL.gtid_binlog_pos")
        server.admin("SET GLOBAL gtid_slave_pos = %s", (position,))
        server.admin(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='repl',"
            " MASTER_PASSWORD='repl-pw', MASTER_USE_GTID=slave_pos",
            (mariadb.port,),
        )
        server.admin("START SLAVE")

        def running() -> bool:
            rows = server.admin("SHOW SLAVE STATUS")
            return bool(rows) and rows[0][10:12] == ("Yes", "Yes")

        wait_for(running, timeout=20)
        yield server


async def test_replica_slave_status_side_by_side_and_lag(
    make_check: MakeCheck, replica: MariaDB
) -> None:
    with run_exporter(replica) as port:
        check = make_check(replica, replication_lag={"warning": 30, "critical": 300})
        before = _scrape(port)
        result = await check.run()
        after = _scrape(port)
    assert result.status is Status.OK, result.message
    assert "replication 0s behind" in result.message

    ours: dict[str, dict[Labels, float]] = {}
    for sample in result.samples:
        if sample.name.startswith("mysql_slave_status_"):
            ours.setdefault(sample.name, {})[sample.labels] = sample.value
    theirs = {name for name in before if name.startswith("mysql_slave_status_")}
    assert set(ours) == theirs and len(theirs) > 20
    labels = Labels.of(master_host="127.0.0.1", master_uuid="", channel_name="", connection_name="")
    assert ours["mysql_slave_status_slave_io_running"] == {labels: 1.0}
    assert ours["mysql_slave_status_seconds_behind_master"] == {labels: 0.0}
    for name, series in ours.items():
        assert before[name].type == "unknown" and before[name].documentation == (
            result.metadata[name].help
        )
        a = {Labels(s.labels): s.value for s in before[name].samples}
        b = {Labels(s.labels): s.value for s in after[name].samples}
        assert set(series) == set(a) == {labels}
        assert min(a[labels], b[labels]) <= series[labels] <= max(a[labels], b[labels]), name

    # The SQL thread stopped: no lag to compare, so CRITICAL; a threshold below the lag warns.
    replica.admin("STOP SLAVE SQL_THREAD")
    stopped = await check.run()
    assert stopped.status is Status.CRITICAL
    assert "replication is not running (IO Yes, SQL No)" in stopped.message
    replica.admin("START SLAVE SQL_THREAD")
    wait_for(lambda: replica.admin("SHOW SLAVE STATUS")[0][11] == "Yes", timeout=10)
    strict = make_check(replica, replication_lag={"warning": -1})
    warned = await strict.run()
    assert warned.status is Status.WARNING, warned.message
    assert "replication is 0s behind the source" in warned.message


# --- TLS ---------------------------------------------------------------------------------------


async def test_tls_verifies_the_server(make_check: MakeCheck, tmp_path: Path) -> None:
    pki = certs.make_pki(tmp_path)
    tls_args = [
        f"--ssl-cert={pki.valid.cert_file}",
        f"--ssl-key={pki.valid.key_file}",
        f"--ssl-ca={pki.ca_file}",
    ]
    with mariadb_server(tmp_path / "tls", tls_args) as server:
        server.admin(f"ALTER USER '{server.user}'@'127.0.0.1' REQUIRE SSL")
        trusted = await make_check(server, tls=True, ca_file=str(pki.ca_file)).run()
        assert trusted.status is Status.OK, trusted.message
        untrusted = await make_check(server, tls=True, ca_file=str(pki.other_ca_file)).run()
        assert untrusted.status is Status.CRITICAL
        assert "certificate verify failed" in untrusted.message, untrusted.message
        unverified = make_check(server, tls=True, ca_file=str(pki.other_ca_file), verify=False)
        assert (await unverified.run()).status is Status.OK
        plain_text = await make_check(server).run()  # the user requires TLS
        assert plain_text.status is Status.CRITICAL and "Access denied" in plain_text.message
