"""The ``host`` check: WARNING and CRITICAL thresholds on disk, memory, swap, load and CPU.

Like Monit's ``check system`` and Nagios' check_disk/check_load, a host is covered by
one check with defaults and no rule written. The figures are read the way the ``system``
check reads them (its :class:`~checks.procfs.Host` and parsers, so both agree), and the
check writes only what it derives from them, as ratios under ``monitord_host_*``: the
``node_*`` series are the system check's, and two checks writing the same series would
clash in the store.

Thresholds are written in percent in the config (as Monit and Nagios take them); the
samples are ratios (0-1), as Prometheus' conventions want.
"""

from __future__ import annotations

import asyncio
import os
from typing import Final, Literal

from pydantic import Field

from checks.base import Check, CheckConfig
from checks.procfs import (
    FS_TYPES_EXCLUDE,
    MOUNT_POINTS_EXCLUDE,
    Host,
    NameFilter,
    Regex,
    parse_cpu_times,
    parse_meminfo,
    parse_mounts,
)
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status

__all__ = [
    "CPULimits",
    "DiskLimits",
    "HostCheck",
    "HostConfig",
    "LoadLimits",
]


class DiskLimits(Limits):
    """Space and inodes used on each filesystem, in percent; the system check's filters."""

    warning: float | None = 80.0
    critical: float | None = 90.0
    inodes: Limits = Field(default_factory=lambda: Limits(warning=80.0, critical=90.0))
    mount_points_exclude: Regex = MOUNT_POINTS_EXCLUDE
    fs_types_exclude: Regex = FS_TYPES_EXCLUDE


class LoadLimits(Limits):
    """The 1, 5 and 15 minute load averages, divided by the number of CPUs if ``per_core``."""

    warning: float | None = 2.0
    critical: float | None = 4.0
    per_core: bool = True
    period: Literal["1m", "5m", "15m"] = Field(default="5m", description="which average to judge")


class CPULimits(Limits):
    """Busy CPU time in percent, over the time since the previous run."""

    warning: float | None = 90.0
    critical: float | None = 95.0


def _limits(warning: float, critical: float) -> Limits:
    return Limits(warning=warning, critical=critical)


class HostConfig(CheckConfig):
    """Options of the ``host`` check; set a section to null to leave that part out."""

    type: Literal["host"]
    disk: DiskLimits | None = Field(default_factory=DiskLimits)
    memory: Limits | None = Field(
        default_factory=lambda: _limits(90.0, 95.0), description="memory used, in percent"
    )
    swap: Limits | None = Field(
        default_factory=lambda: _limits(80.0, 95.0), description="swap used, in percent"
    )
    load: LoadLimits | None = Field(default_factory=LoadLimits)
    cpu: CPULimits | None = Field(default_factory=CPULimits)


_FAMILIES: Final = {
    "monitord_host_disk_used_ratio": "Share of the filesystem's space in use (non-root view).",
    "monitord_host_disk_inodes_used_ratio": "Share of the filesystem's inodes in use.",
    "monitord_host_memory_used_ratio": "Share of memory in use: 1 - MemAvailable / MemTotal.",
    "monitord_host_swap_used_ratio": "Share of swap in use.",
    "monitord_host_load": "Load average over the period, per CPU when per_core is set.",
    "monitord_host_cpu_busy_ratio": "Share of CPU time not idle or iowait since the last run.",
}
METADATA: Final = {n: MetricMetadata(MetricType.GAUGE, h) for n, h in _FAMILIES.items()}


