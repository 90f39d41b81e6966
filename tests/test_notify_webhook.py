"""The webhook receiver against a local recording server, and side by side with the real
Alertmanager's webhook (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.base import (
    Delivery,
    DeliveryError,
    Notification,
    NotifiedAlert,
    NotifierContext,
    fingerprint,
)
from notifiers.templates import Templates
from notifiers.webhook import (
    GO_ZERO_TIME,
    WebhookConfig,
    WebhookNotifier,
    format_go_time,
    webhook_message,
)
from tests.alertmanager_server import alertmanager
from tests.support import free_port

SECRET_PATH = "/hook/T0KEN-s3cret"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A webhook endpoint that records every request and answers as told."""

    base: str = ""
    requests: list[Recorded] = field(default_factory=list)
    answers: list[web.Response] = field(default_factory=list)
    delay: float = 0.0

    @property
    def url(self) -> str:
        return self.base + SECRET_PATH

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answers.pop(0) if self.answers else web.Response(text="ok")

    def only(self) -> Recorded:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def context() -> AsyncIterator[NotifierContext]:
    async with aiohttp.ClientSession() as session:
        yield NotifierContext(session=session, templates=Templates())


def alert(
    status: str = "firing",
    starts_at: float = 1_700_000_000.25,
    ends_at: float | None = None,
    **labels: str,
) -> NotifiedAlert:
    labels = {"alertname": "DiskFull", **labels}
    return NotifiedAlert(
        status=status,  # type: ignore[arg-type]
        labels=Labels(labels),
        annotations=Labels({"summary": "disk <b>full</b> & more"}),
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url="http://monitord.test/graph?g0.expr=up&g0.tab=1",
        fingerprint=fingerprint(labels),
    )


def notification(*alerts: NotifiedAlert, receiver: str = "ops") -> Notification:
    return Notification(
        receiver=receiver,
        group_key='{}:{alertname="DiskFull"}',
        group_labels=Labels({"alertname": "DiskFull"}),
        alerts=alerts,
        external_url="http://monitord.test:9090",
    )


def make(url: str, context: NotifierContext, **options: Any) -> WebhookNotifier:
    return WebhookNotifier(WebhookConfig(url=url, **options), context)


# --- the payload ------------------------------------------------------------------------


async def test_the_payload_is_alertmanagers_version_4_message(
    recorder: Recorder, context: NotifierContext
) -> None:
    firing = alert(instance="db1", ends_at=1_700_000_900.0)
    resolved = alert("resolved", ends_at=1_700_000_600.5, instance="db2")
    await make(recorder.url, context).notify(
        notification(firing, resolved, receiver="team.ops"), Delivery("d1")
    )
    request = recorder.only()
    assert request.path == SECRET_PATH
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert list(body) == [
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    ]
    assert body == {
        "receiver": "team\\.ops",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "instance": "db1"},
                "annotations": {"summary": "disk <b>full</b> & more"},
                "startsAt": "2023-11-14T22:13:20.25Z",
                "endsAt": GO_ZERO_TIME,
                "generatorURL": "http://monitord.test/graph?g0.expr=up&g0.tab=1",
                "fingerprint": fingerprint({"alertname": "DiskFull", "instance": "db1"}),
            },
            {
                "status": "resolved",
                "labels": {"alertname": "DiskFull", "instance": "db2"},
                "annotations": {"summary": "disk <b>full</b> & more"},
                "startsAt": "2023-11-14T22:13:20.25Z",
                "endsAt": "2023-11-14T22:23:20.5Z",
                "generatorURL": "http://monitord.test/graph?g0.expr=up&g0.tab=1",
                "fingerprint": fingerprint({"alertname": "DiskFull", "instance": "db2"}),
            },
        ],
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {"summary": "disk <b>full</b> & more"},
        "externalURL": "http://monitord.test:9090",
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
    }
    # Go's encoder: HTML-safe escapes, compact, newline at the end.
    assert b"\\u003cb\\u003efull\\u003c/b\\u003e \\u0026 more" in request.body
    assert request.body.endswith(b"}\n")
    assert b": " not in request.body


