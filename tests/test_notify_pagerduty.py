"""The pagerduty integration against a local aiohttp server that checks each event strictly
against PagerDuty's Events API v2 documentation and keeps incidents by dedup_key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.base import Delivery, DeliveryError, Notification, NotifiedAlert, NotifierContext
from notifiers.outbox import Deliverer, Outbox, RetryPolicy
from notifiers.pagerduty import (
    DEFAULT_URL,
    MAX_EVENT_BYTES,
    PagerDutyConfig,
    PagerDutyNotifier,
    dedup_key,
)
from notifiers.templates import Templates
from tests.support import free_port

ROUTING_KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
assert len(ROUTING_KEY) == 32

# --- what PagerDuty accepts (developer.pagerduty.com, Events API v2 "Send an Event") -----

EVENT_KEYS = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
PAYLOAD_KEYS = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}


def _strings(obj: dict[str, Any], keys: set[str], where: str) -> list[str]:
    return [
        f"{where}.{k} must be a string" for k in keys if k in obj and not isinstance(obj[k], str)
    ]


def pagerduty_problems(event: Any, size: int) -> list[str]:
    """Why the Events API v2 would refuse ``event`` (empty when it accepts it)."""
    if size > MAX_EVENT_BYTES:
        return [f"event of {size} bytes over 512 KB"]
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    problems = [f"unknown key {k!r}" for k in event if k not in EVENT_KEYS]
    problems += _strings(event, {"routing_key", "dedup_key", "client", "client_url"}, "event")
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        problems.append("routing_key must be a 32-character integration key")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append(f"event_action {action!r} is not trigger, acknowledge or resolve")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        problems.append("dedup_key must be 1 to 255 characters")
    if action in ("acknowledge", "resolve"):
        if dedup is None:
            problems.append(f"dedup_key is required to {action}")
        return problems  # payload is ignored on acknowledge and resolve
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return [*problems, "payload is required to trigger"]
    problems += [f"unknown payload key {k!r}" for k in payload if k not in PAYLOAD_KEYS]
    problems += _strings(payload, PAYLOAD_KEYS - {"custom_details"}, "payload")
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        problems.append("payload.summary is required")
    elif len(summary) > 1024:
        problems.append("payload.summary longer than 1024 characters")
    if not payload.get("source"):
        problems.append("payload.source is required")
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        problems.append(f"payload.severity {payload.get('severity')!r} is not valid")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
        problems.append("payload.custom_details must be an object")
    for name, required in (("links", "href"), ("images", "src")):
        items = event.get(name, [])
        if not isinstance(items, list):
            problems.append(f"{name} must be a list")
            continue
        for i, item in enumerate(items):
            allowed = {"href", "text"} if name == "links" else {"src", "href", "alt"}
            if not isinstance(item, dict) or not item.get(required):
                problems.append(f"{name}[{i}].{required} is required")
            else:
                problems += [f"{name}[{i}]: unknown key {k!r}" for k in item if k not in allowed]
    return problems


@dataclass
class FakePagerDuty:
    """The Events API v2 on 127.0.0.1: validates, records and keeps open incidents."""

    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[list[str]] = field(default_factory=list)
    open: set[str] = field(default_factory=set)
    answer: tuple[int, dict[str, str], str] | None = None
    url: str = ""

    async def enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = json.loads(raw)
        except ValueError:
            return web.json_response({"status": "invalid event", "message": "bad JSON"}, status=400)
        problems = pagerduty_problems(event, len(raw))
        if problems:
            self.refused.append(problems)
            body = {"status": "invalid event", "message": "Event object is invalid"}
            return web.json_response({**body, "errors": problems}, status=400)
        if self.answer is not None:
            status, headers, text = self.answer
            return web.Response(status=status, headers=headers, text=text)
        self.events.append(event)
        key = event.get("dedup_key") or hashlib.sha256(raw).hexdigest()
        if event["event_action"] == "trigger":
            self.open.add(key)
        elif event["event_action"] == "resolve":
            self.open.discard(key)
        answer = {"status": "success", "message": "Event processed", "dedup_key": key}
        return web.json_response(answer, status=202)

    def only(self) -> dict[str, Any]:
        assert not self.refused, self.refused
        assert len(self.events) == 1, self.events
        return self.events[0]


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty()
    app = web.Application()
    app.router.add_post("/v2/enqueue", fake.enqueue)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v2/enqueue"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def alert(status: str = "firing", **labels: str) -> NotifiedAlert:
    labels = {"alertname": "DiskFull", "instance": "db1", **labels}
    return NotifiedAlert(
        status=status,  # type: ignore[arg-type]
        labels=Labels(labels),
        annotations=Labels({"summary": f"{labels['instance']} is full"}),
        starts_at=1_700_000_000.0,
        ends_at=None if status == "firing" else 1_700_000_600.0,
        generator_url=f"http://monitord.example:9090/graph?{labels['instance']}",
    )


GROUP_KEY = '{}/{severity="critical"}:{alertname="DiskFull"}'


def notification(*alerts: NotifiedAlert) -> Notification:
    return Notification(
        receiver="oncall",
        group_key=GROUP_KEY,
        group_labels=Labels({"alertname": "DiskFull"}),
        alerts=alerts or (alert(),),
        external_url="http://monitord.example:9090",
    )


def notifier(
    session: aiohttp.ClientSession, url: str, templates: Templates | None = None, **options: Any
) -> PagerDutyNotifier:
    options.setdefault("routing_key", ROUTING_KEY)
    config = PagerDutyConfig(url=url, **options)
    return PagerDutyNotifier(
        config, NotifierContext(session=session, templates=templates or Templates())
    )


# --- events --------------------------------------------------------------------------


async def test_a_firing_group_triggers_with_alertmanagers_defaults(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    await notifier(session, pagerduty.url).notify(
        notification(alert(), alert(instance="db2")), Delivery("d1")
    )
    event = pagerduty.only()
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": hashlib.sha256(GROUP_KEY.encode()).hexdigest(),
        "payload": {
            "summary": "[FIRING:2] DiskFull",
            "source": "monitord",
            "severity": "error",
            "custom_details": {
                "firing": (
                    "Labels:\n - alertname = DiskFull\n - instance = db1\n"
                    "Annotations:\n - summary = db1 is full\n"
                    "Source: http://monitord.example:9090/graph?db1\n"
                    "Labels:\n - alertname = DiskFull\n - instance = db2\n"
                    "Annotations:\n - summary = db2 is full\n"
                    "Source: http://monitord.example:9090/graph?db2"
                ),
                "resolved": "",
                "num_firing": "2",
                "num_resolved": "0",
            },
        },
        "client": "monitord",
        "client_url": "http://monitord.example:9090",
    }


async def test_trigger_then_resolve_share_one_dedup_key_and_close_the_incident(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    integration = notifier(session, pagerduty.url)
    await integration.notify(notification(alert()), Delivery("d1"))
    assert len(pagerduty.open) == 1
    await integration.notify(notification(alert("resolved")), Delivery("d2"))
    trigger, resolve = pagerduty.events
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    assert trigger["dedup_key"] == dedup_key(GROUP_KEY)
    assert pagerduty.open == set()
    assert not pagerduty.refused


async def test_a_group_with_one_alert_still_firing_triggers_again(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    await notifier(session, pagerduty.url).notify(
        notification(alert("resolved"), alert(instance="db2")), Delivery("d1")
    )
    event = pagerduty.only()
    assert event["event_action"] == "trigger"
    details = event["payload"]["custom_details"]
    assert (details["num_firing"], details["num_resolved"]) == ("1", "1")
    assert details["resolved"].startswith("Labels:\n - alertname = DiskFull\n - instance = db1\n")


@pytest.mark.parametrize(
    ("severity_label", "expected"),
    [
        pytest.param("critical", "critical", id="a label that is a PagerDuty severity is used"),
        pytest.param("Warning", "warning", id="the label is compared in lower case"),
        pytest.param("page", "info", id="a label PagerDuty does not know gives the default"),
        pytest.param(None, "info", id="a missing label gives the default"),
    ],
)
async def test_severity_is_mapped_from_a_label_with_a_default(
    pagerduty: FakePagerDuty,
    session: aiohttp.ClientSession,
    severity_label: str | None,
    expected: str,
) -> None:
    labels = {} if severity_label is None else {"severity": severity_label}
    await notifier(
        session,
        pagerduty.url,
        severity="{{ common_labels.severity }}",
        severity_default="info",
    ).notify(notification(alert(**labels)), Delivery("d1"))
    assert pagerduty.only()["payload"]["severity"] == expected


async def test_a_fixed_severity_is_sent_as_is(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    await notifier(session, pagerduty.url, severity="critical").notify(
        notification(), Delivery("d1")
    )
    assert pagerduty.only()["payload"]["severity"] == "critical"


async def test_the_summary_is_cut_to_1024_characters_with_an_ellipsis(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    await notifier(session, pagerduty.url, description="{{ 'é' * 5000 }}").notify(
        notification(), Delivery("d1")
    )
    summary = pagerduty.only()["payload"]["summary"]
    assert len(summary) == 1024
    assert summary == "é" * 1023 + "…"


async def test_user_templates_details_links_and_images(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    templates = Templates({"pd.j2": "{% macro runbook() %}https://runbooks.example/{% endmacro %}"})
    await notifier(
        session,
        pagerduty.url,
        templates,
        description="{{ common_labels.alertname }}: {{ firing | length }} down",
        source="{{ common_labels.instance }}",
        client="monitord-eu",
        client_url="",
        component="postgres",
        group="{{ receiver }}",
        **{"class": "disk"},
        details={"num_firing": "{{ firing | length * 10 }}", "team": "storage"},
        links=[
            {
                "href": '{% import "pd.j2" as p %}{{ p.runbook() }}{{ common_labels.alertname }}',
                "text": "runbook",
            },
            {"href": "{{ common_annotations.missing }}", "text": "dropped: empty href"},
        ],
        images=[{"src": "https://graphs.example/{{ common_labels.instance }}.png"}],
    ).notify(notification(), Delivery("d1"))
    event = pagerduty.only()
    payload = event["payload"]
    assert payload["summary"] == "DiskFull: 1 down"
    assert payload["source"] == "db1"
    assert (payload["component"], payload["group"], payload["class"]) == (
        "postgres",
        "oncall",
        "disk",
    )
    details = payload["custom_details"]
    assert details["num_firing"] == "10" and details["team"] == "storage"
    assert set(details) == {"firing", "resolved", "num_firing", "num_resolved", "team"}
    assert event["client"] == "monitord-eu" and "client_url" not in event
    assert event["links"] == [{"href": "https://runbooks.example/DiskFull", "text": "runbook"}]
    assert event["images"] == [{"src": "https://graphs.example/db1.png"}]


async def test_an_event_over_512_kb_loses_its_details_not_the_incident(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    await notifier(session, pagerduty.url, details={"dump": "{{ 'x' * 600000 }}"}).notify(
        notification(), Delivery("d1")
    )
    details = pagerduty.only()["payload"]["custom_details"]
    assert details == {
        "error": "Custom details have been removed because the original event exceeds "
        "the maximum size of 512kB"
    }


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        pytest.param(
            {"routing_key": ROUTING_KEY, "event_action": "trigger"},
            "payload is required",
            id="a trigger without payload is refused",
        ),
        pytest.param(
            {
                "routing_key": ROUTING_KEY,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "x", "severity": "high"},
            },
            "severity 'high'",
            id="a severity outside the enum is refused",
        ),
        pytest.param(
            {
                "routing_key": ROUTING_KEY,
                "event_action": "trigger",
                "payload": {"summary": "s" * 1025, "source": "x", "severity": "info"},
            },
            "longer than 1024",
            id="a summary over 1024 characters is refused",
        ),
        pytest.param(
            {"routing_key": "short", "event_action": "resolve", "dedup_key": "k"},
            "32-character",
            id="a routing key that is not 32 characters is refused",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "event_action": "resolve"},
            "dedup_key is required",
            id="a resolve without dedup_key is refused",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k" * 256},
            "1 to 255",
            id="a dedup_key over 255 characters is refused",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k", "x": 1},
            "unknown key",
            id="an unknown key is refused",
        ),
    ],
)
async def test_the_fake_pagerduty_refuses_what_pagerduty_refuses(
    pagerduty: FakePagerDuty,
    session: aiohttp.ClientSession,
    event: dict[str, Any],
    problem: str,
) -> None:
    async with session.post(pagerduty.url, json=event) as response:
        assert response.status == 400
    [problems] = pagerduty.refused
    assert any(problem in p for p in problems), problems


# --- failures ------------------------------------------------------------------------


async def test_429_carries_retry_after_for_the_outbox(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    pagerduty.answer = (429, {"Retry-After": "2"}, "")
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, pagerduty.url).notify(notification(), Delivery("d1"))
    assert (caught.value.retryable, caught.value.retry_after, caught.value.status) == (
        True,
        2.0,
        429,
    )


async def test_through_the_outbox_a_429_with_retry_after_2_delays_the_retry_2_s(
    session: aiohttp.ClientSession,
) -> None:
    """The issue's case end to end: PagerDuty throttles once with ``Retry-After: 2``; the
    outbox's next attempt comes no sooner, though its own backoff would retry at once."""
    fake = FakePagerDuty()
    arrivals: list[float] = []
    accepted = asyncio.Event()

    async def throttle_once(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        response = await fake.enqueue(request)
        accepted.set()
        return response

    app = web.Application()
    app.router.add_post("/v2/enqueue", throttle_once)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v2/enqueue"
    pd = notifier(session, url)
    outbox = Outbox(None)
    deliverer = Deliverer(
        outbox,
        lambda receiver, kind, index: pd if (receiver, kind) == ("oncall", "pagerduty") else None,
        policy=RetryPolicy(initial=0.01, cap=0.05, max_age=60),
    )
    try:
        outbox.enqueue("oncall", "pagerduty", 0, notification(), None)
        deliverer.start()
        deliverer.wake()
        await asyncio.wait_for(accepted.wait(), 15)
    finally:
        await deliverer.stop(1.0)
        outbox.close()
        await runner.cleanup()
    assert len(fake.only()["dedup_key"]) == 64
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 2.0


async def test_400_is_not_retried_and_the_routing_key_is_blotted_out(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    pagerduty.answer = (400, {}, f'{{"status":"invalid event","errors":["key {ROUTING_KEY}"]}}')
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, pagerduty.url).notify(notification(), Delivery("d1"))
    assert caught.value.retryable is False and caught.value.status == 400
    assert ROUTING_KEY not in str(caught.value)
    assert "key <redacted>" in str(caught.value)


async def test_a_refused_connection_is_retried(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/v2/enqueue"
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, url).notify(notification(), Delivery("d1"))
    assert caught.value.retryable is True
    assert ROUTING_KEY not in str(caught.value)


async def test_a_template_error_is_not_retried(
    pagerduty: FakePagerDuty, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(DeliveryError, match=r"template details\.x") as caught:
        await notifier(session, pagerduty.url, details={"x": "{{ 1 / 0 }}"}).notify(
            notification(), Delivery("d1")
        )
    assert caught.value.retryable is False
    assert pagerduty.events == []


# --- configuration -------------------------------------------------------------------


def test_the_routing_key_is_redacted_in_the_config_dump(tmp_path: Path) -> None:
    key_file = tmp_path / "pd-key"
    key_file.write_text(ROUTING_KEY + "\n")
    configs = [
        PagerDutyConfig(routing_key=ROUTING_KEY),
        PagerDutyConfig(routing_key_file=str(key_file)),
    ]
    assert configs[1].key().get_secret_value() == ROUTING_KEY  # type: ignore[union-attr]
    for config in configs:
        for text in (config.model_dump_json(), repr(config), str(config.model_dump())):
            assert ROUTING_KEY not in text


def test_defaults_are_alertmanagers() -> None:
    config = PagerDutyConfig(routing_key=ROUTING_KEY)
    assert (config.type, config.send_resolved, config.url) == ("pagerduty", True, DEFAULT_URL)
    assert (config.severity, config.severity_default) == ("error", "error")
    assert set(config.all_details()) == {"firing", "resolved", "num_firing", "num_resolved"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "set routing_key or routing_key_file", id="a routing key is required"),
        pytest.param(
            {"routing_key": ROUTING_KEY, "routing_key_file": "k"},
            "not both",
            id="routing_key and routing_key_file are exclusive",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "severity_default": "high"},
            "severity_default",
            id="severity_default must be a PagerDuty severity",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "url": "events.pagerduty.com"},
            "url must be an http or https URL",
            id="the url must be absolute",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "details": {"x": "{{ oops"}},
            "details.x: bad template",
            id="a detail template that does not compile is a config error",
        ),
        pytest.param(
            {"routing_key": ROUTING_KEY, "links": [{"text": "no href"}]},
            "href",
            id="a link needs an href",
        ),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    if "routing_key_file" in options:
        (tmp_path / "k").write_text(ROUTING_KEY)
        options = {**options, "routing_key_file": str(tmp_path / "k")}
    with pytest.raises(ValidationError, match=message) as caught:
        PagerDutyConfig(**options)
    assert all(ROUTING_KEY not in str(error["msg"]) for error in caught.value.errors())
