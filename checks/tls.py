"""The ``tls`` check: a TLS handshake with a server, its chain verified, its expiry judged.

It connects to ``host:port``, speaks just enough of the protocol to switch to TLS where the
protocol needs that (``starttls: smtp``, ``imap`` or ``postgres``), completes a handshake
that verifies the chain and the hostname (unless ``tls.insecure_skip_verify``), and rates
the days left before the verified chain's first certificate expires: WARNING under
``expiry_warning``, CRITICAL under ``expiry_critical``. A rejected certificate, a refused
connection or a server that does not answer in time is CRITICAL. Samples use
blackbox_exporter's names (``probe_success``, ``probe_duration_seconds``,
``probe_ssl_earliest_cert_expiry``, ``probe_ssl_last_chain_expiry_timestamp_seconds``,
``probe_tls_version_info``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from checks.base import Check, CheckConfig
from checks.certs import TLS_METADATA, PeerChain, peer_chain, tls_samples
from checks.probe import PROBE_FAMILIES, TlsClientConfig, probe_deadline
from monitor.model import CheckResult, MetricMetadata, Sample, Status
from monitor.schema import Duration

__all__ = ["STARTTLS", "TlsCheck", "TlsConfig"]


class TlsConfig(CheckConfig):
    """Options of the ``tls`` check."""

    type: Literal["tls"]
    host: str = Field(min_length=1, description="name or address to connect to")
    port: int = Field(default=443, gt=0, lt=65536)
    starttls: Literal["smtp", "imap", "postgres"] | None = Field(
        default=None, description="switch to TLS inside this protocol first"
    )
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)
    expiry_warning: Duration = Field(default=30 * 86400.0, description="WARNING under this")
    expiry_critical: Duration = Field(default=7 * 86400.0, description="CRITICAL under this")

    @model_validator(mode="after")
    def _critical_below_warning(self) -> Self:
        if self.expiry_critical > self.expiry_warning:
            raise ValueError("expiry_critical is longer than expiry_warning")
        return self


class _ProtocolError(Exception):
    """The server did not say what the STARTTLS exchange expects."""


async def _expect(reader: asyncio.StreamReader, what: str, ok: Callable[[bytes], bool]) -> bytes:
    line = await reader.readline()
    if not line:
        raise _ProtocolError(f"the server closed the connection before {what}")
    if not ok(line):
        raise _ProtocolError(f"unexpected {what}: {line.decode('utf-8', 'replace').strip()!r}")
    return line


async def _smtp_reply(reader: asyncio.StreamReader, what: str, code: bytes) -> None:
    # A multi-line reply repeats the code with '-' until the last line, which has a space.
    while True:
        line = await _expect(reader, what, lambda b: b.startswith(code))
        if line[3:4] != b"-":
            return


async def _smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _smtp_reply(reader, "SMTP greeting", b"220")
    writer.write(b"EHLO monitord\r\n")
    await _smtp_reply(reader, "reply to EHLO", b"250")
    writer.write(b"STARTTLS\r\n")
    await _smtp_reply(reader, "reply to STARTTLS", b"220")


async def _imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _expect(reader, "IMAP greeting", lambda b: b.startswith(b"* OK"))
    writer.write(b"a1 STARTTLS\r\n")
    while True:
        line = await _expect(reader, "reply to STARTTLS", lambda b: b.startswith((b"*", b"a1 ")))
        if line.startswith(b"a1 "):
            if not line.startswith(b"a1 OK"):
                raise _ProtocolError(f"STARTTLS refused: {line.decode('utf-8', 'replace').strip()}")
            return


_SSL_REQUEST: Final = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


async def _postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_SSL_REQUEST)
    answer = await reader.read(1)
    if answer != b"S":
        raise _ProtocolError(f"PostgreSQL refused SSLRequest (answered {answer!r})")


STARTTLS: Final[
    Mapping[str, Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]]
] = {"smtp": _smtp, "imap": _imap, "postgres": _postgres}
"""What each protocol says before the handshake."""

METADATA: Final[Mapping[str, MetricMetadata]] = {
    "probe_success": PROBE_FAMILIES["probe_success"],
    "probe_duration_seconds": PROBE_FAMILIES["probe_duration_seconds"],
    **TLS_METADATA,
}


class TlsCheck(Check[TlsConfig]):
    """Handshakes with ``host:port`` once per run and rates the chain's expiry."""

    config_model = TlsConfig

    def __init__(
        self,
        config: TlsConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config)
        self._clock = clock
        self._wall_clock = wall_clock

    async def run(self) -> CheckResult:
        """Connect, STARTTLS if asked, handshake, judge."""
        config = self.config
        started = self._clock()
        deadline = probe_deadline(config.timeout)
        where = f"{config.host}:{config.port}"
        try:
            context = config.tls.context()
        except OSError as exc:  # ssl.SSLError is one
            return self._result(Status.UNKNOWN, f"cannot load the TLS files: {exc}", started)
        chain: PeerChain | None = None
        step = "connecting"
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(deadline):
                    reader, writer = await asyncio.open_connection(config.host, config.port)
                    if config.starttls is not None:
                        step = f"{config.starttls} STARTTLS"
                        await STARTTLS[config.starttls](reader, writer)
                    step = "TLS handshake"
                    name = config.tls.server_name or config.host
                    await writer.start_tls(context, server_hostname=name)
                    chain = peer_chain(writer.get_extra_info("ssl_object"))
            except BaseException:
                if writer is not None:
                    writer.transport.abort()  # a half-done handshake would never finish closing
                raise
            writer.close()  # with close_notify; the result does not wait for it
        except TimeoutError:
            return self._result(
                Status.CRITICAL, f"{where}: timed out after {deadline:g}s ({step})", started
            )
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            return self._result(
                Status.CRITICAL, f"{where}: certificate rejected: {reason}", started
            )
        except (_ProtocolError, OSError) as exc:  # ssl.SSLError is an OSError
            return self._result(Status.CRITICAL, f"{where}: {step} failed: {exc}", started)
        return self._judge(chain, where, started)

    def _judge(self, chain: PeerChain, where: str, started: float) -> CheckResult:
        config = self.config
        expiry = chain.last_chain_expiry or chain.earliest_expiry
        if expiry is None:
            return self._result(Status.CRITICAL, f"{where}: no certificate", started, chain)
        left = expiry - self._wall_clock()
        until = dt.datetime.fromtimestamp(expiry, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if left < 0:
            status, text = Status.CRITICAL, f"expired {-left / 86400:.1f} days ago ({until})"
        else:
            text = f"expires in {left / 86400:.1f} days ({until})"
            if left < config.expiry_critical:
                status = Status.CRITICAL
            elif left < config.expiry_warning:
                status = Status.WARNING
            else:
                status = Status.OK
        message = f"{where}: certificate {text}, {chain.version}"
        return self._result(status, message, started, chain)

    def _result(
        self, status: Status, message: str, started: float, chain: PeerChain | None = None
    ) -> CheckResult:
        success = status in (Status.OK, Status.WARNING)
        samples = [
            Sample("probe_success", value=1.0 if success else 0.0),
            Sample("probe_duration_seconds", value=self._clock() - started),
        ]
        if chain is not None:
            samples += tls_samples(chain)
        metadata = {s.name: METADATA[s.name] for s in samples}
        return CheckResult(status, message, tuple(samples), metadata=metadata)
