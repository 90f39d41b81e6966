"""The http check against local aiohttp servers with certificates made by the test."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from checks.http import PHASES, HttpCheck, HttpConfig
from monitor.model import CheckResult, Labels, Status
from tests.certs import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


Serve = Callable[..., Awaitable[str]]


async def hello(request: web.Request) -> web.Response:
    return web.json_response(
        {"status": "UP", "items": [1, 2], "data": [{"status": "ok"}]},
        headers={"X-Served-By": "test"},
    )


SEEN = web.AppKey("seen", list[web.Request])
BODIES = web.AppKey("bodies", list[bytes])


def make_app() -> web.Application:
    app = web.Application()
    seen: list[web.Request] = []
    app[SEEN] = seen
    bodies: list[bytes] = []
    app[BODIES] = bodies

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        bodies.append(await request.read())
        return await hello(request)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        target = "/hello" if left == 0 else f"/redirect/{left - 1}"
        raise web.HTTPFound(target)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    app.router.add_route("*", "/hello", record)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/large", large)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on 127.0.0.1 (TLS when given a context); give its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def config(url: str, **options: Any) -> HttpConfig:
    options.setdefault("timeout", "2s")
    return HttpConfig(name="api", type="http", url=url, **options)


async def probe(url: str, **options: Any) -> CheckResult:
    async with HttpCheck(config(url, **options)) as check:
        return await check.run()


def value(result: CheckResult, name: str, **labels: str) -> float:
    found = [s.value for s in result.samples if s.name == name and s.labels == Labels(labels)]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def test_a_healthy_endpoint_is_ok_with_blackbox_families(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(f"{base}/hello")
    assert result.status is Status.OK, result.message
    assert result.message.startswith("HTTP 200 in ")
    assert value(result, "probe_success") == 1
    assert value(result, "probe_http_status_code") == 200
    assert value(result, "probe_http_version") == 1.1
    assert value(result, "probe_http_ssl") == 0
    assert value(result, "probe_http_redirects") == 0
    assert value(result, "probe_ip_protocol") == 4
    assert value(result, "probe_http_content_length") == value(
        result, "probe_http_uncompressed_body_length"
    )
    assert value(result, "probe_http_content_length") > 0
    phases = {p: value(result, "probe_http_duration_seconds", phase=p) for p in PHASES}
    assert phases["tls"] == 0
    assert phases["connect"] > 0 and phases["processing"] > 0
    assert sum(phases.values()) <= value(result, "probe_duration_seconds")
    assert set(result.metadata) == {s.name for s in result.samples}


async def test_a_non_2xx_status_without_conditions_is_critical(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(f"{base}/status/503")
    assert result.status is Status.CRITICAL
    assert result.message == "HTTP 503, not 2xx"
    assert value(result, "probe_success") == 0
    assert value(result, "probe_http_status_code") == 503


async def test_every_failed_condition_is_named(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(
        f"{base}/hello",
        conditions=[
            "[STATUS] == 200",
            "[BODY].status == DOWN",
            "len([BODY].items) > 5",
            "[HEADERS].x-served-by == test",
            "[RESPONSE_TIME] < 1000",
        ],
    )
    assert result.status is Status.CRITICAL
    assert result.message == (
        "condition failed: [BODY].status (UP) == DOWN; len([BODY].items) (2) > 5"
    )


async def test_conditions_that_hold_make_it_ok(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(
        f"{base}/hello",
        conditions=[
            "[STATUS] == any(200, 201)",
            "[BODY].data[0].status == ok",
            "has([BODY].items) == true",
            "[CONNECTED] == true",
            "[IP] == 127.0.0.1",
            "[BODY] == pat(*UP*)",
        ],
    )
    assert result.status is Status.OK, result.message


async def test_method_headers_body_and_basic_auth_are_sent(serve: Serve) -> None:
    app = make_app()
    base = await serve(app)
    result = await probe(
        f"{base}/hello",
        method="POST",
        headers={"X-Test": "1"},
        body='{"q": 1}',
        basic_auth={"username": "u", "password": "p"},
    )
    assert result.status is Status.OK, result.message
    request = app[SEEN][-1]
    assert request.method == "POST"
    assert request.headers["X-Test"] == "1"
    assert request.headers["Authorization"] == "Basic dTpw"
    assert app[BODIES][-1] == b'{"q": 1}'


async def test_a_bearer_token_from_a_file_is_sent(serve: Serve, tmp_path: Path) -> None:
    app = make_app()
    base = await serve(app)
    (tmp_path / "token").write_text("s3cret\n")
    cfg = HttpConfig.model_validate(
        {
            "name": "api",
            "type": "http",
            "url": f"{base}/hello",
            "timeout": "2s",
            "bearer_token_file": "token",
        },
        context={"base_dir": tmp_path},
    )
    async with HttpCheck(cfg) as check:
        result = await check.run()
    assert result.status is Status.OK, result.message
    assert app[SEEN][-1].headers["Authorization"] == "Bearer s3cret"


async def test_redirects_are_followed_and_counted(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(f"{base}/redirect/2")
    assert result.status is Status.OK, result.message
    assert value(result, "probe_http_redirects") == 3
    assert value(result, "probe_http_status_code") == 200


async def test_redirects_not_followed_give_the_redirect_status(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(
        f"{base}/redirect/0", follow_redirects=False, conditions=["[STATUS] == 302"]
    )
    assert result.status is Status.OK, result.message
    assert value(result, "probe_http_redirects") == 0


async def test_more_redirects_than_allowed_fail(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(f"{base}/redirect/5", max_redirects=2)
    assert result.status is Status.CRITICAL
    assert result.message == "more than 2 redirects"
    assert value(result, "probe_success") == 0


async def test_a_slow_response_is_cut_before_the_timeout(serve: Serve) -> None:
    base = await serve(make_app())
    started = time.monotonic()
    result = await probe(f"{base}/slow", timeout="1s")
    assert time.monotonic() - started < 1.5
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 0.9s"
    assert value(result, "probe_success") == 0


async def test_a_hung_target_is_cut_at_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        result = await probe(f"http://127.0.0.1:{port}/", timeout="1s")
        assert time.monotonic() - started < 1.5
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted, "the target never saw the connection"
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 0.9s"


async def test_a_refused_connection_is_critical_unless_a_condition_expects_it() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await probe(f"http://127.0.0.1:{port}/")
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"cannot connect to 127.0.0.1:{port}")
    down = await probe(f"http://127.0.0.1:{port}/", conditions=["[CONNECTED] == false"])
    assert down.status is Status.OK, down.message


async def test_a_body_over_the_limit_fails(serve: Serve) -> None:
    base = await serve(make_app())
    result = await probe(f"{base}/large", body_size_limit=1000)
    assert result.status is Status.CRITICAL
    assert "body_size_limit" in result.message


# --- TLS ---------------------------------------------------------------------------------


async def test_https_with_the_test_ca_reports_tls_phase_and_expiry(serve: Serve, pki: PKI) -> None:
    base = await serve(make_app(), pki.valid.server_context())
    result = await probe(
        f"{base}/hello",
        tls={"ca_file": str(pki.ca_file)},
        conditions=["[STATUS] == 200", "[CERTIFICATE_EXPIRATION] > 48h"],
    )
    assert result.status is Status.OK, result.message
    assert value(result, "probe_http_ssl") == 1
    assert value(result, "probe_http_duration_seconds", phase="tls") > 0
    assert value(result, "probe_ssl_earliest_cert_expiry") == pki.valid.not_after.timestamp()
    assert (
        value(result, "probe_ssl_last_chain_expiry_timestamp_seconds")
        == pki.valid.not_after.timestamp()
    )


async def test_certificate_expiration_condition_fails_for_a_cert_expiring_soon(
    serve: Serve, pki: PKI
) -> None:
    base = await serve(make_app(), pki.expiring.server_context())
    result = await probe(
        f"{base}/hello",
        tls={"ca_file": str(pki.ca_file)},
        conditions=["[CERTIFICATE_EXPIRATION] > 168h"],
    )
    assert result.status is Status.CRITICAL
    assert result.message.startswith("condition failed: [CERTIFICATE_EXPIRATION] (71h")


@pytest.mark.parametrize(
    ("leaf", "ca", "reason"),
    [
        pytest.param("expired", "ca_file", "certificate has expired", id="an expired leaf"),
        pytest.param("wrong_host", "ca_file", "address mismatch", id="a wrong-hostname leaf"),
        pytest.param("valid", "other_ca_file", "unable to get local issuer", id="an unknown CA"),
    ],
)
async def test_a_bad_certificate_is_rejected(
    serve: Serve, pki: PKI, leaf: str, ca: str, reason: str
) -> None:
    base = await serve(make_app(), getattr(pki, leaf).server_context())
    result = await probe(f"{base}/hello", tls={"ca_file": str(getattr(pki, ca))})
    assert result.status is Status.CRITICAL
    assert result.message.startswith("certificate rejected: ")
    assert reason in result.message


async def test_insecure_skip_verify_accepts_an_expired_certificate(serve: Serve, pki: PKI) -> None:
    base = await serve(make_app(), pki.expired.server_context())
    result = await probe(f"{base}/hello", tls={"insecure_skip_verify": True})
    assert result.status is Status.OK, result.message
    assert value(result, "probe_ssl_earliest_cert_expiry") == pki.expired.not_after.timestamp()


async def test_a_client_certificate_is_presented(serve: Serve, pki: PKI) -> None:
    base = await serve(make_app(), pki.valid.server_context(client_ca=pki.ca_file))
    without = await probe(f"{base}/hello", tls={"ca_file": str(pki.ca_file)})
    assert without.status is Status.CRITICAL
    tls = {
        "ca_file": str(pki.ca_file),
        "cert_file": str(pki.client.cert_file),
        "key_file": str(pki.client.key_file),
    }
    result = await probe(f"{base}/hello", tls=tls)
    assert result.status is Status.OK, result.message


async def test_a_missing_ca_file_is_unknown(tmp_path: Path) -> None:
    result = await probe("https://127.0.0.1:1/", tls={"ca_file": str(tmp_path / "none.pem")})
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("cannot load the TLS files")


async def test_checks_sharing_one_context_each_read_their_own_certificate(
    serve: Serve, pki: PKI
) -> None:
    valid = await serve(make_app(), pki.valid.server_context())
    expiring = await serve(make_app(), pki.expiring.server_context())
    tls = {"ca_file": str(pki.ca_file)}
    checks = [HttpCheck(config(f"{base}/hello", tls=tls)) for base in (valid, expiring) * 10]
    assert checks[0].config.tls.context() is checks[1].config.tls.context()
    results = await asyncio.gather(*(check.run() for check in checks))
    for base, result in zip((valid, expiring) * 10, results, strict=True):
        leaf = pki.valid if base == valid else pki.expiring
        assert result.status is Status.OK, result.message
        assert value(result, "probe_ssl_earliest_cert_expiry") == leaf.not_after.timestamp()
        assert value(result, "probe_http_duration_seconds", phase="tls") > 0


async def test_a_replaced_ca_file_is_loaded_on_the_next_run(
    serve: Serve, pki: PKI, tmp_path: Path
) -> None:
    base = await serve(make_app(), pki.valid.server_context())
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.other_ca_file.read_bytes())
    check = HttpCheck(config(f"{base}/hello", tls={"ca_file": str(ca_file)}))
    assert (await check.run()).status is Status.CRITICAL
    ca_file.write_bytes(pki.ca_file.read_bytes() + b"\n")  # a different size: a new stamp
    result = await check.run()
    assert result.status is Status.OK, result.message


# --- proxy and address family ---------------------------------------------------------------


async def test_requests_go_through_the_proxy(serve: Serve) -> None:
    proxy = web.Application()
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.Response(text="via proxy")

    proxy.router.add_route("*", "/{tail:.*}", forward)
    proxy_url = await serve(proxy)
    result = await probe(
        "http://127.0.0.1:9/target", proxy_url=proxy_url, conditions=["[BODY] == via proxy"]
    )
    assert result.status is Status.OK, result.message
    assert seen == ["http://127.0.0.1:9/target"]


async def test_ip4_only_reaches_an_ip4_server_by_name(serve: Serve) -> None:
    base = await serve(make_app())
    url = base.replace("127.0.0.1", "localhost") + "/hello"
    result = await probe(url, preferred_ip_protocol="ip4", ip_protocol_fallback=False)
    assert result.status is Status.OK, result.message
    assert value(result, "probe_ip_protocol") == 4
    assert value(result, "probe_http_duration_seconds", phase="resolve") > 0


async def test_ip6_only_refuses_a_name_without_ip6(serve: Serve) -> None:
    result = await probe(
        "http://127.0.0.1.nip.invalid/", preferred_ip_protocol="ip6", ip_protocol_fallback=False
    )
    assert result.status is Status.CRITICAL


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"url": "ftp://x/"}, "http:// or https://", id="a non-HTTP URL"),
        pytest.param({"conditions": ["[STATUS]==200"]}, "has no comparison", id="a bad condition"),
        pytest.param(
            {"conditions": ["[DNS_RCODE] == NOERROR"]},
            "not available in this check",
            id="a DNS placeholder",
        ),
        pytest.param(
            {"basic_auth": {"username": "u"}, "bearer_token": "t"}, "not both", id="two auths"
        ),
        pytest.param({"method": "get"}, "pattern", id="a lowercase method"),
        pytest.param({"tls": {"key_file": "k"}}, "key_file needs cert_file", id="a key alone"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], error: str) -> None:
    options.setdefault("url", "http://127.0.0.1/")
    with pytest.raises(ValidationError, match=error):
        HttpConfig(name="api", type="http", **options)


def test_a_bad_condition_is_located_by_its_index() -> None:
    with pytest.raises(ValidationError) as info:
        HttpConfig(
            name="api", type="http", url="http://x/", conditions=["[STATUS] == 200", "[X] = 1"]
        )
    assert info.value.errors()[0]["loc"] == ("conditions", 1)
