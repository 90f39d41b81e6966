"""The system check: filters and parsers on made-up data, then side by side with node_exporter."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from checks.procfs import (
    CPU_MODES,
    DISKSTATS_DEVICE_EXCLUDE,
    FS_TYPES_EXCLUDE,
    MOUNT_POINTS_EXCLUDE,
    NETDEV_DEVICE_EXCLUDE,
    DiskCounters,
    Host,
    NameFilter,
    NetCounters,
    parse_cpu_times,
    parse_meminfo,
    parse_mounts,
)
from checks.system import SystemCheck, SystemConfig
from monitor.model import CheckResult, MetricType, Status
from tests.support import free_port, require_program, wait_for


def make_config(**options: Any) -> SystemConfig:
    return SystemConfig(name="host", type="system", **options)


# --- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mountpoint", "ignored"),
    [
        pytest.param("/", False, id="the root filesystem is reported"),
        pytest.param("/home", False, id="/home is reported"),
        pytest.param("/srv/my data", False, id="a mount point with a space is reported"),
        pytest.param("/proc", True, id="/proc is left out"),
        pytest.param("/proc/sys/fs/binfmt_misc", True, id="mounts below /proc are left out"),
        pytest.param("/dev/shm", True, id="mounts below /dev are left out"),
        pytest.param("/devices", False, id="a directory merely starting with dev is reported"),
        pytest.param("/sys/fs/cgroup", True, id="mounts below /sys are left out"),
        pytest.param("/run/user/1000", True, id="mounts below /run are left out"),
        pytest.param("/mnt/usb", True, id="mounts below /mnt are left out"),
        pytest.param("/media/cdrom", True, id="mounts below /media are left out"),
        pytest.param("/var/lib/docker", False, id="the docker directory itself is reported"),
        pytest.param(
            "/var/lib/docker/overlay2/0123/merged",
            True,
            id="container mounts below the docker directory are left out",
        ),
        pytest.param(
            "/var/lib/containers/storage/overlay",
            True,
            id="container mounts below the podman directory are left out",
        ),
    ],
)
def test_default_mount_point_filter(mountpoint: str, ignored: bool) -> None:
    config = make_config()
    assert NameFilter.compile(config.filesystem_mount_points_exclude).ignores(mountpoint) is ignored


@pytest.mark.parametrize(
    ("fstype", "ignored"),
    [
        pytest.param("ext4", False, id="ext4 is reported"),
        pytest.param("xfs", False, id="xfs is reported"),
        pytest.param("tmpfs", False, id="tmpfs is reported"),
        pytest.param("nfs4", False, id="nfs4 is reported"),
        pytest.param("fuse.sshfs", False, id="a fuse filesystem is reported"),
        pytest.param("overlay", True, id="overlay is left out"),
        pytest.param("cgroup", True, id="cgroup is left out"),
        pytest.param("cgroup2", True, id="cgroup2 is left out"),
        pytest.param("squashfs", True, id="squashfs is left out"),
        pytest.param("proc", True, id="proc is left out"),
        pytest.param("procfs", True, id="procfs is left out"),
        pytest.param("sysfs", True, id="sysfs is left out"),
        pytest.param("devtmpfs", True, id="devtmpfs is left out"),
        pytest.param("tracefs2", False, id="a type merely starting with a left-out one is kept"),
    ],
)
def test_default_filesystem_type_filter(fstype: str, ignored: bool) -> None:
    config = make_config()
    assert NameFilter.compile(config.filesystem_fs_types_exclude).ignores(fstype) is ignored


@pytest.mark.parametrize(
    ("device", "ignored"),
    [
        pytest.param("vda", False, id="a whole virtio disk is reported"),
        pytest.param("vda1", True, id="a virtio partition is left out"),
        pytest.param("sda", False, id="a whole SCSI disk is reported"),
        pytest.param("sdb12", True, id="a SCSI partition is left out"),
        pytest.param("xvda1", True, id="a Xen partition is left out"),
        pytest.param("nvme0n1", False, id="a whole NVMe namespace is reported"),
        pytest.param("nvme0n1p2", True, id="an NVMe partition is left out"),
        pytest.param("loop0", True, id="a loop device is left out"),
        pytest.param("ram0", True, id="a ram disk is left out"),
        pytest.param("zram0", False, id="a zram device is reported as the installed exporter does"),
        pytest.param("fd0", True, id="a floppy is left out"),
        pytest.param("dm-0", False, id="a device mapper volume is reported"),
        pytest.param("md127", False, id="a software RAID is reported"),
    ],
)
def test_default_disk_device_filter(device: str, ignored: bool) -> None:
    config = make_config()
    disk_filter = NameFilter.compile(
        config.diskstats_device_exclude, config.diskstats_device_include
    )
    assert disk_filter.ignores(device) is ignored


@pytest.mark.parametrize(
    ("device", "ignored"),
    [
        pytest.param("lo", True, id="the loopback device is left out"),
        pytest.param("lo0", False, id="a device merely starting with lo is reported"),
        pytest.param("eth0", False, id="an ethernet device is reported"),
        pytest.param("docker0", False, id="a bridge is reported"),
    ],
)
def test_default_network_device_filter(device: str, ignored: bool) -> None:
    config = make_config()
    net_filter = NameFilter.compile(config.netdev_device_exclude, config.netdev_device_include)
    assert net_filter.ignores(device) is ignored


@pytest.mark.parametrize(
    ("option", "device"),
    [
        pytest.param("netdev_device", "lo", id="a network include list replaces the default"),
        pytest.param("diskstats_device", "loop0", id="a disk include list replaces the default"),
    ],
)
def test_an_include_list_replaces_the_default_exclude_list(option: str, device: str) -> None:
    config = make_config(**{f"{option}_include": f"^{device}$"})
    assert getattr(config, f"{option}_exclude") is None
    name_filter = NameFilter.compile(None, getattr(config, f"{option}_include"))
    assert not name_filter.ignores(device)
    assert name_filter.ignores("eth0")


@pytest.mark.parametrize(
    "option",
    [
        pytest.param("netdev_device", id="network devices take an include or an exclude list"),
        pytest.param("diskstats_device", id="disk devices take an include or an exclude list"),
    ],
)
def test_include_and_exclude_lists_together_are_refused(option: str) -> None:
    with pytest.raises(ValidationError, match=f"set {option}_include or {option}_exclude"):
        make_config(**{f"{option}_include": "^a$", f"{option}_exclude": "^b$"})


def test_an_invalid_pattern_is_refused() -> None:
    with pytest.raises(ValidationError, match="is not a regular expression"):
        make_config(filesystem_fs_types_exclude="^(ext4$")


def test_an_empty_pattern_leaves_nothing_out() -> None:
    config = make_config(filesystem_fs_types_exclude="", netdev_device_exclude="")
    assert config.filesystem_fs_types_exclude is None
    assert not NameFilter.compile(config.netdev_device_exclude).ignores("lo")


@pytest.mark.parametrize(
    ("pattern", "name", "ignored"),
    [
        pytest.param("ram", "zram0", True, id="an unanchored pattern matches anywhere in the name"),
        pytest.param("^ram", "zram0", False, id="an anchored pattern matches only at the start"),
        pytest.param(r"^loop\d+$", "loop\u0661", False, id="a digit class means ASCII digits"),
    ],
)
def test_patterns_are_searched_like_go_match_string(pattern: str, name: str, ignored: bool) -> None:
    assert NameFilter.compile(pattern).ignores(name) is ignored


# --- parsers ------------------------------------------------------------------------------


def test_meminfo_fields_get_node_exporters_names() -> None:
    fields = parse_meminfo("MemTotal:       1000 kB\nActive(anon):  5 kB\nHugePages_Total:   3\n")
    assert fields == {
        "MemTotal_bytes": 1024000.0,
        "Active_anon_bytes": 5120.0,
        "HugePages_Total": 3.0,
    }


def test_mount_points_are_unescaped_as_node_exporter_does() -> None:
    [mount] = parse_mounts("/dev/sdb1 /srv/a\\040b\\011c\\134d ext4 ro,noatime 0 0\n")
    assert mount.mountpoint == "/srv/a b\tc\\134d"
    assert mount.readonly


def test_cpu_times_are_keyed_by_cpu_id_not_position() -> None:
    stat = "cpu  3 0 0 0\ncpu0 100 0 50 1000 10 1 5 2 0 0\ncpu2 40 7 20 500\nintr 1 2\n"
    times = parse_cpu_times(stat, 100)
    assert list(times) == ["0", "2"]
    assert times["0"] == (1.0, 0.0, 0.5, 10.0, 0.1, 0.01, 0.05, 0.02)
    assert times["2"] == (0.4, 0.07, 0.2, 5.0, 0.0, 0.0, 0.0, 0.0)


# --- the check on a made-up host ---------------------------------------------------------


def statvfs(bsize: int, frsize: int, blocks: int, bfree: int, bavail: int) -> os.statvfs_result:
    return os.statvfs_result((bsize, frsize, blocks, bfree, bavail, 1000, 600, 600, 0, 255))


@dataclass
class FakeHost(Host):
    """A host with made-up statistics that records which thread asked for each."""

    stat_text: str = "cpu  0 0 0 0\ncpu0 100 0 50 1000 10 0 5 0 0 0\ncpu2 40 0 20 500 5 0 2 0\n"
    meminfo_text: str = (
        "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 500 kB\nBuffers: 10 kB\n"
        "Cached: 100 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nActive(anon): 5 kB\nHugePages_Total: 0\n"
    )
    mounts_text: str = (
        "/dev/vda / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw 0 0\n"
        "/dev/vdb /srv/my\\040data xfs ro,noatime 0 0\n"
        "/dev/vdc /broken ext4 rw 0 0\n"
        "overlay /var/lib/docker/overlay2/0123/merged overlay rw 0 0\n"
        "/dev/vda / ext4 rw,relatime 0 0\n"
    )
    filesystems: dict[str, os.statvfs_result] = field(
        default_factory=lambda: {
            "/": statvfs(4096, 1024, 1000, 500, 400),
            "/srv/my data": statvfs(512, 512, 100, 0, 0),
        }
    )
    failing: set[str] = field(default_factory=set)
    calls: list[tuple[str, int]] = field(default_factory=list)

    def _call(self, what: str) -> None:
        self.calls.append((what, threading.get_ident()))
        if what in self.failing:
            raise OSError(f"{what} is broken")

    def stat(self) -> str:
        self._call("stat")
        return self.stat_text

    def clock_ticks(self) -> int:
        self._call("clock_ticks")
        return 100

    def meminfo(self) -> str:
        self._call("meminfo")
        return self.meminfo_text

    def mounts(self) -> str:
        self._call("mounts")
        return self.mounts_text

    def statvfs(self, path: str) -> os.statvfs_result:
        self._call("statvfs")
        if path not in self.filesystems:
            raise PermissionError(13, "Permission denied", path)
        return self.filesystems[path]

    def loadavg(self) -> str:
        self._call("loadavg")
        return "0.12 0.34 0.56 1/100 1234\n"

    def boot_time(self) -> float:
        self._call("boot_time")
        return 1_700_000_000.0

    def net_io(self) -> dict[str, NetCounters]:
        self._call("net_io")
        return {
            "lo": NetCounters(1, 2, 3, 4, 5, 6, 7, 8),
            "eth0": NetCounters(1000, 10, 1, 2, 2000, 20, 3, 4),
        }

    def disk_io(self) -> dict[str, DiskCounters]:
        self._call("disk_io")
        return {
            "vda": DiskCounters(10, 5120, 20, 10240, 1500),
            "vda1": DiskCounters(1, 512, 2, 1024, 100),
            "loop0": DiskCounters(0, 0, 0, 0, 0),
        }

    def time(self) -> float:
        self._call("time")
        return 1_700_000_100.5


async def run_on(host: FakeHost, **options: Any) -> CheckResult:
    async with SystemCheck(make_config(**options), host=host) as check:
        return await check.run()


def values(result: CheckResult) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for s in result.samples}


def value(result: CheckResult, name: str, **labels: str) -> float:
    return values(result)[name, frozenset(labels.items())]


ROOT = {"device": "/dev/vda", "fstype": "ext4", "mountpoint": "/"}
DATA = {"device": "/dev/vdb", "fstype": "xfs", "mountpoint": "/srv/my data"}
BROKEN = {"device": "/dev/vdc", "fstype": "ext4", "mountpoint": "/broken"}


async def test_families_have_node_exporters_types_and_help() -> None:
    result = await run_on(FakeHost())
    assert {s.name for s in result.samples} == set(result.metadata)
    for name, meta in result.metadata.items():
        expected = MetricType.COUNTER if name.endswith("_total") else MetricType.GAUGE
        assert meta.type is expected, name
        assert meta.help, name
    assert result.metadata["node_cpu_seconds_total"].type is MetricType.COUNTER
    assert result.metadata["node_disk_io_time_seconds_total"].type is MetricType.COUNTER
    assert result.metadata["node_filesystem_avail_bytes"].type is MetricType.GAUGE
    assert result.metadata["node_load1"].help == "1m load average."
    assert result.metadata["node_memory_Active_anon_bytes"].help == (
        "Memory information field Active_anon_bytes."
    )


async def test_samples_carry_only_node_exporters_labels_and_no_timestamp() -> None:
    result = await run_on(FakeHost())
    label_names: dict[str, set[frozenset[str]]] = {}
    for sample in result.samples:
        assert sample.timestamp is None
        label_names.setdefault(sample.name, set()).add(frozenset(sample.labels))
    for name, names in label_names.items():
        if name == "node_cpu_seconds_total":
            assert names == {frozenset({"cpu", "mode"})}
        elif name.startswith("node_filesystem_"):
            assert names == {frozenset({"device", "fstype", "mountpoint"})}, name
        elif name.startswith(("node_network_", "node_disk_")):
            assert names == {frozenset({"device"})}, name
        else:
            assert names == {frozenset()}, name


async def test_blocking_work_runs_in_one_worker_thread() -> None:
    host = FakeHost()
    await run_on(host)
    threads = {thread for _, thread in host.calls}
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    assert {what for what, _ in host.calls} >= {"stat", "meminfo", "mounts", "statvfs", "net_io"}


async def test_values_are_node_exporters() -> None:
    result = await run_on(FakeHost())
    assert value(result, "node_cpu_seconds_total", cpu="2", mode="user") == 0.4
    assert value(result, "node_cpu_seconds_total", cpu="0", mode="iowait") == 0.1
    assert {m for (n, labels) in values(result) for k, m in labels if k == "mode"} == set(CPU_MODES)
    assert value(result, "node_memory_MemTotal_bytes") == 1024000.0
    assert value(result, "node_memory_Cached_bytes") == 102400.0
    assert value(result, "node_memory_HugePages_Total") == 0.0
    assert value(result, "node_load15") == 0.56
    # Sizes are in f_bsize units, as node_exporter computes them, not f_frsize ones.
    assert value(result, "node_filesystem_size_bytes", **ROOT) == 4096 * 1000
    assert value(result, "node_filesystem_free_bytes", **ROOT) == 4096 * 500
    assert value(result, "node_filesystem_avail_bytes", **ROOT) == 4096 * 400
    assert value(result, "node_filesystem_files", **ROOT) == 1000
    assert value(result, "node_filesystem_files_free", **ROOT) == 600
    assert value(result, "node_filesystem_readonly", **ROOT) == 0
    assert value(result, "node_filesystem_readonly", **DATA) == 1
    assert value(result, "node_network_receive_drop_total", device="eth0") == 2
    assert value(result, "node_network_transmit_errs_total", device="eth0") == 3
    assert value(result, "node_disk_written_bytes_total", device="vda") == 10240
    assert value(result, "node_disk_io_time_seconds_total", device="vda") == 1.5
    assert value(result, "node_boot_time_seconds") == 1_700_000_000
    assert value(result, "node_time_seconds") == 1_700_000_100.5


async def test_filtered_out_names_are_not_reported() -> None:
    result = await run_on(FakeHost())
    devices = {dict(s.labels).get("device") for s in result.samples}
    mountpoints = {dict(s.labels).get("mountpoint") for s in result.samples} - {None}
    assert mountpoints == {"/", "/srv/my data", "/broken"}
    assert "lo" not in devices
    assert "vda1" not in devices
    assert "loop0" not in devices
    # The root filesystem is listed twice in the mount table, reported once.
    assert len([s for s in result.samples if s.name == "node_filesystem_size_bytes"]) == 2


async def test_a_filesystem_that_cannot_be_read_is_marked_and_the_rest_reported() -> None:
    result = await run_on(FakeHost())
    assert value(result, "node_filesystem_device_error", **BROKEN) == 1
    assert value(result, "node_filesystem_device_error", **ROOT) == 0
    broken = [s.name for s in result.samples if dict(s.labels) == BROKEN]
    assert broken == ["node_filesystem_device_error"]
    assert result.status is Status.OK


async def test_a_part_that_fails_leaves_the_others() -> None:
    result = await run_on(FakeHost(failing={"meminfo", "disk_io"}))
    names = {s.name for s in result.samples}
    assert not any(n.startswith(("node_memory_", "node_disk_")) for n in names)
    assert {"node_cpu_seconds_total", "node_load1", "node_filesystem_size_bytes"} <= names
    assert result.status is Status.OK
    assert "cannot read memory: meminfo is broken" in result.message
    assert "cannot read disks: disk_io is broken" in result.message


class RecordingHandler(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def check_log() -> Iterator[list[logging.LogRecord]]:
    """The records the system check logs, at INFO and above, while the test runs."""
    logger = logging.getLogger("monitord.checks.system")
    handler, level = RecordingHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_failing_part_is_logged_once_per_outage(check_log: list[logging.LogRecord]) -> None:
    host = FakeHost(failing={"disk_io"})
    async with SystemCheck(make_config(), host=host) as check:
        await check.run()
        await check.run()
        host.failing.clear()
        await check.run()
    assert [(r.levelname, r.getMessage()) for r in check_log] == [
        ("WARNING", "check host: cannot read disks: disk_io is broken"),
        ("INFO", "check host: reads disks again"),
    ]


async def test_nothing_read_is_unknown() -> None:
    every_call = {"stat", "meminfo", "mounts", "loadavg", "boot_time", "net_io", "disk_io", "time"}
    result = await run_on(FakeHost(failing=every_call))
    assert result.status is Status.UNKNOWN
    assert result.samples == ()
    assert "cannot read cpu" in result.message


async def test_message_sums_up_the_host_in_one_line() -> None:
    result = await run_on(FakeHost())
    assert result.message == "load 0.12, mem 50% used, 3 filesystems"


async def test_a_cpu_counter_that_goes_backwards_keeps_its_last_value() -> None:
    host = FakeHost()
    async with SystemCheck(make_config(), host=host) as check:
        await check.run()
        host.stat_text = "cpu0 101 0 50 1001 9 0 5 0\ncpu2 41 0 20 501 5 0 2 0\n"
        result = await check.run()
    assert value(result, "node_cpu_seconds_total", cpu="0", mode="iowait") == 0.1
    assert value(result, "node_cpu_seconds_total", cpu="0", mode="user") == 1.01


async def test_a_cpu_whose_idle_time_jumps_back_starts_over() -> None:
    host = FakeHost()
    async with SystemCheck(make_config(), host=host) as check:
        await check.run()
        host.stat_text = "cpu0 1 0 1 10 1 0 0 0\ncpu2 41 0 20 501 5 0 2 0\n"  # cpu0 re-plugged
        result = await check.run()
    assert value(result, "node_cpu_seconds_total", cpu="0", mode="idle") == 0.1
    assert value(result, "node_cpu_seconds_total", cpu="0", mode="user") == 0.01


async def test_the_real_host_is_read() -> None:
    async with SystemCheck(make_config()) as check:
        result = await check.run()
    names = {s.name for s in result.samples}
    assert result.status is Status.OK, result.message
    assert "cannot read" not in result.message
    assert {"node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load1"} <= names
    assert {"node_boot_time_seconds", "node_time_seconds"} <= names


# --- side by side with node_exporter -----------------------------------------------------


def node_exporter_binary() -> str:
    return require_program("prometheus-node-exporter", "prometheus-node-exporter")


@pytest.mark.integration
def test_defaults_are_those_of_the_installed_node_exporter() -> None:
    help_text = subprocess.run(
        [node_exporter_binary(), "--help"], capture_output=True, text=True, check=False
    )
    text = help_text.stdout + help_text.stderr

    def default(flag: str) -> str:
        match = re.search(rf'--collector\.{re.escape(flag)}=("(?:[^"\\]|\\.)*")', text)
        assert match is not None, f"--collector.{flag} has no default in --help"
        return str(json.loads(match[1]))  # kingpin prints defaults Go-quoted

    assert default("filesystem.mount-points-exclude") == MOUNT_POINTS_EXCLUDE
    assert default("filesystem.fs-types-exclude") == FS_TYPES_EXCLUDE
    assert default("netdev.device-exclude") == NETDEV_DEVICE_EXCLUDE
    assert default("diskstats.device-exclude") == DISKSTATS_DEVICE_EXCLUDE


@pytest.fixture
def start_node_exporter(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start node_exporter on a free port with the given flags; give its /metrics URL."""
    binary = node_exporter_binary()
    started: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        port = free_port()
        log_path = tmp_path / f"node_exporter-{port}.log"
        with log_path.open("wb") as log:
            address = f"--web.listen-address=127.0.0.1:{port}"
            proc = subprocess.Popen([binary, address, *flags], stdout=log, stderr=log)
        started.append(proc)

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"node_exporter exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(ready)
        return f"http://127.0.0.1:{port}/metrics"

    yield start
    for proc in reversed(started):
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Series = dict[frozenset[tuple[str, str]], float]


