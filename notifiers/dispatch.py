"""Aggregation groups and their flush cycle, as Alertmanager's dispatcher runs them
(``dispatch/dispatch.go``, ``dispatch/group.go``), with an injected clock.

:class:`Dispatcher` is the synchronous core. :meth:`Dispatcher.put` routes each alert to
every route that takes it (:meth:`notifiers.route.Route.match`) and into that route's
aggregation group for the alert's group labels, created on the first alert. An alert
already in the group is replaced, or merged with the one there when their activity
overlaps (``provider/mem``'s ``Put`` and ``types.Alert.Merge``: the later update wins, the
earliest start is kept).

Timing is ``aggrGroup``'s: a new group is due ``group_wait`` after it was created, or at
once when, before its first flush, it receives an alert whose ``starts_at`` is more than
``group_wait`` old; after each flush the next is due ``group_interval`` later. A due group
is handed out as a :class:`Flush` (its alerts' status decided at that moment, sorted as
Alertmanager sorts them) and is not handed out again until :meth:`Flush.done`; when the
flush succeeded, its resolved alerts leave the group unless they were updated in the
meantime (``DeleteIfNotModified``), and an emptied group is removed.

:func:`needs_update` is ``DedupStage.needsUpdate`` (``notify/notify.go``): whether an
integration should be notified of a flush given what the notification log last recorded.

:class:`DispatcherTask` drives a dispatcher from asyncio: it sleeps until the next group is
due, runs the flush callback of each due group (one group's flushes never overlap; different
groups' may), each bounded by the group's ``group_interval`` as Alertmanager bounds it, and
reports the outcome back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Final

from monitor.errors import LifecycleError
from monitor.log import get_logger
from monitor.model import Labels
from notifiers.base import LogEntry, NotifiedAlert, fingerprint
from notifiers.route import Route, group_key

__all__ = [
    "Dispatcher",
    "DispatcherTask",
    "Flush",
    "GroupView",
    "IncomingAlert",
    "alert_sort_key",
    "needs_update",
]

log = get_logger("notifiers.dispatch")

_NEVER: Final = float("-inf")
"""How a missing ``ends_at`` (Go's zero time) compares: before every instant."""


@dataclass(frozen=True, slots=True)
class IncomingAlert:
    """An alert handed to the dispatcher (Alertmanager's ``types.Alert``): times in epoch
    seconds, ``ends_at`` None for "not known to end", ``updated_at`` when it was received
    (the authoritative timestamp when two versions are merged)."""

    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float | None
    _: KW_ONLY
    generator_url: str = ""
    updated_at: float
    fingerprint: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    def resolved(self, now: float) -> bool:
        """Whether the alert has ended by ``now`` (``ResolvedAt``)."""
        return self.ends_at is not None and self.ends_at <= now

    def merge(self, other: IncomingAlert, now: float) -> IncomingAlert:
        """``types.Alert.Merge``: the later update's labels, annotations and URL, the
        earliest start, and the end time Alertmanager would keep."""
        if other.updated_at < self.updated_at:
            return other.merge(self, now)
        starts_at = min(self.starts_at, other.starts_at)
        ends_at = other.ends_at
        mine = _end(self.ends_at)
        if other.resolved(now):
            if self.resolved(now) and mine > _end(other.ends_at):
                ends_at = self.ends_at
        elif mine > _end(other.ends_at):
            ends_at = self.ends_at
        return replace(other, starts_at=starts_at, ends_at=ends_at)

    def notified(self, now: float) -> NotifiedAlert:
        """The alert as a flush at ``now`` carries it: resolved if it has ended, else firing
        with no end time (as ``aggrGroup.flush`` clears ``EndsAt``)."""
        resolved = self.resolved(now)
        return NotifiedAlert(
            status="resolved" if resolved else "firing",
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.starts_at,
            ends_at=self.ends_at if resolved else None,
            generator_url=self.generator_url,
            fingerprint=self.fingerprint,
        )


def _end(ends_at: float | None) -> float:
    return _NEVER if ends_at is None else ends_at


def _overlaps(new: IncomingAlert, old: IncomingAlert) -> bool:
    """``provider/mem``'s condition for merging rather than replacing."""
    new_end, old_end = _end(new.ends_at), _end(old.ends_at)
    return (old.starts_at < new_end < old_end) or (old.starts_at < new.starts_at < old_end)


def _labels_before(a: Labels, b: Labels) -> bool:
    """Prometheus' ``LabelSet.Before``: fewer labels first, then by sorted names/values."""
    if len(a) != len(b):
        return len(a) < len(b)
    for name in sorted({*a, *b}):
        if name not in a:
            return True
        if name not in b:
            return False
        if a[name] != b[name]:
            return a[name] < b[name]
    return False


class _LabelOrder:
    """A sort key ordering label sets by ``LabelSet.Before``."""

    __slots__ = ("labels",)

    def __init__(self, labels: Labels) -> None:
        self.labels = labels

    def __lt__(self, other: _LabelOrder) -> bool:
        return _labels_before(self.labels, other.labels)

    def __eq__(self, other: object) -> bool:
        # Tuple comparison asks == before <: equal label sets must let the next key decide.
        return isinstance(other, _LabelOrder) and self.labels == other.labels

    __hash__ = None  # type: ignore[assignment]


def alert_sort_key(labels: Labels) -> tuple[object, ...]:
    """Alertmanager's ``AlertSlice`` order: by ``job``, then ``instance`` (alerts with the
    label before those without), then by the whole label set."""
    key: list[object] = []
    for name in ("job", "instance"):
        value = labels.get(name)
        key.append((0, value) if value is not None else (1, ""))
    key.append(_LabelOrder(labels))
    return tuple(key)


class _Group:
    """One aggregation group (``aggrGroup``)."""

    __slots__ = ("alerts", "flush", "has_flushed", "key", "labels", "next_due", "route")

    def __init__(self, route: Route, labels: Labels, now: float) -> None:
        self.route = route
        self.labels = labels
        self.key = group_key(route, labels)
        self.alerts: dict[str, IncomingAlert] = {}
        self.next_due = now + route.group_wait
        self.has_flushed = False
        self.flush: Flush | None = None

    def sorted_alerts(self) -> list[IncomingAlert]:
        return sorted(self.alerts.values(), key=lambda a: alert_sort_key(a.labels))


class Flush:
    """One due aggregation group at one moment: what to notify its receiver of. Call
    :meth:`done` with the outcome; until then the group is not flushed again."""

    __slots__ = ("_dispatcher", "_done", "_group", "_resolved", "alerts", "now")

    def __init__(self, dispatcher: Dispatcher, group: _Group, now: float) -> None:
        self._dispatcher = dispatcher
        self._group = group
        self._done = False
        self.now = now
        ordered = group.sorted_alerts()
        self.alerts: tuple[NotifiedAlert, ...] = tuple(a.notified(now) for a in ordered)
        self._resolved = {a.fingerprint: a.updated_at for a in ordered if a.resolved(now)}

    @property
    def route(self) -> Route:
        """The route the group belongs to: receiver, timings and time interval names."""
        return self._group.route

    @property
    def receiver(self) -> str:
        """The receiver to notify."""
        return self._group.route.receiver

    @property
    def group_key(self) -> str:
        """The group's key (``aggrGroup.GroupKey``)."""
        return self._group.key

    @property
    def group_labels(self) -> Labels:
        """The group's labels."""
        return self._group.labels

    @property
    def firing(self) -> frozenset[str]:
        """Fingerprints of the firing alerts, for :func:`needs_update`."""
        return frozenset(a.fingerprint for a in self.alerts if a.status == "firing")

    @property
    def resolved(self) -> frozenset[str]:
        """Fingerprints of the resolved alerts, for :func:`needs_update`."""
        return frozenset(a.fingerprint for a in self.alerts if a.status == "resolved")

    def done(self, success: bool) -> None:
        """Report the outcome: on success the resolved alerts sent leave the group unless
        they changed since; either way the group can be flushed again when due."""
        if self._done:
            raise LifecycleError(f"flush of group {self.group_key} already reported done")
        self._done = True
        self._dispatcher._finish(self._group, self._resolved if success else {})

    def __repr__(self) -> str:
        return f"Flush({self.group_key!r}, receiver={self.receiver!r}, alerts={len(self.alerts)})"


@dataclass(frozen=True, slots=True)
class GroupView:
    """An aggregation group as views show it (Alertmanager's ``AlertGroup``)."""

    group_key: str
    group_labels: Labels
    receiver: str
    route: Route
    alerts: tuple[IncomingAlert, ...]


class Dispatcher:
    """Routes alerts into aggregation groups and says which groups are due (see the
    module's docstring). Not thread-safe; no method blocks."""

    def __init__(self, route: Route, clock: Callable[[], float] = time.time) -> None:
        self.route = route
        self.clock = clock
        self._groups: dict[tuple[Route, Labels], _Group] = {}

    def put(self, alerts: Iterable[IncomingAlert]) -> None:
        """Route each alert into the groups of every route that takes it."""
        now = self.clock()
        for alert in alerts:
            for route in self.route.match(alert.labels):
                self._insert(route, alert, now)

    def _insert(self, route: Route, alert: IncomingAlert, now: float) -> None:
        labels = route.group_labels(alert.labels)
        group = self._groups.get((route, labels))
        if group is None:
            group = self._groups[(route, labels)] = _Group(route, labels, now)
        old = group.alerts.get(alert.fingerprint)
        if old is not None and _overlaps(alert, old):
            alert = old.merge(alert, now)
        group.alerts[alert.fingerprint] = alert
        if not group.has_flushed and alert.starts_at + route.group_wait < now:
            group.next_due = now

    def next_due(self) -> float | None:
        """When the earliest group not being flushed is due; None without such a group."""
        times = [g.next_due for g in self._groups.values() if g.flush is None]
        return min(times, default=None)

    def due(self, now: float | None = None) -> list[Flush]:
        """Every group due at ``now`` (the clock's time by default) and not being flushed,
        as a :class:`Flush`; each group's next flush becomes due ``group_interval`` later."""
        now = self.clock() if now is None else now
        ready = sorted(
            (g for g in self._groups.values() if g.flush is None and g.next_due <= now),
            key=lambda g: (g.next_due, g.key),
        )
        flushes = []
        for group in ready:
            group.next_due = now + group.route.group_interval
            group.has_flushed = True
            group.flush = Flush(self, group, now)
            flushes.append(group.flush)
        return flushes

    def _finish(self, group: _Group, sent_resolved: dict[str, float]) -> None:
        group.flush = None
        for fp, updated_at in sent_resolved.items():
            current = group.alerts.get(fp)
            if current is not None and current.updated_at == updated_at:
                del group.alerts[fp]
        if not group.alerts and self._groups.get((group.route, group.labels)) is group:
            del self._groups[(group.route, group.labels)]

    def groups(self) -> list[GroupView]:
        """Every group with its alerts, ordered as Alertmanager's ``Groups`` orders them
        (by group labels, then receiver)."""
        views = [
            GroupView(g.key, g.labels, g.route.receiver, g.route, tuple(g.sorted_alerts()))
            for g in self._groups.values()
        ]
        return sorted(views, key=lambda v: (_LabelOrder(v.group_labels), v.receiver))

    def __len__(self) -> int:
        return len(self._groups)


def needs_update(
    entry: LogEntry | None,
    firing: set[str] | frozenset[str],
    resolved: set[str] | frozenset[str],
    send_resolved: bool,
    repeat_interval: float,
    now: float,
) -> bool:
    """Whether to notify an integration of a flush (``DedupStage.needsUpdate``), given the
    notification log's last ``entry`` for the group and integration and the fingerprints of
    the flush's ``firing`` and ``resolved`` alerts."""
    if entry is None:
        # Never notified: only if something fires.
        return bool(firing)
    if not firing <= entry.firing:
        return True  # a new firing alert
    if not firing:
        # All resolved: notify (whatever send_resolved says) if the receiver was told of
        # firing alerts, so the log forgets them; not if it never heard of them.
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.timestamp < now - repeat_interval


OnFlush = Callable[[Flush], Awaitable[bool]]


class DispatcherTask:
    """Runs a :class:`Dispatcher` on the event loop: flushes each group when due by calling
    ``on_flush``, whose result (True: the notification was taken) is reported back."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self, on_flush: OnFlush) -> None:
        """Start flushing; call from the running event loop, once."""
        if self._task is not None or self._stopped:
            raise LifecycleError("dispatcher task already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(on_flush), name="notifiers dispatcher"
        )

    def put(self, alerts: Iterable[IncomingAlert]) -> None:
        """Hand alerts to the dispatcher and wake the task, so a group due at once (with
        ``group_wait: 0s``) is flushed right away."""
        if self._stopped:
            raise LifecycleError("dispatcher task stopped")
        self.dispatcher.put(alerts)
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop flushing; flushes in progress get ``grace`` seconds to finish, then are
        cancelled (and count as failed)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._flushing:
            _, pending = await asyncio.wait(set(self._flushing), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, on_flush: OnFlush) -> None:
        while True:
            self._wake.clear()
            for flush in self.dispatcher.due():
                task = asyncio.get_running_loop().create_task(
                    self._deliver(flush, on_flush), name=f"flush {flush.group_key}"
                )
                self._flushing.add(task)
                task.add_done_callback(self._flushing.discard)
            due = self.dispatcher.next_due()
            timeout = None if due is None else max(0.0, due - self.dispatcher.clock())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _deliver(self, flush: Flush, on_flush: OnFlush) -> None:
        ok = False
        try:
            # Alertmanager gives a flush until the group's next one to finish.
            async with asyncio.timeout(flush.route.group_interval):
                ok = bool(await on_flush(flush))
        except TimeoutError:
            log.error(
                "flush of group %s to %s timed out after %ss",
                flush.group_key,
                flush.receiver,
                flush.route.group_interval,
            )
        except Exception:
            log.exception("flush of group %s to %s failed", flush.group_key, flush.receiver)
        finally:
            flush.done(ok)
            self._wake.set()
