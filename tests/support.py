"""Helpers shared by the tests: real programs, free ports, waiting."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable

import pytest

REQUIRE_INTEGRATION = os.environ.get("MONITORD_REQUIRE_INTEGRATION") == "1"


def require_program(name: str, package: str) -> str:
    """The path of ``name``; skip the test (fail under CI) when it is not installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not available (install the Debian package {package})"
    if REQUIRE_INTEGRATION:
        pytest.fail(f"MONITORD_REQUIRE_INTEGRATION=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s: {predicate}")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""

    def accepting() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(accepting, timeout)
