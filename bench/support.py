"""What the benchmark scripts share: free loopback ports, starting and stopping the
processes they measure, and reading a process's CPU time from /proc.

The scripts run as ``python bench/<name>.py``, so this folder heads ``sys.path`` and
``import support`` finds this module. That is also why no script here may be named after
a package it measures (``checks``, ``rules``, ...): it would shadow the package for
every script here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

__all__ = ["cpu_ticks", "free_port", "running", "wait_for_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until ``proc`` accepts connections on ``port``; raise if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextmanager
def running(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    *,
    stdout: Literal["log", "discard", "pipe"] = "log",
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess with its stderr in ``log`` (or dropped) and its stdout there too, or
    dropped, or on a pipe for the caller to read; stopped with SIGTERM on the way out,
    SIGKILL 10 s later if need be."""
    with open(log or os.devnull, "wb") as out:
        target: IO[bytes] | int = out
        if stdout != "log":
            target = subprocess.DEVNULL if stdout == "discard" else subprocess.PIPE
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=target, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
