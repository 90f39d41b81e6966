"""The durable outbox, the notification log and the delivery worker.

Every notification is written to SQLite before it is sent and deleted only once the
receiver accepted it (or it was given up), so a crash or restart never loses one: the
next :class:`Deliverer` over the same file resumes each entry with the attempt count,
first-attempt time and next-attempt time it had.

*Outbox* (:class:`Outbox`, table ``notify_outbox`` in the state directory's
``monitord.db``, which other parts open with their own connections and tables): one row
per notification and integration, with a uuid4 hex id that is the
:class:`~notifiers.base.Delivery` id (stable across retries and restarts, so a receiver
can deduplicate). The database is in WAL mode with ``synchronous=NORMAL``: a commit
survives the process being killed (SIGKILL included) but the last commits before a power
loss or kernel crash may be lost; no fsync sits on the notification path.

*Notification log* (table ``notify_log``): Alertmanager's ``nflog`` (``nflog/nflog.go``).
For each aggregation group, receiver and integration (``webhook[0]``) it keeps the
fingerprints of the alerts that were firing and resolved in the last notification, and
when; the pipeline compares them with a group's alerts to decide whether to notify again
(``notify.go``'s ``DedupStage``). monitord writes the entry in the same transaction as the
outbox row, because an entry in the outbox will be delivered (or given up with an error
log). Entries older than the retention (Alertmanager's ``--data.retention``, 120 h) are
purged by :meth:`Outbox.gc`, which the :class:`Deliverer` runs every 15 minutes, as
Alertmanager's maintenance does.

*Delivery* (:class:`Deliverer`, ``notify.go``'s ``RetryStage``): due entries are handed to
their integration's :meth:`~notifiers.base.Notifier.notify`. Accepted: the entry is
deleted and the latency from enqueue to acceptance recorded. A
:class:`~notifiers.base.DeliveryError` that is not retryable (a 400, 401, 403, 404, 410):
given up at once with an error log. Anything else (a retryable error, a timeout, an
unexpected exception): retried after an exponential backoff with full jitter
(:class:`RetryPolicy`), never sooner than the receiver's ``Retry-After``, until the entry
would be older than ``max_age`` (1 h), when it is given up with an error log. The entries
of one integration and aggregation group form a lane delivered strictly in order, one at
a time, so a resolved notification never overtakes the firing one before it; different
lanes are delivered concurrently.

*Metrics* (:class:`OutboxCollector`): ``monitord_notifications_total{receiver,integration,
outcome}``, ``monitord_notification_latency_seconds{receiver,integration}`` and
``monitord_outbox_pending``.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import math
import random
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor.errors import LifecycleError, MonitordError
from monitor.log import get_logger
from notifiers.base import Delivery, DeliveryError, LogEntry, Notification, Notifier

__all__ = [
    "DEFAULT_RETENTION",
    "LATENCY_BUCKETS",
    "Deliverer",
    "DeliveryStats",
    "IntegrationLookup",
    "LatencyHistogram",
    "Outbox",
    "OutboxCollector",
    "OutboxEntry",
    "OutboxError",
    "Outcome",
    "RetryPolicy",
]

log = get_logger("notifiers.outbox")

T = TypeVar("T")

DEFAULT_RETENTION: Final = 120 * 3600.0
"""How long notification-log entries are kept (Alertmanager's ``--data.retention``)."""

LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 15.0, 20.0, 60.0, 300.0, 1800.0
)  # fmt: skip
"""Upper bounds (seconds) of the latency buckets: Alertmanager's 1, 5, 10, 15 and 20 s, with
sub-second ones (monitord aims at well under a second) and ones for deliveries that needed
retries; a last bucket counts the rest."""

Outcome = Literal["delivered", "failed", "rejected", "expired", "dropped"]
"""What became of an attempt (``failed``) or of a notification (the others)."""

