"""The ``icmp`` check: echo requests with count, interval and loss/RTT thresholds.

It follows blackbox_exporter's ``icmp`` prober (prober/icmp.go) for its phases and sample
names: ``probe_success``, ``probe_duration_seconds``, ``probe_dns_lookup_time_seconds``,
``probe_ip_protocol``, ``probe_icmp_duration_seconds{phase="resolve"|"setup"|"rtt"}`` and
``probe_icmp_reply_hop_limit``. blackbox sends one echo; this check sends ``count`` of them,
so it adds samples of its own, which are not blackbox's: ``probe_icmp_packets_sent``,
``probe_icmp_packets_received``, ``probe_icmp_packet_loss_ratio`` and
``probe_icmp_rtt_{min,avg,max}_seconds`` (the last three only when a reply came back). The
``rtt`` phase is the average round trip of the replies (blackbox's one round trip when
``count`` is 1), 0 when none came back, as blackbox leaves it.

Sockets, in blackbox's order: an unprivileged ICMP socket (``SOCK_DGRAM``; the kernel sets
the echo identifier and checksum, and allows it when the process's group is inside
``net.ipv4.ping_group_range``), else a raw socket (needs CAP_NET_RAW; the request is built
here, and replies are matched by identifier, sequence, source and payload because a raw
socket sees every ICMP packet the host receives). When neither opens, the result is UNKNOWN
with a message naming both permissions. Sockets are non-blocking and read from the event
loop's reader callback; nothing blocks the loop.

Replies are awaited until every echo has one or the probe's deadline
(:func:`checks.probe.probe_deadline`: the check's timeout minus min(0.5 s, 10 %)) passes;
what has not come back by then is lost.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, model_validator

from checks.base import Check, CheckConfig
from checks.probe import IPProtocol, Resolved, ResolveError, probe_deadline, resolve
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel, Duration

__all__ = [
    "ICMP_FAMILIES",
    "ICMPCheck",
    "ICMPConfig",
    "ICMPLimits",
    "SocketFactory",
    "checksum",
    "echo_request",
]

ICMP_FAMILIES: Final = {
    "probe_success": MetricMetadata(
        MetricType.GAUGE, "Displays whether or not the probe was a success"
    ),
    "probe_duration_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns how long the probe took to complete in seconds"
    ),
    "probe_dns_lookup_time_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns the time taken for probe dns lookup in seconds"
    ),
    "probe_ip_protocol": MetricMetadata(
        MetricType.GAUGE, "Specifies whether probe ip protocol is IP4 or IP6"
    ),
    "probe_icmp_duration_seconds": MetricMetadata(
        MetricType.GAUGE, "Duration of icmp request by phase"
    ),
    "probe_icmp_reply_hop_limit": MetricMetadata(
        MetricType.GAUGE, "Replied packet hop limit (TTL for ipv4)"
    ),
    "probe_icmp_packets_sent": MetricMetadata(MetricType.GAUGE, "Echo requests sent by the probe"),
    "probe_icmp_packets_received": MetricMetadata(
        MetricType.GAUGE, "Echo replies received for the probe's requests"
    ),
    "probe_icmp_packet_loss_ratio": MetricMetadata(
        MetricType.GAUGE, "Share of the echo requests sent that got no reply"
    ),
    "probe_icmp_rtt_min_seconds": MetricMetadata(
        MetricType.GAUGE, "Shortest round trip of the probe's echo replies"
    ),
    "probe_icmp_rtt_avg_seconds": MetricMetadata(
        MetricType.GAUGE, "Average round trip of the probe's echo replies"
    ),
    "probe_icmp_rtt_max_seconds": MetricMetadata(
        MetricType.GAUGE, "Longest round trip of the probe's echo replies"
    ),
}

SocketFactory = Callable[[int, int, int], socket.socket]
"""Opens a socket from (family, type, proto); ``socket.socket`` unless a test injects one."""

_ECHO_REQUEST: Final = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: Final = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTO: Final = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
_HEADER: Final = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_IP_RECVTTL: Final = 12  # linux/in.h; the socket module does not export it
_PAYLOAD_FILL: Final = b"monitord icmp probe "
_PING_GROUP_RANGE: Final = Path("/proc/sys/net/ipv4/ping_group_range")
# An IPv4 datagram is at most 65535 bytes: 20 of IP header and 8 of ICMP header.
_MAX_PAYLOAD: Final = 65507


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, sequence: int, payload: bytes) -> bytes:
    """An echo request with its checksum (ICMPv4; for ICMPv6 the kernel sets it)."""
    kind = _ECHO_REQUEST[socket.AddressFamily(family)]
    packet = _HEADER.pack(kind, 0, 0, ident, sequence) + payload
    if family == socket.AF_INET:
        packet = _HEADER.pack(kind, 0, checksum(packet), ident, sequence) + payload
    return packet


class ICMPLimits(ConfigModel):
    """RTT and loss above which a run is WARNING (or CRITICAL): check_icmp's ``-w 200.0,40%``."""

    rtt: Duration | None = Field(default=None, ge=0, description="average round trip above this")
    loss: float | None = Field(default=None, ge=0, le=100, description="percent lost above this")