def label_names(key: frozenset[tuple[str, str]]) -> frozenset[str]:
    return frozenset(name for name, _ in key)


@dataclass
class Exposition:
    """The families of one scrape (or one check run), by sample name."""

    series: dict[str, Series] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    @classmethod
    def scrape(cls, url: str) -> Exposition:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        exposition = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                exposition.add(sample.name, sample.labels, sample.value, family.type)
                exposition.helps[sample.name] = family.documentation
        return exposition

    @classmethod
    def of(cls, result: CheckResult) -> Exposition:
        exposition = cls()
        for sample in result.samples:
            meta = result.metadata[sample.name]
            exposition.add(sample.name, sample.labels, sample.value, str(meta.type))
            exposition.helps[sample.name] = meta.help
        return exposition

    def add(self, name: str, labels: Mapping[str, str], value: float, kind: str) -> None:
        self.series.setdefault(name, {})[frozenset(labels.items())] = value
        self.types[name] = kind


# The families compared by value. All node_memory_* families are compared by name, type and
# help, but only these by value: fields such as Dirty or Writeback jump by more than any
# fixed tolerance while something else on the machine writes.
FAMILIES = (
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_filesystem_size_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
    "node_filesystem_readonly",
    "node_filesystem_device_error",
    "node_network_receive_bytes_total",
    "node_network_receive_packets_total",
    "node_network_receive_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_packets_total",
    "node_network_transmit_errs_total",
    "node_network_transmit_drop_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_disk_io_time_seconds_total",
    "node_boot_time_seconds",
    "node_time_seconds",
)


