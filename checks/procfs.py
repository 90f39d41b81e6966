"""The host's statistics where node_exporter reads them, and node_exporter's name filters.

Shared by the ``system`` collector, which exports them, and the ``host`` check, which
judges them, so both read the same figures the same way.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import psutil
from pydantic import AfterValidator, BeforeValidator

__all__ = [
    "CPU_MODES",
    "DISKSTATS_DEVICE_EXCLUDE",
    "FS_TYPES_EXCLUDE",
    "MOUNT_POINTS_EXCLUDE",
    "NETDEV_DEVICE_EXCLUDE",
    "DiskCounters",
    "Host",
    "Mount",
    "NameFilter",
    "NetCounters",
    "Regex",
    "parse_cpu_times",
    "parse_meminfo",
    "parse_mounts",
]

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
