"""The postgres check against a real PostgreSQL server started in a temporary directory,
side by side with Debian's prometheus-postgres-exporter 0.11.1 on the same server."""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from pydantic import ValidationError

from checks.postgres import POSTGRES_FAMILIES, PostgresCheck, PostgresConfig
from monitor.config import ConfigError, build_config_model, load_config
from monitor.model import CheckResult, Labels, MetricType, Status
from tests import certs
from tests.postgres_server import (
    PostgresServer,
    exporter_queries,
    postgres,
    postgres_server,
    postgres_standby,
)
from tests.support import free_port, require_program, wait_for, wait_for_port

__all__ = ["postgres"]  # the fixture, imported for pytest

NEWER_EXPORTER_NAMES = {"pg_replication_is_replica", "pg_replication_lag_seconds"}
"""The issue's names, which postgres_exporter has built in from 0.13 on, not in 0.11.1."""


def make_check(server: PostgresServer, **options: Any) -> PostgresCheck:
    config: dict[str, Any] = {
        "name": "pg",
        "type": "postgres",
        "dsn": f"postgresql://{server.user}@{server.host}:{server.port}/{server.database}",
        "password": server.password,
        "sslmode": "disable",
        "interval": "10s",
        "timeout": "5s",
    }
    config.update(options)
    if "host" in options:
        del config["dsn"]
    return PostgresCheck(PostgresConfig.model_validate(config))


async def run_once(server: PostgresServer, **options: Any) -> CheckResult:
    async with make_check(server, **options) as check:
        return await check.run()


def by_name(result: CheckResult) -> dict[str, list[tuple[Labels, float]]]:
    families: dict[str, list[tuple[Labels, float]]] = {}
    for sample in result.samples:
        families.setdefault(sample.name, []).append((sample.labels, sample.value))
    return families


def app_connections(server: PostgresServer, application_name: str) -> int:
    rows = server.query(
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'"
    )
    return int(rows[0][0])


def running_sleeps(server: PostgresServer, marker: str) -> int:
    """Backends running a statement containing ``marker`` (not this query itself)."""
    rows = server.query(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    )
    return int(rows[0][0])


# --- the text exposition format, parsed as written (prometheus_client renames counters) ---

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One scrape of the exporter: each family's type, help and samples."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.helps: dict[str, str] = {}
        self.samples: dict[str, dict[Labels, float]] = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, help_text = line[7:].partition(" ")
                self.helps[name] = help_text.replace("\\n", "\n").replace("\\\\", "\\")
            elif line.startswith("# TYPE "):
                name, _, kind = line[7:].partition(" ")
                self.types[name] = kind
            elif line and not line.startswith("#"):
                match = _SAMPLE.match(line)
                assert match, line
                labels = Labels(
                    (k, v.replace('\\"', '"').replace("\\\\", "\\"))
                    for k, v in _LABEL.findall(match["labels"] or "")
                )
                self.samples.setdefault(match["name"], {})[labels] = float(match["value"])


@pytest.fixture(scope="module")
def exporter(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's prometheus-postgres-exporter on the module's server, with the example
    queries.yaml's pg_postmaster and pg_replication; yields its /metrics URL."""
    binary = require_program("prometheus-postgres-exporter", "prometheus-postgres-exporter")
    queries_file = tmp_path_factory.mktemp("exporter") / "queries.yaml"
    queries_file.write_text(yaml.safe_dump(exporter_queries()))
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": postgres.dsn()}
    process = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--extend.query-path={queries_file}",
            "--log.level=warn",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=20)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=20) as response:
        return Scrape(response.read().decode())


