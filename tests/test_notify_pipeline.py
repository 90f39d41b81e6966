"""NotificationPipeline in-process: rules' alerts in, real receivers out to local recorders.

Each test builds an ``alerting:`` section through the registry's models, starts the pipeline
over a SQLite file in tmp_path, hands it :class:`monitor.model.Alert` objects as the rules
manager would, and reads what a local aiohttp server on 127.0.0.1 received. What must *not*
arrive is checked against a control that must: an alert in the same flush, or a later one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitor.daemon import notifier_registry
from monitor.model import Alert, AlertState, Labels
from notifiers.config import build_alerting_model
from notifiers.pipeline import NotificationPipeline, PipelineSettings
from tests.support import free_port

HOUR_MS = 3600 * 1000


@dataclass
class Recorder:
    """A local HTTP server that records every POST body with its path and arrival time."""

    port: int
    received: list[tuple[float, str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str = "/hook") -> list[Any]:
        return [body for _, p, body in self.received if p == path]

    def alertnames(self, path: str = "/hook") -> list[list[str]]:
        """Per webhook message, the alertnames (and instances) of its alerts."""
        return [
            sorted(
                a["labels"]["alertname"] + a["labels"].get("instance", "") for a in body["alerts"]
            )
            for body in self.bodies(path)
        ]


@pytest.fixture
async def recorder() -> AsyncIterator[Callable[[], Awaitable[Recorder]]]:
    runners: list[web.AppRunner] = []

    async def make() -> Recorder:
        rec = Recorder(free_port())

        async def record(request: web.Request) -> web.Response:
            rec.received.append((time.time(), request.path, await request.json()))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", rec.port).start()
        return rec

    yield make
    for runner in runners:
        await runner.cleanup()


def settings(alerting: dict[str, Any]) -> PipelineSettings:
    model = build_alerting_model(notifier_registry().config_models())
    return PipelineSettings(alerting=model.model_validate(alerting))


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Any]]]:
    started: list[NotificationPipeline] = []

    async def make(alerting: dict[str, Any]) -> NotificationPipeline:
        p = NotificationPipeline(notifier_registry(), tmp_path / "monitord.db")
        await p.start(settings(alerting))
        started.append(p)
        return p

    yield make
    for p in started:
        await p.stop(grace=1.0)


def firing(name: str, fired_at: float | None = None, **labels: str) -> Alert:
    at = round((fired_at if fired_at is not None else time.time()) * 1000)
    return Alert(
        labels=Labels({"alertname": name, **labels}),
        annotations=Labels({"summary": f"{name} fires"}),
        state=AlertState.FIRING,
        active_at=at - 1000,
        value=1.0,
        fired_at=at,
        valid_until=at + HOUR_MS,
    )


def resolved(alert: Alert) -> Alert:
    now = round(time.time() * 1000)
    return Alert(
        labels=alert.labels,
        annotations=alert.annotations,
        state=AlertState.INACTIVE,
        active_at=alert.active_at,
        value=0.0,
        fired_at=alert.fired_at,
        resolved_at=now,
        valid_until=now + HOUR_MS,
    )


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


def webhook(rec: Recorder, **extra: Any) -> dict[str, Any]:
    return {"url": f"{rec.url}/hook", **extra}


def route(receiver: str = "hook", **extra: Any) -> dict[str, Any]:
    return {
        "receiver": receiver,
        "group_by": ["alertname"],
        "group_wait": "0s",
        "group_interval": "200ms",
        "repeat_interval": "1h",
        **extra,
    }


SETTLE = 1.0  # after the control arrived: several group_intervals for anything else to come


async def test_a_silenced_alert_is_not_notified_and_is_listed_as_suppressed(
    recorder: Any, pipeline: Any
) -> None:
    rec = await recorder()
    p = await pipeline(
        {"route": route(), "receivers": [{"name": "hook", "webhook_configs": [webhook(rec)]}]}
    )
    silence_id = p.silences.add(
        matchers='instance="a"', ends_at=time.time() + 3600, created_by="t", comment="c"
    )
    p.send([firing("Down", instance="a"), firing("Down", instance="b")])
    await until(lambda: rec.bodies())
    await asyncio.sleep(SETTLE)
    assert rec.alertnames() == [["Downb"]]
    views = {v.alert.labels["instance"]: v for v in p.alerts()}
    assert views["a"].state == "suppressed" and views["a"].silenced_by == (silence_id,)
    assert views["b"].state == "active" and views["b"].silenced_by == ()
    assert views["a"].receivers == ("hook",)


async def test_an_inhibited_alert_is_not_notified_while_its_source_fires(
    recorder: Any, pipeline: Any
) -> None:
    rec = await recorder()
    p = await pipeline(
        {
            "route": route(group_by=["cluster"]),
            "receivers": [{"name": "hook", "webhook_configs": [webhook(rec)]}],
            "inhibit_rules": [
                {
                    "source_matchers": ['severity="critical"'],
                    "target_matchers": ['severity="warning"'],
                    "equal": ["cluster"],
                }
            ],
        }
    )
    p.send(
        [
            firing("ClusterDown", severity="critical", cluster="east"),
            firing("NodeSlow", severity="warning", cluster="east"),
            firing("NodeSlow", severity="warning", cluster="west"),  # other cluster: not inhibited
        ]
    )
    await until(lambda: len(rec.bodies()) >= 2)
    await asyncio.sleep(SETTLE)
    by_cluster = {b["groupLabels"]["cluster"]: b for b in rec.bodies()}
    assert len(rec.bodies()) == 2
    assert [a["labels"]["alertname"] for a in by_cluster["east"]["alerts"]] == ["ClusterDown"]
    assert [a["labels"]["alertname"] for a in by_cluster["west"]["alerts"]] == ["NodeSlow"]
    states = {(v.alert.labels["alertname"], v.alert.labels["cluster"]): v for v in p.alerts()}
    assert states[("NodeSlow", "east")].inhibited_by == (
        states[("ClusterDown", "east")].alert.fingerprint,
    )


@pytest.mark.parametrize(
    "child",
    [
        pytest.param({"mute_time_intervals": ["always"]}, id="a mute interval holding now"),
        pytest.param({"active_time_intervals": ["never"]}, id="an active interval not holding"),
    ],
)
async def test_time_intervals_keep_a_route_quiet(
    recorder: Any, pipeline: Any, child: dict[str, Any]
) -> None:
    rec = await recorder()
    p = await pipeline(
        {
            "route": route(routes=[{"matchers": ['quiet="yes"'], **child}]),
            "receivers": [{"name": "hook", "webhook_configs": [webhook(rec)]}],
            "time_intervals": [
                {"name": "always", "time_intervals": [{}]},
                {"name": "never", "time_intervals": [{"years": ["1999"]}]},
            ],
        }
    )
    p.send([firing("Quiet", quiet="yes"), firing("Loud")])
    await until(lambda: rec.bodies())
    await asyncio.sleep(SETTLE)
    assert rec.alertnames() == [["Loud"]]


async def test_without_send_resolved_the_resolution_is_logged_not_sent_and_a_new_firing_is(
    recorder: Any, pipeline: Any
) -> None:
    rec = await recorder()
    p = await pipeline(
        {
            "route": route(),
            "receivers": [{"name": "hook", "webhook_configs": [webhook(rec, send_resolved=False)]}],
        }
    )
    first = firing("Down")
    p.send([first])
    await until(lambda: rec.bodies())
    group_key = rec.bodies()[0]["groupKey"]
    entry = p.outbox.log_entry(group_key, "hook", "webhook[0]")
    assert entry is not None and len(entry.firing) == 1

    p.send([resolved(first)])

    def logged_resolved() -> bool:
        entry = p.outbox.log_entry(group_key, "hook", "webhook[0]")
        return entry is not None and not entry.firing and len(entry.resolved) == 1

    await until(logged_resolved)
    await asyncio.sleep(SETTLE)
    assert len(rec.bodies()) == 1

    p.send([firing("Down", fired_at=time.time())])  # fires again, well within repeat_interval
    await until(lambda: len(rec.bodies()) == 2)
    assert [b["status"] for b in rec.bodies()] == ["firing", "firing"]


async def test_an_unchanged_group_is_sent_again_only_after_repeat_interval(
    recorder: Any, pipeline: Any
) -> None:
    rec = await recorder()
    p = await pipeline(
        {
            "route": route(repeat_interval="2s"),
            "receivers": [{"name": "hook", "webhook_configs": [webhook(rec)]}],
        }
    )
    p.send([firing("Down")])
    await until(lambda: rec.bodies())
    await asyncio.sleep(1.2)  # six group_intervals, all before repeat_interval
    assert len(rec.bodies()) == 1
    await until(lambda: len(rec.bodies()) == 2, within=5)
    (first, _, _), (second, _, _) = rec.received
    assert second - first >= 1.8, second - first
    assert rec.bodies()[0]["alerts"] == rec.bodies()[1]["alerts"]


async def test_a_reload_reforms_groups_without_sending_again_what_was_notified(
    recorder: Any, pipeline: Any
) -> None:
    old, new = await recorder(), await recorder()
    p = await pipeline(
        {"route": route(), "receivers": [{"name": "hook", "webhook_configs": [webhook(old)]}]}
    )
    p.send([firing("Down")])
    await until(lambda: old.bodies())

    await p.apply(
        settings(
            {
                "route": route(group_interval="300ms"),
                "receivers": [{"name": "hook", "webhook_configs": [webhook(new)]}],
            }
        )
    )
    p.send([firing("Other")])  # the control: a new group goes to the new URL
    await until(lambda: new.bodies())
    await asyncio.sleep(SETTLE)
    assert old.alertnames() == [["Down"]]
    assert new.alertnames() == [["Other"]]


async def test_continue_sends_one_alert_to_two_receivers(recorder: Any, pipeline: Any) -> None:
    first, second = await recorder(), await recorder()
    p = await pipeline(
        {
            "route": route(
                routes=[
                    {"receiver": "first", "matchers": ['alertname="Down"'], "continue": True},
                    {"receiver": "second", "matchers": ['alertname="Down"']},
                ]
            ),
            "receivers": [
                {"name": "hook", "webhook_configs": [webhook(first)]},
                {"name": "first", "webhook_configs": [webhook(first)]},
                {"name": "second", "webhook_configs": [webhook(second)]},
            ],
        }
    )
    p.send([firing("Down")])
    await until(lambda: first.bodies() and second.bodies())
    await asyncio.sleep(SETTLE)
    assert [b["receiver"] for b in first.bodies()] == ["first"]
    assert [b["receiver"] for b in second.bodies()] == ["second"]
    (view,) = p.alerts()
    assert view.receivers == ("first", "second")


async def test_the_alertmanager_kind_gets_every_alert_of_every_hand_off(
    recorder: Any, pipeline: Any
) -> None:
    am = await recorder()
    p = await pipeline(
        {
            "route": route(receiver="am"),
            "receivers": [{"name": "am", "alertmanager_configs": [{"urls": [am.url]}]}],
        }
    )
    down = firing("Down", instance="a")
    p.send([down, firing("Slow", instance="b")])
    await until(lambda: am.bodies("/api/v2/alerts"))
    p.send([down])  # the rules re-send a firing alert: it goes out again, ungrouped
    await until(lambda: len(am.bodies("/api/v2/alerts")) == 2)
    p.send([resolved(down)])
    await until(lambda: len(am.bodies("/api/v2/alerts")) == 3)
    await asyncio.sleep(SETTLE)
    first, again, end = am.bodies("/api/v2/alerts")
    assert len(am.received) == 3
    assert sorted(a["labels"]["alertname"] for a in first) == ["Down", "Slow"]
    assert [a["labels"]["alertname"] for a in again] == ["Down"]
    assert [a["labels"]["alertname"] for a in end] == ["Down"]
    assert {a["startsAt"] for a in again} == {a["startsAt"] for a in end}
    assert end[0]["endsAt"] != again[0]["endsAt"]
