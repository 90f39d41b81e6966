"""Run every check at its own interval under its timeout, and store what it returns.

APScheduler's ``AsyncIOScheduler`` drives one job per check (``max_instances=1``,
``coalesce=True``), first run offset by a stable per-check fraction of the interval
so checks do not all fire together. Each run is wrapped so that nothing a check
does (raise, hang, return garbage) reaches the scheduler: it becomes a result.

For every run the store receives the check's samples (configured labels added,
``check="<name>"`` added to those without a ``check`` label when the kind asks for
it, stamped with the run's start time), ``monitord_check_up``,
``monitord_check_status`` and ``monitord_check_duration_seconds``, and a
staleness marker for every series the previous run produced and this one did
not, as Prometheus does for scrape targets. After each write, the ``on_write``
hook (if set) is told what was written; rules use it to evaluate on arrival.

Other periodic work (rule groups, the self-scrape) can run on the same APScheduler
through :meth:`Scheduler.add_interval_job`; samples that are not a check's can be
stored through :meth:`Scheduler.write`, which calls the ``on_write`` hook too.

At most ``max_concurrent`` check runs go on at once (``global.max_concurrent_checks``,
64 by default); a run that finds every slot taken waits for one. The wait does not
count against the check's timeout, as a Prometheus scrape's timeout starts when the
request leaves, and blackbox's when the probe starts: the timeout is the target's
budget, not the daemon's. The run's samples are stamped when it got its slot, and the
wait is kept in :class:`CheckStats` (``last_wait``, ``wait_seconds_total``).

For each scheduled run, :class:`CheckStats` also keeps the scheduling delay: from the
run's due time (the latest point of the check's interval grid at or before APScheduler
fired it) to the moment it got its slot, so APScheduler's lateness plus the slot wait.
It is counted in the buckets of :data:`DELAY_BUCKETS`, which the exporter adds up over
the checks as the ``monitord_check_schedule_delay_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.errors import LifecycleError
from monitor.log import get_logger
from monitor.model import (
    STALE_NAN,
    CheckResult,
    Labels,
    MetricMetadata,
    MetricType,
    Sample,
    Status,
)
from monitor.store import Store

__all__ = [
    "CHECK_METADATA",
    "DEFAULT_MAX_CONCURRENT",
    "DELAY_BUCKETS",
    "CheckStats",
    "Schedulable",
    "Scheduler",
    "WriteHook",
    "due_time",
]

log = get_logger("scheduler")

CHECK_METADATA: Mapping[str, MetricMetadata] = {
    "monitord_check_up": MetricMetadata(
        MetricType.GAUGE, "1 if the check's last run was OK or WARNING, 0 otherwise."
    ),
    "monitord_check_status": MetricMetadata(
        MetricType.GAUGE, "Status of the check's last run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
    ),
    "monitord_check_duration_seconds": MetricMetadata(
        MetricType.GAUGE, "How long the check's last run took."
    ),
}

DEFAULT_MAX_CONCURRENT = 64
"""How many check runs may go on at once unless configured otherwise."""

DELAY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
"""Upper bounds (seconds) of the scheduling-delay buckets; a last one counts the rest."""

SeriesKey = tuple[str, Labels]

WriteHook = Callable[[Sequence[Sample], int], None]
"""Called after samples were stored: the samples, and the timestamp (ms) of those without one."""


class Schedulable(Protocol):
    """What the scheduler needs of a check; :class:`checks.base.Check` satisfies it.

    ``config`` must have ``interval``, ``timeout`` (seconds), ``labels`` and
    ``enabled``. Taking a protocol keeps ``monitor`` from importing ``checks``.
    """

    @property
    def name(self) -> str:
        """The check's unique name."""

    @property
    def kind(self) -> str:
        """The check's kind."""

    @property
    def config(self) -> Any:
        """The check's validated options."""

    @property
    def identify_series(self) -> bool:
        """Whether the scheduler adds ``check="<name>"`` to samples that have no ``check`` label."""

    async def run(self) -> CheckResult:
        """Probe once."""

    async def aclose(self) -> None:
        """Release resources."""


