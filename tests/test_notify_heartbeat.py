"""The ``heartbeat`` receiver: pings against a local ping endpoint, errors without the secret
URL, and the dead man's switch through a real daemon: Watchdog pings every repeat_interval
until a reload takes the rule pack away, then one ``/fail`` and silence."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.base import Delivery, DeliveryError, Notification, NotifiedAlert, NotifierContext
from notifiers.heartbeat import HeartbeatConfig, HeartbeatNotifier, fail_url
from tests.support import free_port, wait_for
from tests.test_daemon import Running, start_daemon

__all__ = ["start_daemon"]  # the fixture, used by name

SECRET = "3f0a9b1c-5e2d-4c1b-9a7e-uuid-secret"


def notification(*statuses: str) -> Notification:
    alerts = tuple(
        NotifiedAlert(
            status=status,  # type: ignore[arg-type]
            labels=Labels({"alertname": "Watchdog", "n": str(i)}),
            annotations=Labels(),
            starts_at=1_700_000_000.0,
            ends_at=None if status == "firing" else 1_700_000_100.0,
        )
        for i, status in enumerate(statuses)
    )
    return Notification("dms", '{}/{}:{alertname="Watchdog"}', Labels(), alerts)


@dataclass
class PingEndpoint:
    """A local aiohttp ping endpoint: records every request, answers ``status``."""

    port: int
    status: int = 200
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str = f"/ping/{SECRET}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def endpoint() -> AsyncIterator[PingEndpoint]:
    ping = PingEndpoint(free_port())

    async def handle(request: web.Request) -> web.Response:
        ping.requests.append(
            {
                "method": request.method,
                "path_qs": request.path_qs,
                "body": await request.read(),
                "headers": dict(request.headers),
            }
        )
        if ping.delay:
            await asyncio.sleep(ping.delay)
        return web.Response(status=ping.status, text="OK" if ping.status == 200 else "nope")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ping.port).start()
    try:
        yield ping
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(session: aiohttp.ClientSession, **options: Any) -> HeartbeatNotifier:
    config = HeartbeatConfig.model_validate(options)
    return HeartbeatNotifier(config, NotifierContext(session=session, templates=None))


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({}, "set exactly one of url and url_file", id="no URL is refused"),
        pytest.param(
            {"url": f"ftp://h/{SECRET}"},
            "url must be an http:// or https:// URL with a host",
            id="a non-HTTP URL is refused without echoing it",
        ),
        pytest.param(
            {"url": "http://h/x", "method": "PUT"},
            "Input should be 'GET' or 'POST'",
            id="a method other than GET and POST is refused",
        ),
    ],
)
def test_bad_configurations_are_refused_without_the_url(
    options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError) as info:
        HeartbeatConfig.model_validate(options)
    assert error in str(info.value)
    assert SECRET not in str(info.value)


def test_the_url_comes_from_url_file_and_never_shows(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(f"https://hc-ping.com/{SECRET}\n")
    config = HeartbeatConfig.model_validate(
        {"url_file": str(tmp_path / "url")}, context={"base_dir": tmp_path}
    )
    assert config.target().get_secret_value() == f"https://hc-ping.com/{SECRET}"
    assert (config.send_resolved, config.method, config.timeout) == (False, "GET", 10.0)
    assert SECRET not in repr(config) + config.model_dump_json()


def test_the_fail_url_appends_fail_to_the_path_and_keeps_the_query() -> None:
    assert fail_url("https://hc-ping.com/abc") == "https://hc-ping.com/abc/fail"
    assert fail_url("https://hc-ping.com/abc/?rid=1") == "https://hc-ping.com/abc/fail?rid=1"


# --- pings --------------------------------------------------------------------------------


async def test_a_firing_notification_is_a_get_of_the_url(
    endpoint: PingEndpoint, session: aiohttp.ClientSession
) -> None:
    notifier = make(session, url=endpoint.url())
    await notifier.notify(notification("firing"), Delivery("d1"))
    (request,) = endpoint.requests
    assert request["method"] == "GET" and request["path_qs"] == f"/ping/{SECRET}"
    assert request["body"] == b""
    assert request["headers"]["User-Agent"].startswith("monitord/")
    assert SECRET not in repr(notifier)


async def test_post_sends_the_alerts_as_text_and_http_config_authenticates(
    endpoint: PingEndpoint, session: aiohttp.ClientSession
) -> None:
    notifier = make(session, url=endpoint.url(), method="POST", http_config={"bearer_token": "tok"})
    await notifier.notify(notification("firing", "resolved"), Delivery("d1"))
    (request,) = endpoint.requests
    assert request["method"] == "POST"
    assert request["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert request["headers"]["Authorization"] == "Bearer tok"
    assert request["body"].decode() == (
        'firing {}/{}:{alertname="Watchdog"}\n'
        'firing {alertname="Watchdog", n="0"}\n'
        'resolved {alertname="Watchdog", n="1"}\n'
    )


async def test_an_all_resolved_notification_pings_nothing_or_fail_with_send_resolved(
    endpoint: PingEndpoint, session: aiohttp.ClientSession
) -> None:
    await make(session, url=endpoint.url()).notify(notification("resolved"), Delivery("d1"))
    assert endpoint.requests == []
    notifier = make(session, url=endpoint.url(f"/ping/{SECRET}?rid=7"), send_resolved=True)
    await notifier.notify(notification("resolved"), Delivery("d2"))
    (request,) = endpoint.requests
    assert (request["method"], request["path_qs"]) == ("GET", f"/ping/{SECRET}/fail?rid=7")
    await notifier.notify(notification("firing", "resolved"), Delivery("d3"))
    assert endpoint.requests[-1]["path_qs"] == f"/ping/{SECRET}?rid=7"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        pytest.param(500, True, id="a 500 is retried"),
        pytest.param(429, True, id="a 429 is retried"),
        pytest.param(404, False, id="a 404 (unknown check) is given up"),
    ],
)
async def test_an_error_answer_is_a_delivery_error_with_the_url_redacted(
    endpoint: PingEndpoint, session: aiohttp.ClientSession, status: int, retryable: bool
) -> None:
    endpoint.status = status
    with pytest.raises(DeliveryError) as info:
        await make(session, url=endpoint.url()).notify(notification("firing"), Delivery("d1"))
    assert info.value.retryable is retryable and info.value.status == status
    assert str(info.value) == (
        f"heartbeat http://127.0.0.1:{endpoint.port}/<redacted>: HTTP {status}: nope"
    )


async def test_an_unreachable_or_slow_endpoint_is_retried_without_the_url(
    endpoint: PingEndpoint, session: aiohttp.ClientSession
) -> None:
    closed = free_port()
    with pytest.raises(DeliveryError) as info:
        await make(session, url=f"http://127.0.0.1:{closed}/ping/{SECRET}").notify(
            notification("firing"), Delivery("d1")
        )
    assert info.value.retryable
    assert str(info.value).startswith(f"heartbeat http://127.0.0.1:{closed}/<redacted>: ")
    assert SECRET not in str(info.value)

    endpoint.delay = 2.0
    with pytest.raises(DeliveryError) as info:
        await make(session, url=endpoint.url(), timeout="300ms").notify(
            notification("firing"), Delivery("d2")
        )
    assert info.value.retryable
    assert str(info.value) == (
        f"heartbeat http://127.0.0.1:{endpoint.port}/<redacted>: no answer within 0.3s"
    )


# --- the dead man's switch through the daemon ----------------------------------------------

DAEMON_CONFIG = """
server:
  listen: 127.0.0.1:{{port}}
