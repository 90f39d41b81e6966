"""Run rule groups: one scheduler job per group, reloads that keep state, evaluation on arrival.

Timing follows Prometheus' ``rules/manager.go`` and ``Group.run``: a group is
evaluated at slots ``offset + n * interval`` (the offset is derived from the
group's file and name), slots that passed while an evaluation was late are
counted as missed, and alerts are handed to the :class:`AlertSink` when they
fire, resolve, or every ``resend_delay`` while they stay firing.

On arrival: when a check writes samples that a rule of a group selects, the
group is evaluated at once at the samples' timestamp (so ``for`` is measured in
sample time), then at most once more per ``arrival_window`` however many
samples keep arriving. The interval slots are still evaluated: they are the
floor, and an on-arrival evaluation never makes the group's time go backwards.

The ``for`` state of alerts is restored after the second evaluation following a
start, from the ``ALERTS_FOR_STATE`` samples saved before it
(Prometheus' ``RestoreForState``, with ``for_outage_tolerance`` and
``for_grace_period``). Prometheus waits for that second evaluation because the first
may come before enough data was scraped; monitord's store starts empty, so with
on-arrival evaluation a group whose rules select series also waits until samples they
select have arrived (or, should none come, until ``RESTORE_PATIENCE`` has passed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from monitor.errors import LifecycleError
from monitor.log import get_logger
from monitor.model import STALE_NAN, Alert, Labels, Sample
from monitor.store import NAME_LABEL, Matcher, MatchOp, Store
from rules.alerting import AlertingRule, ForState, for_state_index
from rules.group import DEFAULT_RESEND_DELAY, EvalContext, Group
from rules.rule import ALERTNAME_LABEL, QueryFunc

__all__ = [
    "AlertSink",
    "JobScheduler",
    "ManagerOptions",
    "RuleManager",
    "SelectorsFunc",
    "generator_url",
]

log = get_logger("rules.manager")

RESTORE_PATIENCE = 30_000
"""Milliseconds after the start by which a group restores its ``for`` state even if no
sample its rules select has arrived (rules on ``absent()``, say)."""

JOB_PREFIX = "rule group "  # a space: no check name has one, so no job id clashes


class AlertSink(Protocol):
    """Where alerts go when they are due to be sent: the notifications side implements it.

    ``send`` is called from the event loop right after a group's evaluation and
    must not block: queue the alerts and deliver them elsewhere. Alerts carry
    the external labels already; pending alerts are never sent; a firing alert
    is re-sent every ``resend_delay`` with a fresh ``valid_until``, and a
    resolved one is re-sent for 15 minutes after it resolved.
    """

    def send(self, alerts: Sequence[Alert]) -> None:
        """Take these alerts for delivery."""


class JobScheduler(Protocol):
    """The part of :class:`monitor.scheduler.Scheduler` the manager schedules groups on."""

    def add_interval_job(
        self, job_id: str, func: Callable[[], Awaitable[None]], interval: float, first: float
    ) -> None:
        """Run ``func`` every ``interval`` seconds from the epoch time ``first``."""

    def remove_job(self, job_id: str) -> None:
        """Stop running the job ``job_id``."""


SelectorsFunc = Callable[[str], Sequence[Sequence[Matcher]]]
"""The label matchers of every series selector in an expression."""


@dataclass(frozen=True, slots=True)
class ManagerOptions:
    """Prometheus' rule flags, in ms, plus on-arrival evaluation."""

    resend_delay: int = DEFAULT_RESEND_DELAY
    outage_tolerance: int = 3_600_000
    grace_period: int = 600_000
    default_query_offset: int = 0
    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    """The base of the alerts' generator URLs (``server.external_url``)."""
    on_arrival: bool = True
    arrival_window: float = 0.02
    """Seconds after an on-arrival evaluation during which more arrivals wait and coalesce:
    the most an arrival waits, and at most ``1 / arrival_window`` such evaluations a second."""


@dataclass(slots=True)
class _Schedule:
    """Per group: its next slot, and its pending on-arrival evaluation."""

    next_slot: int | None = None
    arrival_ts: int | None = None
    arrival_handle: asyncio.TimerHandle | asyncio.Handle | None = None
    last_arrival_run: float = float("-inf")