class HostCheck(Check[HostConfig]):
    """Judges the host's figures against the thresholds; the worst part decides the status."""

    config_model = HostConfig

    def __init__(self, config: HostConfig, *, host: Host | None = None) -> None:
        super().__init__(config)
        self._host = host if host is not None else Host()
        disk = config.disk
        self._mounts = NameFilter.compile(disk.mount_points_exclude) if disk else NameFilter()
        self._fstypes = NameFilter.compile(disk.fs_types_exclude) if disk else NameFilter()
        self._cpu_before: tuple[float, float] | None = None  # (busy, total) seconds

    async def run(self) -> CheckResult:
        """Read everything in one trip to a worker thread and judge it."""
        samples, findings = await asyncio.to_thread(self._collect)
        status = max((s for s, _ in findings), default=Status.OK)
        problems = [text for s, text in findings if s is not Status.OK]
        if status is Status.OK:
            message = ", ".join(text for _, text in findings)
        else:
            message = "; ".join(problems)
        return CheckResult(status, message, tuple(samples), metadata=METADATA)

    def _collect(self) -> tuple[list[Sample], list[tuple[Status, str]]]:
        samples: list[Sample] = []
        findings: list[tuple[Status, str]] = []
        parts = [
            (self.config.disk, self._disk),
            (self.config.memory, self._memory),
            (self.config.swap, self._swap),
            (self.config.load, self._load),
            (self.config.cpu, self._cpu),
        ]
        for limits, judge in parts:
            if limits is None:
                continue
            try:
                judge(samples, findings)
            except Exception as exc:
                part = judge.__name__.removeprefix("_")
                findings.append((Status.UNKNOWN, f"cannot read {part}: {exc}".replace("\n", " ")))
        return samples, findings

    def _disk(self, samples: list[Sample], findings: list[tuple[Status, str]]) -> None:
        limits = self.config.disk
        assert limits is not None
        worst: list[tuple[Status, str]] = []
        seen = set()
        for mount in parse_mounts(self._host.mounts()):
            if self._mounts.ignores(mount.mountpoint) or self._fstypes.ignores(mount.fstype):
                continue
            if mount.mountpoint in seen:
                continue
            seen.add(mount.mountpoint)
            st = self._host.statvfs(mount.mountpoint)
            labels = Labels.of(mountpoint=mount.mountpoint)
            # As df: used / (used + available to non-root), so reserved blocks count as full.
            used = st.f_blocks - st.f_bfree
            room = used + st.f_bavail
            if room > 0:
                ratio = used / room
                samples.append(Sample("monitord_host_disk_used_ratio", labels, ratio))
                status = limits.status(ratio * 100)
                worst.append((status, f"disk {mount.mountpoint} {ratio:.0%} used"))
            if st.f_files > 0:
                ratio = (st.f_files - st.f_ffree) / st.f_files
                samples.append(Sample("monitord_host_disk_inodes_used_ratio", labels, ratio))
                status = limits.inodes.status(ratio * 100)
                if status is not Status.OK:
                    worst.append((status, f"inodes {mount.mountpoint} {ratio:.0%} used"))
        bad = [finding for finding in worst if finding[0] is not Status.OK]
        if bad:
            findings.extend(bad)
        else:
            count = len(seen)
            findings.append((Status.OK, f"{count} filesystem{'' if count == 1 else 's'} fine"))

    def _memory(self, samples: list[Sample], findings: list[tuple[Status, str]]) -> None:
        limits = self.config.memory
        assert limits is not None
        info = parse_meminfo(self._host.meminfo())
        ratio = 1 - info["MemAvailable_bytes"] / info["MemTotal_bytes"]
        samples.append(Sample("monitord_host_memory_used_ratio", value=ratio))
        findings.append((limits.status(ratio * 100), f"memory {ratio:.0%} used"))

    def _swap(self, samples: list[Sample], findings: list[tuple[Status, str]]) -> None:
        limits = self.config.swap
        assert limits is not None
        info = parse_meminfo(self._host.meminfo())
        total = info["SwapTotal_bytes"]
        if total == 0:
            return  # no swap: nothing to fill up
        ratio = 1 - info["SwapFree_bytes"] / total
        samples.append(Sample("monitord_host_swap_used_ratio", value=ratio))
        findings.append((limits.status(ratio * 100), f"swap {ratio:.0%} used"))

    def _load(self, samples: list[Sample], findings: list[tuple[Status, str]]) -> None:
        limits = self.config.load
        assert limits is not None
        fields = self._host.loadavg().split()[:3]
        averages = dict(zip(("1m", "5m", "15m"), map(float, fields), strict=True))
        cores = len(parse_cpu_times(self._host.stat(), 1)) or (os.cpu_count() or 1)
        divisor = cores if limits.per_core else 1
        for period, value in averages.items():
            samples.append(Sample("monitord_host_load", Labels.of(period=period), value / divisor))
        value = averages[limits.period] / divisor
        what = f"load{limits.period.removesuffix('m')}{' per core' if limits.per_core else ''}"
        findings.append((limits.status(value), f"{what} {value:.2f}"))

    def _cpu(self, samples: list[Sample], findings: list[tuple[Status, str]]) -> None:
        limits = self.config.cpu
        assert limits is not None
        times = parse_cpu_times(self._host.stat(), self._host.clock_ticks())
        idle_modes = (3, 4)  # idle, iowait in CPU_MODES
        total = sum(sum(values) for values in times.values())
        idle = sum(values[i] for values in times.values() for i in idle_modes)
        before, self._cpu_before = self._cpu_before, (total - idle, total)
        if before is None or total <= before[1]:
            return  # the first run has nothing to compare with
        ratio = min(1.0, max(0.0, (total - idle - before[0]) / (total - before[1])))
        samples.append(Sample("monitord_host_cpu_busy_ratio", value=ratio))
        findings.append((limits.status(ratio * 100), f"cpu {ratio:.0%} busy"))
