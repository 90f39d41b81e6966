"""The alertmanager receiver: the request it makes (against local recording servers) and
alerts reaching two real Alertmanagers (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.alertmanager import (
    MAX_BATCH_SIZE,
    AlertmanagerConfig,
    AlertmanagerNotifier,
    prometheus_alert,
)
from notifiers.base import (
    Delivery,
    DeliveryError,
    Notification,
    NotifiedAlert,
    NotifierContext,
    fingerprint,
)
from notifiers.templates import Templates
from tests.alertmanager_server import alertmanager as real_alertmanager
from tests.support import free_port

EXTERNAL = Labels({"monitor": "dc1", "replica": "a"})


@dataclass
class Recorder:
    """An Alertmanager stand-in that records every request and answers as told."""

    base: str = ""
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    answers: list[web.Response] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.json()))
        return self.answers.pop(0) if self.answers else web.Response(text="")


@asynccontextmanager
async def recording() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture
async def recorders() -> AsyncIterator[tuple[Recorder, Recorder]]:
    async with recording() as first, recording() as second:
        yield first, second


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(session: aiohttp.ClientSession, *urls: str, **options: Any) -> AlertmanagerNotifier:
    context = NotifierContext(session=session, templates=Templates(), external_labels=EXTERNAL)
    return AlertmanagerNotifier(AlertmanagerConfig(urls=list(urls), **options), context)


def alert(
    status: str = "firing",
    *,
    starts_at: float = 1_700_000_000.125,
    ends_at: float | None = 1_700_000_240.0,
    **labels: str,
) -> NotifiedAlert:
    labels = {"alertname": "DiskFull", **labels}
    return NotifiedAlert(
        status=status,  # type: ignore[arg-type]
        labels=Labels(labels),
        annotations=Labels({"summary": f"disk full on {labels.get('instance', '?')}"}),
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url="http://monitord.test:9090/graph?g0.expr=up",
        fingerprint=fingerprint(labels),
    )


def notification(*alerts: NotifiedAlert) -> Notification:
    return Notification(receiver="upstream", group_key="", group_labels=Labels(), alerts=alerts)


# --- the request --------------------------------------------------------------------


async def test_alerts_are_posted_as_prometheus_does(
    recorders: tuple[Recorder, Recorder], session: aiohttp.ClientSession
) -> None:
    first, _ = recorders
    notifier = make(
        session,
        first.base + "/am-prefix/",
        http_config={"basic_auth": {"username": "prom", "password": "pw"}},
    )
    firing = alert(instance="db1", monitor="own")
    resolved = alert("resolved", ends_at=1_700_000_100.5, instance="db2")
    await notifier.notify(notification(firing, resolved), Delivery("d1"))
    [(path, headers, body)] = first.requests
    assert path == "/am-prefix/api/v2/alerts"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"prom:pw").decode()
    assert body == [
        {
            # An alert's own label wins over the external one, as in Prometheus.
            "labels": {
                "alertname": "DiskFull",
                "instance": "db1",
                "monitor": "own",
                "replica": "a",
            },
            "annotations": {"summary": "disk full on db1"},
            "startsAt": "2023-11-14T22:13:20.125000Z",
            "endsAt": "2023-11-14T22:17:20Z",
            "generatorURL": "http://monitord.test:9090/graph?g0.expr=up",
        },
        {
            "labels": {
                "alertname": "DiskFull",
                "instance": "db2",
                "monitor": "dc1",
                "replica": "a",
            },
            "annotations": {"summary": "disk full on db2"},
            "startsAt": "2023-11-14T22:13:20.125000Z",
            "endsAt": "2023-11-14T22:15:00.500000Z",
            "generatorURL": "http://monitord.test:9090/graph?g0.expr=up",
        },
    ]


def test_an_alert_without_end_or_source_leaves_them_out() -> None:
    bare = NotifiedAlert("firing", Labels({"alertname": "X"}), Labels(), starts_at=0.0)
    assert prometheus_alert(bare, {}) == {
        "labels": {"alertname": "X"},
        "annotations": {},
        "startsAt": "1970-01-01T00:00:00Z",
    }


async def test_more_than_256_alerts_go_in_batches(
    recorders: tuple[Recorder, Recorder], session: aiohttp.ClientSession
) -> None:
    first, _ = recorders
    alerts = [alert(instance=f"i{n:03d}") for n in range(MAX_BATCH_SIZE + 44)]
    await make(session, first.base).notify(notification(*alerts), Delivery("d"))
    sizes = [len(body) for _, _, body in first.requests]
    assert sizes == [256, 44]
    sent = [a["labels"]["instance"] for _, _, body in first.requests for a in body]
    assert sent == [f"i{n:03d}" for n in range(300)]


async def test_no_alerts_no_request(
    recorders: tuple[Recorder, Recorder], session: aiohttp.ClientSession
) -> None:
    first, _ = recorders
    await make(session, first.base).notify(notification(), Delivery("d"))
    assert first.requests == []


async def test_a_400_is_given_up(
    recorders: tuple[Recorder, Recorder], session: aiohttp.ClientSession
) -> None:
    first, _ = recorders
    first.answers.append(web.Response(status=400, text="bad alert"))
    with pytest.raises(DeliveryError, match="bad alert") as caught:
        await make(session, first.base).notify(notification(alert()), Delivery("d"))
    assert caught.value.retryable is False
    assert caught.value.status == 400


async def test_a_retry_goes_only_to_the_alertmanagers_that_failed(
    recorders: tuple[Recorder, Recorder], session: aiohttp.ClientSession
) -> None:
    good, bad = recorders
    bad.answers.append(web.Response(status=503, headers={"Retry-After": "3"}))
    notifier = make(session, good.base, bad.base)
    with pytest.raises(DeliveryError) as caught:
        await notifier.notify(notification(alert()), Delivery("d1"))
    message = str(caught.value)
    assert "1 of 2 Alertmanagers" in message
    assert f"{bad.base}/<redacted>: HTTP 503" in message
    assert good.base not in message
    assert caught.value.retryable is True
    assert caught.value.retry_after == 3.0
    assert notifier.accepted("d1") == {good.base}

    # Another delivery is not affected by what d1 remembers.
    await notifier.notify(notification(alert()), Delivery("d2"))
    assert (len(good.requests), len(bad.requests)) == (2, 2)

    await notifier.notify(notification(alert()), Delivery("d1", attempt=2))
    assert (len(good.requests), len(bad.requests)) == (2, 3)
    assert notifier.accepted("d1") == frozenset()


async def test_when_all_fail_every_one_is_named_and_all_are_retried(
    session: aiohttp.ClientSession,
) -> None:
    ports = [free_port(), free_port()]
    notifier = make(session, *(f"http://127.0.0.1:{p}/prefix" for p in ports))
    with pytest.raises(DeliveryError) as caught:
        await notifier.notify(notification(alert()), Delivery("d"))
    message = str(caught.value)
    assert "2 of 2 Alertmanagers" in message
    for port in ports:
        assert f"http://127.0.0.1:{port}/<redacted>: cannot connect" in message
    assert "prefix" not in message
    assert caught.value.retryable is True
    assert notifier.accepted("d") == frozenset()


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"urls": ["http://h:9093"], "send_resolved": False},
            "always sends resolved alerts",
            id="send_resolved false is refused",
        ),
        pytest.param({"urls": []}, "at least 1 item", id="at least one Alertmanager"),
        pytest.param({"urls": ["h:9093"]}, r"urls\[0\] must be an http", id="a scheme is needed"),
        pytest.param(
            {"urls": ["http://h:9093", "http://am:s3cret@h2:9093"]},
            r"urls\[1\] holds credentials; give them in http_config.basic_auth",
            id="credentials are not put in URLs",
        ),
        pytest.param(
            {"urls": ["http://h:9093/x?y=1"]}, "no query or fragment", id="a base URL has no query"
        ),
        pytest.param(
            {"urls": ["http://h:9093", "http://h:9093/"]},
            "same Alertmanager twice",
            id="an Alertmanager is listed once",
        ),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        AlertmanagerConfig.model_validate(options)
    assert "s3cret" not in str(caught.value)


def test_defaults_and_no_secret_in_the_dump() -> None:
    config = AlertmanagerConfig(
        urls=["http://h:9093"], http_config={"basic_auth": {"username": "u", "password": "s3cret"}}
    )
    assert config.send_resolved is True
    assert config.timeout == 10.0
    assert "s3cret" not in config.model_dump_json()
    assert "s3cret" not in repr(config)
    assert AlertmanagerNotifier.grouped is False


# --- the real Alertmanager ----------------------------------------------------------

BLACKHOLE = """
route:
  receiver: blackhole