class RuleManager:
    """Owns the rule groups: schedules them, evaluates them, reloads them, restores them."""

    def __init__(
        self,
        store: Store,
        query: QueryFunc,
        *,
        options: ManagerOptions | None = None,
        sink: AlertSink | None = None,
        scheduler: JobScheduler | None = None,
        selectors: SelectorsFunc | None = None,
        saved: Iterable[ForState] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options if options is not None else ManagerOptions()
        self.sink = sink
        self.on_evaluated: Callable[[Group], None] | None = None
        """Called after each evaluation of a group (for tests and status displays)."""
        self._store = store
        self._scheduler = scheduler
        self._selectors = selectors
        self._saved = list(saved)
        self._clock = clock
        self._monotonic = monotonic
        self._ctx = EvalContext(
            query=query,
            store=store,
            notify=self._notify,
            resend_delay=self.options.resend_delay,
            default_query_offset=self.options.default_query_offset,
            clock=clock,
            monotonic=monotonic,
        )
        self._groups: dict[str, Group] = {}
        self._schedules: dict[str, _Schedule] = {}
        # Matchers by metric name (and those without a fixed name), each with its group.
        self._by_name: dict[str, list[tuple[str, Sequence[Matcher]]]] = {}
        self._unnamed: list[tuple[str, Sequence[Matcher]]] = []
        self._selecting: set[str] = set()  # groups with a rule that selects series
        self._arrival_seen: set[str] = set()  # groups evaluated on an arrival since the start
        self._started_at: int | None = None
        self._stale_handles: set[asyncio.TimerHandle] = set()
        self._restored = False
        self._running = False

    def configure(self, options: ManagerOptions) -> None:
        """Apply new options (a config reload); they hold from the next evaluation on."""
        self.options = options
        self._ctx.resend_delay = options.resend_delay
        self._ctx.default_query_offset = options.default_query_offset

    # --- the set of groups ------------------------------------------------------------------

    def update(self, groups: Sequence[Group]) -> None:
        """Make ``groups`` the running set, keeping what did not change.

        An unchanged group (same definition) keeps running undisturbed. A
        changed one replaces the old and takes over the alerts and series of
        its rules whose name and labels did not change. A removed group's
        series get staleness markers two of its intervals later, unless
        something writes them again first. Never awaits, so no evaluation runs
        in the middle of it.
        """
        keys = [g.key for g in groups]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule groups: {', '.join(duplicates)}")
        new: dict[str, Group] = {}
        for group in groups:
            old = self._groups.pop(group.key, None)
            if old is not None and old.equals(group):
                new[group.key] = old
                continue
            group.should_restore = not self._restored
            for rule in group.alerting_rules():
                rule.restored = self._restored
            if old is not None:
                group.copy_state(old)
                self._unschedule(old.key)
            new[group.key] = group
            if self._running:
                self._schedule(group)
        for gone in self._groups.values():
            self._unschedule(gone.key)
            self._mark_stale_later(gone)
        self._groups = new
        self._restored = True
        self._index_selectors()

    def groups(self) -> list[Group]:
        """The groups, by file then name."""
        return sorted(self._groups.values(), key=lambda g: (g.file, g.name))

    def group(self, key: str) -> Group | None:
        """The group with key ``file;name``, if any."""
        return self._groups.get(key)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Schedule every group's interval job."""
        if self._running:
            raise LifecycleError("the rule manager is already running")
        self._running = True
        self._started_at = self._now_ms()
        for group in self._groups.values():
            self._schedule(group)

    async def stop(self) -> None:
        """Remove every job and pending on-arrival run; nothing is evaluated afterwards."""
        self._running = False
        for key in list(self._schedules):
            self._unschedule(key)
        for handle in self._stale_handles:
            handle.cancel()
        self._stale_handles.clear()

    def _schedule(self, group: Group) -> None:
        now = self._now_ms()
        first = group.eval_timestamp(now) + group.interval
        self._schedules[group.key] = _Schedule(next_slot=first)
        if self._scheduler is not None:
            self._scheduler.add_interval_job(
                JOB_PREFIX + group.key,
                functools.partial(self._tick_job, group.key),
                group.interval / 1000,
                first / 1000,
            )

    def _unschedule(self, key: str) -> None:
        schedule = self._schedules.pop(key, None)
        if schedule is None:
            return
        if schedule.arrival_handle is not None:
            schedule.arrival_handle.cancel()
        if self._scheduler is not None:
            self._scheduler.remove_job(JOB_PREFIX + key)

    def _mark_stale_later(self, group: Group) -> None:
        series = group.previous_series()
        if not series:
            return
        removed_at = self._now_ms()

        def mark() -> None:
            # Only series nothing has written since the group went: a renamed group's
            # rule that took over a series keeps it.
            at = max(self._now_ms(), removed_at + 1)
            stale = []
            for name, labels in series:
                found = self._store.get(name, labels)
                if found is not None and (found.last_timestamp or 0) <= removed_at:
                    stale.append(Sample(name, labels, STALE_NAN, at))
            self._store.append(stale, at)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            mark()
            return
        now = loop.time()
        self._stale_handles = {h for h in self._stale_handles if h.when() > now}  # past ones ran
        self._stale_handles.add(loop.call_later(2 * group.interval / 1000, mark))

    # --- evaluation -------------------------------------------------------------------------

    async def _tick_job(self, key: str) -> None:
        self.tick(key)

    def tick(self, key: str) -> None:
        """The interval job of group ``key``: evaluate its due slot, counting missed ones."""
        group = self._groups.get(key)
        schedule = self._schedules.get(key)
        if group is None or schedule is None:
            return
        now = self._now_ms()
        slot = schedule.next_slot if schedule.next_slot is not None else group.eval_timestamp(now)
        missed = max(0, (now - slot) // group.interval)
        if missed:
            group.stats.iterations_missed += missed
            group.stats.iterations_total += missed
            log.warning(
                "rule group %s missed %d evaluations",
                group.name,
                missed,
                extra={"group": group.name, "file": group.file},
            )
        ts = slot + missed * group.interval
        schedule.next_slot = ts + group.interval
        last = group.stats.last_eval_timestamp
        if last is not None and ts <= last:
            return  # an on-arrival evaluation already covered this slot
        self._iterate(group, ts)

    def evaluate(self, key: str, ts: int) -> None:
        """Evaluate group ``key`` at ``ts`` (ms) now, outside its schedule."""
        self._iterate(self._groups[key], ts)

    def _iterate(self, group: Group, ts: int) -> None:
        group.run_iteration(ts, self._ctx)
        if self.on_evaluated is not None:
            self.on_evaluated(group)
        if group.should_restore and group.runs >= 2 and self._has_data(group):
            now = self._now_ms()
            saved = for_state_index(self._saved, now - self.options.outage_tolerance)
            group.restore_for_state(
                now, saved, grace_period=self.options.grace_period, monotonic=self._monotonic
            )

    def _has_data(self, group: Group) -> bool:
        """Whether the group may restore now: samples its rules select have arrived, or
        it selects none, or waiting is not possible (no on-arrival) or has lasted long."""
        if not self.options.on_arrival or group.key not in self._selecting:
            return True
        if group.key in self._arrival_seen:
            return True
        started = self._started_at
        return started is None or self._now_ms() - started >= RESTORE_PATIENCE

    # --- on arrival -------------------------------------------------------------------------

    def _index_selectors(self) -> None:
        self._by_name = {}
        self._unnamed = []
        self._selecting = set()
        if self._selectors is None:
            return
        for group in self._groups.values():
            for rule in group.rules:
                for matchers in self._selectors(rule.expr):
                    self._selecting.add(group.key)
                    entry = (group.key, tuple(matchers))
                    name = _fixed_name(matchers)
                    if name is not None:
                        self._by_name.setdefault(name, []).append(entry)
                    else:
                        self._unnamed.append(entry)

    def samples_written(self, samples: Sequence[Sample], timestamp: int) -> None:
        """The scheduler's hook: ``samples`` were stored, stamped ``timestamp`` unless they say.

        Every group with a rule that selects one of them is evaluated soon (see
        the module docstring); nothing happens when on-arrival evaluation is off.
        """
        if not self.options.on_arrival or not self._running:
            return
        triggered: dict[str, int] = {}
        for sample in samples:
            candidates = self._by_name.get(sample.name, [])
            if not candidates and not self._unnamed:
                continue
            ts = sample.timestamp if sample.timestamp is not None else timestamp
            for key, matchers in (*candidates, *self._unnamed):
                if triggered.get(key, -1) >= ts:
                    continue
                if _selects(matchers, sample):
                    triggered[key] = ts
        for key, ts in triggered.items():
            self._arrived(key, ts)

    def _arrived(self, key: str, ts: int) -> None:
        schedule = self._schedules.get(key)
        if schedule is None:
            return
        schedule.arrival_ts = ts if schedule.arrival_ts is None else max(schedule.arrival_ts, ts)
        if schedule.arrival_handle is not None:
            return  # a run is already coming; it will use the newest timestamp
        loop = asyncio.get_running_loop()
        wait = schedule.last_arrival_run + self.options.arrival_window - self._monotonic()
        if wait > 0:
            schedule.arrival_handle = loop.call_later(wait, self._arrival_run, key)
        else:
            schedule.arrival_handle = loop.call_soon(self._arrival_run, key)

    def _arrival_run(self, key: str) -> None:
        schedule = self._schedules.get(key)
        group = self._groups.get(key)
        if schedule is None or group is None or schedule.arrival_ts is None:
            return
        ts, schedule.arrival_ts, schedule.arrival_handle = schedule.arrival_ts, None, None
        last = group.stats.last_eval_timestamp
        if last is not None and ts <= last:
            ts = last + 1  # the group's time never goes backwards
        schedule.last_arrival_run = self._monotonic()
        group.stats.arrival_iterations_total += 1
        self._arrival_seen.add(key)
        self._iterate(group, ts)

    # --- alerts out -------------------------------------------------------------------------

    def _notify(self, expr: str, alerts: Sequence[Alert]) -> None:
        if self.sink is None:
            return
        external = self.options.external_labels
        link = generator_url(self.options.external_url, expr)
        alerts = [
            dataclasses.replace(
                a,
                labels=_with_external(a.labels, external) if external else a.labels,
                generator_url=link,
            )
            for a in alerts
        ]
        try:
            self.sink.send(alerts)
        except Exception:
            log.exception("handing %d alerts to the notifier failed", len(alerts))

    # --- views and persistence --------------------------------------------------------------

    def alerting_rules(self) -> list[AlertingRule]:
        """Every alerting rule of every group."""
        return [r for g in self.groups() for r in g.alerting_rules()]

    def active_alerts(self) -> list[Alert]:
        """Every pending or firing alert, as ``/api/v1/alerts`` lists them."""
        return [a for r in self.alerting_rules() for a in r.active_alerts()]

    def for_states(self) -> list[ForState]:
        """What to save for a restart: the last ``ALERTS_FOR_STATE`` sample of each active alert.

        Rules that have not restored their own state yet pass on what was
        loaded for them, so a quick second restart loses nothing.
        """
        live: dict[Labels, ForState] = {}
        waiting: set[str] = set()
        for rule in self.alerting_rules():
            if rule.restored:
                live.update((s.labels, s) for s in rule.for_states())
            else:
                waiting.add(rule.name)
        for state in self._saved:
            if state.labels.get(ALERTNAME_LABEL) in waiting and state.labels not in live:
                live[state.labels] = state
        return sorted(live.values(), key=lambda s: s.labels.items_tuple())

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)


def _fixed_name(matchers: Sequence[Matcher]) -> str | None:
    for m in matchers:
        if m.name == NAME_LABEL and m.op is MatchOp.EQ:
            return m.value
    return None


def _selects(matchers: Sequence[Matcher], sample: Sample) -> bool:
    for m in matchers:
        value = sample.name if m.name == NAME_LABEL else sample.labels.get(m.name, "")
        if not m.matches(value):
            return False
    return True


def _with_external(labels: Labels, external: Mapping[str, str]) -> Labels:
    """Add external labels an alert does not have (Prometheus' notifier does the same)."""
    missing = {k: v for k, v in external.items() if not labels.get(k)}
    return labels.merge(missing) if missing else labels


def generator_url(external_url: str, expr: str) -> str:
    """Prometheus' generator URL of an alert: the expression's table view on the server."""
    query = urllib.parse.quote_plus(expr)
    return f"{external_url.rstrip('/')}/graph?g0.expr={query}&g0.tab=1"
