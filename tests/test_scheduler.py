"""The scheduler: timeouts, failures as results, cadence, stale markers, self series."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

import pytest

from monitor.model import CheckResult, Labels, Sample, Status, is_stale_nan
from monitor.scheduler import Scheduler, due_time
from monitor.store import Store


@dataclass(frozen=True)
class FakeConfig:
    """The options the scheduler reads of a check."""

    interval: float
    timeout: float
    labels: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


class RecordingCheck:
    """A check that records when it ran and does what it is told."""

    kind = "fake"
    identify_series = False

    def __init__(
        self, name: str, config: FakeConfig, behaviour: str = "ok", samples: tuple[Sample, ...] = ()
    ) -> None:
        self.name = name
        self.config = config
        self.behaviour = behaviour
        self.samples = samples
        self.starts: list[float] = []
        self.closed = False

    async def run(self) -> CheckResult:
        self.starts.append(time.monotonic())
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if self.behaviour == "raise":
            raise ConnectionRefusedError("connection refused by 127.0.0.1:1")
        return CheckResult(Status.OK, "fine", self.samples)

    async def aclose(self) -> None:
        self.closed = True


def value_of(store: Store, name: str, **labels: str) -> float:
    series = store.get(name, Labels(labels))
    assert series is not None, f"no series {name}{labels}"
    value = series.last_value
    assert value is not None
    return value


async def test_a_hanging_check_is_cut_at_its_timeout_while_a_fast_one_keeps_its_cadence() -> None:
    store = Store()
    scheduler = Scheduler(store, start_offset_cap=0)
    hanging = RecordingCheck("hangs", FakeConfig(interval=3.0, timeout=2.0), "hang")
    fast = RecordingCheck("fast", FakeConfig(interval=1.0, timeout=0.5))
    await scheduler.start()
    await scheduler.set_checks([hanging, fast])
    await asyncio.sleep(4.6)
    stats = scheduler.stats()
    await scheduler.stop()

    gaps = [b - a for a, b in zip(fast.starts, fast.starts[1:], strict=False)]
    assert len(fast.starts) >= 4, fast.starts
    assert all(0.8 < gap < 1.25 for gap in gaps), gaps
    result = stats["hangs"][1].last_result
    assert result is not None
    assert result.status is Status.CRITICAL
    assert result.message == "check timed out after 2s"
    assert 1.9 < result.duration < 2.5
    assert stats["hangs"][1].timeouts >= 1
    assert value_of(store, "monitord_check_up", check="hangs", kind="fake") == 0.0
    assert value_of(store, "monitord_check_status", check="hangs", kind="fake") == 2.0
    assert value_of(store, "monitord_check_up", check="fast", kind="fake") == 1.0


async def test_a_check_that_raises_becomes_unknown_with_the_message() -> None:
    store = Store()
    scheduler = Scheduler(store)
    check = RecordingCheck("broken", FakeConfig(interval=60, timeout=5), "raise")
    await scheduler.set_checks([check])
    result = await scheduler.run_check("broken")
    assert result.status is Status.UNKNOWN
    assert result.message == (
        "check failed: ConnectionRefusedError: connection refused by 127.0.0.1:1"
    )
    assert scheduler.stats()["broken"][1].errors == 1
    assert value_of(store, "monitord_check_status", check="broken", kind="fake") == 3.0


async def test_samples_get_the_checks_labels_and_the_run_timestamp() -> None:
    store = Store()
    scheduler = Scheduler(store, clock=lambda: 1_700_000_000.0)
    sample = Sample("thing_bytes", Labels.of(device="sda"), 42.0)
    check = RecordingCheck("t", FakeConfig(60, 5, labels={"team": "web"}), samples=(sample,))
    await scheduler.set_checks([check])
    await scheduler.run_check("t")
    series = store.get("thing_bytes", Labels.of(device="sda", team="web"))
    assert series is not None
    assert series.points() == [(1_700_000_000_000, 42.0)]
    own = store.get(
        "monitord_check_duration_seconds", Labels.of(check="t", kind="fake", team="web")
    )
    assert own is not None


async def test_two_checks_of_a_kind_that_identifies_its_series_never_share_one() -> None:
    store = Store()
    scheduler = Scheduler(store, clock=lambda: 1_700_000_000.0)
    checks = []
    for name, value in (("a", 1.0), ("b", 0.0)):
        check = RecordingCheck(
            name,
            FakeConfig(60, 5),
            samples=(
                Sample("probe_success", Labels(), value),
                Sample("own_check_label", Labels.of(check="kept"), value),
            ),
        )
        check.identify_series = True
        checks.append(check)
    await scheduler.set_checks(checks)
    await scheduler.run_check("a")
    await scheduler.run_check("b")
    assert value_of(store, "probe_success", check="a") == 1.0
    assert value_of(store, "probe_success", check="b") == 0.0
    assert store.get("probe_success", Labels()) is None
    # A sample that names its check already keeps its own label.
    kept = store.get("own_check_label", Labels.of(check="kept"))
    assert kept is not None and kept.points() == [(1_700_000_000_000, 1.0)]


async def test_a_series_that_disappears_gets_a_stale_marker() -> None:
    store = Store()
    now = [1000.0]
    scheduler = Scheduler(store, clock=lambda: now[0])
    check = RecordingCheck(
        "t", FakeConfig(60, 5), samples=(Sample("a", Labels(), 1.0), Sample("b", Labels(), 2.0))
    )
    await scheduler.set_checks([check])
    await scheduler.run_check("t")
    check.samples = (Sample("a", Labels(), 1.5),)
    now[0] += 15
    await scheduler.run_check("t")
    b = store.get("b", Labels())
    assert b is not None and b.last_value is not None
    assert is_stale_nan(b.last_value)
    assert value_of(store, "a") == 1.5


async def test_a_failed_run_marks_the_checks_series_stale() -> None:
    store = Store()
    now = [1000.0]
    scheduler = Scheduler(store, clock=lambda: now[0])
    check = RecordingCheck("t", FakeConfig(60, 5), samples=(Sample("a", Labels(), 1.0),))
    await scheduler.set_checks([check])
    await scheduler.run_check("t")
    check.behaviour = "raise"
    now[0] += 15
    await scheduler.run_check("t")
    assert is_stale_nan(value_of(store, "a"))


async def test_an_unchanged_check_survives_set_checks_and_a_removed_one_is_closed() -> None:
    store = Store()
    scheduler = Scheduler(store)
    keep = RecordingCheck("keep", FakeConfig(60, 5))
    gone = RecordingCheck("gone", FakeConfig(60, 5), samples=(Sample("g", Labels(), 1.0),))
    await scheduler.set_checks([keep, gone])
    await scheduler.run_check("gone")
    again = RecordingCheck("keep", FakeConfig(60, 5))
    await scheduler.set_checks([again])
    assert set(scheduler.stats()) == {"keep"}
    assert gone.closed and again.closed and not keep.closed
    assert is_stale_nan(value_of(store, "g"))
    assert is_stale_nan(value_of(store, "monitord_check_up", check="gone", kind="fake"))


async def test_stop_lets_a_running_check_finish() -> None:
    store = Store()
    scheduler = Scheduler(store, start_offset_cap=0)

    class Slow(RecordingCheck):
        async def run(self) -> CheckResult:
            await asyncio.sleep(0.5)
            return CheckResult(Status.OK, "done")

    slow = Slow("slow", FakeConfig(60, 5))
    await scheduler.start()
    await scheduler.set_checks([slow])
    await asyncio.sleep(0.2)
    assert scheduler.in_flight == 1
    await scheduler.stop(grace=5)
    assert value_of(store, "monitord_check_up", check="slow", kind="fake") == 1.0
    assert slow.closed


async def test_a_scheduler_cannot_start_twice() -> None:
    scheduler = Scheduler(Store())
    await scheduler.start()
    with pytest.raises(Exception, match="cannot start: it is running"):
        await scheduler.start()
    await scheduler.stop()


async def test_at_most_max_concurrent_checks_run_at_once_and_the_wait_is_not_timed() -> None:
    store = Store()
    scheduler = Scheduler(store, max_concurrent=2)
    running: list[int] = [0]
    peak: list[int] = [0]

    class Slow(RecordingCheck):
        async def run(self) -> CheckResult:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.3)
            running[0] -= 1
            return CheckResult(Status.OK, "done")

    # Each run takes 0.3s against a 0.4s timeout; the last two wait 0.3s for a slot,
    # which must not push them past their timeout.
    checks = [Slow(f"slow{i}", FakeConfig(60, 0.4)) for i in range(4)]
    await scheduler.set_checks(checks)
    started = time.monotonic()
    results = await asyncio.gather(*(scheduler.run_check(c.name) for c in checks))
    elapsed = time.monotonic() - started

    assert peak[0] == 2
    assert 0.55 < elapsed < 0.9, elapsed
    assert [r.status for r in results] == [Status.OK] * 4
    assert all(r.duration < 0.4 for r in results), [r.duration for r in results]
    waits = sorted(stats.last_wait for _, stats in scheduler.stats().values())
    assert waits[:2] == [pytest.approx(0, abs=0.05)] * 2
    assert waits[2:] == [pytest.approx(0.3, abs=0.1)] * 2


def test_the_concurrency_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        Scheduler(Store(), max_concurrent=0)


@pytest.mark.parametrize(
    ("interval", "now", "due"),
    [
        pytest.param(10.0, 100.0, 100.0, id="a run fired on its first due time is due then"),
        pytest.param(10.0, 125.3, 120.0, id="a late run is due at the latest grid point"),
        pytest.param(10.0, 99.0, 100.0, id="a run before the first due time is due at the first"),
        pytest.param(0.1, 100.0 + 3 * 0.1, 100.3, id="float error does not move it back"),
    ],
)
def test_the_due_time_is_the_latest_point_of_the_interval_grid(
    interval: float, now: float, due: float
) -> None:
    assert due_time(100.0, interval, now) == pytest.approx(due)


async def test_scheduled_runs_record_their_delay_from_the_due_time_and_the_slot_wait() -> None:
    scheduler = Scheduler(Store(), start_offset_cap=0, max_concurrent=1)

    class Hog(RecordingCheck):
        async def run(self) -> CheckResult:
            await asyncio.sleep(0.4)
            return CheckResult(Status.OK, "done")

    hog = Hog("hog", FakeConfig(interval=3600, timeout=1.0))
    ticker = RecordingCheck("ticker", FakeConfig(interval=0.5, timeout=1.0))
    await scheduler.set_checks([ticker])
    await scheduler.start()
    await asyncio.sleep(1.2)  # runs at 0, 0.5 and 1.0, each on time
    on_time = dataclasses.replace(scheduler.stats()["ticker"][1])
    on_time.delay_counts = list(on_time.delay_counts)
    await scheduler.set_checks([ticker, hog])  # the hog is due at once and takes the slot
    await asyncio.sleep(0.6)
    stats = scheduler.stats()
    await scheduler.stop()

    assert on_time.runs == sum(on_time.delay_counts) == 3
    assert 0 <= on_time.delay_seconds_total < 0.1 * 3, on_time
    ticker_stats = stats["ticker"][1]
    assert ticker_stats.runs == sum(ticker_stats.delay_counts) == 4
    # The run due at 1.5 s waited for the hog's slot until about 1.6 s.
    assert 0.05 < ticker_stats.last_delay < 0.25, ticker_stats.last_delay
    assert ticker_stats.last_delay >= ticker_stats.last_wait
    assert sum(stats["hog"][1].delay_counts) == 1


async def test_runs_outside_the_schedule_record_no_delay() -> None:
    scheduler = Scheduler(Store())
    check = RecordingCheck("manual", FakeConfig(interval=60, timeout=1.0))
    await scheduler.set_checks([check])
    await scheduler.run_check("manual")
    stats = scheduler.stats()["manual"][1]
    assert stats.runs == 1
    assert sum(stats.delay_counts) == 0


async def test_next_run_is_the_next_due_time_of_a_scheduled_check() -> None:
    scheduler = Scheduler(Store(), start_offset_cap=0)
    check = RecordingCheck("ticker", FakeConfig(interval=60, timeout=1.0))
    await scheduler.set_checks([check])
    assert scheduler.next_run("ticker") is None  # not started
    await scheduler.start()
    await asyncio.sleep(0.2)  # the first run, at once
    next_run = scheduler.next_run("ticker")
    missing = scheduler.next_run("other")
    await scheduler.stop()

    assert len(check.starts) == 1
    assert next_run is not None
    assert 59 < next_run - time.time() <= 60
    assert missing is None


async def test_an_interval_job_runs_whatever_callable_returns_its_coroutine() -> None:
    """A lambda or partial returning a coroutine is awaited on the loop at every interval,
    not handed to a thread by APScheduler and dropped (the rule groups' jobs are such)."""
    scheduler = Scheduler(Store())
    runs: list[str] = []

    async def tick(name: str) -> None:
        runs.append(name)

    await scheduler.start()
    scheduler.add_interval_job("lambda", lambda: tick("lambda"), 0.2, time.time())
    await asyncio.sleep(0.7)
    await scheduler.stop()
    assert runs.count("lambda") >= 3, runs
