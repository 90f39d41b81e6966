"""The icmp check with real echoes to 127.0.0.1 and ::1.

Raw sockets are used as root. Loss is real too: the replies are sent by the kernel and
then withheld from the check's socket, either by the kernel's own ICMP filter on the raw
socket (``ICMP_FILTER``/``ICMP6_FILTER``, so no reply ever reaches it) or by a socket
subclass that reads a reply and throws it away. The unprivileged (``SOCK_DGRAM``) path runs
in a fresh network namespace whose ``net.ipv4.ping_group_range`` admits root's group, with
raw sockets refused, so the host's sysctl is never changed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from checks.icmp import ICMPCheck, ICMPConfig, checksum, echo_request
from monitor.model import CheckResult, Status

ROOT = Path(__file__).resolve().parent.parent


def make_config(host: str = "127.0.0.1", timeout: str = "2s", **options: Any) -> ICMPConfig:
    return ICMPConfig.model_validate(
        {
            "name": "ping",
            "type": "icmp",
            "host": host,
            "interval": "10s",
            "timeout": timeout,
            "packet_interval": "20ms",
            **options,
        }
    )


def values(result: CheckResult) -> dict[str, float]:
    return {s.name: s.value for s in result.samples if not s.labels}


def phases(result: CheckResult) -> dict[str, float]:
    return {
        s.labels["phase"]: s.value
        for s in result.samples
        if s.name == "probe_icmp_duration_seconds"
    }


def refuse_unprivileged(family: int, kind: int, proto: int) -> socket.socket:
    """Refuses the SOCK_DGRAM ICMP socket as a kernel outside ping_group_range does."""
    if kind == socket.SOCK_DGRAM:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return socket.socket(family, kind, proto)


def filtered_raw(family: int, kind: int, proto: int) -> socket.socket:
    """A raw ICMP socket whose kernel filter drops every echo reply before it is queued."""
    sock = refuse_unprivileged(family, kind, proto)
    if family == socket.AF_INET:
        sol_raw, icmp_filter = 255, 1  # linux/icmp.h: bit n set filters out type n
        sock.setsockopt(sol_raw, icmp_filter, struct.pack("=I", 1 << 0))
    else:
        words = [0] * 8  # linux/icmpv6.h: ICMP6_FILTER, bit n set blocks type n
        words[129 >> 5] |= 1 << (129 & 31)
        sock.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("=8I", *words))
    return sock


class DropFirstReply(socket.socket):
    """A raw IPv4 ICMP socket that reads the first echo reply and throws it away."""

    dropped = 0

    def recvmsg(self, *args: Any) -> Any:
        data, ancillary, flags, source = super().recvmsg(*args)
        ihl = (data[0] & 0x0F) * 4
        if data[ihl] == 0 and not self.dropped:  # type 0: echo reply
            self.dropped += 1
            return self.recvmsg(*args)
        return data, ancillary, flags, source


def drop_first_reply(family: int, kind: int, proto: int) -> socket.socket:
    if kind == socket.SOCK_DGRAM:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return DropFirstReply(family, kind, proto)


@pytest.mark.parametrize(
    ("host", "protocol", "payload_size"),
    [
        pytest.param("127.0.0.1", 4, 56, id="IPv4 loopback answers every echo"),
        pytest.param("::1", 6, 56, id="IPv6 loopback answers every echo"),
        pytest.param("127.0.0.1", 4, 0, id="an empty payload is echoed"),
        pytest.param("::1", 6, 1400, id="a large payload is echoed back whole"),
    ],
)
async def test_loopback_replies_are_ok_with_blackbox_and_loss_samples(
    host: str, protocol: int, payload_size: int
) -> None:
    result = await ICMPCheck(make_config(host, count=4, payload_size=payload_size)).run()
    assert result.status is Status.OK, result.message
    assert result.message.startswith(f"{host}: 4/4 replies, 0% loss, rtt min/avg/max ")
    v = values(result)
    assert v["probe_success"] == 1.0
    assert v["probe_ip_protocol"] == protocol
    assert v["probe_icmp_packets_sent"] == v["probe_icmp_packets_received"] == 4
    assert v["probe_icmp_packet_loss_ratio"] == 0.0
    assert 0 < v["probe_icmp_rtt_min_seconds"] <= v["probe_icmp_rtt_avg_seconds"]
    assert v["probe_icmp_rtt_avg_seconds"] <= v["probe_icmp_rtt_max_seconds"] < 0.1
    assert v["probe_icmp_reply_hop_limit"] == 64  # Linux's default TTL and hop limit
    assert 0.06 <= v["probe_duration_seconds"] < 0.5  # three 20 ms gaps, no wait beyond
    p = phases(result)
    assert set(p) == {"resolve", "setup", "rtt"}
    assert p["rtt"] == v["probe_icmp_rtt_avg_seconds"]
    assert p["resolve"] == v["probe_dns_lookup_time_seconds"]
    assert result.metadata["probe_icmp_duration_seconds"].help == (
        "Duration of icmp request by phase"
    )


async def test_a_name_is_resolved_and_shown_with_its_address() -> None:
    result = await ICMPCheck(make_config("localhost", preferred_ip_protocol="ip4")).run()
    assert result.status is Status.OK, result.message
    assert result.message.startswith("localhost (127.0.0.1): 3/3 replies")


async def test_the_unprivileged_socket_is_tried_first_then_the_raw_one() -> None:
    opened: list[tuple[int, int, int]] = []

    def recording(family: int, kind: int, proto: int) -> socket.socket:
        opened.append((family, kind, proto))
        return refuse_unprivileged(family, kind, proto)

    result = await ICMPCheck(make_config(), socket_factory=recording).run()
    assert result.status is Status.OK, result.message
    assert opened == [
        (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
        (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ]


async def test_without_either_permission_the_result_is_unknown_and_names_both(
    tmp_path: Path,
) -> None:
    def refuse_all(family: int, kind: int, proto: int) -> socket.socket:
        code = errno.EACCES if kind == socket.SOCK_DGRAM else errno.EPERM
        raise PermissionError(code, os.strerror(code))

    range_file = tmp_path / "ping_group_range"
    range_file.write_text("1\t0\n")
    check = ICMPCheck(make_config(), socket_factory=refuse_all, ping_group_range=range_file)
    result = await check.run()
    assert result.status is Status.UNKNOWN
    assert result.message == (
        "127.0.0.1: cannot open an ICMP socket: unprivileged ICMP sockets need the process's "
        f"group (gid {os.getgid()}) inside net.ipv4.ping_group_range (now 1 0), "
        "raw sockets need CAP_NET_RAW"
    )
    v = values(result)
    assert v["probe_success"] == 0.0
    assert "probe_icmp_packets_sent" not in v  # nothing was sent


async def test_a_socket_error_other_than_permission_is_unknown_with_its_reason() -> None:
    def unsupported(family: int, kind: int, proto: int) -> socket.socket:
        code = errno.EAFNOSUPPORT
        raise OSError(code, os.strerror(code))

    result = await ICMPCheck(make_config("::1"), socket_factory=unsupported).run()
    assert result.status is Status.UNKNOWN
    assert result.message == (
        "::1: cannot open an ICMP socket: Address family not supported by protocol"
    )


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1", id="lost IPv4 replies end the wait at the deadline"),
        pytest.param("::1", id="lost IPv6 replies end the wait at the deadline"),
    ],
)
async def test_all_replies_lost_is_critical_and_cut_inside_the_timeout(host: str) -> None:
    started = time.monotonic()
    result = await ICMPCheck(make_config(host, timeout="1s"), socket_factory=filtered_raw).run()
    elapsed = time.monotonic() - started
    assert 0.85 < elapsed < 1.0, elapsed
    assert result.status is Status.CRITICAL
    assert result.message == f"{host}: 0/3 replies, 100% loss"
    v = values(result)
    assert v["probe_success"] == 0.0
    assert v["probe_icmp_packets_sent"] == 3
    assert v["probe_icmp_packets_received"] == 0
    assert v["probe_icmp_packet_loss_ratio"] == 1.0
    assert "probe_icmp_rtt_avg_seconds" not in v
    assert "probe_icmp_reply_hop_limit" not in v
    assert phases(result)["rtt"] == 0.0  # as blackbox leaves it without a reply


@pytest.mark.parametrize(
    ("limits", "status", "reason"),
    [
        pytest.param({}, Status.OK, "", id="one lost of three is under the default 40 percent"),
        pytest.param(
            {"warning": {"loss": 20}},
            Status.WARNING,
            " (loss above 20%)",
            id="a third lost is above a 20 percent warning",
        ),
        pytest.param(
            {"warning": {"loss": 20}, "critical": {"loss": 30}},
            Status.CRITICAL,
            " (loss above 30%)",
            id="a third lost is above a 30 percent critical",
        ),
        pytest.param(
            {"warning": None, "critical": None},
            Status.OK,
            "",
            id="null thresholds turn the levels off",
        ),
    ],
)
async def test_partial_loss_against_loss_thresholds(
    limits: dict[str, Any], status: Status, reason: str
) -> None:
    config = make_config(timeout="500ms", **limits)
    result = await ICMPCheck(config, socket_factory=drop_first_reply).run()
    assert result.status is status, result.message
    assert result.message.startswith("127.0.0.1: 2/3 replies, 33% loss, rtt min/avg/max ")
    assert result.message.endswith(" ms" + reason)
    v = values(result)
    assert v["probe_success"] == 1.0  # the host answered; the thresholds set the status
    assert v["probe_icmp_packet_loss_ratio"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("limits", "status"),
    [
        pytest.param({"warning": {"rtt": "0"}}, Status.WARNING, id="any round trip is above 0"),
        pytest.param(
            {"warning": {"rtt": "0"}, "critical": {"rtt": "0"}},
            Status.CRITICAL,
            id="critical wins over warning",
        ),
        pytest.param(
            {"warning": {"rtt": "1s"}, "critical": {"rtt": "2s"}},
            Status.OK,
            id="loopback is far below a second",
        ),
    ],
)
async def test_average_rtt_against_rtt_thresholds(limits: dict[str, Any], status: Status) -> None:
    result = await ICMPCheck(make_config(**limits)).run()
    assert result.status is status, result.message
    if status is not Status.OK:
        assert result.message.endswith(" ms (rtt avg above 0 ms)")


async def test_concurrent_checks_on_raw_sockets_take_only_their_own_replies() -> None:
    # Each raw socket sees every echo reply on the host; identifiers keep them apart.
    checks = [ICMPCheck(make_config(count=5), socket_factory=refuse_unprivileged) for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(*(check.run() for check in checks))
    elapsed = time.monotonic() - started
    for result in results:
        assert result.status is Status.OK, result.message
        assert values(result)["probe_icmp_packets_received"] == 5
    assert elapsed < 0.4, elapsed  # run side by side on the loop, not one after another


class DropRepliesTo(socket.socket):
    """A raw IPv4 ICMP socket that throws away echo replies carrying ``ident``."""

    ident = -1

    def recvmsg(self, *args: Any) -> Any:
        data, ancillary, flags, source = super().recvmsg(*args)
        ihl = (data[0] & 0x0F) * 4
        if data[ihl] == 0 and int.from_bytes(data[ihl + 4 : ihl + 6], "big") == self.ident:
            return self.recvmsg(*args)
        return data, ancillary, flags, source


async def test_another_checks_replies_with_the_same_sequence_are_not_taken() -> None:
    def deaf(family: int, kind: int, proto: int) -> socket.socket:
        if kind == socket.SOCK_DGRAM:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        sock = DropRepliesTo(family, kind, proto)
        sock.ident = 2000
        return sock

    unanswered = ICMPCheck(make_config(timeout="500ms"), socket_factory=deaf)
    answered = ICMPCheck(make_config(timeout="500ms"), socket_factory=refuse_unprivileged)
    unanswered._ident, answered._ident = 2000, 2001
    unanswered._sequence = answered._sequence = 0  # same sequences and payload: only ids differ
    lost, got = await asyncio.gather(unanswered.run(), answered.run())
    assert lost.message == "127.0.0.1: 0/3 replies, 100% loss"
    assert values(got)["probe_icmp_packets_received"] == 3


async def test_a_run_does_not_take_a_late_reply_of_the_previous_run() -> None:
    check = ICMPCheck(make_config(timeout="500ms"), socket_factory=refuse_unprivileged)
    first, second = await check.run(), await check.run()
    for result in (first, second):
        assert values(result)["probe_icmp_packets_received"] == 3, result.message


UNPRIVILEGED_SCRIPT = textwrap.dedent(
    """
    import asyncio, errno, json, os, socket, sys
    from checks.icmp import ICMPCheck, ICMPConfig

    opened = []

    def no_raw(family, kind, proto):
        opened.append(kind)
        if kind == socket.SOCK_RAW:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        return socket.socket(family, kind, proto)

    config = ICMPConfig.model_validate({"name": "p", "type": "icmp", "host": sys.argv[1],
                                        "timeout": "2s", "packet_interval": "20ms"})
    result = asyncio.run(ICMPCheck(config, socket_factory=no_raw).run())
    values = {s.name: s.value for s in result.samples if not s.labels}
    print(json.dumps({"status": result.status.name, "message": result.message,
                      "values": values, "opened": opened}))
    """
)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1", id="an unprivileged IPv4 socket pings where the group may"),
        pytest.param("::1", id="an unprivileged IPv6 socket pings where the group may"),
    ],
)
def test_unprivileged_sockets_work_inside_ping_group_range(host: str) -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None or os.geteuid() != 0:
        pytest.skip("needs root, unshare (util-linux) and ip (iproute2) for a network namespace")
    gid = os.getgid()
    shell = (
        f"{ip} link set lo up && "
        f"echo '{gid} {gid}' > /proc/sys/net/ipv4/ping_group_range && "
        f'exec "$0" -c "$1" "$2"'
    )
    done = subprocess.run(
        [unshare, "--net", "sh", "-c", shell, sys.executable, UNPRIVILEGED_SCRIPT, host],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["opened"] == [socket.SOCK_DGRAM]
    assert report["status"] == "OK", report["message"]
    assert report["values"]["probe_icmp_packets_received"] == 3
    assert report["values"]["probe_icmp_reply_hop_limit"] == 64


def test_checksum_is_rfc_1071s() -> None:
    # RFC 1071 section 3's example: the one's complement sum of these bytes is ddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    packet = echo_request(socket.AF_INET, 0x1234, 7, b"odd")
    assert packet[:2] == b"\x08\x00" and packet[4:8] == b"\x12\x34\x00\x07"
    assert checksum(packet) == 0  # a packet with its checksum sums to all ones


def test_icmpv6_requests_leave_the_checksum_to_the_kernel() -> None:
    packet = echo_request(socket.AF_INET6, 1, 2, b"x")
    assert packet == bytes([128, 0, 0, 0, 0, 1, 0, 2]) + b"x"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"count": 5, "packet_interval": "1s", "timeout": "3s"},
            "5 requests 1s apart take 4s, not less than the timeout 3s",
            id="the requests must fit in the timeout",
        ),
        pytest.param({"count": 0}, "greater than or equal to 1", id="at least one request"),
        pytest.param(
            {"payload_size": 65508}, "less than or equal to 65507", id="a payload fits a datagram"
        ),
        pytest.param(
            {"warning": {"loss": 120}}, "less than or equal to 100", id="loss is a percentage"
        ),
        pytest.param({"warning": {"rtt": 0.2}}, "not a duration", id="an rtt needs a unit"),
        pytest.param({"hots": "x"}, "hots", id="a misspelt key is refused"),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ICMPConfig.model_validate({"name": "p", "type": "icmp", "host": "h", **options})


def test_defaults_are_check_icmps_thresholds_with_three_requests() -> None:
    config = ICMPConfig(name="p", type="icmp", host="h")
    assert (config.count, config.packet_interval, config.payload_size) == (3, 0.2, 56)
    assert config.warning is not None and config.critical is not None
    assert (config.warning.rtt, config.warning.loss) == (0.2, 40.0)
    assert (config.critical.rtt, config.critical.loss) == (0.5, 80.0)
