"""The dispatcher: aggregation groups, the flush cycle with an injected clock, Alertmanager's
merge and sort rules, needs_update, and the asyncio driver with real time."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import yaml

from monitor.errors import LifecycleError
from monitor.model import Labels
from notifiers.base import LogEntry, fingerprint
from notifiers.dispatch import (
    Dispatcher,
    DispatcherTask,
    Flush,
    IncomingAlert,
    alert_sort_key,
    needs_update,
)
from notifiers.route import RootRouteConfig, Route


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def route(text: str) -> Route:
    return Route(RootRouteConfig.model_validate(yaml.safe_load(text)))


def alert(
    name: str,
    *,
    starts_at: float = 0.0,
    ends_at: float | None = None,
    updated_at: float = 0.0,
    annotations: dict[str, str] | None = None,
    **labels: str,
) -> IncomingAlert:
    return IncomingAlert(
        Labels({"alertname": name, **labels}),
        Labels(annotations or {}),
        starts_at,
        ends_at,
        updated_at=updated_at,
    )


Put = tuple[float, list[dict[str, Any]]]


def simulate(
    tree: str, puts: list[Put], until: float, outcomes: Iterable[bool] = ()
) -> list[tuple[float, str, tuple[tuple[str, str], ...]]]:
    """Run a dispatcher on a fake clock: each put at its time (``starts_at`` defaults to
    it, ``updated_at`` is it), every flush at its due time, reported done with the next
    outcome (success once ``outcomes`` runs out). Returns (time, receiver, alerts)."""
    clock = FakeClock()
    dispatcher = Dispatcher(route(tree), clock)
    results: Iterator[bool] = itertools.chain(outcomes, itertools.repeat(True))
    pending = sorted(puts, key=lambda p: p[0])
    seen = []
    while True:
        next_put = pending[0][0] if pending else math.inf
        next_due = dispatcher.next_due()
        t = min(next_put, math.inf if next_due is None else next_due)
        if t > until:
            return seen
        clock.now = max(clock.now, t)
        if next_put <= t:
            at, specs = pending.pop(0)
            dispatcher.put(
                alert(
                    spec["name"],
                    starts_at=spec.get("starts_at", at),
                    ends_at=spec.get("ends_at"),
                    updated_at=at,
                    **spec.get("labels", {}),
                )
                for spec in specs
            )
            continue
        for flush in dispatcher.due():
            names = tuple((a.labels["alertname"], a.status) for a in flush.alerts)
            seen.append((clock.now, flush.receiver, names))
            flush.done(next(results))


BASIC = "{receiver: r, group_wait: 30s, group_interval: 5m}"


@pytest.mark.parametrize(
    ("tree", "puts", "until", "outcomes", "expected"),
    [
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}])],
            700,
            [],
            [
                (30, "r", (("A", "firing"),)),
                (330, "r", (("A", "firing"),)),
                (630, "r", (("A", "firing"),)),
            ],
            id="first flush after group_wait, then every group_interval",
        ),
        pytest.param(
            "{receiver: r, group_wait: 0s, group_interval: 1m}",
            [(5, [{"name": "A"}])],
            70,
            [],
            [(5, "r", (("A", "firing"),)), (65, "r", (("A", "firing"),))],
            id="group_wait 0 flushes at once",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (10, [{"name": "B"}])],
            100,
            [],
            [(30, "r", (("A", "firing"), ("B", "firing")))],
            id="an alert arriving during group_wait joins the first flush",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (40, [{"name": "B"}])],
            400,
            [],
            [
                (30, "r", (("A", "firing"),)),
                (330, "r", (("A", "firing"), ("B", "firing"))),
            ],
            id="a late-joining alert waits for the next group_interval",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A", "starts_at": -100}])],
            10,
            [],
            [(0, "r", (("A", "firing"),))],
            id="an alert that started more than group_wait ago flushes the new group at once",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (10, [{"name": "B", "starts_at": -60}])],
            20,
            [],
            [(10, "r", (("A", "firing"), ("B", "firing")))],
            id="an old alert joining before the first flush brings it forward",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A", "starts_at": -29}])],
            40,
            [],
            [(30, "r", (("A", "firing"),))],
            id="an alert younger than group_wait does not",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (40, [{"name": "B", "starts_at": -1000}])],
            400,
            [],
            [
                (30, "r", (("A", "firing"),)),
                (330, "r", (("A", "firing"), ("B", "firing"))),
            ],
            id="after the first flush an old alert waits for group_interval",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (50, [{"name": "A", "starts_at": 0, "ends_at": 50}])],
            1000,
            [],
            [(30, "r", (("A", "firing"),)), (330, "r", (("A", "resolved"),))],
            id="a resolved alert is sent once and removed after a successful flush",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (50, [{"name": "A", "starts_at": 0, "ends_at": 50}])],
            1000,
            [True, False],
            [
                (30, "r", (("A", "firing"),)),
                (330, "r", (("A", "resolved"),)),
                (630, "r", (("A", "resolved"),)),
            ],
            id="a resolved alert is kept after a failed flush and sent again",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A", "ends_at": 100}, {"name": "B"}])],
            700,
            [],
            [
                (30, "r", (("A", "firing"), ("B", "firing"))),
                (330, "r", (("A", "resolved"), ("B", "firing"))),
                (630, "r", (("B", "firing"),)),
            ],
            id="an alert whose ends_at passes resolves at the next flush, the rest stay",
        ),
        pytest.param(
            BASIC,
            [(0, [{"name": "A"}]), (100, [{"name": "A", "starts_at": 0, "ends_at": 100}])],
            1000,
            [True, False, False, False],
            [
                (30, "r", (("A", "firing"),)),
                (330, "r", (("A", "resolved"),)),
                (630, "r", (("A", "resolved"),)),
                (930, "r", (("A", "resolved"),)),
            ],
            id="failed flushes keep their cadence",
        ),
        pytest.param(
            "{receiver: r, group_by: [team], group_wait: 30s, group_interval: 5m}",
            [
                (0, [{"name": "A", "labels": {"team": "x"}}]),
                (10, [{"name": "B", "labels": {"team": "y"}}]),
            ],
            50,
            [],
            [(30, "r", (("A", "firing"),)), (40, "r", (("B", "firing"),))],
            id="group_by splits alerts into groups with their own timers",
        ),
        pytest.param(
            """
            receiver: default
            group_wait: 30s
            routes:
            - {matchers: ['team="x"'], receiver: x, continue: true, group_wait: 10s}
            - {matchers: ['team="x"'], receiver: y}
            """,
            [(0, [{"name": "A", "labels": {"team": "x"}}])],
            50,
            [],
            [(10, "x", (("A", "firing"),)), (30, "y", (("A", "firing"),))],
            id="with continue one alert joins a group on each matching route",
        ),
    ],
)
def test_flush_timing(
    tree: str,
    puts: list[Put],
    until: float,
    outcomes: list[bool],
    expected: list[tuple[float, str, tuple[tuple[str, str], ...]]],
) -> None:
    assert simulate(tree, puts, until, outcomes) == expected


def test_a_group_being_flushed_is_not_handed_out_again_until_done() -> None:
    clock = FakeClock()
    dispatcher = Dispatcher(route(BASIC), clock)
    dispatcher.put([alert("A")])
    clock.now = 30
    [flush] = dispatcher.due()
    assert dispatcher.next_due() is None
    clock.now = 400
    assert dispatcher.due() == []
    flush.done(True)
    assert dispatcher.next_due() == 330
    [again] = dispatcher.due()
    assert again.now == 400
    again.done(True)
    assert dispatcher.next_due() == 700
    with pytest.raises(LifecycleError):
        again.done(True)


def test_a_resolved_alert_updated_during_the_flush_is_kept() -> None:
    """DeleteIfNotModified: the alert fired again while its resolution was being sent."""
    clock = FakeClock()
    dispatcher = Dispatcher(route(BASIC), clock)
    dispatcher.put([alert("A", ends_at=20, updated_at=0)])
    clock.now = 30
    [flush] = dispatcher.due()
    assert [a.status for a in flush.alerts] == ["resolved"]
    dispatcher.put([alert("A", starts_at=31, ends_at=None, updated_at=31)])
    flush.done(True)
    [view] = dispatcher.groups()
    assert [a.ends_at for a in view.alerts] == [None]
    clock.now = 330
    [later] = dispatcher.due()
    assert [a.status for a in later.alerts] == ["firing"]


def test_flush_carries_route_group_and_alerts() -> None:
    clock = FakeClock(1000)
    tree = route(
        """
        receiver: default
        group_by: [alertname]
        routes:
        - matchers: ['severity="page"']
          receiver: pager
          repeat_interval: 1h
          mute_time_intervals: [nights]
          active_time_intervals: [weekdays]
        """
    )
    dispatcher = Dispatcher(tree, clock)
    dispatcher.put(
        [
            alert("Down", starts_at=900, ends_at=2000, severity="page", instance="b:1"),
            alert("Down", starts_at=950, ends_at=990, severity="page", instance="a:1"),
        ]
    )
    clock.now = 1030
    [flush] = dispatcher.due()
    assert flush.receiver == "pager"
    assert flush.route.repeat_interval == 3600
    assert flush.route.mute_time_intervals == ("nights",)
    assert flush.route.active_time_intervals == ("weekdays",)
    assert flush.group_labels == {"alertname": "Down"}
    assert flush.group_key == '{}/{severity="page"}:{alertname="Down"}'
    assert [(a.labels["instance"], a.status, a.ends_at) for a in flush.alerts] == [
        ("a:1", "resolved", 990),
        ("b:1", "firing", None),
    ]
    assert flush.alerts[0].fingerprint == fingerprint(flush.alerts[0].labels)
    assert flush.firing == {flush.alerts[1].fingerprint}
    assert flush.resolved == {flush.alerts[0].fingerprint}


@pytest.mark.parametrize(
    ("label_sets", "expected"),
    [
        pytest.param(
            [{"job": "b"}, {"job": "a"}, {"instance": "x"}],
            [{"job": "a"}, {"job": "b"}, {"instance": "x"}],
            id="by job, alerts with a job first",
        ),
        pytest.param(
            [{"job": "a", "instance": "2"}, {"job": "a", "instance": "1"}, {"job": "a"}],
            [{"job": "a", "instance": "1"}, {"job": "a", "instance": "2"}, {"job": "a"}],
            id="then by instance, alerts with an instance first",
        ),
        pytest.param(
            [{"a": "2", "b": "1"}, {"z": "1"}, {"a": "1", "b": "9"}],
            [{"z": "1"}, {"a": "1", "b": "9"}, {"a": "2", "b": "1"}],
            id="then fewer labels first, then by label values in name order",
        ),
    ],
)
def test_alert_order(label_sets: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    ordered = sorted((Labels(s) for s in label_sets), key=alert_sort_key)
    assert [dict(labels) for labels in ordered] == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            {"starts_at": 0, "ends_at": 200, "updated_at": 10, "annotations": {"v": "old"}},
            {"starts_at": 50, "ends_at": 300, "updated_at": 60, "annotations": {"v": "new"}},
            (0, 300, {"v": "new"}),
            id="the later update's annotations and end with the earliest start",
        ),
        pytest.param(
            {"starts_at": 0, "ends_at": 400, "updated_at": 10},
            {"starts_at": 0, "ends_at": 300, "updated_at": 60},
            (0, 400, {}),
            id="a later explicit end of an active alert is kept",
        ),
        pytest.param(
            {"starts_at": 0, "ends_at": 200, "updated_at": 10},
            {"starts_at": 50, "ends_at": 100, "updated_at": 60},
            (0, 100, {}),
            id="a resolution of an alert still active is taken",
        ),
        pytest.param(
            {"starts_at": 0, "ends_at": 200, "updated_at": 10},
            {"starts_at": 300, "ends_at": 400, "updated_at": 60},
            (300, 400, {}),
            id="a new activity that does not overlap replaces the old one",
        ),
        pytest.param(
            {"starts_at": 0, "ends_at": None, "updated_at": 10},
            {"starts_at": 50, "ends_at": 100, "updated_at": 60},
            (50, 100, {}),
            id="an alert without an end is replaced, as Go's zero time never overlaps",
        ),
    ],
)
def test_merge_of_an_alert_already_in_the_group(
    old: dict[str, Any], new: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    clock = FakeClock(150)
    dispatcher = Dispatcher(route("{receiver: r}"), clock)
    dispatcher.put([alert("A", **old)])
    dispatcher.put([alert("A", **new)])
    [view] = dispatcher.groups()
    [merged] = view.alerts
    assert (merged.starts_at, merged.ends_at, dict(merged.annotations)) == expected


def test_groups_view_is_sorted_by_labels_then_receiver() -> None:
    tree = route(
        """
        receiver: a
        group_by: [team]
        routes:
        - {matchers: ['x="1"'], receiver: c, continue: true}
        - {matchers: ['x="1"'], receiver: b}
        """
    )
    dispatcher = Dispatcher(tree, FakeClock())
    dispatcher.put([alert("A", team="t2"), alert("B", team="t1", x="1"), alert("C")])
    views = [(dict(v.group_labels), v.receiver) for v in dispatcher.groups()]
    assert views == [({}, "a"), ({"team": "t1"}, "b"), ({"team": "t1"}, "c"), ({"team": "t2"}, "a")]
    assert len(dispatcher) == 4


def entry(firing: set[str], resolved: set[str], timestamp: float = 0.0) -> LogEntry:
    return LogEntry(frozenset(firing), frozenset(resolved), timestamp)


@pytest.mark.parametrize(
    ("log", "firing", "resolved", "send_resolved", "now", "expected"),
    [
        pytest.param(None, {"a"}, set(), True, 10, True, id="first notification of a firing group"),
        pytest.param(
            None, set(), {"a"}, True, 10, False, id="never notified and only resolved alerts"
        ),
        pytest.param(
            entry({"a"}, set()), {"a", "b"}, set(), False, 10, True, id="a new firing alert"
        ),
        pytest.param(
            entry({"a", "b"}, set()),
            {"a"},
            {"b"},
            False,
            10,
            False,
            id="one of several resolved without send_resolved waits for repeat_interval",
        ),
        pytest.param(
            entry({"a", "b"}, set()),
            {"a"},
            {"b"},
            True,
            10,
            True,
            id="a newly resolved alert with send_resolved",
        ),
        pytest.param(
            entry({"a"}, set()),
            set(),
            {"a"},
            False,
            10,
            True,
            id="all resolved is sent even without send_resolved",
        ),
        pytest.param(
            entry(set(), {"a"}),
            set(),
            {"a", "b"},
            True,
            10,
            False,
            id="all resolved when the receiver never heard of them firing",
        ),
        pytest.param(
            entry({"a"}, {"b"}),
            {"a"},
            {"b"},
            True,
            3600,
            False,
            id="nothing changed within repeat_interval",
        ),
        pytest.param(
            entry({"a"}, {"b"}),
            {"a"},
            {"b"},
            True,
            3600.5,
            True,
            id="nothing changed and repeat_interval passed",
        ),
        pytest.param(
            entry({"a", "b"}, set()),
            {"a"},
            set(),
            True,
            10,
            False,
            id="fewer firing alerts and none resolved is no change",
        ),
        pytest.param(
            entry(set(), {"a"}),
            {"a"},
            set(),
            False,
            10,
            True,
            id="an alert firing again after its resolution was sent",
        ),
    ],
)
def test_needs_update(
    log: LogEntry | None,
    firing: set[str],
    resolved: set[str],
    send_resolved: bool,
    now: float,
    expected: bool,
) -> None:
    assert needs_update(log, firing, resolved, send_resolved, 3600.0, now) is expected


def test_incoming_alert_fingerprint_and_resolution() -> None:
    a = alert("A", ends_at=100, job="x")
    assert a.fingerprint == alert("A", job="x").fingerprint
    assert a.fingerprint != alert("B", job="x").fingerprint
    assert not a.resolved(99.9)
    assert a.resolved(100)
    assert not alert("A").resolved(1e12)


async def test_dispatcher_task_flushes_within_milliseconds_with_group_wait_zero() -> None:
    tree = route("{receiver: r, group_wait: 0s, group_interval: 1h}")
    task = DispatcherTask(Dispatcher(tree))
    arrived: asyncio.Queue[tuple[float, Flush]] = asyncio.Queue()

    async def on_flush(flush: Flush) -> bool:
        arrived.put_nowait((time.monotonic(), flush))
        return True

    task.start(on_flush)
    try:
        await asyncio.sleep(0.05)  # the task is idle, waiting without a deadline
        sent = time.monotonic()
        task.put([alert("A", starts_at=time.time(), updated_at=time.time())])
        at, flush = await asyncio.wait_for(arrived.get(), 5)
        assert at - sent < 0.25
        assert [a.labels["alertname"] for a in flush.alerts] == ["A"]
        task.put([alert("B", starts_at=time.time(), updated_at=time.time())])
        await asyncio.sleep(0.1)
        assert arrived.empty(), "B joined a flushed group: it waits for group_interval"
    finally:
        await task.stop()
    with pytest.raises(LifecycleError):
        task.put([alert("C")])
    with pytest.raises(LifecycleError):
        task.start(on_flush)


async def test_dispatcher_task_never_overlaps_one_groups_flushes() -> None:
    tree = route("{receiver: r, group_by: [alertname], group_wait: 0s, group_interval: 20ms}")
    task = DispatcherTask(Dispatcher(tree))
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    calls: list[str] = []
    enough = asyncio.Event()

    async def on_flush(flush: Flush) -> bool:
        name = flush.group_labels["alertname"]
        calls.append(name)
        if calls.count("A") >= 4 and calls.count("B") >= 4:
            enough.set()
        running[name] = running.get(name, 0) + 1
        most[name] = max(most.get(name, 0), running[name])
        try:
            if len(calls) == 1:
                raise RuntimeError("receiver exploded")
            await asyncio.sleep(0.015)
            return True
        finally:
            running[name] -= 1

    task.start(on_flush)
    try:
        task.put([alert("A", starts_at=time.time()), alert("B", starts_at=time.time())])
        await asyncio.wait_for(enough.wait(), 10)
    finally:
        await task.stop()
    assert calls.count("A") >= 4 and calls.count("B") >= 4
    assert set(most.values()) == {1}
