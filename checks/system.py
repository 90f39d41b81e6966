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
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple, Self

import psutil
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from checks.base import Check, CheckConfig
from monitor.log import get_logger
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status

__all__ = [
    "CPU_MODES",
    "DISKSTATS_DEVICE_EXCLUDE",
    "FAMILIES",
    "FS_TYPES_EXCLUDE",
    "MOUNT_POINTS_EXCLUDE",
    "NETDEV_DEVICE_EXCLUDE",
    "DiskCounters",
    "Host",
    "Mount",
    "NameFilter",
    "NetCounters",
    "SystemCheck",
    "SystemConfig",
    "parse_cpu_times",
    "parse_meminfo",
    "parse_mounts",
]

log = get_logger("checks.system")

# The defaults of the installed node_exporter (Debian's 1.5.0, `prometheus-node-exporter
# --help`). Newer upstream releases differ: they also skip zram devices and erofs, skip only
# /run/credentials/... under /run, and keep /mnt, /media and the lo device.
MOUNT_POINTS_EXCLUDE: Final = (
    r"^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
FS_TYPES_EXCLUDE: Final = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
    r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
    r"|squashfs|sysfs|tracefs)$"
)
NETDEV_DEVICE_EXCLUDE: Final = r"^lo$"
DISKSTATS_DEVICE_EXCLUDE: Final = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    # re.ASCII: \d and \w mean what they mean in Go's RE2, ASCII only.
    return None if pattern is None else re.compile(pattern, re.ASCII)


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _valid_regex(value: str | None) -> str | None:
    try:
        _compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


Regex = Annotated[str | None, BeforeValidator(_empty_is_none), AfterValidator(_valid_regex)]
"""A regular expression searched in a name, like Go's ``MatchString``; empty or null: none."""


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


@dataclass(frozen=True, slots=True)
class NameFilter:
    """node_exporter's name filter: ignore what ``exclude`` matches or ``include`` does not."""

    exclude: re.Pattern[str] | None = None
    include: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, exclude: str | None = None, include: str | None = None) -> NameFilter:
        """A filter from pattern strings; ``None`` means no such pattern."""
        return cls(_compile(exclude), _compile(include))

    def ignores(self, name: str) -> bool:
        """Tell whether ``name`` is filtered out."""
        if self.exclude is not None and self.exclude.search(name):
            return True
        return self.include is not None and not self.include.search(name)


class Mount(NamedTuple):
    """One line of the mount table."""

    device: str
    mountpoint: str
    fstype: str
    options: str

    @property
    def readonly(self) -> bool:
        """Whether it is mounted ``ro``."""
        return "ro" in self.options.split(",")


class NetCounters(NamedTuple):
    """One network device's counters, named after node_exporter's families."""

    receive_bytes: int
    receive_packets: int
    receive_errs: int
    receive_drop: int
    transmit_bytes: int
    transmit_packets: int
    transmit_errs: int
    transmit_drop: int


class DiskCounters(NamedTuple):
    """One block device's counters from /proc/diskstats, bytes as 512-byte sectors count them."""

    reads_completed: int
    read_bytes: int
    writes_completed: int
    written_bytes: int
    io_time_ms: int


CPU_MODES: Final = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_IDLE: Final = CPU_MODES.index("idle")


def parse_cpu_times(text: str, ticks_per_second: float) -> dict[str, tuple[float, ...]]:
    """Seconds each CPU spent in each of :data:`CPU_MODES`, from /proc/stat, by CPU id."""
    cpus: dict[str, tuple[float, ...]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(field) for field in rest.split()[: len(CPU_MODES)]]
            ticks += [0] * (len(CPU_MODES) - len(ticks))
            cpus[str(int(name[3:]))] = tuple(t / ticks_per_second for t in ticks)
    return cpus


_PARENTHESIS: Final = re.compile(r"\((.*)\)")


def parse_meminfo(text: str) -> dict[str, float]:
    """/proc/meminfo in node_exporter's names: ``Active(anon): 5 kB`` is ``Active_anon_bytes``."""
    fields: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"invalid line in meminfo: {line!r}")
        key = _PARENTHESIS.sub(r"_\1", parts[0].removesuffix(":"))
        value = float(parts[1])
        if len(parts) == 3:  # a unit, always kB
            key, value = f"{key}_bytes", value * 1024
        fields[key] = value
    return fields


def parse_mounts(text: str) -> list[Mount]:
    """The mount table; as node_exporter, unescapes only ``\\040`` and ``\\011`` in mount points."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            raise ValueError(f"malformed mount point information: {line!r}")
        mountpoint = parts[1].replace("\\040", " ").replace("\\011", "\t")
        mounts.append(Mount(parts[0], mountpoint, parts[2], parts[3]))
    return mounts


class Host:
    """The running machine's statistics, read where node_exporter reads them; every call blocks."""

    def stat(self) -> str:
        """The text of /proc/stat."""
        return Path("/proc/stat").read_text(encoding="ascii")

    def clock_ticks(self) -> int:
        """The unit of the CPU times in /proc/stat, per second (USER_HZ)."""
        return os.sysconf("SC_CLK_TCK")

    def meminfo(self) -> str:
        """The text of /proc/meminfo."""
        return Path("/proc/meminfo").read_text(encoding="ascii")

    def mounts(self) -> str:
        """PID 1's mount table, or this process's when hidepid hides PID 1."""
        try:
            return Path("/proc/1/mounts").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")

    def statvfs(self, path: str) -> os.statvfs_result:
        """``statvfs(3)`` of a mount point."""
        return os.statvfs(path)

    def loadavg(self) -> str:
        """The text of /proc/loadavg."""
        return Path("/proc/loadavg").read_text(encoding="ascii")

    def boot_time(self) -> float:
        """When the machine booted, in seconds since the epoch."""
        return psutil.boot_time()

    def net_io(self) -> dict[str, NetCounters]:
        """Every network device's counters from /proc/net/dev, by device name."""
        counters = psutil.net_io_counters(pernic=True, nowrap=False)
        return {
            name: NetCounters(
                c.bytes_recv,
                c.packets_recv,
                c.errin,
                c.dropin,
                c.bytes_sent,
                c.packets_sent,
                c.errout,
                c.dropout,
            )
            for name, c in counters.items()
        }

    def disk_io(self) -> dict[str, DiskCounters]:
        """Every block device's counters from /proc/diskstats, by device name."""
        counters = psutil.disk_io_counters(perdisk=True, nowrap=False)
        return {
            name: DiskCounters(
                c.read_count, c.read_bytes, c.write_count, c.write_bytes, c.busy_time
            )
            for name, c in counters.items()
        }

    def time(self) -> float:
        """The system clock, in seconds since the epoch."""
        return time.time()


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
