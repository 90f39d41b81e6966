"""The real Alertmanager (Debian's prometheus-alertmanager) for the tests: started on a
loopback port with clustering off, its files in the test's directory, stopped afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp

from tests.support import free_port, require_program, wait_for

__all__ = ["alertmanager", "alertmanager_process"]


def _command(directory: Path, name: str, config: str, port: int, flags: Sequence[str]) -> list[str]:
    binary = require_program("prometheus-alertmanager", "prometheus-alertmanager")
    config_file = directory / f"{name}.yml"
    config_file.write_text(config)
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={directory / f'{name}-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *flags,
    ]


@asynccontextmanager
async def alertmanager(
    session: aiohttp.ClientSession,
    directory: Path,
    config: str,
    *flags: str,
    name: str = "am",
    port: int | None = None,
) -> AsyncIterator[str]:
    """Run Alertmanager with ``config``; its base URL once ready (within 20 s)."""
    port = port if port is not None else free_port()
    base = f"http://127.0.0.1:{port}"
    log = directory / f"{name}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *_command(directory, name, config, port, flags),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with session.get(f"{base}/-/ready") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert process.returncode is None, log.read_text()
            assert time.monotonic() < deadline, f"Alertmanager not ready: {log.read_text()}"
            await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def alertmanager_process(directory: Path, config: str, *flags: str) -> Iterator[str]:
    """:func:`alertmanager` for synchronous tests."""
    port = free_port()
    with (directory / "am.log").open("wb") as output:
        proc = subprocess.Popen(
            _command(directory, "am", config, port, flags),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(f"{base}/-/ready"), timeout=20)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