def test_all_resolved_is_status_resolved_with_the_end_times() -> None:
    message = webhook_message(notification(alert("resolved", ends_at=1_700_000_001.0)))
    assert message["status"] == "resolved"
    assert message["alerts"][0]["endsAt"] == "2023-11-14T22:13:21Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "0001-01-01T00:00:00Z", id="no time is Go's zero time"),
        pytest.param(0.0, "1970-01-01T00:00:00Z", id="the epoch has no fraction"),
        pytest.param(1_700_000_000.5, "2023-11-14T22:13:20.5Z", id="trailing zeros are trimmed"),
        pytest.param(1_700_000_000.123456, "2023-11-14T22:13:20.123456Z", id="microseconds kept"),
        pytest.param(1_700_000_000.010, "2023-11-14T22:13:20.01Z", id="leading zeros kept"),
    ],
)
def test_times_are_go_time_json(seconds: float | None, text: str) -> None:
    assert format_go_time(seconds) == text


async def test_max_alerts_keeps_the_first_and_counts_the_rest(
    recorder: Recorder, context: NotifierContext
) -> None:
    alerts = [
        alert(instance="a", team="x"),
        alert(instance="b", team="x"),
        alert("resolved", ends_at=1_700_000_500.0, instance="c", team="y"),
    ]
    await make(recorder.url, context, max_alerts=2).notify(notification(*alerts), Delivery("d"))
    body = recorder.only().json()
    assert [a["labels"]["instance"] for a in body["alerts"]] == ["a", "b"]
    assert body["truncatedAlerts"] == 1
    # Common labels are those of the alerts kept, as Alertmanager truncates first.
    assert body["commonLabels"] == {"alertname": "DiskFull", "team": "x"}


async def test_max_alerts_at_or_above_the_count_truncates_nothing(
    recorder: Recorder, context: NotifierContext
) -> None:
    notifier = make(recorder.url, context, max_alerts=2)
    await notifier.notify(notification(alert(instance="a"), alert(instance="b")), Delivery("d"))
    body = recorder.only().json()
    assert len(body["alerts"]) == 2
    assert body["truncatedAlerts"] == 0


async def test_without_send_resolved_only_firing_alerts_are_sent(
    recorder: Recorder, context: NotifierContext
) -> None:
    notifier = make(recorder.url, context, send_resolved=False)
    mixed = notification(alert(instance="a"), alert("resolved", ends_at=1.7e9 + 9, instance="b"))
    await notifier.notify(mixed, Delivery("d1"))
    body = recorder.only().json()
    assert [a["labels"]["instance"] for a in body["alerts"]] == ["a"]
    assert body["commonLabels"] == {"alertname": "DiskFull", "instance": "a"}

    await notifier.notify(
        notification(alert("resolved", ends_at=1.7e9 + 9, instance="b")), Delivery("d2")
    )
    assert len(recorder.requests) == 1, "a notification of resolved alerts only is not sent"


# --- signing, headers, authentication -----------------------------------------------


def verify(secret: str, request: Recorded) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = dict(part.split(",", 1) for part in request.headers["webhook-signature"].split())
    return hmac.compare_digest(versions["v1"], expected)