receivers:
  - name: blackhole
"""


def alertmanager(
    session: aiohttp.ClientSession, tmp_path: Path, name: str, port: int
) -> AbstractAsyncContextManager[str]:
    """The real Alertmanager on 127.0.0.1:``port``, routing everything to a black hole, its
    files named after ``name``."""
    return real_alertmanager(session, tmp_path, BLACKHOLE, name=name, port=port)


async def active_alerts(session: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's GET /api/v2/alerts, by the alert's instance label."""
    async with session.get(f"{base}/api/v2/alerts") as response:
        assert response.status == 200
        alerts = await response.json()
    return {a["labels"]["instance"]: a for a in alerts}


async def received(session: aiohttp.ClientSession, base: str) -> float:
    """How many alerts an Alertmanager has been posted, from its own metrics."""
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    counts = re.findall(r"^alertmanager_alerts_received_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(c) for c in counts)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_both_alertmanagers_show_the_alerts_and_their_resolution(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        bases = [
            await stack.enter_async_context(alertmanager(session, tmp_path, name, free_port()))
            for name in ("am1", "am2")
        ]
        now = round(time.time(), 3)
        firing = [
            alert(starts_at=now - 60.5, ends_at=now + 240, instance="db1", severity="critical"),
            alert(starts_at=now - 30.25, ends_at=now + 240, instance="db2", monitor="own"),
        ]
        notifier = make(session, *bases)
        await notifier.notify(notification(*firing), Delivery("fire"))

        for base in bases:
            shown = await active_alerts(session, base)
            assert set(shown) == {"db1", "db2"}, base
            db1, db2 = shown["db1"], shown["db2"]
            assert db1["labels"] == {
                "alertname": "DiskFull",
                "instance": "db1",
                "severity": "critical",
                "monitor": "dc1",
                "replica": "a",
            }
            assert db2["labels"]["monitor"] == "own"
            assert parse_time(db1["startsAt"]) == pytest.approx(now - 60.5, abs=1e-3)
            assert parse_time(db2["startsAt"]) == pytest.approx(now - 30.25, abs=1e-3)
            assert parse_time(db1["endsAt"]) == pytest.approx(now + 240, abs=1e-3)
            assert db1["status"]["state"] == "active"
            assert db1["annotations"] == {"summary": "disk full on db1"}
            assert db1["generatorURL"] == "http://monitord.test:9090/graph?g0.expr=up"
            assert db1["fingerprint"] == fingerprint(db1["labels"])

        # db1 resolves; db2 still fires and is handed over again.
        resolved = alert(
            "resolved", starts_at=now - 60.5, ends_at=now - 0.5, instance="db1", severity="critical"
        )
        await notifier.notify(notification(resolved, firing[1]), Delivery("resolve"))
        for base in bases:
            shown = await active_alerts(session, base)
            assert set(shown) == {"db2"}, f"{base} still shows db1 as active: {shown}"


async def test_an_alertmanager_that_is_down_gets_the_alerts_on_the_retry_alone(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    late_port = free_port()
    late_base = f"http://127.0.0.1:{late_port}"
    async with alertmanager(session, tmp_path, "up", free_port()) as up_base:
        notifier = make(session, up_base, late_base)
        now = round(time.time(), 3)
        firing = alert(starts_at=now - 10, ends_at=now + 240, instance="db1")

        with pytest.raises(DeliveryError) as caught:
            await notifier.notify(notification(firing), Delivery("d"))
        message = str(caught.value)
        assert f"{late_base}/<redacted>: cannot connect" in message
        assert up_base not in message
        assert caught.value.retryable is True
        assert set(await active_alerts(session, up_base)) == {"db1"}
        before = await received(session, up_base)
        assert before == 1

        async with alertmanager(session, tmp_path, "late", late_port):
            await notifier.notify(notification(firing), Delivery("d", attempt=2))
            assert set(await active_alerts(session, late_base)) == {"db1"}
            assert await received(session, late_base) == 1
        assert await received(session, up_base) == before, "the retry re-posted to the first"