def gauge_slack(name: str, reference: float) -> float:
    """How far outside node_exporter's two readings a gauge of monitord's may lie.

    5% of the value, with an absolute floor where the value may sit near zero and move
    by more than 5% of itself between two reads: load averages near 0 (they move in
    hundredths), free memory and free or available bytes on a nearly full filesystem
    (anything running here allocates or writes MiBs), free inodes.
    """
    if name in ("node_time_seconds", "node_boot_time_seconds"):
        return 2.0  # seconds: both read the same clock within the scrapes
    if name.startswith("node_load"):
        floor = 0.1
    elif name.endswith("_bytes"):
        floor = 64 * 2**20
    elif name == "node_filesystem_files_free":
        floor = 1000.0
    else:
        floor = 0.0
    return max(0.05 * abs(reference), floor)


def node_exporter_flags(config: SystemConfig) -> list[str]:
    """The node_exporter flags that filter as ``config`` does (node_exporter: "" is no filter)."""
    assert config.filesystem_mount_points_exclude is not None  # "" would leave out everything
    assert config.filesystem_fs_types_exclude is not None
    collectors = ("cpu", "meminfo", "loadavg", "filesystem", "netdev", "diskstats", "stat", "time")
    return [
        "--collector.disable-defaults",
        "--web.disable-exporter-metrics",
        *(f"--collector.{name}" for name in collectors),
        f"--collector.filesystem.mount-points-exclude={config.filesystem_mount_points_exclude}",
        f"--collector.filesystem.fs-types-exclude={config.filesystem_fs_types_exclude}",
        f"--collector.netdev.device-exclude={config.netdev_device_exclude or ''}",
        f"--collector.netdev.device-include={config.netdev_device_include or ''}",
        f"--collector.diskstats.device-exclude={config.diskstats_device_exclude or ''}",
        f"--collector.diskstats.device-include={config.diskstats_device_include or ''}",
    ]


