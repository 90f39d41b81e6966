"""The outbox, notification log and deliverer against real local HTTP receivers."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.errors import LifecycleError
from monitor.model import Labels
from notifiers.base import (
    Delivery,
    DeliveryError,
    LogEntry,
    Notification,
    NotifiedAlert,
    Notifier,
    NotifierConfig,
    NotifierContext,
    check_response,
    redact_url,
)
from notifiers.outbox import (
    LATENCY_BUCKETS,
    Deliverer,
    Outbox,
    OutboxCollector,
    RetryPolicy,
)
from rules.state import AlertStateStore
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "monitord.notifiers.outbox"
FAST = RetryPolicy(initial=0.05, cap=0.2, max_age=60.0)


# --- the test integration and the receiver it talks to ---------------------------------


class HookConfig(NotifierConfig):
    type: Literal["testhook"] = "testhook"
    url: str


class HookNotifier(Notifier[HookConfig]):
    """POSTs the notification's JSON, as a minimal webhook integration does."""

    config_model = HookConfig

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        what = f"testhook {redact_url(self.config.url)}"
        headers = {"webhook-id": delivery.id, "x-attempt": str(delivery.attempt)}
        try:
            async with self.context.session.post(
                self.config.url,
                json=notification.to_json(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await check_response(response, what)
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{what}: {type(exc).__name__}") from exc


@dataclass
class Request:
    at: float
    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 0


Answer = Callable[[Request], Awaitable[web.Response]]


async def accept(request: Request) -> web.Response:
    return web.Response(status=200)


@dataclass
class Receiver:
    """A local HTTP receiver that records every request and answers with ``answer``."""

    port: int
    answer: Answer = accept
    requests: list[Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def handle(self, request: web.Request) -> web.Response:
        record = Request(time.time(), await request.json(), dict(request.headers))
        self.requests.append(record)
        response = await self.answer(record)
        record.status = response.status
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


MakeReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def make_receiver() -> AsyncIterator[MakeReceiver]:
    made: list[Receiver] = []

    async def make(
        answer: Answer = accept, *, port: int | None = None, up: bool = True
    ) -> Receiver:
        receiver = Receiver(port or free_port(), answer)
        made.append(receiver)
        if up:
            await receiver.start()
        return receiver

    yield make
    for receiver in made:
        await receiver.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Integrations = dict[tuple[str, str, int], Notifier[Any]]


def hook(session: aiohttp.ClientSession, url: str) -> HookNotifier:
    return HookNotifier(HookConfig(url=url), NotifierContext(session=session, templates=None))


MakeDeliverer = Callable[..., Deliverer]


@pytest.fixture
async def make_deliverer() -> AsyncIterator[MakeDeliverer]:
    made: list[Deliverer] = []

    def make(outbox: Outbox, integrations: Integrations, **options: Any) -> Deliverer:
        options.setdefault("policy", FAST)
        deliverer = Deliverer(outbox, lambda r, k, i: integrations.get((r, k, i)), **options)
        deliverer.start()
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.stop(grace=0.5)


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    with Outbox(None) as box:
        yield box


def notification(group: str = '{}:{alertname="Down"}', status: str = "firing") -> Notification:
    labels = Labels({"alertname": "Down", "instance": "db1"})
    alert = NotifiedAlert(
        status="firing" if status == "firing" else "resolved",
        labels=labels,
        annotations=Labels({"summary": "db1 is down"}),
        starts_at=1_700_000_000.0,
        ends_at=None if status == "firing" else 1_700_000_600.0,
        fingerprint="abc",
    )
    return Notification("ops", group, Labels({"alertname": "Down"}), (alert,), "http://m:9090")


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- retries, rejection, expiry ----------------------------------------------------------


async def test_a_receiver_failing_for_a_while_gets_the_notification_once_after_it_recovers(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
) -> None:
    recovery = time.time() + 1.5

    async def flaky(request: Request) -> web.Response:
        return web.Response(status=500 if time.time() < recovery else 200)

    receiver = await make_receiver(flaky)
    deliverer = make_deliverer(outbox, {("ops", "testhook", 0): hook(session, receiver.url())})
    entry_id = outbox.enqueue("ops", "testhook", 0, notification(), None)
    deliverer.wake()

    await until(lambda: receiver.accepted, within=15)
    await asyncio.sleep(0.5)  # time for a duplicate to show up, were there one
    assert len(receiver.accepted) == 1
    assert receiver.accepted[0].at >= recovery
    assert receiver.accepted[0].body == notification().to_json()
    failures = len(receiver.requests) - 1
    assert failures >= 2
    assert {r.headers["webhook-id"] for r in receiver.requests} == {entry_id}
    assert [r.headers["x-attempt"] for r in receiver.requests] == [
        str(n) for n in range(1, failures + 2)
    ]
    assert deliverer.stats.count("ops", "testhook", "failed") == failures
    assert deliverer.stats.count("ops", "testhook", "delivered") == 1
    assert outbox.count() == 0


async def test_a_400_is_given_up_at_once_with_an_error_log_that_keeps_the_url_secret(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refuse(request: Request) -> web.Response:
        return web.Response(status=400, text="unknown field 'foo'")

    receiver = await make_receiver(refuse)
    url = receiver.url("/hooks/s3cr3t-t0ken")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        deliverer = make_deliverer(outbox, {("ops", "testhook", 0): hook(session, url)})
        outbox.enqueue("ops", "testhook", 0, notification(), None)
        deliverer.wake()
        await until(lambda: deliverer.stats.count("ops", "testhook", "rejected") == 1)
        await asyncio.sleep(0.4)

    assert len(receiver.requests) == 1
    assert outbox.count() == 0
    assert deliverer.stats.count("ops", "testhook", "failed") == 0
    [message] = errors(caplog)
    assert "receiver ops integration testhook[0]" in message
    assert "HTTP 400: unknown field 'foo'" in message
    assert "s3cr3t" not in caplog.text


async def test_a_429_with_retry_after_is_retried_no_sooner_than_it_asks(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
) -> None:
    async def busy_once(request: Request) -> web.Response:
        if len(receiver.requests) == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=200)

    receiver = await make_receiver(busy_once)
    deliverer = make_deliverer(outbox, {("ops", "testhook", 0): hook(session, receiver.url())})
    outbox.enqueue("ops", "testhook", 0, notification(), None)
    deliverer.wake()

    await until(lambda: receiver.accepted, within=10)
    first, second = receiver.requests
    assert first.status == 429
    assert 2.0 <= second.at - first.at < 5.0  # the policy alone would retry within 0.05 s


async def test_a_notification_still_undelivered_at_max_age_is_given_up_with_an_error_log(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    receiver = await make_receiver(broken)
    policy = RetryPolicy(initial=0.05, cap=0.1, max_age=1.0)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        deliverer = make_deliverer(
            outbox, {("ops", "testhook", 0): hook(session, receiver.url())}, policy=policy
        )
        outbox.enqueue("ops", "testhook", 0, notification(), None)
        deliverer.wake()
        await until(lambda: deliverer.stats.count("ops", "testhook", "expired") == 1)
        attempts = len(receiver.requests)
        await asyncio.sleep(0.3)

    assert len(receiver.requests) == attempts >= 3
    assert deliverer.stats.count("ops", "testhook", "failed") == attempts
    assert outbox.count() == 0
    [message] = errors(caplog)
    assert "giving up" in message and "receiver ops integration testhook[0]" in message
    assert "HTTP 503: down for maintenance" in message


async def test_an_entry_older_than_max_age_at_start_is_given_up_without_an_attempt(
    make_receiver: MakeReceiver, make_deliverer: MakeDeliverer, session: aiohttp.ClientSession
) -> None:
    receiver = await make_receiver()
    with Outbox(None, clock=lambda: 1_000.0) as box:
        box.enqueue("ops", "testhook", 0, notification(), None)
        deliverer = make_deliverer(
            box,
            {("ops", "testhook", 0): hook(session, receiver.url())},
            clock=lambda: 1_000.0 + 3_600.0,
            policy=RetryPolicy(),
        )
        await until(lambda: deliverer.stats.count("ops", "testhook", "expired") == 1)
        assert box.count() == 0
    assert receiver.requests == []


async def test_an_integration_no_longer_configured_has_its_notifications_dropped(
    make_deliverer: MakeDeliverer, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        deliverer = make_deliverer(outbox, {})
        outbox.enqueue("ops", "testhook", 2, notification(), None)
        deliverer.wake()
        await until(lambda: deliverer.stats.count("ops", "testhook", "dropped") == 1)
    assert outbox.count() == 0
    [message] = errors(caplog)
    assert "receiver ops integration testhook[2]" in message and "no longer configured" in message


class Exploding(Notifier[HookConfig]):
    """Raises an exception that is no DeliveryError on its first call."""

    config_model = HookConfig

    def __init__(self) -> None:
        super().__init__(HookConfig(url="http://unused"), NotifierContext(None, None))  # type: ignore[arg-type]
        self.deliveries: list[Delivery] = []

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if len(self.deliveries) == 1:
            raise RuntimeError("template blew up")


async def test_an_unexpected_exception_is_retried_and_logged_with_its_class(
    make_deliverer: MakeDeliverer, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Exploding()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        deliverer = make_deliverer(outbox, {("ops", "testhook", 0): notifier})
        entry_id = outbox.enqueue("ops", "testhook", 0, notification(), None)
        deliverer.wake()
        await until(lambda: deliverer.stats.count("ops", "testhook", "delivered") == 1)
    assert [(d.id, d.attempt) for d in notifier.deliveries] == [(entry_id, 1), (entry_id, 2)]
    assert notifier.deliveries[0].first_attempt_at == notifier.deliveries[1].first_attempt_at
    assert deliverer.stats.count("ops", "testhook", "failed") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("RuntimeError: template blew up" in w for w in warnings)


async def test_an_attempt_without_an_answer_is_cut_at_the_timeout_and_retried(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang_once(request: Request) -> web.Response:
        if len(receiver.requests) == 1:
            await receiver.release.wait()
        return web.Response(status=200)

    receiver = await make_receiver(hang_once)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        deliverer = make_deliverer(
            outbox, {("ops", "testhook", 0): hook(session, receiver.url())}, timeout=0.3
        )
        outbox.enqueue("ops", "testhook", 0, notification(), None)
        deliverer.wake()
        await until(lambda: deliverer.stats.count("ops", "testhook", "delivered") == 1)
    assert len(receiver.requests) == 2
    assert deliverer.stats.count("ops", "testhook", "failed") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no answer within 0.3 s" in w for w in warnings)


# --- ordering and concurrency ---------------------------------------------------------------


async def test_a_resolved_notification_never_overtakes_the_firing_one_of_its_group(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
) -> None:
    async def fail_first_two(request: Request) -> web.Response:
        return web.Response(status=500 if len(receiver.requests) <= 2 else 200)

    receiver = await make_receiver(fail_first_two)
    deliverer = make_deliverer(outbox, {("ops", "testhook", 0): hook(session, receiver.url())})
    outbox.enqueue("ops", "testhook", 0, notification(status="firing"), None)
    outbox.enqueue("ops", "testhook", 0, notification(status="resolved"), None)
    deliverer.wake()

    await until(lambda: len(receiver.accepted) == 2)
    statuses = [r.body["alerts"][0]["status"] for r in receiver.requests]
    assert statuses == ["firing", "firing", "firing", "resolved"]
    assert [r.status for r in receiver.requests] == [500, 500, 200, 200]


async def test_different_groups_are_delivered_concurrently(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
) -> None:
    second_arrived = asyncio.Event()

    async def wait_for_the_other(request: Request) -> web.Response:
        if request.body["groupKey"] == "b":
            second_arrived.set()
            return web.Response(status=200)
        try:
            await asyncio.wait_for(second_arrived.wait(), timeout=5)
        except TimeoutError:
            return web.Response(status=400, text="b did not arrive while a was in flight")
        return web.Response(status=200)

    receiver = await make_receiver(wait_for_the_other)
    deliverer = make_deliverer(outbox, {("ops", "testhook", 0): hook(session, receiver.url())})
    outbox.enqueue("ops", "testhook", 0, notification(group="a"), None)
    outbox.enqueue("ops", "testhook", 0, notification(group="b"), None)
    deliverer.wake()

    await until(lambda: len(receiver.requests) == 2 and all(r.status for r in receiver.requests))
    assert sorted(r.status for r in receiver.requests) == [200, 200]
    assert deliverer.stats.count("ops", "testhook", "delivered") == 2


# --- restarts and durability ------------------------------------------------------------------


async def test_a_restart_resumes_the_pending_notification_with_its_id_and_attempt_count(
    tmp_path: Path,
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
) -> None:
    db = tmp_path / "state" / "monitord.db"
    receiver = await make_receiver(up=False)  # nothing listens yet
    integrations = {("ops", "testhook", 0): hook(session, receiver.url())}

    first_box = Outbox(db)
    first = make_deliverer(first_box, integrations)
    entry_id = first_box.enqueue("ops", "testhook", 0, notification(), None)
    first.wake()
    await until(lambda: first.stats.count("ops", "testhook", "failed") >= 2)
    await first.stop()
    first_box.close()

    with Outbox(db) as box:
        [entry] = box.pending()
        assert entry.id == entry_id
        assert entry.attempts >= 2
        assert entry.first_attempt_at is not None
        assert entry.next_attempt_at > entry.enqueued_at
        assert entry.last_error is not None and "ClientConnectorError" in entry.last_error

        await receiver.start()
        second = make_deliverer(box, integrations)
        await until(lambda: receiver.accepted)
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 1
        assert receiver.requests[0].headers["webhook-id"] == entry_id
        assert receiver.requests[0].headers["x-attempt"] == str(entry.attempts + 1)
        assert second.stats.count("ops", "testhook", "delivered") == 1
        assert box.count() == 0


ENQUEUE_THEN_SIGKILL = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from monitor.model import Labels
    from notifiers.base import LogEntry, Notification
    from notifiers.outbox import Outbox

    box = Outbox(Path(sys.argv[1]))
    n = Notification("ops", "g", Labels({"alertname": "Down"}), (), "")
    entry_id = box.enqueue("ops", "testhook", 0, n, LogEntry(frozenset({"f1"}), frozenset(), 5.0))
    print(entry_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


async def test_an_enqueued_notification_survives_sigkill_and_is_delivered_after_restart(
    tmp_path: Path,
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
) -> None:
    db = tmp_path / "monitord.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ENQUEUE_THEN_SIGKILL, str(db), stdout=subprocess.PIPE, env=env
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == -signal.SIGKILL
    entry_id = stdout.decode().strip()

    receiver = await make_receiver()
    with Outbox(db) as box:
        assert [e.id for e in box.pending()] == [entry_id]
        assert box.log_entry("g", "ops", "testhook[0]") == LogEntry(
            frozenset({"f1"}), frozenset(), 5.0
        )
        make_deliverer(box, {("ops", "testhook", 0): hook(session, receiver.url())})
        await until(lambda: receiver.accepted)
        assert receiver.accepted[0].headers["webhook-id"] == entry_id
        assert receiver.accepted[0].body["groupKey"] == "g"


def test_the_notification_log_entry_is_written_with_the_enqueue_and_read_after_reopening(
    tmp_path: Path,
) -> None:
    db = tmp_path / "monitord.db"
    first = LogEntry(frozenset({"a1", "a2"}), frozenset({"r1"}), 1_000.0)
    with Outbox(db) as box:
        box.enqueue("ops", "webhook", 0, notification(group="g"), first)
        box.enqueue("ops", "webhook", 1, notification(group="g"), None)
    with Outbox(db) as box:
        assert box.log_entry("g", "ops", "webhook[0]") == first
        assert box.log_entry("g", "ops", "webhook[1]") is None
        assert box.log_entry("g", "team", "webhook[0]") is None
        assert len(box.pending()) == 2

        # A later notification of the group replaces the entry; one without leaves it.
        second = LogEntry(frozenset(), frozenset({"a1", "a2"}), 2_000.0)
        box.enqueue("ops", "webhook", 0, notification(group="g"), second)
        box.enqueue("ops", "webhook", 0, notification(group="g"), None)
        assert box.log_entry("g", "ops", "webhook[0]") == second


def test_a_log_entry_is_recorded_without_a_notification(tmp_path: Path) -> None:
    db = tmp_path / "monitord.db"
    entry = LogEntry(frozenset(), frozenset({"a1"}), 3_000.0)
    with Outbox(db) as box:
        box.record("g", "ops", "slack[0]", entry)
        assert box.count() == 0
    with Outbox(db) as box:
        assert box.log_entry("g", "ops", "slack[0]") == entry


def test_gc_purges_log_entries_older_than_the_retention() -> None:
    now = 1_000_000.0
    with Outbox(None, clock=lambda: now, retention=120 * 3600) as box:
        old = LogEntry(frozenset({"x"}), frozenset(), now - 120 * 3600 - 1)
        recent = LogEntry(frozenset({"y"}), frozenset(), now - 119 * 3600)
        box.enqueue("ops", "webhook", 0, notification(group="old"), old)
        box.enqueue("ops", "webhook", 0, notification(group="recent"), recent)
        assert box.gc() == 1
        assert box.log_entry("old", "ops", "webhook[0]") is None
        assert box.log_entry("recent", "ops", "webhook[0]") == recent
        assert box.count() == 2  # the outbox itself is not the log's to purge


def test_the_outbox_shares_monitord_db_with_the_rule_state_store(tmp_path: Path) -> None:
    db = tmp_path / "monitord.db"
    state = AlertStateStore(db)
    state.save([])
    with Outbox(db) as box:
        box.enqueue("ops", "webhook", 0, notification(), None)
        state.save([])
        assert state.load() == []
        assert box.count() == 1


def test_a_closed_outbox_refuses_to_be_used() -> None:
    box = Outbox(None)
    box.close()
    with pytest.raises(LifecycleError):
        box.enqueue("ops", "webhook", 0, notification(), None)


# --- the retry policy ----------------------------------------------------------------------


def test_backoff_is_full_jitter_below_an_exponential_ceiling_with_a_cap() -> None:
    policy = RetryPolicy(initial=1.0, cap=60.0)
    rng = random.Random(7)
    for attempt in range(1, 13):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        assert policy.ceiling(attempt) == ceiling
        delays = [policy.delay(attempt, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not around the ceiling.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
    assert policy.delay(100_000, rng) <= 60.0

    again = random.Random(7)
    assert [policy.delay(3, random.Random(7)) for _ in range(3)] == [policy.delay(3, again)] * 3


def test_retry_after_is_a_floor_under_the_jittered_backoff() -> None:
    policy = RetryPolicy(initial=1.0, cap=60.0)
    rng = random.Random(11)
    assert all(policy.delay(1, rng, retry_after=2.0) == 2.0 for _ in range(100))
    delays = [policy.delay(8, rng, retry_after=2.0) for _ in range(300)]
    assert min(delays) == 2.0 and max(delays) > 50.0


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"initial": 0}, id="a zero initial backoff is refused"),
        pytest.param({"cap": -1}, id="a negative cap is refused"),
        pytest.param({"max_age": float("inf")}, id="an infinite max age is refused"),
    ],
)
def test_a_retry_policy_needs_positive_finite_figures(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        RetryPolicy(**options)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_stop_lets_an_attempt_finish_within_the_grace_period(
    make_receiver: MakeReceiver, session: aiohttp.ClientSession, outbox: Outbox
) -> None:
    async def slow(request: Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(status=200)

    receiver = await make_receiver(slow)
    deliverer = Deliverer(outbox, lambda *_: hook(session, receiver.url()), policy=FAST)
    deliverer.start()
    outbox.enqueue("ops", "testhook", 0, notification(), None)
    deliverer.wake()
    await until(lambda: receiver.requests)
    await deliverer.stop(grace=5)
    assert deliverer.stats.count("ops", "testhook", "delivered") == 1
    assert outbox.count() == 0


async def test_stop_leaves_an_attempt_that_outlasts_the_grace_period_in_the_outbox(
    make_receiver: MakeReceiver, session: aiohttp.ClientSession, outbox: Outbox
) -> None:
    async def hang(request: Request) -> web.Response:
        await receiver.release.wait()
        return web.Response(status=200)

    receiver = await make_receiver(hang)
    deliverer = Deliverer(outbox, lambda *_: hook(session, receiver.url()), policy=FAST)
    deliverer.start()
    entry_id = outbox.enqueue("ops", "testhook", 0, notification(), None)
    deliverer.wake()
    await until(lambda: receiver.requests)
    started = time.monotonic()
    await deliverer.stop(grace=0.3)
    assert time.monotonic() - started < 3
    [entry] = outbox.pending()
    assert (entry.id, entry.attempts) == (entry_id, 1)
    assert deliverer.stats.outcomes == {}


async def test_a_deliverer_starts_once_and_stops_only_after_starting(outbox: Outbox) -> None:
    deliverer = Deliverer(outbox, lambda *_: None)
    with pytest.raises(LifecycleError):
        await deliverer.stop()
    deliverer.start()
    with pytest.raises(LifecycleError):
        deliverer.start()
    await deliverer.stop()
    await deliverer.stop()  # stopping again is harmless
    with pytest.raises(LifecycleError):
        deliverer.start()


# --- metrics -----------------------------------------------------------------------------------


async def test_the_collector_reports_outcomes_latency_and_pending(
    make_receiver: MakeReceiver,
    make_deliverer: MakeDeliverer,
    session: aiohttp.ClientSession,
    outbox: Outbox,
) -> None:
    async def by_group(request: Request) -> web.Response:
        group = request.body["groupKey"]
        if group == "ok":
            return web.Response(status=200)
        if group == "bad":
            return web.Response(status=404)
        return web.Response(status=503, headers={"Retry-After": "30"})

    receiver = await make_receiver(by_group)
    deliverer = make_deliverer(
        outbox,
        {
            ("ops", "testhook", 0): hook(session, receiver.url()),
            ("team", "testhook", 0): hook(session, receiver.url()),
        },
    )
    registry = CollectorRegistry()
    registry.register(OutboxCollector(deliverer))
    outbox.enqueue("ops", "testhook", 0, notification(group="ok"), None)
    outbox.enqueue("ops", "testhook", 0, notification(group="bad"), None)
    outbox.enqueue("team", "testhook", 0, notification(group="later"), None)
    deliverer.wake()
    await until(lambda: len(receiver.requests) == 3 and all(r.status for r in receiver.requests))
    await until(lambda: sum(deliverer.stats.outcomes.values()) == 3)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    total = "monitord_notifications_total"
    assert value(total, receiver="ops", integration="testhook", outcome="delivered") == 1
    assert value(total, receiver="ops", integration="testhook", outcome="rejected") == 1
    assert value(total, receiver="team", integration="testhook", outcome="failed") == 1
    assert value(total, receiver="team", integration="testhook", outcome="delivered") is None
    assert value("monitord_outbox_pending") == 1 == deliverer.pending

    latency = "monitord_notification_latency_seconds"
    assert value(f"{latency}_count", receiver="ops", integration="testhook") == 1
    assert value(f"{latency}_bucket", receiver="ops", integration="testhook", le="+Inf") == 1
    seconds = value(f"{latency}_sum", receiver="ops", integration="testhook")
    assert seconds is not None and 0 <= seconds < 5
    histogram = deliverer.stats.latency[("ops", "testhook")]
    assert histogram.count == 1 and histogram.sum == seconds
    assert len(histogram.counts) == len(LATENCY_BUCKETS) + 1
    assert value(f"{latency}_count", receiver="team", integration="testhook") is None