async def test_standard_webhooks_signature_verifies_and_the_id_is_stable(
    recorder: Recorder, context: NotifierContext
) -> None:
    now = [1_700_000_000.0]
    notifier = WebhookNotifier(
        WebhookConfig(url=recorder.url, signing_secret=SIGNING_SECRET),
        context,
        clock=lambda: now[0],
    )
    delivery = Delivery("01HF0000000000000000000000")
    await notifier.notify(notification(alert()), delivery)
    now[0] += 42.7
    await notifier.notify(notification(alert()), Delivery(delivery.id, attempt=2))
    first, second = recorder.requests
    assert verify(SIGNING_SECRET, first)
    assert verify(SIGNING_SECRET, second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.id
    assert first.headers["webhook-timestamp"] == "1700000000"
    assert second.headers["webhook-timestamp"] == "1700000042"
    assert not verify("whsec_" + base64.b64encode(b"another key").decode(), first)


async def test_signing_secret_from_a_file(
    recorder: Recorder, context: NotifierContext, tmp_path: Path
) -> None:
    (tmp_path / "whsec").write_text(SIGNING_SECRET + "\n")
    config = WebhookConfig.model_validate(
        {"url": recorder.url, "signing_secret_file": "whsec"}, context={"base_dir": tmp_path}
    )
    await WebhookNotifier(config, context).notify(notification(alert()), Delivery("x"))
    assert verify(SIGNING_SECRET, recorder.only())


async def test_unsigned_requests_have_no_webhook_headers(
    recorder: Recorder, context: NotifierContext
) -> None:
    await make(recorder.url, context).notify(notification(alert()), Delivery("x"))
    assert not [h for h in recorder.only().headers if h.lower().startswith("webhook-")]


@pytest.mark.parametrize(
    ("http_config", "authorization"),
    [
        pytest.param(
            {"basic_auth": {"username": "am", "password": "pw"}},
            "Basic " + base64.b64encode(b"am:pw").decode(),
            id="basic auth sends the user and password",
        ),
        pytest.param(
            {"authorization": {"credentials": "tok"}},
            "Bearer tok",
            id="authorization defaults to Bearer",
        ),
        pytest.param({"bearer_token": "tok2"}, "Bearer tok2", id="bearer_token is Bearer"),
    ],
)
async def test_custom_headers_and_authentication(
    recorder: Recorder,
    context: NotifierContext,
    http_config: dict[str, Any],
    authorization: str,
) -> None:
    notifier = make(recorder.url, context, http_config=http_config, headers={"X-Tenant": "blue"})
    await notifier.notify(notification(alert()), Delivery("x"))
    headers = recorder.only().headers
    assert headers["X-Tenant"] == "blue"
    assert headers["Authorization"] == authorization


# --- failures -----------------------------------------------------------------------


def assert_no_secret(text: str) -> None:
    assert "T0KEN" not in text
    assert "s3cret" not in text


async def test_400_is_given_up_and_names_the_url_redacted(
    recorder: Recorder, context: NotifierContext
) -> None:
    recorder.answers.append(web.Response(status=400, text="bad payload"))
    with pytest.raises(DeliveryError) as caught:
        await make(recorder.url, context).notify(notification(alert()), Delivery("x"))
    error = caught.value
    assert error.retryable is False
    assert error.status == 400
    assert f"{recorder.base}/<redacted>" in str(error)
    assert "bad payload" in str(error)
    assert_no_secret(str(error))


async def test_503_with_retry_after_is_retried_when_the_receiver_asks(
    recorder: Recorder, context: NotifierContext
) -> None:
    recorder.answers.append(web.Response(status=503, headers={"Retry-After": "7"}))
    with pytest.raises(DeliveryError) as caught:
        await make(recorder.url, context).notify(notification(alert()), Delivery("x"))
    assert caught.value.retryable is True
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 503
    assert_no_secret(str(caught.value))


async def test_connection_refused_is_retryable_and_keeps_the_secret(
    context: NotifierContext,
) -> None:
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    with pytest.raises(DeliveryError) as caught:
        await make(url, context).notify(notification(alert()), Delivery("x"))
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert_no_secret(str(caught.value))
    assert_no_secret(repr(caught.value.__cause__))


async def test_a_receiver_slower_than_the_timeout_is_retryable(
    recorder: Recorder, context: NotifierContext
) -> None:
    recorder.delay = 5.0
    notifier = make(recorder.url, context, timeout="300ms")
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"no answer within 0\.3s") as caught:
        await notifier.notify(notification(alert()), Delivery("x"))
    assert time.monotonic() - started < 4.0
    assert caught.value.retryable is True
    assert_no_secret(str(caught.value))


# --- configuration ------------------------------------------------------------------


def test_the_url_is_secret_in_repr_and_dump() -> None:
    config = WebhookConfig(
        url="https://hooks.example" + SECRET_PATH,
        signing_secret=SIGNING_SECRET,
        http_config={"bearer_token": "s3cret-bearer"},
    )
    for text in (repr(config), config.model_dump_json(), str(config.model_dump())):
        assert_no_secret(text)
        assert SIGNING_SECRET not in text
    notifier = WebhookNotifier(config, NotifierContext(session=None, templates=None))  # type: ignore[arg-type]
    assert repr(notifier) == "<WebhookNotifier https://hooks.example/<redacted>>"