# --- configuration ---


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param(
            {"dsn": "postgresql://u:pw@h:5432/db"}, "password", id="a DSN with a password"
        ),
        pytest.param({"dsn": "mysql://u@h/db"}, "postgresql://", id="a DSN of another scheme"),
        pytest.param(
            {"dsn": "postgresql://u@h/db?sslmode=require"}, "no parameters", id="DSN parameters"
        ),
        pytest.param({"dsn": "postgresql://u@h/", "host": "h"}, "not both", id="DSN and host"),
        pytest.param({}, "set dsn or host", id="no target"),
        pytest.param(
            {"host": "h", "password": "a", "password_file": "/etc/hostname"},
            "not both",
            id="password and password_file",
        ),
        pytest.param(
            {"host": "h", "sslmode": "disable", "ca_file": "/etc/hostname"},
            "require or stricter",
            id="a CA without TLS",
        ),
        pytest.param(
            {
                "host": "h",
                "queries": {
                    "bad-name": {"query": "SELECT 1", "metrics": [{"v": {"usage": "GAUGE"}}]}
                },
            },
            "not a valid metric name",
            id="a bad query namespace",
        ),
    ],
)
def test_bad_configs_are_rejected(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PostgresConfig.model_validate({"name": "pg", "type": "postgres", **options})


def test_the_dsn_and_the_fields_name_the_same_target(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    by_dsn = PostgresConfig.model_validate(
        {"name": "a", "type": "postgres", "dsn": "postgresql://mon@db.example:6543/app"}
    )
    by_fields = PostgresConfig.model_validate(
        {
            "name": "b",
            "type": "postgres",
            "host": "db.example",
            "port": 6543,
            "user": "mon",
            "database": "app",
            "password_file": str(secret),
        }
    )
    assert by_dsn.target() == by_fields.target() == ("db.example", 6543, "mon", "app")
    assert by_fields.secret == "s3cret"
    assert "s3cret" not in repr(by_fields)


def test_a_config_file_with_a_postgres_check(tmp_path: Path) -> None:
    (tmp_path / "pg.pw").write_text("from-a-file\n")
    config = tmp_path / "m.yaml"
    config.write_text(
        "checks:\n"
        "  - name: db\n"
        "    type: postgres\n"
        "    dsn: postgresql://monitor@db.example:5432/app\n"
        "    password_file: pg.pw\n"
        "    sslmode: require\n"
        "    connections: {warning: 80, critical: 95}\n"
        "    queries:\n"
        "      pg_replication:\n"
        "        query: SELECT 0 AS lag\n"
        "        metrics:\n"
        "          - lag:\n"
        "              usage: GAUGE\n"
        "              description: Replication lag behind master in seconds\n"
        "  - name: bad\n"
        "    type: postgres\n"
        "    dsn: postgresql://monitor:pw@db.example/app\n"
    )
    model = build_config_model({"postgres": PostgresConfig})
    with pytest.raises(ConfigError) as info:
        load_config(config, model=model)
    (issue,) = info.value.issues
    assert re.match(rf"{re.escape(str(config))}:\d+: checks\[1\]", str(issue)), str(issue)
    assert "password" in issue.message and ":pw@" not in issue.message
    config.write_text(config.read_text().split("  - name: bad")[0])
    (check,) = load_config(config, model=model).checks
    assert isinstance(check, PostgresConfig)
    assert check.secret == "from-a-file"
    assert check.connections is not None and check.connections.critical == 95
    assert list(check.queries) == ["pg_replication"]


# --- against the real server ---


async def test_every_family_is_there_with_the_exporters_labels(postgres: PostgresServer) -> None:
    result = await run_once(postgres)
    assert result.status is Status.OK, result.message
    assert f"{postgres.host}:{postgres.port}: PostgreSQL 1" in result.message
    assert "primary" in result.message and "/20 connections" in result.message
    families = by_name(result)
    assert set(families) == set(POSTGRES_FAMILIES)
    server = f"127.0.0.1:{postgres.port}"
    expected_labels = {
        "pg_up": set(),
        "pg_stat_activity_count": {"datname", "state", "server"},
        "pg_stat_activity_max_tx_duration": {"datname", "state", "server"},
        "pg_database_size_bytes": {"datname", "server"},
        "pg_locks_count": {"datname", "mode", "server"},
    }
    for name, series in families.items():
        want = expected_labels.get(
            name, {"datid", "datname", "server"} if "stat_database" in name else {"server"}
        )
        for labels, _ in series:
            assert set(labels) == want, name
            if want:
                assert labels["server"] == server
        assert result.metadata[name] == POSTGRES_FAMILIES[name]
    assert families["pg_up"] == [(Labels(), 1.0)]
    assert all(not math.isnan(s.value) for s in result.samples)
    assert families["pg_settings_max_connections"][0][1] == 20
    assert families["pg_replication_is_replica"][0][1] == 0
    assert families["pg_replication_lag_seconds"][0][1] == 0
    start = families["pg_postmaster_start_time_seconds"][0][1]
    assert time.time() - 600 < start < time.time()
    states = {labels["state"] for labels, _ in families["pg_stat_activity_count"]}
    assert states == {
        "active",
        "idle",
        "idle in transaction",
        "idle in transaction (aborted)",
        "fastpath function call",
        "disabled",
    }
    active = {
        labels["datname"]: value
        for labels, value in families["pg_stat_activity_count"]
        if labels["state"] == "active"
    }
    assert active["postgres"] >= 1  # this check's own query
    datnames = {labels["datname"] for labels, _ in families["pg_database_size_bytes"]}
    assert datnames == {"postgres", "template0", "template1"}
    modes = {labels["mode"] for labels, _ in families["pg_locks_count"]}
    assert len(modes) == 9 and "accesssharelock" in modes
    datids = {labels["datid"] for labels, _ in families["pg_stat_database_xact_commit"]}
    assert "0" in datids  # the shared-objects row, as the exporter has it


def _tolerance(name: str, labels: Labels) -> float:
    """How far a gauge may differ between two readings a moment apart (absolute)."""
    if name in ("pg_stat_database_numbackends", "pg_stat_activity_count"):
        return 2.0  # each collector sees the other's connection and its own
    if name == "pg_stat_activity_max_tx_duration":
        return 2.0  # seconds; the collectors' own short transactions
    if name == "pg_locks_count":
        # the locks the collectors' own reads take on the catalogs they read
        return 30.0 if labels["mode"] == "accesssharelock" else 0.0
    return 0.0


async def test_side_by_side_with_postgres_exporter(postgres: PostgresServer, exporter: str) -> None:
    # a custom query copied from the example queries.yaml (without the exporter-only
    # "master" key) gives 0.11.1's pg_replication_lag too
    replication = exporter_queries()["pg_replication"]
    custom = {"pg_replication": {k: v for k, v in replication.items() if k != "master"}}
    postgres.psql("CREATE TABLE IF NOT EXISTS churn (v int); INSERT INTO churn VALUES (1);")
    async with make_check(postgres, queries=custom) as check:
        await check.run()  # the pool's connection is open, as it would be in a daemon
        before = scrape(exporter)
        result = await check.run()
        after = scrape(exporter)
    assert result.status is Status.OK, result.message
    ours = by_name(result)
    assert set(ours) - set(after.samples) == NEWER_EXPORTER_NAMES
    compared = 0
    for name, series in ours.items():
        if name in NEWER_EXPORTER_NAMES:
            continue
        meta = result.metadata[name]
        assert after.types[name] == meta.type.value, name
        assert after.helps[name] == meta.help, name
        assert {labels for labels, _ in series} == set(after.samples[name]), name
        for labels, value in series:
            low, high = before.samples[name][labels], after.samples[name][labels]
            if meta.type is MetricType.COUNTER:
                assert low <= value <= high, (name, labels, low, value, high)
            elif name == "pg_database_size_bytes":
                assert value == pytest.approx(high, rel=0.05), (name, labels)
            elif name == "pg_postmaster_start_time_seconds":
                assert value == high  # whole seconds, as 0.11.1 converts a timestamp
            else:
                slack = _tolerance(name, labels)
                assert min(low, high) - slack <= value <= max(low, high) + slack, (
                    name,
                    labels,
                    low,
                    value,
                    high,
                )
            compared += 1
    assert compared > 100
    assert ours["pg_replication_lag"] == [(Labels.of(server=f"127.0.0.1:{postgres.port}"), 0.0)]


async def test_a_wrong_password_is_critical_and_redacted(postgres: PostgresServer) -> None:
    secret = "Wr0ng-Secret-Pw"
    result = await run_once(postgres, password=secret)
    assert result.status is Status.CRITICAL
    assert "password authentication failed" in result.message
    assert "cannot connect" in result.message
    assert secret not in result.message and secret not in repr(result)
    assert by_name(result) == {"pg_up": [(Labels(), 0.0)]}


async def test_nothing_listening_is_critical(postgres: PostgresServer) -> None:
    result = await run_once(postgres, host="127.0.0.1", port=free_port(), user="monitor")
    assert result.status is Status.CRITICAL
    assert "cannot connect" in result.message
    assert by_name(result) == {"pg_up": [(Labels(), 0.0)]}


async def test_a_server_stopped_mid_run_is_critical_then_recovers() -> None:
    with postgres_server() as server:
        async with make_check(server, timeout="3s") as check:
            first = await check.run()
            assert first.status is Status.OK, first.message
            server.stop()
            down = await check.run()
            assert down.status is Status.CRITICAL
            assert by_name(down)["pg_up"] == [(Labels(), 0.0)]
            assert f"127.0.0.1:{server.port}" in down.message
            server.start()
            back = await check.run()
            assert back.status is Status.OK, back.message
            assert by_name(back)["pg_up"] == [(Labels(), 1.0)]


@pytest.mark.parametrize(
    ("options", "cut_within", "marker"),
    [
        pytest.param({"query_timeout": "1s"}, 2.0, "pg_sleep(31)", id="at the query timeout"),
        pytest.param(
            {"timeout": "2s"}, 2.5, "pg_sleep(32)", id="at the check timeout when no query timeout"
        ),
    ],
)
async def test_a_query_sleeping_past_the_timeout_is_cancelled_on_the_server(
    postgres: PostgresServer, options: dict[str, Any], cut_within: float, marker: str
) -> None:
    queries = {
        "slow": {
            "query": f"SELECT 1 AS v FROM {marker}",
            "metrics": [{"v": {"usage": "GAUGE"}}],
        }
    }
    options = {"timeout": "3s", **options}
    async with make_check(postgres, queries=queries, **options) as check:
        started = time.monotonic()
        result = await check.run()
        elapsed = time.monotonic() - started
        assert elapsed < cut_within
        assert result.status is Status.CRITICAL
        assert "cut at the" in result.message
        names = by_name(result)
        assert names["pg_up"] == [(Labels(), 1.0)]
        assert "slow_v" not in names
        assert "pg_stat_database_xact_commit" in names  # the built-in families still came
        # the pool's connection is still open, and the server runs no such query any more
        wait_for(lambda: running_sleeps(postgres, marker) == 0, timeout=2.0)
        again = await check.run()
        assert "cut at the" in again.message


@pytest.mark.parametrize("pool_size", [1, 3], ids=["the default pool of one", "a pool of three"])
async def test_the_pool_never_holds_more_than_pool_size_connections(
    postgres: PostgresServer, pool_size: int
) -> None:
    app = f"monitord-pool-{pool_size}"
    queries = {
        f"q{i}": {
            "query": "SELECT 1 AS v FROM pg_sleep(0.25)",
            "metrics": [{"v": {"usage": "GAUGE"}}],
        }
        for i in range(4)
    }
    options: dict[str, Any] = {"application_name": app, "queries": queries}
    if pool_size != 1:
        options["pool_size"] = pool_size
    admin = await asyncpg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.superuser,
        password=postgres.superuser_password,
        database="postgres",
        ssl=False,
    )
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(
                await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
                )
            )
            await asyncio.sleep(0.02)

    try:
        async with make_check(postgres, **options) as check:
            watcher = asyncio.create_task(watch())
            try:
                for _ in range(2):
                    result = await check.run()
                    assert result.status is Status.OK, result.message
                    assert len(by_name(result)["q0_v"]) == 1
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        assert max(seen) == pool_size  # used to the full, never beyond
        wait_for(lambda: app_connections(postgres, app) == 0, timeout=5)  # aclose closed them
    finally:
        await admin.close()