IntegrationLookup = Callable[[str, str, int], Notifier[Any] | None]
"""The integration configured now as (receiver, kind, index), or None when there is none."""

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS notify_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, -- enqueue order; never reused
        id TEXT NOT NULL UNIQUE,               -- uuid4 hex, the Delivery id
        receiver TEXT NOT NULL,
        kind TEXT NOT NULL,
        idx INTEGER NOT NULL,                  -- the integration's index in <kind>_configs
        group_key TEXT NOT NULL,
        notification TEXT NOT NULL,            -- Notification.dumps()
        enqueued_at REAL NOT NULL,             -- epoch seconds
        attempts INTEGER NOT NULL DEFAULT 0,   -- attempts started
        first_attempt_at REAL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS notify_log (
        group_key TEXT NOT NULL,
        receiver TEXT NOT NULL,
        integration TEXT NOT NULL,             -- "<kind>[<index>]"
        firing TEXT NOT NULL,                  -- JSON array of fingerprints
        resolved TEXT NOT NULL,
        timestamp REAL NOT NULL,
        PRIMARY KEY (group_key, receiver, integration)
    )
    """,
    "CREATE INDEX IF NOT EXISTS notify_log_timestamp ON notify_log (timestamp)",
)

_COLUMNS: Final = (
    "seq, id, receiver, kind, idx, notification, enqueued_at, attempts, first_attempt_at, "
    "next_attempt_at, last_error"
)


class OutboxError(MonitordError):
    """The outbox database could not be read or written; ``path`` is the database."""

    def __init__(self, path: Path | None, action: str, reason: str) -> None:
        self.path = path
        self.action = action
        self.reason = reason
        where = path if path is not None else "the in-memory outbox"
        super().__init__(f"cannot {action} in {where}: {reason}")


@dataclass(slots=True)
class OutboxEntry:
    """One notification waiting for one integration, with its attempt bookkeeping."""

    seq: int
    id: str
    receiver: str
    kind: str
    index: int
    notification: Notification
    enqueued_at: float
    attempts: int = 0
    first_attempt_at: float | None = None
    next_attempt_at: float = 0.0
    last_error: str | None = None

    @property
    def integration(self) -> str:
        """The integration's name as logs and the notification log spell it: ``webhook[0]``."""
        return f"{self.kind}[{self.index}]"

    @property
    def lane(self) -> tuple[str, str, int, str]:
        """Entries with the same lane are delivered in order, one at a time."""
        return (self.receiver, self.kind, self.index, self.notification.group_key)


