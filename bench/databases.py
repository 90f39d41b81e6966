"""Time and CPU per collection of monitord's database collectors beside their exporters.

Run: ``.venv/bin/python bench/databases.py`` (about 30 s on a quiet host, a minute on a busy
one; ``--quick`` for 30 collections each, ``--collections N``, ``--only postgres,mysql,redis``).

For each database, in the same run and against the same server:

- the server: a throwaway PostgreSQL 15, MariaDB 10.11 or Redis 7.0, started by the tests'
  fixtures (``tests/postgres_server.py``, ``tests/mysql_server.py``, ``tests/redis_server.py``)
  in a temporary directory on a free port of 127.0.0.1; Redis gets 20 keys in db 0 and 6 in
  db 3 (5 expiring), as the redis test seeds it;
- monitord's collector, in this process: the check class (``checks.postgres.PostgresCheck``,
  ``checks.mysql.MySQLCheck``, ``checks.redis.RedisCheck``) built from its config model with
  the defaults (pool of 1, ``timeout: 5s``), ``await check.run()``; the postgres check gets the
  ``pg_replication`` custom query of the exporter's example ``queries.yaml``, as in its
  side-by-side test;
- the exporter: Debian's prometheus-postgres-exporter 0.11.1 (``DATA_SOURCE_NAME`` the
  monitoring user's DSN, ``--extend.query-path`` with the example ``pg_replication`` and
  ``pg_postmaster`` queries), prometheus-mysqld-exporter 0.14.0 (its own user with the grants
  its README gives, default collectors) or prometheus-redis-exporter 1.45.0 (defaults),
  started exactly as the collectors' side-by-side tests start them. The targets are judged
  against this one;
- a reference only, where the exporter has flags for it: a second instance of the same
  exporter with the collectors of families monitord does not have turned off
  (postgres_exporter ``--disable-settings-metrics --no-collector.bgwriter``, which still reads
  its built-in default metrics map: ``pg_stat_archiver``, ``pg_stat_database_conflicts``, the
  newer pg_stat_database columns, and ``pg_stat_replication`` and ``pg_replication_slots``,
  empty here;
  mysqld_exporter ``--no-collect.info_schema.innodb_cmp``, ``...innodb_cmpmem``,
  ``...query_response_time``). redis_exporter 1.45 has no such flags.

One unmeasured collection opens the collector's pool and one unmeasured scrape of each
exporter opens the HTTP keep-alive connection and its database connection; then N rounds
(200 by default, 30 with ``--quick``), each one collection followed by one scrape of each
exporter, so drift on the shared host hits every side alike. What is measured:

- wall time per collection: ``time.perf_counter`` around ``await check.run()``, and around
  ``GET /metrics`` on the exporter from sending the request to reading the last byte of the
  body (``Accept: text/plain;version=0.0.4``, no gzip); median, p90, p99;
- CPU per collection: for the collector, ``time.process_time()`` deltas around each
  ``await check.run()``, summed and divided by N -- all threads of this process, so it
  includes the asyncio event loop's overhead and Python's garbage collector (honest: a
  daemon pays them too); for the exporter, utime+stime of every thread of its process
  from ``/proc/PID/stat`` at the start and the end of the N rounds, divided by N -- its Go
  runtime and garbage collector included, and whatever it does while idle between scrapes
  (next to nothing: the three exporters only work when scraped);
- the database server's CPU per collection, for each side: utime+stime from /proc around
  each collection or scrape, summed, divided by N (postgres: the postmaster, its live
  children and its reaped children's cutime+cstime; mariadbd and redis-server: their
  process). It is read at clock-tick resolution (10 ms) around operations of about a
  millisecond, so each reading is 0 or 1 tick, unbiased only over many rounds, and the
  server's background work (autovacuum, checkpointer, redis's cron) is in it too;
- samples per collection: the collector's ``len(result.samples)`` and the number of sample
  lines in the exporter's body, with the families (by sample name) only one side has, so
  the amounts can be compared.

Not measured: rendering the collector's samples on monitord's own ``/metrics`` (see
``bench/scrape.py``), nor the CPU of this script's HTTP client. The collector runs without
HTTP in between and the exporter with it, which favours the collector by the HTTP round
trip on loopback (a fraction of a millisecond for bodies of this size).

Targets, per database: the collector's median wall time and its CPU per collection no
higher than the exporter's. The host's CPU steal and load average during each database's
rounds are printed: on a shared 2-core machine the figures move with the neighbours. Every
process started is stopped, also on Ctrl-C or SIGTERM. Exits 0 whether or not the targets
are met.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from support import free_port, running, wait_for_port  # noqa: E402 - bench/ heads sys.path

from checks.base import Check  # noqa: E402
from checks.mysql import MySQLCheck, MySQLConfig  # noqa: E402
from checks.postgres import PostgresCheck, PostgresConfig  # noqa: E402
from checks.redis import RedisCheck, RedisConfig  # noqa: E402
from monitor.model import CheckResult, Status  # noqa: E402

POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"
MYSQLD_EXPORTER = "/usr/bin/prometheus-mysqld-exporter"
REDIS_EXPORTER = "/usr/bin/prometheus-redis-exporter"
ACCEPT = "text/plain;version=0.0.4"
TICKS = os.sysconf("SC_CLK_TCK")
# Flags that turn off an exporter's collectors of families monitord does not collect, for the
# "trimmed" reference (the families built into its default metrics map stay).
POSTGRES_TRIM = ["--disable-settings-metrics", "--no-collector.bgwriter"]
MYSQLD_TRIM = [
    "--no-collect.info_schema.innodb_cmp",
    "--no-collect.info_schema.innodb_cmpmem",
    "--no-collect.info_schema.query_response_time",
]
# Families every Go exporter has of itself (runtime, process, HTTP handler).
RUNTIME_PREFIXES = ("go_", "process_", "promhttp_")


# --- processes and /proc ----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process, in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def tree_ticks(pid: int) -> int:
    """CPU ticks of a server that forks a process per connection (the postmaster): its own,
    its reaped children's (cutime + cstime) and its live children's."""
    fields = _stat_fields(pid)
    total = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            child = _stat_fields(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
        if child[1] == str(pid):  # ppid
            total += sum(int(f) for f in child[11:15])
    return total


def steal_ticks() -> int:
    """Clock ticks stolen by the hypervisor from all CPUs so far (0 where unknown)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


