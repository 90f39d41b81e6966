"""The redis check against real redis-server processes on 127.0.0.1, side by side with the real
prometheus-redis-exporter (1.45.0, Debian), and on its fault paths."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from checks.redis import REDIS_FAMILIES, RedisCheck, RedisConfig
from monitor.model import CheckResult, Labels, Status
from tests.redis_server import RedisServer, redis_server_factory
from tests.support import free_port, require_program, wait_for, wait_for_port

__all__ = ["redis_server_factory"]  # the fixture, imported to be found

PASSWORD = "s3cret-Default-pw"
ACL_PASSWORD = "s3cret-Acl-pw"

ISSUE_FAMILIES = (
    "redis_up",
    "redis_uptime_in_seconds",
    "redis_connected_clients",
    "redis_blocked_clients",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_evicted_keys_total",
    "redis_expired_keys_total",
    "redis_connected_slaves",
    "redis_db_keys",
    "redis_db_keys_expiring",
)

StartServer = Callable[..., RedisServer]


def make_check(server: RedisServer | None = None, **options: Any) -> RedisCheck:
    settings: dict[str, Any] = {"name": "r", "type": "redis", "interval": "10s", "timeout": "2s"}
    if server is not None:
        settings["url"] = server.url
        if server.acl_password:
            settings.update(username=server.acl_user, password=server.acl_password)
        elif server.password:
            settings["password"] = server.password
    settings.update(options)
    return RedisCheck(RedisConfig.model_validate(settings))


def by_series(result: CheckResult) -> dict[tuple[str, Labels], float]:
    return {(s.name, s.labels): s.value for s in result.samples}


def value(result: CheckResult, name: str, **labels: str) -> float:
    return by_series(result)[(name, Labels(labels))]


@dataclass
class Family:
    type: str
    help: str
    samples: dict[Labels, float]


def scrape(port: int) -> dict[str, Family]:
    """The exporter's families by sample name (counters keep ``_total`` as exposed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    families: dict[str, Family] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            entry = families.setdefault(sample.name, Family(family.type, family.documentation, {}))
            entry.samples[Labels(sample.labels)] = sample.value
    return families


@dataclass
class Exporter:
    port: int

    def scrape(self) -> dict[str, Family]:
        return scrape(self.port)