class ICMPConfig(CheckConfig):
    """Options of the ``icmp`` check: blackbox's icmp module, with count and thresholds."""

    type: Literal["icmp"]
    host: str = Field(min_length=1, description="name or address to ping")
    # Three, between blackbox's one (where loss is all or nothing) and check_icmp's five:
    # one lost packet shows as 33 % and stays under the default critical loss, and three at
    # the default interval take 0.4 s, well inside the default 10 s timeout.
    count: int = Field(default=3, ge=1, le=100, description="echo requests per run")
    packet_interval: Duration = Field(
        default=0.2, gt=0, description="between requests; ping's floor for unprivileged users"
    )
    payload_size: int = Field(
        default=56, ge=0, le=_MAX_PAYLOAD, description="bytes of data per echo (ping's default)"
    )
    preferred_ip_protocol: IPProtocol = "ip6"
    ip_protocol_fallback: bool = True
    # check_icmp's defaults (-w 200.0,40% -c 500.0,80%); null turns a level off.
    warning: ICMPLimits | None = Field(
        default_factory=lambda: ICMPLimits.model_validate({"rtt": "200ms", "loss": 40}),
        description="WARNING above these",
    )
    critical: ICMPLimits | None = Field(
        default_factory=lambda: ICMPLimits.model_validate({"rtt": "500ms", "loss": 80}),
        description="CRITICAL above these",
    )

    @model_validator(mode="after")
    def _requests_fit_the_timeout(self) -> ICMPConfig:
        sending = (self.count - 1) * self.packet_interval
        if self.timeout is not None and sending >= self.timeout:
            raise ValueError(
                f"{self.count} requests {self.packet_interval:g}s apart take {sending:g}s, "
                f"not less than the timeout {self.timeout:g}s"
            )
        return self


class _SocketDenied(Exception):
    """Neither kind of ICMP socket could be opened; the message says what is missing."""


class _SendFailed(Exception):
    """An echo request could not be sent."""


@dataclass(slots=True)
class _Echoes:
    """The requests of one run and the replies matched to them."""

    target: Resolved
    ident: int | None  # None on an unprivileged socket: the kernel sets it and demultiplexes
    payload: bytes
    raw: bool
    expected: int  # requests the run will send
    sent: dict[int, float] = field(default_factory=dict)  # sequence -> send time
    rtts: dict[int, float] = field(default_factory=dict)  # sequence -> round trip
    hop_limit: int | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def receive(self, data: bytes, ancillary: list[tuple[int, int, bytes]], source: str) -> None:
        """Match one received datagram to an outstanding request."""
        received = time.monotonic()
        hop_limit = _ancillary_hop_limit(ancillary)
        if self.target.family == socket.AF_INET and self.raw:
            if len(data) < 20 or data[0] >> 4 != 4:
                return
            header = (data[0] & 0x0F) * 4
            hop_limit = data[8]
            data = data[header:]
            if checksum(data) != 0:
                return
        if len(data) < _HEADER.size or not _same_address(source, self.target.ip):
            return
        kind, code, _, ident, sequence = _HEADER.unpack_from(data)
        if kind != _ECHO_REPLY[self.target.family] or code != 0:
            return
        if self.ident is not None and ident != self.ident:
            return
        if sequence not in self.sent or sequence in self.rtts:
            return  # another run's, another program's, or a duplicate
        if data[_HEADER.size :] != self.payload:
            return
        self.rtts[sequence] = received - self.sent[sequence]
        if hop_limit is not None:
            self.hop_limit = hop_limit
        if len(self.rtts) == self.expected:
            self.complete.set()