# --- the exporter's side ----------------------------------------------------------------------


class Scraper:
    """GET /metrics over one keep-alive connection, as Prometheus does."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self) -> bytes:
        """One scrape's body; raises unless the answer is 200."""
        self._conn.request("GET", "/metrics", headers={"Accept": ACCEPT})
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        return body

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def sample_names(body: bytes) -> dict[str, int]:
    """Sample name -> number of samples, for the sample lines of an exposition."""
    names: dict[str, int] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            names[name] = names.get(name, 0) + 1
    return names


def exposed_value(body: bytes, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` in an exposition, if there is one."""
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- the databases ----------------------------------------------------------------------------


@dataclass
class Exporter:
    """One running exporter."""

    label: str
    proc: subprocess.Popen[bytes]
    port: int


@dataclass
class Database:
    """One server, its exporters (as the tests start it, then trimmed where it can be) and
    how to build its collector."""

    label: str
    up_name: str  # ``pg_up`` ... : every side must say 1
    exporters: list[Exporter]
    make_check: Callable[[], Check[Any]]
    server_ticks: Callable[[], int]


def start_exporters(
    stack: ExitStack,
    tmp: Path,
    label: str,
    argv: list[str],
    trim: list[str],
    env: dict[str, str] | None = None,
) -> list[Exporter]:
    """The exporter as the side-by-side test starts it and, when ``trim`` has flags, a second
    one with them (collectors of families monitord does not have turned off)."""
    exporters: list[Exporter] = []
    variants = [(label, argv)]
    if trim:
        variants.append((f"{label.split()[0]}, trimmed", [*argv, *trim]))
    for name, args in variants:
        port = free_port()
        log = tmp / f"{name.split()[0].strip(',')}-{len(exporters)}.log"
        proc = stack.enter_context(
            running([*args, f"--web.listen-address=127.0.0.1:{port}"], env=env, log=log)
        )
        exporters.append(Exporter(name, proc, port))
    return exporters


def start_postgres(stack: ExitStack, tmp: Path) -> Database:
    """PostgreSQL and postgres_exporter, as tests/test_check_postgres.py starts them."""
    from tests.postgres_server import exporter_queries, postgres_server

    server = stack.enter_context(postgres_server())
    server.psql("CREATE TABLE IF NOT EXISTS churn (v int); INSERT INTO churn VALUES (1);")
    queries_file = tmp / "queries.yaml"
    queries_file.write_text(yaml.safe_dump(exporter_queries()))
    exporters = start_exporters(
        stack,
        tmp,
        "postgres_exporter 0.11.1",
        [POSTGRES_EXPORTER, f"--extend.query-path={queries_file}", "--log.level=warn"],
        POSTGRES_TRIM,
        env={**os.environ, "DATA_SOURCE_NAME": server.dsn()},
    )
    replication = exporter_queries()["pg_replication"]
    custom = {"pg_replication": {k: v for k, v in replication.items() if k != "master"}}
    config = {
        "name": "pg",
        "type": "postgres",
        "dsn": f"postgresql://{server.user}@{server.host}:{server.port}/{server.database}",
        "password": server.password,
        "sslmode": "disable",
        "interval": "10s",
        "timeout": "5s",
        "queries": custom,
    }
    assert server._process is not None
    postmaster = server._process.pid  # setpriv execs postgres: the same pid
    return Database(
        "PostgreSQL 15",
        "pg_up",
        exporters,
        lambda: PostgresCheck(PostgresConfig.model_validate(config)),
        lambda: tree_ticks(postmaster),
    )


def start_mysql(stack: ExitStack, tmp: Path) -> Database:
    """MariaDB and mysqld_exporter, as tests/test_check_mysql.py starts them."""
    from tests.mysql_server import mariadb_server

    server = stack.enter_context(mariadb_server(tmp / "mariadb"))
    server.add_user("exporter", "exp-pw")
    exporters = start_exporters(
        stack,
        tmp,
        "mysqld_exporter 0.14.0",
        [MYSQLD_EXPORTER],
        MYSQLD_TRIM,
        env={**os.environ, "DATA_SOURCE_NAME": server.exporter_dsn("exporter", "exp-pw")},
    )
    config = {
        "name": "db",
        "type": "mysql",
        "dsn": server.dsn(),
        "password": server.password,
        "interval": "30s",
        "timeout": "5s",
    }
    assert server.process is not None
    mariadbd = server.process.pid
    return Database(
        "MariaDB 10.11",
        "mysql_up",
        exporters,
        lambda: MySQLCheck(MySQLConfig.model_validate(config)),
        lambda: cpu_ticks(mariadbd),
    )


def start_redis(stack: ExitStack, tmp: Path) -> Database:
    """Redis and redis_exporter, as tests/test_check_redis.py starts them, seeded as there."""
    from tests.redis_server import redis_server

    server = stack.enter_context(redis_server(tmp / "redis"))
    cli = server.command
    for i in range(20):
        cli("SET", f"k{i}", "x" * 100)
    for i in range(5):
        cli("-n", "3", "SET", f"t{i}", "v", "EX", "3600")
    cli("-n", "3", "SET", "forever", "v")
    cli("GET", "k1")
    cli("GET", "missing")
    exporters = start_exporters(
        stack,
        tmp,
        "redis_exporter 1.45.0",
        [REDIS_EXPORTER, f"--redis.addr=redis://127.0.0.1:{server.port}"],
        [],  # 1.45 has no flag that turns off the families monitord lacks
    )
    config = {
        "name": "r",
        "type": "redis",
        "url": server.url,
        "interval": "10s",
        "timeout": "2s",
    }
    assert server.process is not None
    redis_pid = server.process.pid
    return Database(
        "Redis 7.0",
        "redis_up",
        exporters,
        lambda: RedisCheck(RedisConfig.model_validate(config)),
        lambda: cpu_ticks(redis_pid),
    )


STARTERS: dict[str, Callable[[ExitStack, Path], Database]] = {
    "postgres": start_postgres,
    "mysql": start_mysql,
    "redis": start_redis,
}
EXPORTERS = {"postgres": POSTGRES_EXPORTER, "mysql": MYSQLD_EXPORTER, "redis": REDIS_EXPORTER}


# --- the measurement --------------------------------------------------------------------------


@dataclass
class Side:
    """What one side (collector or exporter) measured."""

    label: str
    times: list[float] = field(default_factory=list)  # seconds
    cpu: float = 0.0  # seconds of CPU, all rounds
    server_ticks: int = 0  # the database server's, all rounds
    samples: int = 0
    names: dict[str, int] = field(default_factory=dict)  # sample name -> samples

    def quantile(self, q: int) -> float:
        """The ``q``-th percentile wall time (inclusive method), in seconds."""
        if q == 50:
            return statistics.median(self.times)
        return statistics.quantiles(self.times, n=100, method="inclusive")[q - 1]


@dataclass
class Outcome:
    """One database's figures."""

    database: Database
    collector: Side
    exporters: list[Side]
    rounds: int
    seconds: float = 0.0
    steal: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


def check_ok(result: CheckResult, up_name: str) -> None:
    """Raise unless the collection succeeded: the comparison needs both sides up."""
    up = [s.value for s in result.samples if s.name == up_name and not s.labels]
    if result.status is Status.CRITICAL or up != [1.0]:
        raise RuntimeError(f"the collector failed: {result.status} {result.message}")


async def measure(db: Database, rounds: int) -> Outcome:
    """Warm every side up, then ``rounds`` rounds of one collection and one scrape of each
    exporter."""
    scrapers: list[Scraper] = []
    collector = Side("monitord collector")
    sides = [Side(e.label) for e in db.exporters]
    check = db.make_check()
    try:
        check_ok(await check.run(), db.up_name)  # opens the pool
        for exporter in db.exporters:
            wait_for_port(exporter.port, exporter.proc)
            scrapers.append(Scraper(exporter.port))
            deadline = time.monotonic() + 30
            while exposed_value(scrapers[-1].get(), db.up_name) != 1.0:  # opens its connection
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{exporter.label} does not report {db.up_name} 1")
                await asyncio.sleep(0.2)
        stolen, started = steal_ticks(), time.perf_counter()
        exporters_start = [cpu_ticks(e.proc.pid) for e in db.exporters]
        result = None
        bodies = [b""] * len(scrapers)
        for _ in range(rounds):
            server = db.server_ticks()
            cpu = time.process_time()
            t0 = time.perf_counter()
            result = await check.run()
            t1 = time.perf_counter()
            collector.cpu += time.process_time() - cpu
            collector.server_ticks += db.server_ticks() - server
            collector.times.append(t1 - t0)
            for i, (scraper, side) in enumerate(zip(scrapers, sides, strict=True)):
                server = db.server_ticks()
                t0 = time.perf_counter()
                bodies[i] = scraper.get()
                t1 = time.perf_counter()
                side.server_ticks += db.server_ticks() - server
                side.times.append(t1 - t0)
        for exporter, side, start in zip(db.exporters, sides, exporters_start, strict=True):
            side.cpu = (cpu_ticks(exporter.proc.pid) - start) / TICKS
        seconds = time.perf_counter() - started
        steal = (steal_ticks() - stolen) / (seconds * TICKS * (os.cpu_count() or 1))
        assert result is not None
        check_ok(result, db.up_name)
        collector.samples = len(result.samples)
        for sample in result.samples:
            collector.names[sample.name] = collector.names.get(sample.name, 0) + 1
        for exporter, side, body in zip(db.exporters, sides, bodies, strict=True):
            if exposed_value(body, db.up_name) != 1.0:
                raise RuntimeError(f"{exporter.label} lost {db.up_name} during the rounds")
            side.names = sample_names(body)
            side.samples = sum(side.names.values())
    finally:
        for scraper in scrapers:
            scraper.close()
        await check.aclose()
    return Outcome(db, collector, sides, rounds, seconds, steal, os.getloadavg())


# --- the report -------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    """How a target's outcome is printed."""
    return "met" if met else "NOT MET"


def ms(seconds: float) -> str:
    """Seconds as milliseconds for printing."""
    return f"{seconds * 1000:.2f}"


def listing(names: dict[str, int], limit: int = 8) -> str:
    """The families grouped by their first two name parts (``pg_settings_*``), biggest
    groups first: ``group_* (families/samples), ...``, with how many more groups there are."""
    groups: dict[str, list[int]] = {}
    for name, count in names.items():
        parts = name.split("_")
        stem = "_".join(parts[:2]) + "_*" if len(parts) > 2 else name
        entry = groups.setdefault(stem, [0, 0])
        entry[0] += 1
        entry[1] += count
    ranked = sorted(groups.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
    shown = ", ".join(f"{stem} ({f}/{s})" for stem, (f, s) in ranked[:limit])
    more = len(ranked) - limit
    return shown + (f", and {more} more groups" if more > 0 else "")


def families(ours: Side, theirs: Side) -> None:
    """Print the families both sides have and those only one has."""
    shared = set(ours.names) & set(theirs.names)
    only_ours = {k: v for k, v in ours.names.items() if k not in shared}
    only_theirs = {k: v for k, v in theirs.names.items() if k not in shared}
    runtime = {k: v for k, v in only_theirs.items() if k.startswith(RUNTIME_PREFIXES)}
    other = {k: v for k, v in only_theirs.items() if k not in runtime}
    print(
        f"{theirs.label}: families both have {len(shared)} ({sum(ours.names[k] for k in shared)}"
        f" samples monitord, {sum(theirs.names[k] for k in shared)} the exporter);"
        f" only the exporter {len(only_theirs)} families, {sum(only_theirs.values())} samples,"
        f" of them Go runtime/process/promhttp {len(runtime)} families,"
        f" {sum(runtime.values())} samples"
    )
    if other:
        print(f"  only the exporter, the others (families/samples): {listing(other)}")
    if only_ours:
        print(f"  only monitord (families/samples): {listing(only_ours)}")


def report(outcome: Outcome) -> None:
    """Print one database's table, the families only one side has, and the verdicts."""
    db, ours, n = outcome.database, outcome.collector, outcome.rounds
    one, five, fifteen = outcome.load
    print(
        f"== {db.label}: {n} rounds in {outcome.seconds:.1f} s, host steal {outcome.steal:.1%},"
        f" load average {one:.2f} {five:.2f} {fifteen:.2f}"
    )
    print(
        f"{'':26} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8} {'CPU/coll':>9}"
        f" {'server CPU':>10} {'samples':>8}"
    )
    for side in (ours, *outcome.exporters):
        print(
            f"{side.label:26} {ms(side.quantile(50)):>6}ms {ms(side.quantile(90)):>6}ms"
            f" {ms(side.quantile(99)):>6}ms {ms(max(side.times)):>6}ms"
            f" {ms(side.cpu / n):>7}ms {ms(side.server_ticks / TICKS / n):>8}ms"
            f" {side.samples:>8}"
        )
    for theirs in outcome.exporters:
        families(ours, theirs)
    for index, theirs in enumerate(outcome.exporters):
        what = "the exporter" if index == 0 else "the trimmed exporter (reference)"
        wall_met = ours.quantile(50) <= theirs.quantile(50)
        cpu_met = ours.cpu <= theirs.cpu
        print(
            f"against {what}: median wall {ms(ours.quantile(50))} ms vs"
            f" {ms(theirs.quantile(50))} ms ({ours.quantile(50) / theirs.quantile(50):.2f}x),"
            f" no slower: {verdict(wall_met)}; CPU per collection {ms(ours.cpu / n)} ms vs"
            f" {ms(theirs.cpu / n)} ms ({ours.cpu / theirs.cpu if theirs.cpu else math.inf:.2f}x),"
            f" no more: {verdict(cpu_met)}"
        )
    print()


def main(argv: Sequence[str] | None = None) -> int:
    """Start each server and exporter in turn, measure, print; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 collections each")
    parser.add_argument("--collections", type=int, help="rounds per database (default 200)")
    parser.add_argument(
        "--only", default="postgres,mysql,redis", help="comma-separated: postgres,mysql,redis"
    )
    args = parser.parse_args(argv)
    rounds = args.collections or (30 if args.quick else 200)
    if rounds < 2:
        parser.error("--collections must be at least 2")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    for name in chosen:
        if name not in STARTERS:
            parser.error(f"unknown database {name!r}: pick from {', '.join(STARTERS)}")
        if not Path(EXPORTERS[name]).exists():
            parser.error(f"{EXPORTERS[name]} is missing (Debian package of that name)")
    # Ctrl-C and SIGTERM both unwind the ExitStack, which stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, {rounds} collections per database"
    )
    print(
        "wall: per collection (collector: await run(); exporter: GET /metrics over keep-alive);"
        " CPU/coll: the collector's process CPU or the exporter's utime+stime, per collection;"
        " server CPU: the database server's, per collection (tick resolution)"
    )
    print()
    for name in chosen:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitord-db-")))
            db = STARTERS[name](stack, tmp)
            outcome = asyncio.run(measure(db, rounds))
        report(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
