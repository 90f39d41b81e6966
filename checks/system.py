"""The ``system`` check: the host's CPU, memory, load, filesystems, network and disks.

Every family carries node_exporter's name, labels, type and help text, and node_exporter's
value. psutil supplies the figures it reports the way node_exporter does (boot time,
network and disk counters); the rest is read from the kernel's own source, because
psutil's figure differs there:

- CPU times come from /proc/stat, because psutil numbers CPUs by position rather than by
  their ``cpuN`` id; like node_exporter, the check keeps them from running backwards.
- Memory comes from /proc/meminfo field by field: psutil's ``cached`` adds SReclaimable,
  and its ``free``/``used`` are derived figures.
- Load averages come from /proc/loadavg, rounded to hundredths: psutil (through glibc's
  ``getloadavg``) asks ``sysinfo(2)``, which gives more digits.
- Filesystems come from PID 1's mount table and ``os.statvfs`` scaled by ``f_bsize``:
  psutil's ``disk_usage`` scales by ``f_frsize`` and calls ``f_bavail`` "free".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Self

from pydantic import Field, model_validator

from checks.base import Check, CheckConfig
from checks.procfs import (
    CPU_MODES,
    DISKSTATS_DEVICE_EXCLUDE,
    FS_TYPES_EXCLUDE,
    MOUNT_POINTS_EXCLUDE,
    NETDEV_DEVICE_EXCLUDE,
    Host,
    NameFilter,
    NetCounters,
    Regex,
    parse_cpu_times,
    parse_meminfo,
    parse_mounts,
)
from monitor.log import get_logger
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status

__all__ = ["FAMILIES", "SystemCheck", "SystemConfig"]

log = get_logger("checks.system")


class SystemConfig(CheckConfig):
    """Options of the ``system`` check: which filesystems, network and disk devices it reports.

    Each option is the node_exporter flag of the same name; patterns are searched in the
    name, not matched against all of it, so they anchor themselves with ``^...$``.
    """

    type: Literal["system"]
    filesystem_mount_points_exclude: Regex = Field(
        default=MOUNT_POINTS_EXCLUDE,
        description="mount points to leave out (--collector.filesystem.mount-points-exclude)",
    )
    filesystem_fs_types_exclude: Regex = Field(
        default=FS_TYPES_EXCLUDE,
        description="filesystem types to leave out (--collector.filesystem.fs-types-exclude)",
    )
    netdev_device_exclude: Regex = Field(
        default=NETDEV_DEVICE_EXCLUDE,
        description="network devices to leave out (--collector.netdev.device-exclude); "
        "the default gives way to netdev_device_include",
    )
    netdev_device_include: Regex = Field(
        default=None,
        description="report only the network devices matching this "
        "(--collector.netdev.device-include)",
    )
    diskstats_device_exclude: Regex = Field(
        default=DISKSTATS_DEVICE_EXCLUDE,
        description="block devices to leave out (--collector.diskstats.device-exclude); "
        "the default gives way to diskstats_device_include",
    )
    diskstats_device_include: Regex = Field(
        default=None,
        description="report only the block devices matching this "
        "(--collector.diskstats.device-include)",
    )

    @model_validator(mode="before")
    @classmethod
    def _include_replaces_default_exclude(cls, data: Any) -> Any:
        # node_exporter 1.5 refuses an include flag next to a defaulted exclude flag;
        # here an include simply replaces the default exclude.
        if isinstance(data, Mapping):
            for kind in ("netdev_device", "diskstats_device"):
                if data.get(f"{kind}_include") not in (None, "") and f"{kind}_exclude" not in data:
                    data = {**data, f"{kind}_exclude": None}
        return data

    @model_validator(mode="after")
    def _include_or_exclude(self) -> Self:
        for kind in ("netdev_device", "diskstats_device"):
            if getattr(self, f"{kind}_include") is not None:
                if getattr(self, f"{kind}_exclude") is not None:
                    raise ValueError(f"set {kind}_include or {kind}_exclude, not both")
        return self


_IDLE: Final = CPU_MODES.index("idle")


class _CpuCounters:
    """node_exporter's guard against CPU counters running backwards (cpu_linux.go).

    A counter that went down keeps its previous value, unless idle went back by
    ``JUMP_BACK`` seconds or more, which means the CPU was hot-plugged: then all of that
    CPU's counters start over.
    """

    JUMP_BACK: Final = 3.0

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a run abandoned at its timeout may still be reading
        self._last: dict[str, tuple[float, ...]] = {}

    def update(self, fresh: Mapping[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        with self._lock:
            if len(fresh) != len(self._last):
                self._last = {}
            for cpu, new in fresh.items():
                old = self._last.get(cpu)
                if old is None or old[_IDLE] - new[_IDLE] >= self.JUMP_BACK:
                    self._last[cpu] = new
                else:
                    self._last[cpu] = tuple(map(max, old, new))
            return {cpu: self._last[cpu] for cpu in fresh}


_GAUGES: Final = {
    "node_load1": "1m load average.",
    "node_load5": "5m load average.",
    "node_load15": "15m load average.",
    "node_filesystem_size_bytes": "Filesystem size in bytes.",
    "node_filesystem_free_bytes": "Filesystem free space in bytes.",
    "node_filesystem_avail_bytes": "Filesystem space available to non-root users in bytes.",
    "node_filesystem_files": "Filesystem total file nodes.",
    "node_filesystem_files_free": "Filesystem total free file nodes.",
    "node_filesystem_readonly": "Filesystem read-only status.",
    "node_filesystem_device_error": (
        "Whether an error occurred while getting statistics for the given device."
    ),
    "node_boot_time_seconds": "Node boot time, in unixtime.",
    "node_time_seconds": "System time in seconds since epoch (1970).",
}
_COUNTERS: Final = {
    "node_cpu_seconds_total": "Seconds the CPUs spent in each mode.",
    **{f"node_network_{s}_total": f"Network device statistic {s}." for s in NetCounters._fields},
    "node_disk_reads_completed_total": "The total number of reads completed successfully.",
    "node_disk_read_bytes_total": "The total number of bytes read successfully.",
    "node_disk_writes_completed_total": "The total number of writes completed successfully.",
    "node_disk_written_bytes_total": "The total number of bytes written successfully.",
    "node_disk_io_time_seconds_total": "Total seconds spent doing I/Os.",
}
# node_exporter's type and help text of each family; node_memory_* are made up as it does.
FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    **{name: MetricMetadata(MetricType.GAUGE, help) for name, help in _GAUGES.items()},
    **{name: MetricMetadata(MetricType.COUNTER, help) for name, help in _COUNTERS.items()},
}


def _metadata(name: str) -> MetricMetadata:
    if name.startswith("node_memory_"):
        field = name.removeprefix("node_memory_")
        return MetricMetadata(MetricType.GAUGE, f"Memory information field {field}.")
    return FAMILIES[name]


class SystemCheck(Check[SystemConfig]):
    """Collects the host's metrics under node_exporter's names; OK unless nothing could be read."""

    config_model = SystemConfig
    identify_series = False  # node_exporter's series exactly, for its dashboards and rules

    def __init__(self, config: SystemConfig, *, host: Host | None = None) -> None:
        super().__init__(config)
        self._host = host if host is not None else Host()
        self._mount_points = NameFilter.compile(config.filesystem_mount_points_exclude)
        self._fs_types = NameFilter.compile(config.filesystem_fs_types_exclude)
        self._netdev = NameFilter.compile(
            config.netdev_device_exclude, config.netdev_device_include
        )
        self._diskstats = NameFilter.compile(
            config.diskstats_device_exclude, config.diskstats_device_include
        )
        self._cpu_counters = _CpuCounters()
        self._failing: set[str] = set()

    async def run(self) -> CheckResult:
        """Read everything in one trip to a worker thread and sum it up in one line."""
        samples, failures = await asyncio.to_thread(self._collect)
        metadata = {sample.name: _metadata(sample.name) for sample in samples}
        message = "; ".join(filter(None, [_summary(samples), *failures]))
        status = Status.OK if samples else Status.UNKNOWN
        return CheckResult(status, message, tuple(samples), metadata=metadata)

    def _collect(self) -> tuple[list[Sample], list[str]]:
        samples: list[Sample] = []
        failures: list[str] = []
        parts: dict[str, Callable[[], list[Sample]]] = {
            "cpu": self._cpu,
            "memory": self._memory,
            "load": self._load,
            "filesystems": self._filesystems,
            "network": self._network,
            "disks": self._disks,
            "boot time": self._boot_time,
            "time": self._time,
        }
        failing = set()
        for part, collect in parts.items():
            try:
                samples.extend(collect())
            except Exception as exc:
                failing.add(part)
                failures.append(f"cannot read {part}: {exc}".replace("\n", " "))
                # Once per outage: the message of every result says it again.
                if part not in self._failing:
                    log.warning("check %s: cannot read %s: %s", self.name, part, exc)
        for part in self._failing - failing:
            log.info("check %s: reads %s again", self.name, part)
        self._failing = failing
        return samples, failures

    def _cpu(self) -> list[Sample]:
        times = parse_cpu_times(self._host.stat(), self._host.clock_ticks())
        return [
            Sample("node_cpu_seconds_total", Labels.of(cpu=cpu, mode=mode), seconds)
            for cpu, values in self._cpu_counters.update(times).items()
            for mode, seconds in zip(CPU_MODES, values, strict=True)
        ]

    def _memory(self) -> list[Sample]:
        fields = parse_meminfo(self._host.meminfo())
        return [Sample(f"node_memory_{key}", value=value) for key, value in fields.items()]

    def _load(self) -> list[Sample]:
        load1, load5, load15 = map(float, self._host.loadavg().split()[:3])
        return [
            Sample("node_load1", value=load1),
            Sample("node_load5", value=load5),
            Sample("node_load15", value=load15),
        ]

    def _filesystems(self) -> list[Sample]:
        samples = []
        seen = set()
        for mount in parse_mounts(self._host.mounts()):
            if self._mount_points.ignores(mount.mountpoint) or self._fs_types.ignores(mount.fstype):
                continue
            labels = Labels.of(
                device=mount.device, fstype=mount.fstype, mountpoint=mount.mountpoint
            )
            if labels in seen:  # the same filesystem mounted twice on one mount point
                continue
            seen.add(labels)
            try:
                st = self._host.statvfs(mount.mountpoint)
            except OSError as exc:
                log.debug("check %s: statvfs(%r) failed: %s", self.name, mount.mountpoint, exc)
                samples.append(Sample("node_filesystem_device_error", labels, 1.0))
                continue
            # node_exporter scales blocks by f_bsize, not f_frsize; the two agree almost always.
            bsize = float(st.f_bsize)
            samples += [
                Sample("node_filesystem_device_error", labels, 0.0),
                Sample("node_filesystem_size_bytes", labels, float(st.f_blocks) * bsize),
                Sample("node_filesystem_free_bytes", labels, float(st.f_bfree) * bsize),
                Sample("node_filesystem_avail_bytes", labels, float(st.f_bavail) * bsize),
                Sample("node_filesystem_files", labels, float(st.f_files)),
                Sample("node_filesystem_files_free", labels, float(st.f_ffree)),
                Sample("node_filesystem_readonly", labels, 1.0 if mount.readonly else 0.0),
            ]
        return samples

    def _network(self) -> list[Sample]:
        return [
            Sample(f"node_network_{stat}_total", Labels.of(device=device), float(value))
            for device, counters in sorted(self._host.net_io().items())
            if not self._netdev.ignores(device)
            for stat, value in counters._asdict().items()
        ]

    def _disks(self) -> list[Sample]:
        samples = []
        for device, c in sorted(self._host.disk_io().items()):
            if self._diskstats.ignores(device):
                continue
            labels = Labels.of(device=device)
            samples += [
                Sample("node_disk_reads_completed_total", labels, float(c.reads_completed)),
                Sample("node_disk_read_bytes_total", labels, float(c.read_bytes)),
                Sample("node_disk_writes_completed_total", labels, float(c.writes_completed)),
                Sample("node_disk_written_bytes_total", labels, float(c.written_bytes)),
                # * 0.001, not / 1000, to round exactly as node_exporter does.
                Sample("node_disk_io_time_seconds_total", labels, float(c.io_time_ms) * 0.001),
            ]
        return samples

    def _boot_time(self) -> list[Sample]:
        return [Sample("node_boot_time_seconds", value=self._host.boot_time())]

    def _time(self) -> list[Sample]:
        return [Sample("node_time_seconds", value=self._host.time())]


def _summary(samples: list[Sample]) -> str:
    """``load 0.12, mem 43% used, 3 filesystems``, leaving out what was not read."""
    values = {s.name: s.value for s in samples if not s.labels}
    pieces = []
    if "node_load1" in values:
        pieces.append(f"load {values['node_load1']:.2f}")
    total = values.get("node_memory_MemTotal_bytes")
    available = values.get("node_memory_MemAvailable_bytes")
    if total and available is not None:
        pieces.append(f"mem {100 * (total - available) / total:.0f}% used")
    filesystems = sum(1 for s in samples if s.name == "node_filesystem_device_error")
    if any(s.name.startswith("node_filesystem_") for s in samples):
        pieces.append(f"{filesystems} filesystem{'' if filesystems == 1 else 's'}")
    return ", ".join(pieces)