@pytest.fixture
async def held_connections(postgres: PostgresServer) -> AsyncIterator[list[asyncpg.Connection]]:
    connections: list[asyncpg.Connection] = []
    try:
        yield connections
    finally:
        await asyncio.gather(*(c.close() for c in connections))


@pytest.mark.parametrize(
    ("held", "status"),
    [
        pytest.param(0, Status.OK, id="few connections are OK"),
        pytest.param(4, Status.WARNING, id="a quarter of max_connections is a WARNING"),
        pytest.param(10, Status.CRITICAL, id="over half is CRITICAL"),
    ],
)
async def test_connection_thresholds(
    postgres: PostgresServer,
    held_connections: list[asyncpg.Connection],
    held: int,
    status: Status,
) -> None:
    others = int(
        postgres.query(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        )[0][0]
    )
    assert others <= 2, postgres.query(  # at most the exporter's two, nothing left over
        "SELECT application_name, state, query FROM pg_stat_activity "
        "WHERE backend_type = 'client backend'"
    )
    for _ in range(held):
        held_connections.append(
            await asyncpg.connect(
                host=postgres.host,
                port=postgres.port,
                user=postgres.superuser,
                password=postgres.superuser_password,
                database="postgres",
                ssl=False,
            )
        )
    # used: the others, the held ones and the check's own, of max_connections 20
    result = await run_once(
        postgres, connections={"warning": 20, "critical": 50}, replication_lag={"warning": 5}
    )
    assert result.status is status, result.message
    used = others + held + 1
    percent = 100 * used / 20
    assert f"{used}/20 connections ({percent:.0f}%)" in result.message
    if status is not Status.OK:
        bound = 50 if status is Status.CRITICAL else 20
        assert f"connections {percent:.0f}% above {status.name.lower()} {bound}" in result.message


