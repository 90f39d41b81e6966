"""The ``tcp`` check: connect, optionally over TLS, and optionally talk in send/expect steps.

It follows blackbox_exporter's ``tcp`` prober (prober/tcp.go) and reports its sample names:
``probe_success``, ``probe_duration_seconds``, ``probe_dns_lookup_time_seconds``,
``probe_ip_protocol``, ``probe_ip_addr_hash``, ``probe_failed_due_to_regex`` (always, 0 unless
an expect failed, as blackbox registers it before dialling), and with TLS (from the start or
after a ``starttls`` step) blackbox's TLS families from :mod:`checks.certs`:
``probe_ssl_earliest_cert_expiry``, ``probe_ssl_last_chain_expiry_timestamp_seconds``,
``probe_ssl_last_chain_info`` and ``probe_tls_version_info{version}``.

The probe keeps to a deadline a little inside the check's timeout, so that a target that
accepts and never answers gives ``probe_success 0`` and a message saying which step it hung
at, rather than the scheduler's bare "timed out".
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, field_validator

from checks.base import Check, CheckConfig
from checks.certs import TLS_METADATA, peer_chain, tls_samples
from checks.probe import (
    PROBE_FAMILIES,
    IPProtocol,
    ResolveError,
    TlsClientConfig,
    ip_addr_hash,
    probe_deadline,
    resolve,
)
from monitor.model import CheckResult, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel

__all__ = [
    "TCP_FAMILIES",
    "QueryResponse",
    "TCPCheck",
    "TCPConfig",
    "split_address",
]

TCP_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    **PROBE_FAMILIES,
    "probe_failed_due_to_regex": MetricMetadata(
        MetricType.GAUGE, "Indicates if probe failed due to regex"
    ),
    **TLS_METADATA,
}
"""blackbox_exporter's families of the tcp prober, with its help texts."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as Go's ``net.SplitHostPort`` reads it."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r} is not host:port (write an IPv6 address in brackets)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} has no valid port")
    return host, int(port)


def _valid_address(value: str) -> str:
    split_address(value)
    return value


def _valid_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


Address = Annotated[str, AfterValidator(_valid_address)]


class QueryResponse(ConfigModel):
    """One step of the exchange: wait for a line matching ``expect``, then ``send`` a line."""

    expect: Annotated[str | None, AfterValidator(_valid_regex)] = Field(
        default=None, description="read lines until one matches this regex"
    )
    send: str | None = Field(
        default=None, description="line to send; $1 and ${name} are groups of the expect match"
    )
    starttls: bool = Field(default=False, description="upgrade the connection to TLS here")


class TCPConfig(CheckConfig):
    """Options of the ``tcp`` check: blackbox's tcp module, plus the target address."""

    type: Literal["tcp"]
    address: Address = Field(description="host:port to connect to")
    tls: bool = Field(default=False, description="speak TLS from the start")
    tls_config: TlsClientConfig = Field(default_factory=TlsClientConfig)
    query_response: list[QueryResponse] = Field(default_factory=list)
    preferred_ip_protocol: IPProtocol = "ip6"
    ip_protocol_fallback: bool = True

    @field_validator("query_response")
    @classmethod
    def _one_starttls(cls, value: list[QueryResponse]) -> list[QueryResponse]:
        if sum(step.starttls for step in value) > 1:
            raise ValueError("starttls can be set on one step only")
        return value