state_dir: {{state}}
global:
  evaluation_interval: 1s
rule_evaluation:
  resend_delay: 1s
rule_packs: {packs}
alerting:
  route:
    receiver: nobody
    routes:
      - matchers: ['alertname="Watchdog"']
        receiver: deadmans-switch
        group_wait: 0s
        group_interval: 1s
        repeat_interval: 2s
  receivers:
    - name: nobody
    - name: deadmans-switch
      heartbeat_configs:
        - url: http://127.0.0.1:{ping}/ping/{secret}
          send_resolved: true
"""


@dataclass
class ThreadedPings:
    """A ping endpoint on a thread (the daemon test is synchronous): records time and path."""

    port: int
    pings: list[tuple[float, str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        pings = self.pings

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pings.append((time.monotonic(), self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def paths(self) -> list[str]:
        return [path for _, _, path in list(self.pings)]


@pytest.fixture
def pings() -> Iterator[ThreadedPings]:
    endpoint = ThreadedPings(free_port())
    endpoint.start()
    yield endpoint
    endpoint.stop()


def test_watchdog_pings_every_repeat_interval_until_the_rules_stop_then_fail_and_silence(
    start_daemon: Any, pings: ThreadedPings
) -> None:
    ok, fail = f"/ping/{SECRET}", f"/ping/{SECRET}/fail"
    daemon: Running = start_daemon(
        DAEMON_CONFIG.format(packs="[monitord]", ping=pings.port, secret=SECRET)
    )
    daemon.notifications(until="READY=1", timeout=30)
    wait_for(lambda: pings.pings, timeout=15)
    first = pings.pings[0][0]
    wait_for(lambda: len(pings.pings) >= 3, timeout=12)
    assert set(pings.paths()) == {ok}, [(round(t - first, 2), p[-5:]) for t, _, p in pings.pings]
    # Every repeat_interval (2 s), not every group_interval (1 s).
    window = time.monotonic() - first
    assert len(pings.pings) <= window / 2 + 2, (window, pings.pings)
    assert SECRET not in daemon.log.read_text()

    # A reload takes the rule pack away: Watchdog is no longer evaluated, so its last
    # hand-off expires (4 x resend_delay), the group resolves and the switch is told at
    # once through /fail; after that, silence.
    text = daemon.config.read_text().replace("rule_packs: [monitord]", "rule_packs: []")
    daemon.config.write_text(text)
    assert daemon.post("/-/reload")[0] == 200
    wait_for(lambda: fail in pings.paths(), timeout=15)
    failed_at = time.monotonic()
    time.sleep(5)  # more than two repeat intervals
    after = [path for at, _, path in list(pings.pings) if at > failed_at]
    assert after == [], after
    assert pings.paths().count(fail) == 1
