"""Throwaway MariaDB servers for the tests and benchmarks: ``mariadb-install-db`` and
``mariadbd`` in a temporary directory, on a free 127.0.0.1 port, with its unix socket in
that directory, grants enforced, and a monitoring user with a password.

``mariadb_server(directory)`` is the context manager (reusable from ``bench/``); the
``mariadb`` pytest fixture gives one server per test module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support import free_port, require_program

MONITOR_GRANTS = "PROCESS, REPLICATION CLIENT, SLAVE MONITOR, SELECT ON *.*"
"""What mysqld_exporter's README grants its user, plus MariaDB's SLAVE MONITOR (10.5+)."""


def _program(name: str, *candidates: str) -> str:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return require_program(name, "mariadb-server")


@dataclass
class MariaDB:
    """One running mariadbd and how to reach it."""

    directory: Path
    port: int
    user: str = "monitord"
    password: str = "s3cret-Mon!tor"
    host: str = "127.0.0.1"
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        """The server's unix socket, inside its directory."""
        return self.directory / "mysqld.sock"

    @property
    def datadir(self) -> Path:
        """The data directory."""
        return self.directory / "data"

    def dsn(self, user: str | None = None) -> str:
        """The check's ``dsn`` for ``user`` (the monitoring user by default)."""
        return f"mysql://{user or self.user}@{self.host}:{self.port}/"

    def exporter_dsn(self, user: str, password: str) -> str:
        """mysqld_exporter 0.14's ``DATA_SOURCE_NAME``."""
        return f"{user}:{password}@({self.host}:{self.port})/"

    def start(self) -> None:
        """Start mariadbd on the existing data directory and wait until it answers."""
        mariadbd = _program("mariadbd", "/usr/sbin/mariadbd")
        args = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.directory / 'mysqld.pid'}",
            f"--log-error={self.directory / 'error.log'}",
            "--innodb-buffer-pool-size=16M",
            "--skip-name-resolve",
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        ready_before = self._log().count("ready for connections")
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Wait for this start's "ready for connections" (PyMySQL leaks the socket of a
        # connection refused during the handshake, so no connection is tried before).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited at start: {self._log_tail()}")
            if self._log().count("ready for connections") > ready_before:
                self.admin("SELECT 1")
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mariadbd did not answer within 60 s: {self._log_tail()}")

    def stop(self) -> None:
        """Stop mariadbd (SIGTERM, then SIGKILL after 30 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def admin(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as root over the unix socket; its rows."""
        conn = pymysql.connect(
            unix_socket=str(self.socket), user="root", password="", autocommit=True
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def connect(self, user: str | None = None, password: str | None = None) -> Any:
        """A plain PyMySQL connection over TCP as ``user`` (the monitoring user by default)."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=user or self.user,
            password=self.password if password is None else password,
            autocommit=True,
        )

    def add_user(self, user: str, password: str, grants: str = MONITOR_GRANTS) -> None:
        """Create ``user`` identified by ``password`` with ``grants``."""
        self.admin(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        self.admin(f"GRANT {grants} TO '{user}'@'127.0.0.1'")

    def processlist(self, user: str | None = None) -> list[tuple[Any, ...]]:
        """``(id, command, state, info)`` of ``user``'s connections, from the server's view."""
        return self.admin(
            "SELECT id, command, state, info FROM information_schema.processlist WHERE user = %s",
            (user or self.user,),
        )

    def _log(self) -> str:
        try:
            return (self.directory / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return " | ".join(self._log().splitlines()[-5:]) or "(no error log)"


@contextmanager
def mariadb_server(directory: Path, extra_args: Sequence[str] = ()) -> Iterator[MariaDB]:
    """A fresh MariaDB in ``directory`` with the monitoring user; stopped on exit."""
    install = _program("mariadb-install-db", "/usr/bin/mariadb-install-db")
    _program("mariadbd", "/usr/sbin/mariadbd")
    directory.mkdir(parents=True, exist_ok=True)
    server = MariaDB(directory, free_port(), extra_args=tuple(extra_args))
    command = [
        install,
        "--no-defaults",
        f"--datadir={server.datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--innodb-log-file-size=8M",
    ]
    if os.geteuid() == 0:
        command.append("--user=root")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    try:
        server.start()
        server.add_user(server.user, server.password)
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """One MariaDB for the test module, with log-bin so it can be a replication source."""
    directory = tmp_path_factory.mktemp("mariadb")
    with mariadb_server(directory, ["--log-bin=mysql-bin", "--server-id=1"]) as server:
        yield server
