"""The host check: thresholds on made-up figures, then one run on this machine."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from checks.host import HostCheck, HostConfig
from checks.procfs import Host
from monitor.model import CheckResult, Labels, Status

MEMINFO = """\
MemTotal:       1000 kB
MemFree:         100 kB
MemAvailable:    {available} kB
SwapTotal:      {swap_total} kB
SwapFree:        {swap_free} kB
"""


class FakeHost(Host):
    """A machine with the figures the test sets."""

    def __init__(self) -> None:
        self.available = 500
        self.swap_total = 1000
        self.swap_free = 1000
        self.load = "0.50 1.00 1.50 1/100 42"
        self.cpus = 2
        self.ticks = [100, 0, 100, 800, 0, 0, 0, 0]  # user nice system idle iowait ...
        # mountpoint -> (blocks, bfree, bavail, files, ffree)
        self.filesystems = {"/": (1000, 300, 250, 100, 50), "/srv": (1000, 900, 900, 10, 9)}

    def meminfo(self) -> str:
        return MEMINFO.format(
            available=self.available, swap_total=self.swap_total, swap_free=self.swap_free
        )

    def loadavg(self) -> str:
        return self.load

    def stat(self) -> str:
        line = " ".join(str(t) for t in self.ticks)
        return "cpu  x\n" + "".join(f"cpu{n} {line}\n" for n in range(self.cpus))

    def clock_ticks(self) -> int:
        return 100

    def mounts(self) -> str:
        lines = [
            f"/dev/sd{n} {m} ext4 rw 0 0" for n, m in zip("ab", self.filesystems, strict=False)
        ]
        return "\n".join([*lines, "proc /proc proc rw 0 0"]) + "\n"

    def statvfs(self, path: str) -> os.statvfs_result:
        blocks, bfree, bavail, files, ffree = self.filesystems[path]
        return os.statvfs_result((4096, 4096, blocks, bfree, bavail, files, ffree, ffree, 0, 255))


def make_check(host: Host | None = None, **options: Any) -> HostCheck:
    return HostCheck(HostConfig.model_validate({"name": "h", "type": "host", **options}), host=host)


def value(result: CheckResult, name: str, **labels: str) -> float:
    (found,) = [s.value for s in result.samples if s.name == name and s.labels == Labels(labels)]
    return found


async def test_a_healthy_host_is_ok_with_ratios_and_a_summary() -> None:
    host = FakeHost()
    check = make_check(host)
    first = await check.run()
    host.ticks = [150, 0, 150, 1700, 0, 0, 0, 0]  # +100 busy, +900 idle per CPU
    result = await check.run()
    assert result.status is Status.OK, result.message
    assert result.message == (
        "2 filesystems fine, memory 50% used, swap 0% used, load5 per core 0.50, cpu 10% busy"
    )
    assert value(result, "monitord_host_disk_used_ratio", mountpoint="/") == 700 / 950
    assert value(result, "monitord_host_disk_inodes_used_ratio", mountpoint="/") == 0.5
    assert value(result, "monitord_host_memory_used_ratio") == 0.5
    assert value(result, "monitord_host_load", period="15m") == 0.75
    assert value(result, "monitord_host_cpu_busy_ratio") == pytest.approx(0.1)
    assert not [s for s in first.samples if s.name == "monitord_host_cpu_busy_ratio"]
    assert not [s for s in result.samples if s.labels.get("mountpoint") == "/proc"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        pytest.param(
            {"available": 80}, Status.WARNING, "memory 92% used", id="memory above 90% warns"
        ),
        pytest.param(
            {"available": 10}, Status.CRITICAL, "memory 99% used", id="memory above 95% is critical"
        ),
        pytest.param(
            {"swap_free": 100}, Status.WARNING, "swap 90% used", id="swap above 80% warns"
        ),
        pytest.param(
            {"load": "9.00 9.00 9.00 1/1 1"},
            Status.CRITICAL,
            "load5 per core 4.50",
            id="load per core above 4 is critical",
        ),
        pytest.param(
            {"filesystems": {"/": (1000, 100, 50, 10, 9)}},
            Status.CRITICAL,
            "disk / 95% used",
            id="a disk more than 90% used is critical",
        ),
        pytest.param(
            {"filesystems": {"/": (1000, 900, 900, 100, 15)}},
            Status.WARNING,
            "inodes / 85% used",
            id="inodes more than 80% used warn",
        ),
    ],
)
async def test_a_threshold_crossed_sets_the_status_and_names_the_part(
    change: dict[str, Any], status: Status, message: str
) -> None:
    host = FakeHost()
    for name, new in change.items():
        setattr(host, name, new)
    result = await make_check(host).run()
    assert result.status is status
    assert result.message == message


async def test_the_worst_part_wins_and_every_problem_is_named() -> None:
    host = FakeHost()
    host.available = 80
    host.filesystems = {"/": (1000, 100, 50, 10, 9)}
    result = await make_check(host).run()
    assert result.status is Status.CRITICAL
    assert result.message == "disk / 95% used; memory 92% used"


async def test_sections_can_be_turned_off_or_retuned() -> None:
    host = FakeHost()
    host.available = 10
    host.load = "3.00 3.00 3.00 1/1 1"
    check = make_check(
        host, memory=None, swap=None, disk=None, cpu=None, load={"per_core": False, "period": "1m"}
    )
    result = await check.run()
    assert result.status is Status.WARNING
    assert result.message == "load1 3.00"
    assert {s.name for s in result.samples} == {"monitord_host_load"}


async def test_a_host_without_swap_is_not_judged_on_it() -> None:
    host = FakeHost()
    host.swap_total = host.swap_free = 0
    result = await make_check(host).run()
    assert "swap" not in result.message
    assert not [s for s in result.samples if s.name == "monitord_host_swap_used_ratio"]


async def test_a_part_that_cannot_be_read_is_unknown_and_the_rest_still_judged() -> None:
    class Broken(FakeHost):
        def loadavg(self) -> str:
            raise OSError("no /proc/loadavg")

    result = await make_check(Broken()).run()
    assert result.status is Status.UNKNOWN
    assert result.message == "cannot read load: no /proc/loadavg"
    assert value(result, "monitord_host_memory_used_ratio") == 0.5


def test_warning_above_critical_is_refused() -> None:
    with pytest.raises(ValidationError, match="warning 95 is above critical 90"):
        HostConfig.model_validate(
            {"name": "h", "type": "host", "memory": {"warning": 95, "critical": 90}}
        )


async def test_it_runs_on_this_machine() -> None:
    check = make_check()
    await check.run()
    result = await check.run()
    assert result.status in (Status.OK, Status.WARNING, Status.CRITICAL), result.message
    names = {s.name for s in result.samples}
    assert {"monitord_host_memory_used_ratio", "monitord_host_load"} <= names
    assert any(s.labels.get("mountpoint") == "/" for s in result.samples), result.samples