def test_url_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("https://hooks.example" + SECRET_PATH + "\n")
    config = WebhookConfig.model_validate({"url_file": "url"}, context={"base_dir": tmp_path})
    assert config.target().get_secret_value() == "https://hooks.example" + SECRET_PATH
    assert_no_secret(config.model_dump_json())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "exactly one of url and url_file", id="a url is required"),
        pytest.param(
            {"url": "https://h/x", "url_file": "/dev/null"},
            "exactly one of url and url_file",
            id="url and url_file are exclusive",
        ),
        pytest.param(
            {"url": "ftp://h" + SECRET_PATH}, "http:// or https:// URL", id="only http URLs"
        ),
        pytest.param(
            {"url": "https://h/x", "headers": {"content-type": "text/plain"}},
            "set by the receiver",
            id="Content-Type cannot be overridden",
        ),
        pytest.param(
            {"url": "https://h/x", "headers": {"Authorization": "x"}},
            "set by the receiver",
            id="Authorization goes through http_config",
        ),
        pytest.param(
            {"url": "https://h/x", "headers": {"Webhook-Signature": "v1,x"}},
            "set by the receiver",
            id="signature headers cannot be forged",
        ),
        pytest.param(
            {"url": "https://h/x", "headers": {"X-A": "a\r\nX-B: b"}},
            "invalid name or value",
            id="header values cannot inject headers",
        ),
        pytest.param(
            {"url": "https://h/x", "signing_secret": "T0KEN-s3cret"},
            "whsec_<base64 key>",
            id="the signing secret needs the whsec_ prefix",
        ),
        pytest.param(
            {"url": "https://h/x", "signing_secret": "whsec_T0KEN-s3cret!"},
            "not valid base64",
            id="the signing key must be base64",
        ),
        pytest.param(
            {"url": "https://h/x", "max_alerts": -1},
            "greater than or equal to 0",
            id="max_alerts is not negative",
        ),
        pytest.param(
            {"url": "https://h/x", "timeout": "0s"}, "greater than 0", id="the timeout is positive"
        ),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        WebhookConfig.model_validate(options)
    assert_no_secret(str(caught.value))


def test_send_resolved_defaults_to_true_as_in_alertmanager() -> None:
    assert WebhookConfig(url="https://h/x").send_resolved is True


# --- side by side with the real Alertmanager ----------------------------------------


ALERTMANAGER_CONFIG = """
route:
  receiver: team.ops
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: team.ops
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {within}s")
        await asyncio.sleep(0.05)


async def test_the_same_bytes_as_the_real_alertmanager(
    recorder: Recorder, context: NotifierContext, tmp_path: Path
) -> None:
    external_url = "http://alertmanager.test:9093"
    session = context.session
    config = ALERTMANAGER_CONFIG.format(url=recorder.base + "/am")
    async with alertmanager(
        session, tmp_path, config, f"--web.external-url={external_url}"
    ) as base:
        starts_at = round(time.time() - 120, 3)
        labels = {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical"}
        annotations = {"summary": "disk <b>full</b> & more", "runbook": "https://x.test/r?a=1&b"}
        generator_url = "http://monitord.test:9090/graph?g0.expr=up%3D%3D0&g0.tab=1"
        posted = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": format_go_time(starts_at),
            "generatorURL": generator_url,
        }
        async with session.post(f"{base}/api/v2/alerts", json=[posted]) as response:
            assert response.status == 200, await response.text()
        await wait_until(lambda: len(recorder.requests) >= 1, 15, "no firing webhook")
        from_alertmanager = recorder.requests[0]

        ends_at = round(time.time() - 1, 3)
        resolved = {**posted, "endsAt": format_go_time(ends_at)}
        async with session.post(f"{base}/api/v2/alerts", json=[resolved]) as response:
            assert response.status == 200, await response.text()
        await wait_until(
            lambda: any(r.json()["status"] == "resolved" for r in recorder.requests),
            15,
            "no resolved webhook",
        )
        resolved_from_alertmanager = next(
            r for r in recorder.requests if r.json()["status"] == "resolved"
        )

    def ours(status: str, ends: float | None) -> NotifiedAlert:
        return NotifiedAlert(
            status=status,  # type: ignore[arg-type]
            labels=Labels(labels),
            annotations=Labels(annotations),
            starts_at=starts_at,
            ends_at=ends,
            generator_url=generator_url,
            fingerprint=fingerprint(labels),
        )

    group: dict[str, Any] = {
        "receiver": "team.ops",
        "group_key": '{}:{alertname="DiskFull"}',
        "group_labels": Labels({"alertname": "DiskFull"}),
        "external_url": external_url,
    }
    count = len(recorder.requests)
    notifier = make(recorder.url, context)
    # A firing alert's end (the rules' valid_until) is hidden, as Alertmanager hides it.
    await notifier.notify(
        Notification(alerts=(ours("firing", starts_at + 600),), **group), Delivery("a")
    )
    await notifier.notify(Notification(alerts=(ours("resolved", ends_at),), **group), Delivery("b"))
    mine, mine_resolved = recorder.requests[count:]

    assert from_alertmanager.json()["status"] == "firing"
    assert mine.json() == from_alertmanager.json()
    assert mine.body == from_alertmanager.body
    assert mine_resolved.json() == resolved_from_alertmanager.json()
    assert mine_resolved.body == resolved_from_alertmanager.body
    assert mine.headers["Content-Type"] == from_alertmanager.headers["Content-Type"]