@dataclass(slots=True)
class CheckStats:
    """Counters and the last result of one check, for the exporter and the API."""

    runs: int = 0
    timeouts: int = 0
    errors: int = 0
    last_result: CheckResult | None = None
    last_run: float | None = None
    last_wait: float = 0.0
    wait_seconds_total: float = 0.0
    last_delay: float = 0.0
    delay_seconds_total: float = 0.0
    delay_counts: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))

    def observe_delay(self, delay: float) -> None:
        """Count one scheduled run that got its slot ``delay`` seconds after it was due."""
        self.last_delay = delay
        self.delay_seconds_total += delay
        self.delay_counts[bisect.bisect_left(DELAY_BUCKETS, delay)] += 1


@dataclass(slots=True)
class _Entry:
    check: Schedulable
    labels: Labels
    check_labels: Labels
    identify: bool = False
    stats: CheckStats = field(default_factory=CheckStats)
    previous: set[SeriesKey] = field(default_factory=set)
    first_due: float = 0.0  # epoch seconds of the job's first run, on APScheduler's clock


def start_offset(name: str, interval: float, cap: float = 15.0) -> float:
    """A stable offset in ``[0, min(interval, cap))`` derived from the check's name."""
    digest = hashlib.sha256(name.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * min(interval, cap)


def due_time(first: float, interval: float, now: float) -> float:
    """The latest point of the grid ``first + k * interval`` (k >= 0) at or before ``now``."""
    # APScheduler fires at or after a due time; the nudge keeps float error from
    # putting a run that fired on time one interval back.
    k = math.floor((now - first) / interval + 1e-9)
    return first + max(k, 0) * interval


class Scheduler:
    """Runs checks on their intervals and feeds their samples to the store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        start_offset_cap: float = 15.0,
        on_write: WriteHook | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    ) -> None:
        self._store = store
        self.on_write = on_write
        self._clock = clock
        self._monotonic = monotonic
        self._offset_cap = start_offset_cap
        self._entries: dict[str, _Entry] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._aps: AsyncIOScheduler | None = None
        self._state = "new"
        self._max_concurrent = 0
        self._slots = asyncio.Semaphore(1)
        self.max_concurrent = max_concurrent
        for name, meta in CHECK_METADATA.items():
            store.set_metadata(name, meta)

    @property
    def max_concurrent(self) -> int:
        """How many check runs may go on at once."""
        return self._max_concurrent

    @max_concurrent.setter
    def max_concurrent(self, limit: int) -> None:
        # Runs holding a slot of the old semaphore release it when they end; new runs
        # queue on the new one, so a reload changes the limit without waiting.
        if limit < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {limit}")
        if limit != self._max_concurrent:
            self._max_concurrent = limit
            self._slots = asyncio.Semaphore(limit)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the APScheduler loop; checks set before or after start are scheduled."""
        if self._state != "new":
            raise LifecycleError(f"scheduler cannot start: it is {self._state}")
        self._aps = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        self._aps.start()
        self._state = "running"
        for entry in self._entries.values():
            self._add_job(entry)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop starting runs, let in-flight runs finish (up to ``grace``), close every check."""
        if self._state != "running":
            raise LifecycleError(f"scheduler cannot stop: it is {self._state}")
        self._state = "stopping"
        assert self._aps is not None
        self._aps.pause()
        if self._inflight:
            log.info("waiting for %d running checks to finish", len(self._inflight))
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._aps.shutdown(wait=False)
        await asyncio.sleep(0)  # APScheduler shuts down on the loop's next turn
        entries, self._entries = list(self._entries.values()), {}
        for entry in reversed(entries):
            await _close_quietly(entry.check)
        self._state = "stopped"

    # --- the set of checks ----------------------------------------------------------------

    async def set_checks(self, checks: Iterable[Schedulable]) -> None:
        """Make ``checks`` the scheduled set: new ones start, gone or changed ones are replaced.

        A check whose configuration is unchanged keeps running undisturbed (its
        cadence and series continue). Removed checks get staleness markers for
        their series and are closed.
        """
        wanted = {check.name: check for check in checks if check.config.enabled}
        for name in list(self._entries):
            old = self._entries[name]
            new = wanted.pop(name, None)
            if new is not None and new.config == old.check.config:
                await _close_quietly(new)  # the running instance stays
                continue
            await self._remove(name)
            if new is None:
                self._mark_stale(old)
            else:
                # The replacement inherits the series so that the ones it no longer
                # produces are marked stale after its first run.
                self._add(new).previous = old.previous
        for check in wanted.values():
            self._add(check)

    def _add(self, check: Schedulable) -> _Entry:
        labels = Labels(check.config.labels)
        entry = _Entry(
            check=check,
            labels=labels,
            check_labels=labels.merge({"check": check.name, "kind": check.kind}),
            identify=check.identify_series,
        )
        self._entries[check.name] = entry
        if self._state == "running":
            self._add_job(entry)
        return entry

    async def _remove(self, name: str) -> None:
        entry = self._entries.pop(name)
        if self._aps is not None and self._aps.get_job(name) is not None:
            self._aps.remove_job(name)
        await _close_quietly(entry.check)

    def _mark_stale(self, entry: _Entry) -> None:
        now = round(self._clock() * 1000)
        if entry.stats.last_run is not None:  # a marker must come after the last sample
            now = max(now, round(entry.stats.last_run * 1000) + 1)
        stale = [Sample(n, lbl, STALE_NAN) for n, lbl in entry.previous]
        stale += [Sample(n, entry.check_labels, STALE_NAN) for n in CHECK_METADATA]
        self._store.append(stale, now)
        self._written(stale, now)

    def write(self, samples: Sequence[Sample], timestamp: int) -> None:
        """Store samples that are not a check's (monitord's self-scrape) the way a check
        run's are stored: appended at ``timestamp`` (ms), then the ``on_write`` hook."""
        self._store.append(samples, timestamp)
        self._written(samples, timestamp)

    def _written(self, samples: Sequence[Sample], timestamp: int) -> None:
        if self.on_write is None:
            return
        try:
            self.on_write(samples, timestamp)
        except Exception:  # a hook's failure must not cost the check its run
            log.exception("the on-write hook failed")

    def _add_job(self, entry: _Entry) -> None:
        assert self._aps is not None
        interval: float = entry.check.config.interval
        offset = start_offset(entry.check.name, interval, self._offset_cap)
        first = datetime.now(UTC) + timedelta(seconds=offset)
        entry.first_due = first.timestamp()
        self._aps.add_job(
            self._run_job,
            IntervalTrigger(seconds=interval, start_date=first, timezone=UTC),
            args=(entry.check.name,),
            id=entry.check.name,
            name=f"check {entry.check.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=first,
        )

    # --- other periodic jobs ----------------------------------------------------------------

    def add_interval_job(
        self, job_id: str, func: Callable[[], Awaitable[None]], interval: float, first: float
    ) -> None:
        """Run ``func`` every ``interval`` seconds from the epoch time ``first``, at most one
        at a time, late runs coalesced. ``job_id`` must not be a check's name."""
        if self._aps is None or self._state != "running":
            raise LifecycleError(f"cannot add job {job_id!r}: the scheduler is {self._state}")
        if job_id in self._entries:
            raise ValueError(f"job id {job_id!r} is a check's name")
        start = datetime.fromtimestamp(first, UTC)

        async def run() -> None:  # a coroutine function whatever ``func`` is, or APScheduler
            await func()  # would run it in a thread and drop the coroutine it returns

        self._aps.add_job(
            run,
            IntervalTrigger(seconds=interval, start_date=start, timezone=UTC),
            id=job_id,
            name=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=start,
            replace_existing=True,
        )

    def remove_job(self, job_id: str) -> None:
        """Stop running the job added as ``job_id`` (nothing if there is none)."""
        if self._aps is not None and self._aps.get_job(job_id) is not None:
            self._aps.remove_job(job_id)

    # --- running --------------------------------------------------------------------------

    async def _run_job(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None or self._state != "running":
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        # On APScheduler's clock (datetime.now), which its due times are on.
        now = datetime.now(UTC).timestamp()
        late = now - due_time(entry.first_due, entry.check.config.interval, now)
        try:
            await self.run_once(entry, late=late)
        finally:
            self._inflight.discard(task)

    async def run_check(self, name: str) -> CheckResult:
        """Run the named check now, outside its schedule (for tests and the API)."""
        return await self.run_once(self._entries[name])

    async def run_once(self, entry: _Entry, *, late: float | None = None) -> CheckResult:
        """One run of one check: in a free slot, bounded by its timeout, never raising.

        ``late``: for a scheduled run, how long after its due time it was fired; the
        scheduling delay recorded is that plus the wait for a slot.
        """
        queued = self._monotonic()
        async with self._slots:
            started = self._monotonic()
            entry.stats.last_wait = started - queued
            entry.stats.wait_seconds_total += entry.stats.last_wait
            if late is not None:
                entry.stats.observe_delay(late + entry.stats.last_wait)
            return await self._run_in_slot(entry, started)

    async def _run_in_slot(self, entry: _Entry, started: float) -> CheckResult:
        check = entry.check
        timeout: float = check.config.timeout
        started_wall = self._clock()
        try:
            async with asyncio.timeout(timeout):
                result = await check.run()
            if not isinstance(result, CheckResult):
                raise TypeError(f"run() returned {type(result).__name__}, not CheckResult")
        except TimeoutError:
            entry.stats.timeouts += 1
            result = CheckResult(Status.CRITICAL, f"check timed out after {timeout:g}s")
        except Exception as exc:  # a check's failure is a result, never the scheduler's problem
            entry.stats.errors += 1
            log.debug("check %s raised", check.name, exc_info=True)
            result = CheckResult(Status.UNKNOWN, f"check failed: {_describe(exc)}")
        duration = self._monotonic() - started
        result = dataclasses.replace(result, duration=duration)
        self._record(entry, result, round(started_wall * 1000))
        return result

    def _record(self, entry: _Entry, result: CheckResult, timestamp: int) -> None:
        if self._entries.get(entry.check.name) is not entry:
            return  # removed or replaced while it ran: its series were already dealt with
        previous = entry.stats.last_result
        entry.stats.runs += 1
        entry.stats.last_result = result
        entry.stats.last_run = timestamp / 1000
        if previous is None or previous.status != result.status:
            level = logging.INFO if result.status is Status.OK else logging.WARNING
            log.log(
                level,
                "check %s is %s: %s",
                entry.check.name,
                result.status.name,
                result.message,
                extra={"check": entry.check.name, "status": result.status.name},
            )
        for name, meta in result.metadata.items():
            self._store.set_metadata(name, meta)
        samples = _with_labels(result.samples, entry.labels)
        if entry.identify:
            samples = _identified(samples, entry.check.name)
        current = {(s.name, s.labels) for s in samples}
        stale = [Sample(n, lbl, STALE_NAN) for n, lbl in entry.previous - current]
        entry.previous = current
        own = entry.check_labels
        samples.append(Sample("monitord_check_up", own, 1.0 if result.status.is_up else 0.0))
        samples.append(Sample("monitord_check_status", own, float(result.status)))
        samples.append(Sample("monitord_check_duration_seconds", own, result.duration))
        written = samples + stale
        self._store.append(written, timestamp)
        self._written(written, timestamp)

    # --- views ----------------------------------------------------------------------------

    def stats(self) -> dict[str, tuple[str, CheckStats]]:
        """Per check name: its kind and its counters and last result."""
        return {name: (e.check.kind, e.stats) for name, e in self._entries.items()}

    def next_run(self, name: str) -> float | None:
        """When the check ``name`` is next due (epoch seconds); None if it is not scheduled."""
        if self._aps is None or name not in self._entries:
            return None
        job = self._aps.get_job(name)
        if job is None or job.next_run_time is None:
            return None
        when: datetime = job.next_run_time
        return when.timestamp()

    @property
    def in_flight(self) -> int:
        """How many check runs are going on right now."""
        return len(self._inflight)

    @property
    def jobs(self) -> int:
        """How many checks are scheduled."""
        return len(self._entries)


def _identified(samples: list[Sample], name: str) -> list[Sample]:
    """The samples with ``check="<name>"`` added where they have no ``check`` label."""
    mark = {"check": name}
    return [
        s if "check" in s.labels else Sample(s.name, s.labels.merge(mark), s.value, s.timestamp)
        for s in samples
    ]


def _with_labels(samples: Iterable[Sample], extra: Labels) -> list[Sample]:
    if not extra:
        return list(samples)
    return [Sample(s.name, s.labels.merge(extra), s.value, s.timestamp) for s in samples]


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _close_quietly(check: Any) -> None:
    try:
        await check.aclose()
    except Exception:
        log.warning("closing check %s failed", getattr(check, "name", check), exc_info=True)