def _ancillary_hop_limit(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), _IPV6_HOPLIMIT) and data:
            return int.from_bytes(data[:4], sys.byteorder) if len(data) >= 4 else data[0]
    return None


_IPV6_HOPLIMIT: Final = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)


def _same_address(source: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(source.split("%")[0]) == ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False


def _permission_help(gid: int, range_file: Path) -> str:
    try:
        allowed = " ".join(range_file.read_text().split())
    except OSError:
        allowed = "unreadable"
    return (
        f"unprivileged ICMP sockets need the process's group (gid {gid}) inside "
        f"net.ipv4.ping_group_range (now {allowed}), raw sockets need CAP_NET_RAW"
    )


class ICMPCheck(Check[ICMPConfig]):
    """Pings ``host`` ``count`` times; the status comes from loss and average RTT."""

    config_model = ICMPConfig

    def __init__(
        self,
        config: ICMPConfig,
        *,
        socket_factory: SocketFactory = socket.socket,
        ping_group_range: Path = _PING_GROUP_RANGE,
    ) -> None:
        super().__init__(config)
        self._open = socket_factory
        self._range_file = ping_group_range
        # Identifier and sequence per check, random as blackbox makes them, so two checks
        # (or two monitord processes) on raw sockets do not take each other's replies.
        self._ident = random.getrandbits(16)
        self._sequence = random.getrandbits(16)
        self._payload = (_PAYLOAD_FILL * (config.payload_size // len(_PAYLOAD_FILL) + 1))[
            : config.payload_size
        ]
        self._step = ""

    async def run(self) -> CheckResult:
        """Ping once within the probe deadline; samples as blackbox plus count and loss."""
        started = time.monotonic()
        samples: list[Sample] = []
        phases = {"resolve": 0.0, "setup": 0.0, "rtt": 0.0}
        budget = probe_deadline(self.config.timeout)
        echoes: _Echoes | None = None
        failure = ""  # why the probe failed before its replies could be counted
        status = verdict = Status.CRITICAL
        message = ""
        try:
            async with asyncio.timeout(budget):
                self._step = "resolving"
                target = await resolve(
                    self.config.host,
                    self.config.preferred_ip_protocol,
                    self.config.ip_protocol_fallback,
                )
                phases["resolve"] = target.lookup_seconds
                samples.append(Sample("probe_dns_lookup_time_seconds", value=target.lookup_seconds))
                samples.append(Sample("probe_ip_protocol", value=float(target.protocol)))
                setup = time.monotonic()
                self._step = "opening a socket"
                sock, raw = self._socket(target.family)
                echoes = _Echoes(
                    target, self._ident if raw else None, self._payload, raw, self.config.count
                )
                phases["setup"] = time.monotonic() - setup
                with sock:
                    await self._ping(sock, echoes)
        except TimeoutError:
            # With the requests out, the deadline is the end of the wait: the rest are lost.
            if echoes is None:
                failure = f"no answer within {budget:g}s ({self._step})"
        except (ResolveError, _SendFailed) as exc:
            failure = str(exc)
        except _SocketDenied as exc:
            status, failure = Status.UNKNOWN, str(exc)
        if echoes is not None:
            verdict, message = self._assess(echoes, samples, phases)
        if failure:
            message = f"{self.config.host}: {failure}"
        else:
            status = verdict
        # As blackbox: the probe succeeds when a reply came back; thresholds set the status.
        success = 1.0 if not failure and echoes is not None and echoes.rtts else 0.0
        samples.extend(
            Sample("probe_icmp_duration_seconds", Labels.of(phase=phase), value)
            for phase, value in phases.items()
        )
        samples.append(Sample("probe_success", value=success))
        samples.append(Sample("probe_duration_seconds", value=time.monotonic() - started))
        metadata = {s.name: ICMP_FAMILIES[s.name] for s in samples}
        return CheckResult(status, message, tuple(samples), metadata=metadata)

    def _socket(self, family: socket.AddressFamily) -> tuple[socket.socket, bool]:
        """An unprivileged ICMP socket, else a raw one; True when raw."""
        proto = _PROTO[family]
        try:
            sock = self._open(family, socket.SOCK_DGRAM, proto)
            raw = False
        except OSError as unprivileged:
            try:
                sock = self._open(family, socket.SOCK_RAW, proto)
                raw = True
            except OSError as privileged:
                denied = (errno.EACCES, errno.EPERM)
                if unprivileged.errno in denied or privileged.errno in denied:
                    help_text = _permission_help(os.getgid(), self._range_file)
                    raise _SocketDenied(f"cannot open an ICMP socket: {help_text}") from privileged
                reason = os.strerror(privileged.errno) if privileged.errno else str(privileged)
                raise _SocketDenied(f"cannot open an ICMP socket: {reason}") from privileged
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            elif not raw:  # a raw socket reads the TTL from the IP header it receives
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
        except OSError:
            sock.close()
            raise
        return sock, raw

    async def _ping(self, sock: socket.socket, echoes: _Echoes) -> None:
        """Send the requests on schedule and wait for their replies until the deadline."""
        loop = asyncio.get_running_loop()
        family = echoes.target.family
        address = (echoes.target.ip, 0)

        def readable() -> None:
            while True:
                try:
                    data, ancillary, _, source = sock.recvmsg(65535, 256)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error queued on the socket; the echo counts as lost
                    continue
                echoes.receive(data, ancillary, str(source[0]))

        loop.add_reader(sock.fileno(), readable)
        try:
            first = time.monotonic()
            for number in range(self.config.count):
                pause = first + number * self.config.packet_interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                self._sequence = (self._sequence + 1) & 0xFFFF
                packet = echo_request(family, self._ident, self._sequence, echoes.payload)
                self._step = f"sending echo {number + 1} of {self.config.count}"
                echoes.sent[self._sequence] = time.monotonic()
                try:
                    await loop.sock_sendto(sock, packet, address)
                except OSError as exc:
                    del echoes.sent[self._sequence]
                    reason = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise _SendFailed(
                        f"cannot send echo {number + 1} of {self.config.count}: {reason}"
                    ) from exc
            self._step = "waiting for replies"
            await echoes.complete.wait()
        finally:
            loop.remove_reader(sock.fileno())

    def _assess(
        self, echoes: _Echoes, samples: list[Sample], phases: dict[str, float]
    ) -> tuple[Status, str]:
        """Status and message from the replies; adds the count, loss and RTT samples."""
        sent, rtts = len(echoes.sent), sorted(echoes.rtts.values())
        loss = 1 - len(rtts) / sent if sent else 1.0
        samples.append(Sample("probe_icmp_packets_sent", value=float(sent)))
        samples.append(Sample("probe_icmp_packets_received", value=float(len(rtts))))
        samples.append(Sample("probe_icmp_packet_loss_ratio", value=loss))
        target = self.config.host
        if echoes.target.ip != self.config.host:
            target += f" ({echoes.target.ip})"
        head = f"{target}: {len(rtts)}/{sent} replies, {loss * 100:.0f}% loss"
        if not rtts:
            return Status.CRITICAL, head
        avg = sum(rtts) / len(rtts)
        phases["rtt"] = avg
        samples.append(Sample("probe_icmp_rtt_min_seconds", value=rtts[0]))
        samples.append(Sample("probe_icmp_rtt_avg_seconds", value=avg))
        samples.append(Sample("probe_icmp_rtt_max_seconds", value=rtts[-1]))
        if echoes.hop_limit is not None:
            samples.append(Sample("probe_icmp_reply_hop_limit", value=float(echoes.hop_limit)))
        message = (
            f"{head}, rtt min/avg/max "
            f"{rtts[0] * 1000:.3f}/{avg * 1000:.3f}/{rtts[-1] * 1000:.3f} ms"
        )
        levels = ((Status.CRITICAL, self.config.critical), (Status.WARNING, self.config.warning))
        for status, limits in levels:
            if limits is None:
                continue
            over = []
            if limits.loss is not None and loss * 100 > limits.loss:
                over.append(f"loss above {limits.loss:g}%")
            if limits.rtt is not None and avg > limits.rtt:
                over.append(f"rtt avg above {limits.rtt * 1000:g} ms")
            if over:
                return status, f"{message} ({', '.join(over)})"
        return Status.OK, message