async def test_custom_queries_map_labels_gauges_and_counters(postgres: PostgresServer) -> None:
    queries = {
        "pg_db": {
            "query": "SELECT datname, numbackends, xact_commit, 'x' AS junk FROM pg_stat_database"
            " WHERE datname IS NOT NULL",
            "metrics": [
                {"datname": {"usage": "LABEL", "description": "database"}},
                {"numbackends": {"usage": "GAUGE", "description": "Backends"}},
                {"xact_commit": {"usage": "COUNTER", "description": "Commits"}},
                {"junk": {"usage": "DISCARD"}},
            ],
        }
    }
    result = await run_once(postgres, queries=queries)
    assert result.status is Status.OK, result.message
    families = by_name(result)
    server = f"127.0.0.1:{postgres.port}"
    backends = {labels: value for labels, value in families["pg_db_numbackends"]}
    assert set(backends) == {
        Labels.of(datname=d, server=server) for d in ("postgres", "template0", "template1")
    }
    assert backends[Labels.of(datname="postgres", server=server)] >= 1
    assert len(families["pg_db_xact_commit"]) == 3
    assert "pg_db_junk" not in families
    assert result.metadata["pg_db_numbackends"].type is MetricType.GAUGE
    assert result.metadata["pg_db_xact_commit"].type is MetricType.COUNTER
    assert result.metadata["pg_db_xact_commit"].help == "Commits"


