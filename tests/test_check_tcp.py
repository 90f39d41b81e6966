"""The tcp check against real listeners on 127.0.0.1: plain, send/expect, hung, TLS, STARTTLS."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from checks.probe import ip_addr_hash
from checks.tcp import TCPCheck, TCPConfig
from monitor.model import CheckResult, Labels, Sample, Status
from monitor.scheduler import Scheduler
from monitor.store import Store
from tests import certs
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_check(port: int, timeout: float = 2.0, **options: Any) -> TCPCheck:
    config = TCPConfig.model_validate(
        {
            "name": "t",
            "type": "tcp",
            "address": f"127.0.0.1:{port}",
            "interval": "10s",
            "timeout": f"{round(timeout * 1000)}ms",
            **options,
        }
    )
    return TCPCheck(config)


def values(result: CheckResult) -> dict[str, float]:
    return {s.name: s.value for s in result.samples if not s.labels}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start a TCP server on 127.0.0.1 running ``handler`` per connection; give its port."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


async def smtp_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greets, answers ``EHLO x`` with ``250 hello x``, then closes."""
    writer.write(b"220 mail.test ESMTP ready\r\n")
    await writer.drain()
    line = await reader.readline()
    name = line.decode().strip().removeprefix("EHLO ")
    writer.write(f"250 hello {name}\r\n".encode())
    await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never says anything."""
    await asyncio.sleep(3600)


async def test_a_listener_that_accepts_is_ok_with_blackbox_samples(serve: Any) -> None:
    port = await serve(silent)
    result = await make_check(port).run()
    assert result.status is Status.OK, result.message
    assert result.message == f"127.0.0.1:{port}: connected"
    v = values(result)
    assert v["probe_success"] == 1.0
    assert v["probe_ip_protocol"] == 4.0
    assert 0 < v["probe_duration_seconds"] < 1
    assert "probe_dns_lookup_time_seconds" in v
    assert v["probe_failed_due_to_regex"] == 0.0  # blackbox 0.23 registers it for every probe
    assert v["probe_ip_addr_hash"] == 3668918509.0  # blackbox's value for 127.0.0.1
    assert (
        result.metadata["probe_success"].help == "Displays whether or not the probe was a success"
    )


async def test_a_closed_port_is_critical_with_the_reason() -> None:
    port = free_port()
    result = await make_check(port).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"127.0.0.1:{port}: cannot connect: Connection refused"
    assert values(result)["probe_success"] == 0.0


async def test_send_and_expect_run_in_order_and_send_expands_the_match(serve: Any) -> None:
    port = await serve(smtp_like)
    # As in blackbox, a send is expanded only with the match of its own step's expect.
    steps = [
        {"expect": r"^220 (?P<host>\S+) ESMTP", "send": "EHLO probe-${host}"},
        {"expect": r"^250 hello probe-mail\.test$"},
    ]
    result = await make_check(port, query_response=steps).run()
    assert result.status is Status.OK, result.message
    assert result.message == f"127.0.0.1:{port}: connected, 2 steps done"
    assert values(result)["probe_failed_due_to_regex"] == 0.0


async def test_send_in_the_expect_step_uses_numbered_groups(serve: Any) -> None:
    port = await serve(smtp_like)
    steps = [{"expect": r"^220 (\S+)", "send": "EHLO $1"}, {"expect": "^250 hello mail.test"}]
    result = await make_check(port, query_response=steps).run()
    assert result.status is Status.OK, result.message


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param("127.0.0.1", 3668918509.0, id="IPv4 hashes its four bytes as blackbox does"),
        pytest.param(
            "::ffff:127.0.0.1", 3668918509.0, id="an IPv4-mapped IPv6 address hashes as IPv4"
        ),
        pytest.param("::1", 1751717746.0, id="IPv6 hashes its sixteen bytes"),
    ],
)
def test_ip_addr_hash_is_fnv1a_of_the_address_bytes(ip: str, expected: float) -> None:
    assert ip_addr_hash(ip) == expected


async def test_a_peer_that_closes_before_a_line_matches_failed_due_to_regex(serve: Any) -> None:
    port = await serve(smtp_like)
    steps = [{"expect": "^220 "}, {"send": "EHLO x"}, {"expect": "^999"}]
    result = await make_check(port, query_response=steps).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"127.0.0.1:{port}: step 3: no line matched /^999/"
    v = values(result)
    assert v["probe_failed_due_to_regex"] == 1.0
    assert v["probe_success"] == 0.0


async def test_a_target_that_never_answers_is_cut_inside_the_timeout(serve: Any) -> None:
    port = await serve(silent)
    started = time.monotonic()
    result = await make_check(port, timeout=1.0, query_response=[{"expect": "^OK"}]).run()
    elapsed = time.monotonic() - started
    assert 0.85 < elapsed < 1.0, elapsed
    assert result.status is Status.CRITICAL
    assert result.message == (
        f"127.0.0.1:{port}: no answer within 0.9s (step 1: waiting for a line matching /^OK/)"
    )
    assert values(result)["probe_success"] == 0.0


async def test_a_hung_target_does_not_hold_up_other_checks(serve: Any) -> None:
    port = await serve(silent)
    hung = make_check(port, timeout=1.0, query_response=[{"expect": "^OK"}])
    hung.config = hung.config.model_copy(update={"name": "hung", "interval": 1.5})
    answering = await serve(smtp_like)
    fast = make_check(answering, timeout=0.4, query_response=[{"expect": "^220"}])
    fast.config = fast.config.model_copy(update={"name": "fast", "interval": 0.5})
    store = Store()
    scheduler = Scheduler(store, start_offset_cap=0)
    await scheduler.start()
    await scheduler.set_checks([hung, fast])
    await asyncio.sleep(2.8)
    stats = scheduler.stats()
    await scheduler.stop()

    assert stats["fast"][1].runs >= 5
    assert stats["fast"][1].last_result is not None
    assert stats["fast"][1].last_result.status is Status.OK
    hung_result = stats["hung"][1].last_result
    assert hung_result is not None and hung_result.status is Status.CRITICAL
    assert 0.85 < hung_result.duration < 1.0
    assert stats["hung"][1].timeouts == 0  # the probe cut itself, with its samples
    # Each check's probe_success is its own series, told apart by the check label.
    hung_series = store.get("probe_success", Labels.of(check="hung"))
    fast_series = store.get("probe_success", Labels.of(check="fast"))
    assert hung_series is not None and hung_series.last_value == 0.0
    assert fast_series is not None and fast_series.last_value == 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.TestPKI:
    return certs.make_pki(tmp_path_factory.mktemp("pki"))


async def echo_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"+OK ready\n")
    await writer.drain()
    await reader.readline()


async def test_tls_reports_the_version_and_the_certificate_expiry(
    serve: Any, pki: certs.TestPKI
) -> None:
    port = await serve(echo_line, pki.valid.server_context())
    check = make_check(
        port,
        tls=True,
        tls_config={"ca_file": str(pki.ca_file), "server_name": "localhost"},
        query_response=[{"expect": r"^\+OK"}],
    )
    result = await check.run()
    assert result.status is Status.OK, result.message
    assert result.message == f"127.0.0.1:{port}: TLS connected, 1 step done"
    assert values(result)["probe_ssl_earliest_cert_expiry"] == pki.valid.not_after.timestamp()
    assert Sample("probe_tls_version_info", Labels.of(version="TLS 1.3"), 1.0) in result.samples
    assert values(result)["probe_ssl_last_chain_expiry_timestamp_seconds"] == (
        pki.valid.not_after.timestamp()
    )
    (info,) = [s for s in result.samples if s.name == "probe_ssl_last_chain_info"]
    der = ssl.PEM_cert_to_DER_cert(pki.valid.cert_file.read_text())
    assert dict(info.labels) == {
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        "subject": "CN=valid",
        "issuer": "CN=monitord test CA",
        "subjectalternative": "localhost",
    }


@pytest.mark.parametrize(
    ("leaf", "tls_config", "reason"),
    [
        pytest.param(
            "valid", {}, "CERTIFICATE_VERIFY_FAILED", id="a CA the check does not trust fails"
        ),
        pytest.param(
            "wrong_host",
            {"ca_file": "CA"},
            "CERTIFICATE_VERIFY_FAILED",
            id="a certificate for another host fails",
        ),
        pytest.param(
            "expired", {"ca_file": "CA"}, "CERTIFICATE_VERIFY_FAILED", id="an expired one fails"
        ),
    ],
)
async def test_tls_verification_failures_are_critical(
    serve: Any, pki: certs.TestPKI, leaf: str, tls_config: dict[str, str], reason: str
) -> None:
    port = await serve(echo_line, getattr(pki, leaf).server_context())
    options = {k: str(pki.ca_file) if v == "CA" else v for k, v in tls_config.items()}
    result = await make_check(port, tls=True, tls_config=options).run()
    assert result.status is Status.CRITICAL
    assert result.message == f"127.0.0.1:{port}: TLS handshake failed: {reason}"
    assert values(result)["probe_success"] == 0.0


async def test_insecure_skip_verify_still_reports_the_expiry(
    serve: Any, pki: certs.TestPKI
) -> None:
    port = await serve(echo_line, pki.expired.server_context())
    result = await make_check(port, tls=True, tls_config={"insecure_skip_verify": True}).run()
    assert result.status is Status.OK, result.message
    assert values(result)["probe_ssl_earliest_cert_expiry"] == pki.expired.not_after.timestamp()


async def test_starttls_upgrades_the_connection_mid_exchange(
    serve: Any, pki: certs.TestPKI
) -> None:
    context = pki.valid.server_context()

    async def starttls_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\n")
        await writer.drain()
        if (await reader.readline()).strip() != b"STARTTLS":
            return
        writer.write(b"220 go ahead\n")
        await writer.drain()
        await writer.start_tls(context)
        writer.write(b"250 secure\n")
        await writer.drain()
        await reader.readline()

    port = await serve(starttls_server)
    steps = [
        {"expect": "^220 ready"},
        {"send": "STARTTLS"},
        {"expect": "^220 go ahead", "starttls": True},
        {"expect": "^250 secure"},
    ]
    check = make_check(
        port,
        query_response=steps,
        tls_config={"ca_file": str(pki.ca_file), "server_name": "localhost"},
    )
    result = await check.run()
    assert result.status is Status.OK, result.message
    assert values(result)["probe_ssl_earliest_cert_expiry"] == pki.valid.not_after.timestamp()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"address": "localhost"}, "is not host:port", id="an address needs a port"),
        pytest.param({"address": "::1:80"}, "in brackets", id="an IPv6 address needs brackets"),
        pytest.param({"address": "h:99999"}, "no valid port", id="a port must be below 65536"),
        pytest.param(
            {"query_response": [{"expect": "("}]},
            "not a regular expression",
            id="an expect must be a regex",
        ),
        pytest.param(
            {"query_response": [{"starttls": True}, {"starttls": True}]},
            "one step only",
            id="starttls happens once",
        ),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TCPConfig.model_validate({"name": "t", "type": "tcp", "address": "h:1", **options})


def test_an_ipv6_address_in_brackets_is_accepted() -> None:
    check = TCPCheck(TCPConfig(name="t", type="tcp", address="[::1]:22"))
    assert check.config.address == "[::1]:22"
