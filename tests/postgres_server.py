"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``postgres`` from the
Debian packages in a temporary directory, on a free port of 127.0.0.1.

PostgreSQL refuses to run as root, so when the tests run as root the data directory is
chowned to ``nobody`` and the server runs as that user (``setpriv``). The superuser
``postgres`` and a monitoring user (``monitor``, member of ``pg_monitor``) log in over TCP
with SCRAM passwords; the unix socket stays inside the temporary directory.

Use :func:`postgres_server` (a context manager) from a script, or the ``postgres`` fixture
(one server per test module) from pytest.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import free_port, require_program

__all__ = [
    "PostgresServer",
    "exporter_queries",
    "find_postgres_bin",
    "postgres",
    "postgres_server",
    "postgres_standby",
]

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "super-Secret-7"
MONITOR_USER = "monitor"
MONITOR_PASSWORD = "mon-Pa55-word"


def find_postgres_bin(program: str) -> str:
    """The path of a PostgreSQL server program (``initdb``, ``postgres``, ``psql``): on PATH,
    or in the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them there); skip
    (fail in CI) naming it when it is missing."""
    found = shutil.which(program)
    if found is not None:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{program}")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    return require_program(program, "postgresql")


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a program as the server's user, and that user's ids."""
    if os.geteuid() != 0:
        return [], None, None
    setpriv = require_program("setpriv", "util-linux")
    import pwd

    nobody = pwd.getpwnam("nobody")
    prefix = [
        setpriv,
        f"--reuid={nobody.pw_uid}",
        f"--regid={nobody.pw_gid}",
        "--clear-groups",
        "--inh-caps=-all",
    ]
    return prefix, nobody.pw_uid, nobody.pw_gid


@dataclass
class PostgresServer:
    """A running (or stopped) throwaway server and how to reach it."""

    base: Path
    port: int
    host: str = "127.0.0.1"
    user: str = MONITOR_USER
    password: str = MONITOR_PASSWORD
    superuser: str = SUPERUSER
    superuser_password: str = SUPERUSER_PASSWORD
    database: str = "postgres"
    max_connections: int = 20
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _prefix: list[str] = field(default_factory=list, repr=False)

    @property
    def datadir(self) -> Path:
        """The data directory."""
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        """The server's stderr."""
        return self.base / "postgres.log"

    def dsn(self, *, password: str | None = None, user: str | None = None) -> str:
        """A libpq URL for the monitoring user (or ``user``); ``sslmode=disable``."""
        pw = self.password if password is None else password
        who = user or self.user
        return f"postgresql://{who}:{pw}@{self.host}:{self.port}/{self.database}?sslmode=disable"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts logins."""
        if self.running:
            raise RuntimeError("the server is already running")
        postgres = find_postgres_bin("postgres")
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    *self._prefix,
                    postgres,
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    f"unix_socket_directories={self.base / 'sock'}",
                    "-c",
                    f"max_connections={self.max_connections}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self._log_tail()}")
            done = self.psql("SELECT 1", check=False)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept logins in {timeout}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (fast shutdown: clients are disconnected), killing it if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def psql(
        self, sql: str, *, check: bool = True, database: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` as the superuser with psql (tuples only, unaligned, ``|`` separated)."""
        result = subprocess.run(
            [
                find_postgres_bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": self.superuser_password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result

    def query(self, sql: str) -> list[list[str]]:
        """The rows of ``sql`` run as the superuser, each a list of text fields."""
        out = self.psql(sql).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def _initdb(server: PostgresServer, uid: int | None, gid: int | None) -> None:
    initdb = find_postgres_bin("initdb")
    server.datadir.mkdir()
    (server.base / "sock").mkdir()
    pwfile = server.base / "pwfile"
    pwfile.write_text(server.superuser_password + "\n")
    if uid is not None and gid is not None:
        for path in (server.base, server.datadir, server.base / "sock", pwfile):
            os.chown(path, uid, gid)
    server.base.chmod(0o755)
    result = subprocess.run(
        [
            *server._prefix,
            initdb,
            "-D",
            str(server.datadir),
            "-U",
            server.superuser,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=server.base,
    )
    pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stdout}\n{result.stderr}")
    with (server.datadir / "postgresql.conf").open("a") as conf:
        # A throwaway server: no durability, little memory, quick to start and stop.
        conf.write(
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "shared_buffers = 16MB\nlog_min_messages = warning\nlogging_collector = off\n"
            "password_encryption = 'scram-sha-256'\n"
        )


@contextmanager
def postgres_server(
    *, max_connections: int = 20, setup_sql: Sequence[str] = ()
) -> Iterator[PostgresServer]:
    """Start a throwaway server with the monitoring user, yield it, and remove it all after.

    Skips (fails in CI) naming the program when ``initdb``, ``postgres``, ``psql`` or
    ``setpriv`` (as root) is missing.
    """
    for program in ("initdb", "postgres", "psql"):
        find_postgres_bin(program)
    prefix, uid, gid = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="monitord-pg-"))
    server = PostgresServer(base=base, port=free_port(), max_connections=max_connections)
    server._prefix = prefix
    try:
        _initdb(server, uid, gid)
        server.start()
        server.psql(
            f"CREATE ROLE {server.user} LOGIN PASSWORD '{server.password}';"
            f"GRANT pg_monitor TO {server.user};"
        )
        for sql in setup_sql:
            server.psql(sql)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway server for the test module, restarted by tests that stop it."""
    with postgres_server() as server:
        yield server


@contextmanager
def postgres_standby(primary: PostgresServer) -> Iterator[PostgresServer]:
    """A streaming replica of ``primary`` (``pg_basebackup -R``) on its own free port, with
    the same users; stopped and removed after."""
    basebackup = find_postgres_bin("pg_basebackup")
    prefix, uid, gid = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="monitord-pg-standby-"))
    standby = PostgresServer(base=base, port=free_port(), max_connections=primary.max_connections)
    standby._prefix = prefix
    try:
        (base / "sock").mkdir()
        if uid is not None and gid is not None:
            os.chown(base, uid, gid)
            os.chown(base / "sock", uid, gid)
        base.chmod(0o755)
        result = subprocess.run(
            [
                *prefix,
                basebackup,
                "-h",
                primary.host,
                "-p",
                str(primary.port),
                "-U",
                primary.superuser,
                "-D",
                str(standby.datadir),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            env={**os.environ, "PGPASSWORD": primary.superuser_password},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=base,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {result.stderr}")
        standby.start()
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)


EXAMPLE_QUERIES = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")

# The two entries of that example file that give pg_postmaster_start_time_seconds and
# pg_replication_lag in 0.11.1 (used verbatim when the file is there).
FALLBACK_QUERIES = {
    "pg_replication": {
        "query": "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE GREATEST (0, EXTRACT(EPOCH"
        " FROM (now() - pg_last_xact_replay_timestamp()))) END AS lag",
        "master": True,
        "metrics": [
            {"lag": {"usage": "GAUGE", "description": "Replication lag behind master in seconds"}}
        ],
    },
    "pg_postmaster": {
        "query": "SELECT pg_postmaster_start_time as start_time_seconds from "
        "pg_postmaster_start_time()",
        "master": True,
        "metrics": [
            {
                "start_time_seconds": {
                    "usage": "GAUGE",
                    "description": "Time at which postmaster started",
                }
            }
        ],
    },
}


def exporter_queries() -> dict[str, Any]:
    """pg_replication and pg_postmaster from the exporter's example queries.yaml."""
    if EXAMPLE_QUERIES.exists():
        shipped = yaml.safe_load(EXAMPLE_QUERIES.read_text())
        return {ns: shipped[ns] for ns in ("pg_replication", "pg_postmaster")}
    return FALLBACK_QUERIES