class Outbox:
    """The outbox and notification-log tables in one SQLite file (None: in memory).

    Meant for the event loop's thread: every call is a short, blocking SQLite statement;
    ``timeout`` is how long a write waits for another connection's lock on the file.
    ``retention`` is how long :meth:`gc` keeps notification-log entries.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
        timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.retention = retention
        self._clock = clock
        self._conn: sqlite3.Connection | None = self._translated(
            "open", lambda: self._open(timeout)
        )

    def _open(self, timeout: float) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _translated(self, action: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(self.path, action, str(exc)) from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LifecycleError("the outbox is closed")
        return self._conn

    def close(self) -> None:
        """Close the database; using the outbox afterwards raises :class:`LifecycleError`."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def enqueue(
        self,
        receiver: str,
        kind: str,
        index: int,
        notification: Notification,
        log_entry: LogEntry | None,
    ) -> str:
        """Store ``notification`` for integration ``kind[index]`` of ``receiver``, due now,
        and with it (same transaction) ``log_entry`` as the notification log's entry for its
        group; committed when this returns. Returns the entry's id."""
        db = self._db
        entry_id = uuid.uuid4().hex
        now = self._clock()
        payload = notification.dumps()

        def write() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO notify_outbox (id, receiver, kind, idx, group_key, notification,"
                    " enqueued_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, receiver, kind, index, notification.group_key, payload, now, now),
                )
                if log_entry is not None:
                    self._write_log(
                        db, notification.group_key, receiver, f"{kind}[{index}]", log_entry
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._translated("enqueue a notification", write)
        return entry_id

    @staticmethod
    def _write_log(
        db: sqlite3.Connection, group_key: str, receiver: str, integration: str, entry: LogEntry
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO notify_log VALUES (?, ?, ?, ?, ?, ?)",
            (
                group_key,
                receiver,
                integration,
                json.dumps(sorted(entry.firing)),
                json.dumps(sorted(entry.resolved)),
                entry.timestamp,
            ),
        )

    def record(self, group_key: str, receiver: str, integration: str, entry: LogEntry) -> None:
        """Write the notification log's entry for a flush that sent nothing (every alert
        resolved and the integration does not send resolved ones), as Alertmanager's
        SetNotifiesStage does, so the log forgets the firing alerts."""
        db = self._db

        def write() -> None:
            with db:
                self._write_log(db, group_key, receiver, integration, entry)

        self._translated("write the notification log", write)

    def log_entry(self, group_key: str, receiver: str, integration: str) -> LogEntry | None:
        """The notification log's entry for a group and an integration (``webhook[0]``)."""
        db = self._db
        row = self._translated(
            "read the notification log",
            lambda: db.execute(
                "SELECT firing, resolved, timestamp FROM notify_log"
                " WHERE group_key = ? AND receiver = ? AND integration = ?",
                (group_key, receiver, integration),
            ).fetchone(),
        )
        if row is None:
            return None
        firing, resolved, timestamp = row
        return LogEntry(frozenset(json.loads(firing)), frozenset(json.loads(resolved)), timestamp)

    def pending(self, after: int = 0) -> list[OutboxEntry]:
        """Every entry in enqueue order, or those enqueued after the entry with ``seq`` after.

        A row whose notification cannot be read back is logged and deleted.
        """
        db = self._db
        rows = self._translated(
            "read the outbox",
            lambda: db.execute(
                f"SELECT {_COLUMNS} FROM notify_outbox WHERE seq > ? ORDER BY seq", (after,)
            ).fetchall(),
        )
        entries = []
        for seq, entry_id, receiver, kind, index, payload, *rest in rows:
            try:
                notification = Notification.from_json(json.loads(payload))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.error(
                    "deleting outbox entry %s for receiver %s integration %s[%d]: "
                    "its notification cannot be read: %s",
                    entry_id,
                    receiver,
                    kind,
                    index,
                    exc,
                )
                self.delete(entry_id)
                continue
            entries.append(OutboxEntry(seq, entry_id, receiver, kind, index, notification, *rest))
        return entries

    def count(self) -> int:
        """How many entries wait for delivery."""
        db = self._db
        row = self._translated(
            "count the outbox", lambda: db.execute("SELECT count(*) FROM notify_outbox").fetchone()
        )
        return int(row[0])

    def begin_attempt(self, entry_id: str, attempt: int, first_attempt_at: float) -> None:
        """Record that attempt number ``attempt`` starts (the first one at ``first_attempt_at``)."""
        db = self._db
        self._translated(
            "record an attempt",
            lambda: db.execute(
                "UPDATE notify_outbox SET attempts = ?, first_attempt_at = ? WHERE id = ?",
                (attempt, first_attempt_at, entry_id),
            ),
        )

    def reschedule(self, entry_id: str, next_attempt_at: float, error: str) -> None:
        """Record a failed attempt's error and when the next one is due."""
        db = self._db
        self._translated(
            "reschedule a notification",
            lambda: db.execute(
                "UPDATE notify_outbox SET next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_attempt_at, error, entry_id),
            ),
        )

    def delete(self, entry_id: str) -> bool:
        """Remove an entry (delivered or given up); False if it was not there."""
        db = self._db
        cursor = self._translated(
            "delete a notification",
            lambda: db.execute("DELETE FROM notify_outbox WHERE id = ?", (entry_id,)),
        )
        return cursor.rowcount > 0

    def gc(self) -> int:
        """Purge notification-log entries older than the retention; returns how many."""
        db = self._db
        horizon = self._clock() - self.retention
        cursor = self._translated(
            "purge the notification log",
            lambda: db.execute("DELETE FROM notify_log WHERE timestamp < ?", (horizon,)),
        )
        return cursor.rowcount


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry a failed delivery: exponential backoff with full jitter, capped.

    After failed attempt ``n`` the next waits ``uniform(0, min(cap, initial * 2^(n-1)))``
    (AWS's "full jitter"), but never less than the receiver's ``Retry-After``. A
    notification that could not be attempted again before it is ``max_age`` old is given
    up.
    """

    initial: float = 1.0
    cap: float = 60.0
    max_age: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("initial", "cap", "max_age"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"RetryPolicy.{name} must be a positive number, not {value!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest backoff after failed attempt ``attempt`` (1 for the first)."""
        exponent = min(max(attempt, 1) - 1, 1023)
        return min(self.cap, self.initial * 2.0**exponent)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one."""
        jittered = rng.uniform(0.0, self.ceiling(attempt))
        return max(jittered, retry_after) if retry_after is not None else jittered


@dataclass(slots=True)
class LatencyHistogram:
    """Enqueue-to-acceptance latencies of one integration, in :data:`LATENCY_BUCKETS`."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum: float = 0.0

    @property
    def count(self) -> int:
        """How many latencies were observed."""
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        """Count one latency."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


@dataclass(slots=True)
class DeliveryStats:
    """What the deliverer counted since it was made."""

    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(receiver, integration kind, outcome) → count."""
    latency: dict[tuple[str, str], LatencyHistogram] = field(default_factory=dict)
    """(receiver, integration kind) → latencies of accepted notifications."""

    def count(self, receiver: str, kind: str, outcome: Outcome) -> int:
        """How many times ``outcome`` happened for the integrations of one kind of a receiver."""
        return self.outcomes[(receiver, kind, outcome)]


class Deliverer:
    """The delivery worker: hands due outbox entries to their integrations, retries, gives up.

    ``integrations`` is asked for the notifier of (receiver, kind, index) at every attempt,
    so a reload's new integrations are used at once; None means the integration is no
    longer configured and its entries are dropped. Each attempt is cut after ``timeout``
    seconds (then retried).
    """

    def __init__(
        self,
        outbox: Outbox,
        integrations: IntegrationLookup,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        concurrency: int = 16,
        timeout: float = 60.0,
        gc_interval: float = 900.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.outbox = outbox
        self.policy = policy or RetryPolicy()
        self.stats = DeliveryStats()
        self._integrations = integrations
        self._clock = clock
        self._rng = rng or random.Random()
        self._concurrency = concurrency
        self._timeout = timeout
        self._gc_interval = gc_interval
        self._lanes: dict[tuple[str, str, int, str], deque[OutboxEntry]] = {}
        self._busy: set[tuple[str, str, int, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_seq = 0
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def pending(self) -> int:
        """How many notifications wait in the outbox."""
        return self.outbox.count()

    @property
    def in_flight(self) -> int:
        """How many attempts are going on now."""
        return len(self._tasks)

    def start(self) -> None:
        """Start delivering, beginning with whatever the outbox already holds."""
        if self._runner is not None or self._stopped:
            raise LifecycleError("the deliverer can be started only once")
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name="notification deliverer"
        )
        self._runner.add_done_callback(_report_crash)

    def wake(self) -> None:
        """Look for new entries now; call after :meth:`Outbox.enqueue`."""
        self._wakeup.set()

    async def stop(self, grace: float = 8.0) -> None:
        """Stop: attempts in flight get ``grace`` seconds to finish, then are cancelled; every
        undelivered entry stays in the outbox for the next start."""
        if self._runner is None:
            raise LifecycleError("the deliverer was not started")
        if self._stopped:
            return
        self._stopped = True
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_gc = loop.time()
        while True:
            self._wakeup.clear()
            if loop.time() >= next_gc:
                self._maintain()
                next_gc = loop.time() + self._gc_interval
            try:
                self._load()
                due = self._dispatch()
            except (OutboxError, LifecycleError) as exc:
                log.error("notification delivery paused for 5 s: %s", exc)
                due = self._clock() + 5.0
            timeout = next_gc - loop.time()
            if due is not None:
                timeout = min(timeout, due - self._clock())
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _maintain(self) -> None:
        try:
            purged = self.outbox.gc()
        except (OutboxError, LifecycleError) as exc:
            log.error("notification log maintenance failed: %s", exc)
            return
        if purged:
            log.debug("purged %d expired notification log entries", purged)

    def _load(self) -> None:
        for entry in self.outbox.pending(after=self._last_seq):
            self._lanes.setdefault(entry.lane, deque()).append(entry)
            self._last_seq = entry.seq

    def _dispatch(self) -> float | None:
        """Start an attempt for every lane whose head is due, as far as concurrency allows;
        returns when the earliest waiting head is due (None: no head waits)."""
        now = self._clock()
        due: float | None = None
        for lane, entries in self._lanes.items():
            if lane in self._busy:
                continue
            head = entries[0]
            if head.next_attempt_at > now:
                due = head.next_attempt_at if due is None else min(due, head.next_attempt_at)
                continue
            if len(self._tasks) >= self._concurrency:
                continue  # a finishing attempt wakes the loop
            self._busy.add(lane)
            task = asyncio.get_running_loop().create_task(
                self._attempt(head), name=f"deliver {head.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, head))
        return due

    def _finished(self, entry: OutboxEntry, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._busy.discard(entry.lane)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The bookkeeping itself failed (the database): keep the entry, try later.
            entry.next_attempt_at = self._clock() + self.policy.cap
            log.error(
                "delivery of outbox entry %s to receiver %s integration %s broke down, "
                "trying again in %.0f s: %s",
                entry.id,
                entry.receiver,
                entry.integration,
                self.policy.cap,
                exc,
            )
        self._wakeup.set()

    def _done_with(self, entry: OutboxEntry) -> None:
        """Delete ``entry`` from the outbox and from the head of its lane."""
        self.outbox.delete(entry.id)
        lane = self._lanes[entry.lane]
        lane.popleft()
        if not lane:
            del self._lanes[entry.lane]

    def _count(self, entry: OutboxEntry, outcome: Outcome) -> None:
        self.stats.outcomes[(entry.receiver, entry.kind, outcome)] += 1

    async def _attempt(self, entry: OutboxEntry) -> None:
        now = self._clock()
        if now - entry.enqueued_at >= self.policy.max_age:
            self._expire(entry, now)
            return
        notifier = self._integrations(entry.receiver, entry.kind, entry.index)
        if notifier is None:
            log.error(
                "dropping a notification for receiver %s integration %s (group %s): "
                "the integration is no longer configured",
                entry.receiver,
                entry.integration,
                entry.notification.group_key,
            )
            self._done_with(entry)
            self._count(entry, "dropped")
            return
        attempt = entry.attempts + 1
        first = entry.first_attempt_at if entry.first_attempt_at is not None else now
        self.outbox.begin_attempt(entry.id, attempt, first)
        entry.attempts, entry.first_attempt_at = attempt, first
        delivery = Delivery(entry.id, attempt, first)
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                await notifier.notify(entry.notification, delivery)
        except DeliveryError as exc:
            if not exc.retryable:
                log.error(
                    "notification for receiver %s integration %s (group %s) rejected, "
                    "not retrying: %s",
                    entry.receiver,
                    entry.integration,
                    entry.notification.group_key,
                    exc,
                )
                self._done_with(entry)
                self._count(entry, "rejected")
                return
            error, retry_after = str(exc), exc.retry_after
        except TimeoutError as exc:
            if not deadline.expired():
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = f"no answer within {self._timeout:g} s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            accepted = self._clock()
            self._done_with(entry)
            self._count(entry, "delivered")
            histogram = self.stats.latency.setdefault(
                (entry.receiver, entry.kind), LatencyHistogram()
            )
            histogram.observe(max(0.0, accepted - entry.enqueued_at))
            log.debug(
                "notification for receiver %s integration %s delivered at attempt %d",
                entry.receiver,
                entry.integration,
                attempt,
            )
            return
        self._retry(entry, error, retry_after)

    def _retry(self, entry: OutboxEntry, error: str, retry_after: float | None) -> None:
        self._count(entry, "failed")
        entry.last_error = error
        now = self._clock()
        next_at = now + self.policy.delay(entry.attempts, self._rng, retry_after)
        if next_at - entry.enqueued_at >= self.policy.max_age:
            self._expire(entry, now)
            return
        self.outbox.reschedule(entry.id, next_at, error)
        entry.next_attempt_at = next_at
        log.warning(
            "notification for receiver %s integration %s (group %s) failed at attempt %d, "
            "retrying in %.1f s: %s",
            entry.receiver,
            entry.integration,
            entry.notification.group_key,
            entry.attempts,
            next_at - now,
            error,
        )

    def _expire(self, entry: OutboxEntry, now: float) -> None:
        log.error(
            "giving up a notification for receiver %s integration %s (group %s): "
            "undelivered after %d attempts in %.0f s (max age %.0f s); last error: %s",
            entry.receiver,
            entry.integration,
            entry.notification.group_key,
            entry.attempts,
            now - entry.enqueued_at,
            self.policy.max_age,
            entry.last_error or "none",
        )
        self._done_with(entry)
        self._count(entry, "expired")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.critical("notification delivery stopped: %s", exc, exc_info=exc)


class OutboxCollector(Collector):
    """The deliverer's figures as Prometheus metrics."""

    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    def collect(self) -> Iterable[Metric]:
        """Outcome counters, latency histograms and the outbox's size, read now."""
        stats = self._deliverer.stats
        total = CounterMetricFamily(
            "monitord_notifications",
            "Notifications by outcome: delivered, failed (one per failed attempt), rejected "
            "(not retryable), expired (given up at max age), dropped (integration gone).",
            labels=["receiver", "integration", "outcome"],
        )
        for (receiver, kind, outcome), count in sorted(stats.outcomes.items()):
            total.add_metric([receiver, kind, outcome], count)
        yield total
        latency = HistogramMetricFamily(
            "monitord_notification_latency_seconds",
            "Time from a notification's enqueue to the receiver accepting it.",
            labels=["receiver", "integration"],
        )
        for (receiver, kind), histogram in sorted(stats.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*LATENCY_BUCKETS, math.inf], histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            latency.add_metric([receiver, kind], buckets, histogram.sum)
        yield latency
        yield GaugeMetricFamily(
            "monitord_outbox_pending",
            "Notifications waiting in the outbox for delivery.",
            value=self._deliverer.pending,
        )
