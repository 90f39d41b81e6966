"""The tls check against small asyncio servers: direct TLS and STARTTLS for SMTP, IMAP and
PostgreSQL, with certificates made by the test."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from checks.tls import TlsCheck, TlsConfig
from monitor.model import CheckResult, Status
from tests.certs import PKI, Leaf, make_pki

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[..., Awaitable[int]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an asyncio server on 127.0.0.1 running ``handler``; give its port."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass  # the check hung up, as it does after its handshake

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client hangs up


def starttls(leaf: Leaf, dialogue: Handler) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await dialogue(reader, writer)
        await writer.start_tls(leaf.server_context())
        await reader.read()

    return handler


async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mail.test ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO ")
    writer.write(b"250-mail.test\r\n250-SIZE 1000\r\n250 STARTTLS\r\n")
    assert await reader.readline() == b"STARTTLS\r\n"
    writer.write(b"220 2.0.0 Ready to start TLS\r\n")


async def imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
    tag = (await reader.readline()).split(b" ")[0]
    writer.write(tag + b" OK Begin TLS negotiation now\r\n")


async def postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readexactly(8)
    assert request == bytes.fromhex("0000000804d2162f")
    writer.write(b"S")


async def probe(port: int, pki: PKI, **options: Any) -> CheckResult:
    options.setdefault("timeout", "2s")
    options.setdefault("tls", {"ca_file": str(pki.ca_file)})
    config = TlsConfig(name="cert", type="tls", host="127.0.0.1", port=port, **options)
    async with TlsCheck(config) as check:
        return await check.run()


def value(result: CheckResult, name: str) -> float:
    found = [s.value for s in result.samples if s.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


async def test_a_valid_certificate_is_ok_with_its_expiry(serve: Serve, pki: PKI) -> None:
    port = await serve(idle, pki.valid.server_context())
    result = await probe(port, pki)
    assert result.status is Status.OK, result.message
    assert result.message.startswith(f"127.0.0.1:{port}: certificate expires in 9")
    assert value(result, "probe_success") == 1
    expiry = pki.valid.not_after.timestamp()
    assert value(result, "probe_ssl_earliest_cert_expiry") == expiry
    assert value(result, "probe_ssl_last_chain_expiry_timestamp_seconds") == expiry
    assert any(s.name == "probe_tls_version_info" and s.labels for s in result.samples)
    assert set(result.metadata) == {s.name for s in result.samples}


async def test_a_name_is_verified_against_the_certificate(serve: Serve, pki: PKI) -> None:
    port = await serve(idle, pki.valid.server_context())
    result = await probe(port, pki, tls={"ca_file": str(pki.ca_file), "server_name": "localhost"})
    assert result.status is Status.OK, result.message


@pytest.mark.parametrize(
    ("options", "status"),
    [
        pytest.param({}, Status.CRITICAL, id="3 days left is critical under the default 7d"),
        pytest.param(
            {"expiry_critical": "1d"}, Status.WARNING, id="3 days left warns under the default 30d"
        ),
        pytest.param(
            {"expiry_warning": "2d", "expiry_critical": "1d"}, Status.OK, id="3 days left is ok"
        ),
    ],
)
async def test_expiry_thresholds(
    serve: Serve, pki: PKI, options: dict[str, Any], status: Status
) -> None:
    port = await serve(idle, pki.expiring.server_context())
    result = await probe(port, pki, **options)
    assert result.status is status, result.message
    assert "certificate expires in 3.0 days" in result.message
    assert value(result, "probe_success") == (0 if status is Status.CRITICAL else 1)


@pytest.mark.parametrize(
    ("leaf", "tls", "reason"),
    [
        pytest.param("expired", {}, "certificate has expired", id="an expired leaf"),
        pytest.param("wrong_host", {}, "IP address mismatch", id="a wrong-hostname leaf"),
        pytest.param("valid", {"server_name": "other.test"}, "Hostname mismatch", id="wrong name"),
        pytest.param(
            "valid", {"ca": "other"}, "unable to get local issuer", id="a chain from an unknown CA"
        ),
    ],
)
async def test_a_bad_certificate_is_critical(
    serve: Serve, pki: PKI, leaf: str, tls: dict[str, str], reason: str
) -> None:
    port = await serve(idle, getattr(pki, leaf).server_context())
    ca = pki.other_ca_file if tls.pop("ca", None) else pki.ca_file
    result = await probe(port, pki, tls={"ca_file": str(ca), **tls})
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"127.0.0.1:{port}: certificate rejected: ")
    assert reason in result.message
    assert value(result, "probe_success") == 0


async def test_insecure_skip_verify_reports_an_expired_certificate(serve: Serve, pki: PKI) -> None:
    port = await serve(idle, pki.expired.server_context())
    result = await probe(port, pki, tls={"insecure_skip_verify": True})
    assert result.status is Status.CRITICAL
    assert "certificate expired 2.0 days ago" in result.message
    assert value(result, "probe_ssl_earliest_cert_expiry") == pki.expired.not_after.timestamp()


@pytest.mark.parametrize(
    ("protocol", "dialogue"),
    [
        pytest.param("smtp", smtp, id="SMTP with a multi-line EHLO reply"),
        pytest.param("imap", imap, id="IMAP"),
        pytest.param("postgres", postgres, id="PostgreSQL SSLRequest"),
    ],
)
async def test_starttls(serve: Serve, pki: PKI, protocol: str, dialogue: Handler) -> None:
    port = await serve(starttls(pki.valid, dialogue))
    result = await probe(port, pki, starttls=protocol)
    assert result.status is Status.OK, result.message
    assert value(result, "probe_ssl_earliest_cert_expiry") == pki.valid.not_after.timestamp()


async def test_a_server_refusing_starttls_is_critical(serve: Serve, pki: PKI) -> None:
    async def no_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        writer.write(b"N")
        await reader.read()

    port = await serve(no_tls)
    result = await probe(port, pki, starttls="postgres")
    assert result.status is Status.CRITICAL
    assert "PostgreSQL refused SSLRequest" in result.message


async def test_a_hung_target_is_cut_at_the_timeout(serve: Serve, pki: PKI) -> None:
    port = await serve(idle)  # accepts, never answers the ClientHello
    started = time.monotonic()
    result = await probe(port, pki, timeout="1s")
    assert time.monotonic() - started < 1.5
    assert result.status is Status.CRITICAL
    assert result.message == f"127.0.0.1:{port}: timed out after 0.9s (TLS handshake)"


async def test_a_silent_smtp_server_is_cut_at_the_timeout(serve: Serve, pki: PKI) -> None:
    port = await serve(idle)
    result = await probe(port, pki, timeout="1s", starttls="smtp")
    assert result.message == f"127.0.0.1:{port}: timed out after 0.9s (smtp STARTTLS)"


async def test_a_refused_connection_is_critical(pki: PKI) -> None:
    server = await asyncio.start_server(idle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await probe(port, pki)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"127.0.0.1:{port}: connecting failed: ")


def test_critical_must_not_exceed_warning() -> None:
    with pytest.raises(ValidationError, match="expiry_critical is longer"):
        TlsConfig(name="c", type="tls", host="x", expiry_warning="1d", expiry_critical="2d")
