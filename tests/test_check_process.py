"""The process check against real processes started by the tests."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from checks.process import ProcessCheck, ProcessConfig
from monitor.model import CheckResult, Status


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes that the test's end stops."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def tag() -> str:
    """A number no other process has on its command line: ``sleep <tag>``."""
    return f"{1000 + uuid.uuid4().int % 10**6}.5"


def make_check(**options: Any) -> ProcessCheck:
    return ProcessCheck(ProcessConfig.model_validate({"name": "p", "type": "process", **options}))


def pids(result: CheckResult) -> set[int]:
    return {int(s.labels["pid"]) for s in result.samples if "pid" in s.labels}


async def test_processes_matched_by_cmdline_are_counted_with_samples(spawn: Any, tag: str) -> None:
    a, b = spawn("sleep", tag), spawn("sleep", tag)
    result = await make_check(match_cmdline=rf"^sleep {tag}$").run()
    assert result.status is Status.OK
    assert result.message == "2 processes"
    assert pids(result) == {a.pid, b.pid}
    counts = [s.value for s in result.samples if s.name == "monitord_process_count"]
    assert counts == [2.0]
    names = {s.labels["name"] for s in result.samples if "name" in s.labels}
    assert names == {"sleep"}


async def test_no_matching_process_is_critical(tag: str) -> None:
    result = await make_check(match_cmdline=rf"^sleep {tag}$").run()
    assert result.status is Status.CRITICAL
    assert result.message == "0 processes"


@pytest.mark.parametrize(
    ("count", "status"),
    [
        pytest.param({"max_warning": 1}, Status.WARNING, id="more than max_warning warns"),
        pytest.param({"max_critical": 1}, Status.CRITICAL, id="more than max_critical is critical"),
        pytest.param({"min_warning": 3}, Status.WARNING, id="fewer than min_warning warns"),
        pytest.param({"min_critical": 2, "max_critical": 2}, Status.OK, id="within bounds is ok"),
    ],
)
async def test_count_limits(spawn: Any, tag: str, count: dict[str, int], status: Status) -> None:
    spawn("sleep", tag)
    spawn("sleep", tag)
    result = await make_check(match_cmdline=rf"^sleep {tag}$", count=count).run()
    assert result.status is status
    assert result.message == "2 processes"


@pytest.fixture
def sleep_exe() -> str:
    sleep = shutil.which("sleep")
    assert sleep is not None
    return str(Path(sleep).resolve())


async def test_name_exe_user_and_cmdline_must_all_hold(
    spawn: Any, tag: str, sleep_exe: str
) -> None:
    proc = spawn("sleep", tag)
    exe = sleep_exe
    await asyncio.sleep(0.05)  # let exec finish, so exe and comm are sleep's
    user = getpass.getuser()
    result = await make_check(
        match_name="sleep", match_exe=exe, match_user=user, match_cmdline=tag
    ).run()
    assert pids(result) == {proc.pid}
    other = await make_check(match_name="sleep", match_user="nobody", match_cmdline=tag).run()
    assert other.status is Status.CRITICAL
    assert pids(other) == set()


async def test_a_pidfile_names_the_process(spawn: Any, tag: str, tmp_path: Path) -> None:
    proc = spawn("sleep", tag)
    pidfile = tmp_path / "sleep.pid"
    pidfile.write_text(f"{proc.pid}\n")
    result = await make_check(pidfile=str(pidfile)).run()
    assert result.status is Status.OK
    assert pids(result) == {proc.pid}
    proc.kill()
    proc.wait()
    assert (await make_check(pidfile=str(pidfile)).run()).message == "0 processes"
    assert (await make_check(pidfile=str(tmp_path / "none")).run()).status is Status.CRITICAL
    pidfile.write_text("garbage")
    broken = await make_check(pidfile=str(pidfile)).run()
    assert broken.status is Status.UNKNOWN
    assert broken.message.startswith(f"cannot read a pid from {pidfile}")


async def test_a_busy_process_crosses_the_cpu_threshold(spawn: Any, tag: str) -> None:
    proc = spawn(sys.executable, "-c", "while True: pass", tag)
    check = make_check(match_cmdline=tag, cpu_percent={"warning": 20, "critical": 50})
    await check.run()
    await asyncio.sleep(0.5)
    result = await check.run()
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"1 process, pid {proc.pid} uses ")
    assert result.message.endswith("% CPU")


async def test_an_idle_process_is_ok_on_cpu_and_a_big_one_is_not_on_memory(
    spawn: Any, tag: str
) -> None:
    proc = spawn("sleep", tag)
    check = make_check(
        match_cmdline=rf"^sleep {tag}$", cpu_percent={"warning": 20}, memory={"warning": "1KiB"}
    )
    await check.run()
    result = await check.run()
    assert result.status is Status.WARNING
    assert result.message.startswith(f"1 process, pid {proc.pid} uses ")
    assert result.message.endswith(" MiB")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "set at least one of", id="a criterion is required"),
        pytest.param(
            {"match_cmdline": "("}, "not a regular expression", id="a bad regex is refused"
        ),
    ],
)
def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProcessConfig.model_validate({"name": "p", "type": "process", **options})