@pytest.fixture
def exporter_factory() -> Iterator[Callable[..., Exporter]]:
    """Start prometheus-redis-exporter against a server; stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        server: RedisServer, user: str | None = None, password: str | None = None
    ) -> Exporter:
        binary = require_program("prometheus-redis-exporter", "prometheus-redis-exporter")
        port = free_port()
        argv = [
            binary,
            f"--redis.addr=redis://127.0.0.1:{server.port}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        if user is not None:
            argv += [f"--redis.user={user}", f"--redis.password={password}"]
        elif server.acl_password:
            argv += [f"--redis.user={server.acl_user}", f"--redis.password={server.acl_password}"]
        elif server.password:
            argv.append(f"--redis.password={server.password}")
        processes.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        wait_for_port(port, timeout=15)
        return Exporter(port)

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed(server: RedisServer) -> None:
    """Keys in db0 and db3 (some expiring), hits, misses and an expired key."""
    cli = server.command
    for i in range(20):
        cli("SET", f"k{i}", "x" * 100)
    cli("SET", "gone", "1", "PX", "1")
    for i in range(5):
        cli("-n", "3", "SET", f"t{i}", "v", "EX", "3600")
    cli("-n", "3", "SET", "forever", "v")
    cli("GET", "k1")
    cli("GET", "missing")
    time.sleep(0.05)
    cli("GET", "gone")  # expires it on access


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "error"),
    [
        pytest.param("http://h:1/0", "redis:// or rediss://", id="a non-redis scheme is refused"),
        pytest.param("redis://u:pw@h:1/0", "no user or password", id="a password in the url"),
        pytest.param("redis://h:1/x", "database number", id="a path that is not a db number"),
        pytest.param("redis://h:99999/0", "no valid port", id="a port out of range"),
        pytest.param("redis://h:1/0?db=1", "no query", id="a query string"),
    ],
)
def test_bad_urls_are_config_errors(url: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        RedisConfig.model_validate({"name": "r", "type": "redis", "url": url})


def test_password_and_password_file_exclude_each_other(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    with pytest.raises(ValidationError, match="not both"):
        RedisConfig.model_validate(
            {
                "name": "r",
                "type": "redis",
                "url": "redis://h:1/0",
                "password": "a",
                "password_file": str(secret),
            }
        )


# --- against the real exporter -------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param("none", id="an open server"),
        pytest.param("acl", id="a server with requirepass read by an ACL user"),
    ],
)
async def test_same_families_and_values_as_redis_exporter(
    redis_server_factory: StartServer,
    exporter_factory: Callable[..., Exporter],
    auth: str,
) -> None:
    options = {"password": PASSWORD, "acl_password": ACL_PASSWORD} if auth == "acl" else {}
    server = redis_server_factory(**options)
    seed(server)
    exporter = exporter_factory(server)
    async with make_check(server) as check:
        await check.run()  # the pool's connection is open for all three readings
        before = await asyncio.to_thread(exporter.scrape)
        result = await check.run()
        after = await asyncio.to_thread(exporter.scrape)
    assert result.status is Status.OK, result.message
    ours = by_series(result)
    names = {name for name, _ in ours}
    assert set(ISSUE_FAMILIES) <= names
    assert "redis_db_avg_ttl_seconds" in names

    for name in sorted(names):
        assert name in after, f"{name} is not the exporter's"
        theirs = after[name]
        meta = result.metadata[name]
        assert meta.type.value == theirs.type, name
        assert meta.help == theirs.help, name
        our_labels = {tuple(sorted(labels)) for n, labels in ours if n == name}
        assert our_labels == {tuple(sorted(labels)) for labels in theirs.samples}, name

    # every database, the empty ones too, with the exporter's keys and expiring keys
    for name in ("redis_db_keys", "redis_db_keys_expiring", "redis_db_avg_ttl_seconds"):
        per_db = {labels: v for (n, labels), v in ours.items() if n == name}
        assert set(per_db) == set(after[name].samples), name
        if name != "redis_db_avg_ttl_seconds":
            assert per_db == after[name].samples, name
    assert value(result, "redis_db_keys", db="db0") == 20
    assert value(result, "redis_db_keys_expiring", db="db3") == 5
    assert len(after["redis_db_keys"].samples) == 16

    for (name, labels), mine in ours.items():
        low, high = before[name].samples[labels], after[name].samples[labels]
        if name.endswith("_total"):
            assert low <= mine <= high, (name, low, mine, high)
        elif name in ("redis_memory_used_bytes", "redis_memory_used_peak_bytes"):
            assert abs(mine - high) <= 0.05 * high, (name, mine, high)
        elif name in (
            "redis_memory_max_bytes",
            "redis_config_maxmemory",
            "redis_config_maxclients",
            "redis_db_keys",
            "redis_db_keys_expiring",
            "redis_blocked_clients",
            "redis_connected_slaves",
            "redis_process_id",
            "redis_instance_info",
            "redis_pubsub_channels",
            "redis_pubsub_patterns",
            "redis_aof_enabled",
            "redis_loading_dump_file",
            "redis_rdb_last_save_timestamp_seconds",
        ):
            assert mine == high, (name, mine, high)
        elif name in ("redis_uptime_in_seconds", "redis_start_time_seconds"):
            assert abs(mine - high) <= 3, (name, mine, high)
        elif name == "redis_connected_clients":
            assert abs(mine - high) <= 2, (name, mine, high)
    assert ours[("redis_keyspace_hits_total", Labels())] >= 1
    assert ours[("redis_keyspace_misses_total", Labels())] >= 1
    assert ours[("redis_expired_keys_total", Labels())] >= 1


async def test_a_user_without_config_get_sees_what_the_exporter_sees(
    redis_server_factory: StartServer,
    exporter_factory: Callable[..., Exporter],
) -> None:
    server = redis_server_factory(settings=("databases 4",))
    server.command("ACL", "SETUSER", "noconf", "on", ">noconf-pw", "-@all", "+info", "+client")
    server.command("SET", "k", "v")
    exporter = exporter_factory(server, "noconf", "noconf-pw")
    async with make_check(server, username="noconf", password="noconf-pw") as check:
        result = await check.run()
    theirs = await asyncio.to_thread(exporter.scrape)
    assert result.status is Status.OK, result.message
    ours = by_series(result)
    assert "redis_config_maxmemory" not in {name for name, _ in ours}
    assert "redis_config_maxmemory" not in theirs
    db_keys = {labels: v for (name, labels), v in ours.items() if name == "redis_db_keys"}
    assert db_keys == theirs["redis_db_keys"].samples
    assert len(db_keys) == 16  # databases is unknown to this user: both assume 16
    assert db_keys[Labels.of(db="db0")] == 1


async def test_replica_families_and_lag_threshold_match_the_exporter(
    redis_server_factory: StartServer,
    exporter_factory: Callable[..., Exporter],
) -> None:
    primary = redis_server_factory()
    replica = redis_server_factory(settings=(f"replicaof 127.0.0.1 {primary.port}",))
    wait_for(lambda: "master_link_status:up" in replica.command("INFO", "replication"), 20)
    exporters = {"primary": exporter_factory(primary), "replica": exporter_factory(replica)}
    lag = {"warning": 30, "critical": 60}
    async with make_check(primary) as on_primary, make_check(replica, replication_lag=lag) as chk:
        results = {"primary": await on_primary.run(), "replica": await chk.run()}
        scraped = {role: await asyncio.to_thread(e.scrape) for role, e in exporters.items()}
        assert results["replica"].status is Status.OK, results["replica"].message
        for role, result in results.items():
            for name, labels in by_series(result):
                assert name in scraped[role], (role, name)
                assert set(labels) == set(next(iter(scraped[role][name].samples))), (role, name)
        master = {"master_host": "127.0.0.1", "master_port": str(primary.port)}
        assert value(results["replica"], "redis_master_link_up", **master) == 1
        assert value(results["primary"], "redis_connected_slaves") == 1
        assert any(
            n == "redis_connected_slave_lag_seconds" for n, _ in by_series(results["primary"])
        )

        primary.stop()
        wait_for(lambda: "master_link_status:down" in replica.command("INFO", "replication"), 20)
        down = await chk.run()
    assert down.status is Status.CRITICAL
    assert f"127.0.0.1:{primary.port} down" in down.message
    assert value(down, "redis_master_link_up", **master) == 0


# --- fault paths ----------------------------------------------------------------------------


async def test_wrong_password_is_critical_and_redacted(redis_server_factory: StartServer) -> None:
    server = redis_server_factory(password=PASSWORD, acl_password=ACL_PASSWORD)
    wrong = "Wr0ng-Pass-Value"
    cases = [
        {"password": wrong},
        {"username": "monitor", "password": wrong},
        {},  # no password at all
    ]
    for options in cases:
        async with make_check(None, url=server.url, **options) as check:
            result = await check.run()
        assert result.status is Status.CRITICAL, options
        assert by_series(result) == {("redis_up", Labels()): 0.0}
        assert wrong not in result.message
        assert PASSWORD not in result.message
        assert f"127.0.0.1:{server.port}" in result.message
        reason = "Authentication required" if not options else "invalid username-password pair"
        assert f"AuthenticationError: {reason}" in result.message, result.message
    async with make_check(server) as check:  # the ACL user with its password
        assert (await check.run()).status is Status.OK


async def test_password_file_is_read(redis_server_factory: StartServer, tmp_path: Path) -> None:
    server = redis_server_factory(password=PASSWORD)
    secret = tmp_path / "redis.pw"
    secret.write_text(PASSWORD + "\n")
    async with make_check(None, url=server.url, password_file=str(secret)) as check:
        result = await check.run()
    assert result.status is Status.OK, result.message


async def test_server_stopped_mid_run_then_back(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()
    async with make_check(server) as check:
        assert value(await check.run(), "redis_up") == 1
        server.stop()
        down = await check.run()
        assert down.status is Status.CRITICAL
        assert by_series(down) == {("redis_up", Labels()): 0.0}
        assert "Connect" in down.message or "connect" in down.message
        server.start()  # same port
        back = await check.run()
        assert back.status is Status.OK, back.message
        assert value(back, "redis_up") == 1
        # a restart between two runs: the pooled connection is stale, the run still succeeds
        server.stop()
        server.start()
        again = await check.run()
    assert again.status is Status.OK, again.message


def _asleep(server: RedisServer) -> bool:
    """True when the server leaves a PING unanswered for 0.2 s (it is in DEBUG SLEEP)."""
    with socket.create_connection((server.host, server.port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        sock.settimeout(0.2)
        try:
            return not sock.recv(16)
        except TimeoutError:
            return True


def _clients_named(server: RedisServer, name: str) -> int:
    return sum(f" name={name} " in line for line in server.command("CLIENT", "LIST").splitlines())


async def test_a_hung_server_is_cut_at_the_timeout(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()
    async with make_check(server, timeout="1s") as check:
        assert (await check.run()).status is Status.OK
        sleeper = threading.Thread(target=server.command, args=("DEBUG", "SLEEP", "5"))
        sleeper.start()
        try:
            await asyncio.to_thread(wait_for, lambda: _asleep(server), 10)
            started = time.monotonic()
            result = await check.run()
            took = time.monotonic() - started
        finally:
            await asyncio.to_thread(sleeper.join)
        assert result.status is Status.CRITICAL
        assert "no answer within 0.9s" in result.message
        assert by_series(result) == {("redis_up", Labels()): 0.0}
        assert took < 2.5  # the server answers only 4.7 s after the run started
        # the timed-out connection was dropped, not left queued on the server
        wait_for(lambda: _clients_named(server, "monitord") == 0, 5)
        assert (await check.run()).status is Status.OK


async def test_a_listener_that_never_answers_is_cut_at_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # never answers; returns when the client hangs up

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with make_check(None, url=f"redis://127.0.0.1:{port}/0", timeout="1s") as check:
            started = time.monotonic()
            result = await check.run()
            assert time.monotonic() - started < 2.5
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
    assert result.status is Status.CRITICAL
    assert "no answer within 0.9s" in result.message
    assert accepted, "the check never connected"


async def test_pool_never_holds_more_than_pool_size(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()

    def info() -> int:
        stats = server.command("INFO", "stats")
        return int(stats.split("total_connections_received:")[1].split()[0])

    async with make_check(server, pool_size=2) as check:
        before = info()  # each redis-cli call is one connection, counted below
        results = await asyncio.gather(*(check.run() for _ in range(12)))
        opened = info() - before - 1
        assert all(r.status is Status.OK for r in results)
        assert opened <= 2
        assert 1 <= _clients_named(server, "monitord") <= 2
        for _ in range(5):
            await check.run()
        assert _clients_named(server, "monitord") <= 2
    assert _clients_named(server, "monitord") == 0  # aclose closed the pool
    async with make_check(server, client_name="other") as single:
        await asyncio.gather(*(single.run() for _ in range(6)))
        assert _clients_named(server, "other") == 1


async def test_memory_threshold_on_maxmemory(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()
    used = int(server.command("INFO", "memory").split("used_memory:")[1].split()[0])
    maxmemory = used * 2
    server.command("CONFIG", "SET", "maxmemory", str(maxmemory))
    cases = [
        ({"warning": 30, "critical": 90}, Status.WARNING),
        ({"warning": 30, "critical": 40}, Status.CRITICAL),
        ({"warning": 80}, Status.OK),
    ]
    for limits, expected in cases:
        async with make_check(server, memory=limits) as check:
            result = await check.run()
        assert result.status is expected, (limits, result.message)
        assert value(result, "redis_memory_max_bytes") == maxmemory
        assert value(result, "redis_config_maxmemory") == maxmemory
        if expected is not Status.OK:
            assert "memory at 5" in result.message or "memory at 4" in result.message
    server.command("CONFIG", "SET", "maxmemory", "0")  # no limit: no percentage, no verdict
    async with make_check(server, memory={"critical": 1}) as check:
        result = await check.run()
    assert result.status is Status.OK
    assert value(result, "redis_memory_max_bytes") == 0


async def test_connections_threshold_on_maxclients(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()
    server.command("CONFIG", "SET", "maxclients", "10")
    async with make_check(server, connections={"warning": 5, "critical": 50}) as check:
        result = await check.run()
    assert result.status is Status.WARNING
    assert "connections at 10.0% of maxclients" in result.message
    assert value(result, "redis_config_maxclients") == 10


async def test_tls_with_ca_file_and_insecure_skip_verify(
    redis_server_factory: StartServer, tmp_path: Path
) -> None:
    from tests import certs

    (tmp_path / "pki").mkdir()
    pki = certs.make_pki(tmp_path / "pki")
    tls_port = free_port()
    server = redis_server_factory(
        settings=(
            f"tls-port {tls_port}",
            f"tls-cert-file {pki.valid.cert_file}",
            f"tls-key-file {pki.valid.key_file}",
            f"tls-ca-cert-file {pki.ca_file}",
            "tls-auth-clients no",
        )
    )
    wait_for_port(tls_port)
    url = f"rediss://127.0.0.1:{tls_port}/0"
    async with make_check(None, url=url, tls_config={"ca_file": str(pki.ca_file)}) as check:
        ok = await check.run()
    assert ok.status is Status.OK, ok.message
    assert value(ok, "redis_up") == 1
    async with make_check(None, url=url) as check:  # the system CAs do not know this one
        refused = await check.run()
    assert refused.status is Status.CRITICAL
    assert "certificate" in refused.message.lower()
    async with make_check(None, url=url, tls_config={"insecure_skip_verify": True}) as check:
        assert (await check.run()).status is Status.OK
    assert server.port != tls_port


def test_every_family_has_the_exporters_metadata() -> None:
    for name in ISSUE_FAMILIES:
        assert name in REDIS_FAMILIES
    for name, meta in REDIS_FAMILIES.items():
        assert name.startswith("redis_")
        assert (meta.type.value == "counter") == name.endswith("_total"), name


async def test_a_closed_check_refuses_to_run(redis_server_factory: StartServer) -> None:
    server = redis_server_factory()
    check = make_check(server)
    await check.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await check.run()
