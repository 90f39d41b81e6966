"""Throwaway Redis servers for tests and benchmarks: ``redis-server`` from the Debian package,
on a free 127.0.0.1 port, in a temporary directory, no persistence.

``redis_server(directory, ...)`` is a context manager yielding a :class:`RedisServer` (host,
port, credentials, ``stop()``/``start()`` to bounce it on the same port); the
``redis_server_factory`` fixture starts as many as a test asks for and stops them all.
Passwords go in the config file written in the directory, not on the command line.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port, require_program, wait_for_port

__all__ = ["RedisServer", "redis_server", "redis_server_factory"]

ACL_USER = "monitor"
ACL_PERMISSIONS = "-@all +info +config|get +client|setname +client|list +ping +select"
"""What a monitoring user needs: INFO, CONFIG GET, naming its connection (and CLIENT LIST,
which the pool tests read)."""


@dataclass
class RedisServer:
    """One redis-server process and how to reach it."""

    directory: Path
    port: int
    password: str | None = None
    acl_password: str | None = None
    settings: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``redis://host:port/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def acl_user(self) -> str | None:
        """The monitoring ACL user's name, when the server has one."""
        return ACL_USER if self.acl_password else None

    def _config(self) -> Path:
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            'save ""',
            "appendonly no",
            f"dir {self.directory}",
            f"logfile {self.directory / 'redis.log'}",
            "daemonize no",
            "enable-debug-command local",
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.acl_password:
            lines.append(f"user {ACL_USER} on >{self.acl_password} {ACL_PERMISSIONS}")
        lines.extend(self.settings)
        path = self.directory / "redis.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        if self.process is not None:
            raise RuntimeError("redis-server is already running")
        binary = require_program("redis-server", "redis-server")
        self.process = subprocess.Popen(
            [binary, str(self._config())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout=15.0)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and wait until the port is free."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # SO_REUSEADDR lets a restart bind right away
            with socket.socket() as probe:
                if probe.connect_ex((self.host, self.port)) != 0:
                    return
            time.sleep(0.05)

    def command(self, *args: str, user: str | None = None, password: str | None = None) -> str:
        """Run one command with ``redis-cli`` as the default user (or ``user``); its output."""
        cli = require_program("redis-cli", "redis-tools")
        argv = [cli, "-h", self.host, "-p", str(self.port), "--no-auth-warning"]
        secret = password if password is not None else self.password
        if user is not None:
            argv += ["--user", user]
        if secret:
            argv += ["-a", secret]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=20, check=True
        )
        return done.stdout.strip()


@contextmanager
def redis_server(
    directory: Path,
    *,
    password: str | None = None,
    acl_password: str | None = None,
    settings: tuple[str, ...] = (),
    port: int | None = None,
) -> Iterator[RedisServer]:
    """A running redis-server in ``directory``; stopped on exit, also when the body fails."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, port or free_port(), password, acl_password, settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[object]:
    """``start(**options) -> RedisServer`` (options as :func:`redis_server`); all stopped after."""
    servers: list[RedisServer] = []

    def start(**options: object) -> RedisServer:
        directory = tmp_path / f"redis{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, free_port(), **options)  # type: ignore[arg-type]
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        with suppress(Exception):
            server.stop()