@pytest.mark.integration
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="with the default filters"),
        pytest.param(
            {
                "filesystem_mount_points_exclude": "^$",
                "filesystem_fs_types_exclude": "^$",
                "netdev_device_exclude": None,
                "diskstats_device_exclude": None,
            },
            id="with nothing left out",
        ),
        pytest.param(
            {
                "netdev_device_include": "^(lo|eth.*|en.*)$",
                "diskstats_device_include": "^(vd|sd|nvme|loop)",
            },
            id="with include lists instead of exclude lists",
        ),
    ],
)
def test_same_families_and_values_as_node_exporter(
    start_node_exporter: Callable[..., str], options: dict[str, Any]
) -> None:
    config = make_config(**options)
    url = start_node_exporter(*node_exporter_flags(config))

    before = Exposition.scrape(url)
    ours = Exposition.of(asyncio.run(SystemCheck(config).run()))
    after = Exposition.scrape(url)

    theirs = set(before.series) | set(after.series)
    for name in ("node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load1"):
        assert name in theirs, f"node_exporter does not expose {name} here"
    memory = {n for n in theirs if n.startswith("node_memory_")}
    assert {n for n in ours.series if n.startswith("node_memory_")} == memory
    assert set(ours.series) <= theirs, "monitord invents families node_exporter lacks"

    types, helps = {**after.types, **before.types}, {**after.helps, **before.helps}
    for name in sorted(set(ours.series) | (theirs & {*FAMILIES, *memory})):
        assert name in ours.series, f"{name}: node_exporter has it, monitord does not"
        assert (ours.types[name], ours.helps[name]) == (types[name], helps[name])
        b, o, a = before.series.get(name, {}), ours.series[name], after.series.get(name, {})
        assert {label_names(key) for key in o} == {label_names(key) for key in b | a}, name
        # Series that were there at both scrapes must be ours; ours must have been at one.
        assert set(b) & set(a) <= set(o) <= set(b) | set(a), name
        if name not in FAMILIES:
            continue
        for key in set(b) & set(a):
            low, high = sorted((b[key], a[key]))
            where = f"{name}{dict(key)}: monitord {o[key]!r}, node_exporter {b[key]!r} → {a[key]!r}"
            if ours.types[name] == "counter":
                assert low <= o[key] <= high, where
            else:
                slack = gauge_slack(name, high)
                assert low - slack <= o[key] <= high + slack, where