def _expand(template: str, match: re.Match[bytes]) -> bytes:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""

    def group(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = m.group(1) or m.group(2)
        try:
            value = match.group(int(ref) if ref.isdigit() else ref)
        except IndexError:  # no such group: Go expands it to nothing
            return ""
        return value.decode(errors="replace") if value is not None else ""

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", group, template).encode()


class _Failed(Exception):
    """The probe failed at a step; the message says where and why."""


class TCPCheck(Check[TCPConfig]):
    """Connects to ``address`` and runs the exchange; OK when every step succeeds."""

    config_model = TCPConfig

    def __init__(
        self,
        config: TCPConfig,
        *,
        ssl_context_factory: Callable[[TlsClientConfig], ssl.SSLContext] = TlsClientConfig.context,
    ) -> None:
        super().__init__(config)
        self._host, self._port = split_address(config.address)
        self._make_context = ssl_context_factory
        self._step = ""  # what the probe is doing, to say where it hung

    async def run(self) -> CheckResult:
        """Probe once within the probe deadline; any failure is CRITICAL with probe_success 0."""
        samples = [Sample("probe_failed_due_to_regex", value=0.0)]
        started = time.monotonic()
        deadline = probe_deadline(self.config.timeout)
        try:
            async with asyncio.timeout(deadline):
                message = await self._probe(samples)
            status, success = Status.OK, 1.0
        except TimeoutError:
            status, success = Status.CRITICAL, 0.0
            message = f"{self.config.address}: no answer within {deadline:g}s ({self._step})"
        except (_Failed, ResolveError) as exc:
            status, success, message = Status.CRITICAL, 0.0, f"{self.config.address}: {exc}"
        samples.append(Sample("probe_success", value=success))
        samples.append(Sample("probe_duration_seconds", value=time.monotonic() - started))
        metadata = {s.name: TCP_FAMILIES[s.name] for s in samples}
        return CheckResult(status, message, tuple(samples), metadata=metadata)

    def _ssl(self) -> ssl.SSLContext:
        return self._make_context(self.config.tls_config)

    async def _probe(self, samples: list[Sample]) -> str:
        self._step = "resolving"
        target = await resolve(
            self._host, self.config.preferred_ip_protocol, self.config.ip_protocol_fallback
        )
        samples.append(Sample("probe_dns_lookup_time_seconds", value=target.lookup_seconds))
        samples.append(Sample("probe_ip_protocol", value=float(target.protocol)))
        samples.append(Sample("probe_ip_addr_hash", value=ip_addr_hash(target.ip)))
        server_name = self.config.tls_config.server_name or self._host
        self._step = "connecting" + (" and TLS handshake" if self.config.tls else "")
        try:
            reader, writer = await asyncio.open_connection(
                target.ip,
                self._port,
                family=target.family,
                ssl=self._ssl() if self.config.tls else None,
                server_hostname=server_name if self.config.tls else None,
                ssl_handshake_timeout=None,
            )
        except ssl.SSLError as exc:
            raise _Failed(f"TLS handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise _Failed(f"cannot connect: {reason}") from exc
        try:
            if self.config.tls:
                _tls_samples(writer, samples)
            return await self._exchange(reader, writer, server_name, samples)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        server_name: str,
        samples: list[Sample],
    ) -> str:
        steps = self.config.query_response
        for number, step in enumerate(steps, 1):
            send = step.send
            if step.expect is not None:
                self._step = f"step {number}: waiting for a line matching /{step.expect}/"
                match = await _read_until(reader, re.compile(step.expect.encode()))
                if match is None:
                    samples[:] = [s for s in samples if s.name != "probe_failed_due_to_regex"]
                    samples.append(Sample("probe_failed_due_to_regex", value=1.0))
                    raise _Failed(f"step {number}: no line matched /{step.expect}/")
                if send is not None:
                    send = _expand(send, match).decode()
            if send is not None:
                self._step = f"step {number}: sending"
                writer.write(send.encode() + b"\n")
                try:
                    await writer.drain()
                except OSError as exc:
                    raise _Failed(f"step {number}: cannot send: {exc}") from exc
            if step.starttls:
                self._step = f"step {number}: STARTTLS handshake"
                try:
                    await writer.start_tls(self._ssl(), server_hostname=server_name)
                except ssl.SSLError as exc:
                    raise _Failed(f"step {number}: TLS handshake failed: {exc.reason}") from exc
                _tls_samples(writer, samples)
        self._step = ""
        what = "TLS " if self.config.tls else ""
        return f"{self.config.address}: {what}connected" + (
            f", {len(steps)} step{'s' if len(steps) != 1 else ''} done" if steps else ""
        )


async def _read_until(
    reader: asyncio.StreamReader, pattern: re.Pattern[bytes]
) -> re.Match[bytes] | None:
    """Read lines until one matches; None when the peer closes first."""
    while True:
        try:
            line = await reader.readline()
        except (OSError, ValueError) as exc:  # ValueError: a line beyond the buffer limit
            raise _Failed(f"error reading from the connection: {exc}") from exc
        if not line:
            return None
        match = pattern.search(line.rstrip(b"\r\n"))
        if match is not None:
            return match


def _tls_samples(writer: asyncio.StreamWriter, samples: list[Sample]) -> None:
    """blackbox's TLS families for the connection's peer, replacing any of an earlier handshake."""
    sslobj: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
    if sslobj is None:
        return
    fresh = tls_samples(peer_chain(sslobj))
    names = {s.name for s in fresh}
    samples[:] = [s for s in samples if s.name not in names]
    samples.extend(fresh)