async def test_custom_queries_run_read_only(postgres: PostgresServer) -> None:
    postgres.psql(
        "CREATE TABLE IF NOT EXISTS written (v int); GRANT INSERT, SELECT ON written TO monitor;"
    )
    queries = {
        "write": {
            "query": "INSERT INTO written VALUES (1) RETURNING v",
            "metrics": [{"v": {"usage": "GAUGE"}}],
        }
    }
    result = await run_once(postgres, queries=queries)
    assert result.status is Status.WARNING
    assert "query write failed" in result.message and "read-only transaction" in result.message
    assert postgres.query("SELECT count(*) FROM written") == [["0"]]
    assert by_name(result)["pg_up"] == [(Labels(), 1.0)]


async def test_a_replica_reports_itself_and_its_lag(postgres: PostgresServer) -> None:
    postgres.psql("CREATE TABLE IF NOT EXISTS replicated (v int)")
    with postgres_standby(postgres) as standby:
        # one transaction replayed, so the replica has a last replay time
        postgres.psql("INSERT INTO replicated VALUES (0)")
        wait_for(lambda: standby.query("SELECT count(*) FROM replicated") == [["1"]], timeout=10)
        options: dict[str, Any] = {"replication_lag": {"warning": 0.5, "critical": 3600}}
        async with make_check(standby, **options) as check:
            caught_up = await check.run()
            assert caught_up.status is Status.OK, caught_up.message
            families = by_name(caught_up)
            server = Labels.of(server=f"127.0.0.1:{standby.port}")
            assert families["pg_replication_is_replica"] == [(server, 1.0)]
            assert families["pg_replication_lag_seconds"] == [(server, 0.0)]
            assert "replica" in caught_up.message
            # replay paused: what the primary writes is received, not replayed, and ages
            standby.psql("SELECT pg_wal_replay_pause()")
            try:
                postgres.psql("INSERT INTO replicated VALUES (1)")
                await asyncio.sleep(1.2)
                postgres.psql("INSERT INTO replicated VALUES (2)")
                wait_for(
                    lambda: (
                        standby.query("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
                        == [["t"]]
                    ),
                    timeout=10,
                )
                behind = await check.run()
            finally:
                standby.psql("SELECT pg_wal_replay_resume()")
            assert behind.status is Status.WARNING, behind.message
            assert "replication lag" in behind.message and "above warning 0.5" in behind.message
            lag = by_name(behind)["pg_replication_lag_seconds"][0][1]
            assert 0.5 < lag < 60


@pytest.fixture(scope="module")
def pki(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> certs.PKI:
    """The test CA; the module's server presents its 127.0.0.1 leaf (TLS turned on by reload)."""
    pki = certs.make_pki(tmp_path_factory.mktemp("pki"))
    for source, target in ((pki.valid.cert_file, "server.crt"), (pki.valid.key_file, "server.key")):
        path = postgres.datadir / target
        shutil.copyfile(source, path)
        path.chmod(0o600)
        stat = postgres.datadir.stat()
        os.chown(path, stat.st_uid, stat.st_gid)
    postgres.psql("ALTER SYSTEM SET ssl = on")
    postgres.psql("SELECT pg_reload_conf()")
    wait_for(lambda: postgres.query("SHOW ssl") == [["on"]], timeout=10)
    return pki


@pytest.mark.parametrize(
    ("sslmode", "ca", "status"),
    [
        pytest.param("require", None, Status.OK, id="require encrypts without verifying"),
        pytest.param("verify-full", "ca_file", Status.OK, id="verify-full with the right CA"),
        pytest.param(
            "verify-full", "other_ca_file", Status.CRITICAL, id="verify-full with another CA"
        ),
    ],
)
async def test_tls(
    postgres: PostgresServer, pki: certs.PKI, sslmode: str, ca: str | None, status: Status
) -> None:
    app = f"monitord-tls-{sslmode}-{ca}"
    options: dict[str, Any] = {"sslmode": sslmode, "application_name": app}
    if ca is not None:
        options["ca_file"] = str(getattr(pki, ca))
    async with make_check(postgres, **options) as check:
        result = await check.run()
        assert result.status is status, result.message
        if status is Status.OK:
            rows = postgres.query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                f"WHERE a.application_name = '{app}'"
            )
            assert rows == [["t"]]
        else:
            assert "certificate verify failed" in result.message
            assert by_name(result)["pg_up"] == [(Labels(), 0.0)]
