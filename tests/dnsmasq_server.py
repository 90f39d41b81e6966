"""A throwaway dnsmasq (Debian's) serving fixed records on a loopback port, for the dns
check's tests and the blackbox side-by-side tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import free_port, require_program, wait_for

__all__ = ["dnsmasq_server", "free_udp_and_tcp_port"]


def free_udp_and_tcp_port() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.fail("no free port for both UDP and TCP")


@contextmanager
def dnsmasq_server(directory: Path, records: Sequence[str]) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 (UDP and TCP), authoritative for ``.test`` with ``records``
    (dnsmasq options such as ``--host-record=a.test,127.0.0.5``); yields its port and
    stops it afterwards."""
    program = require_program("dnsmasq", "dnsmasq")
    directory.mkdir(parents=True, exist_ok=True)
    pidfile = directory / "dnsmasq.pid"
    port = free_udp_and_tcp_port()
    argv = [
        program,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--pid-file={pidfile}",
        "--user=root" if Path("/proc/self").owner() == "root" else "--user=",
        "--local=/test/",
        *records,
        "--log-facility=-",
    ]
    log = directory / "dnsmasq.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for(
            lambda: (pidfile.exists() and pidfile.read_text().strip()) or proc.poll() is not None
        )
        if proc.poll() is not None:
            pytest.fail(f"dnsmasq did not start:\n{log.read_text()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
