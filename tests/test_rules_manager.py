"""The rule manager: slots and missed iterations, reloads, hand-off, restarts, arrival."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitor.model import Alert, AlertState, CheckResult, Labels, Sample, Status, is_stale_nan
from monitor.query import Engine, selectors
from monitor.scheduler import Scheduler
from monitor.store import Store
from rules.alerting import AlertingRule, ForState
from rules.group import Group
from rules.manager import ManagerOptions, RuleManager
from rules.query import engine_query_func
from rules.recording import RecordingRule
from rules.state import AlertStateStore

T0 = 1_700_000_000_000
S = 1000
M = 60 * S


def plain(text: str, labels: Mapping[str, str], value: float) -> str:
    return text


class Clock:
    """Wall time that tests move by hand."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@dataclass
class Jobs:
    """Records the interval jobs the manager schedules, as the real scheduler would take them."""

    added: dict[str, tuple[float, float]] = field(default_factory=dict)
    funcs: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def add_interval_job(
        self, job_id: str, func: Callable[[], Awaitable[None]], interval: float, first: float
    ) -> None:
        self.added[job_id] = (interval, first)
        self.funcs[job_id] = func

    def remove_job(self, job_id: str) -> None:
        self.removed.append(job_id)
        self.added.pop(job_id, None)


class Sink:
    """Records every batch of alerts handed over."""

    def __init__(self) -> None:
        self.batches: list[list[Alert]] = []

    def send(self, alerts: Sequence[Alert]) -> None:
        self.batches.append(list(alerts))


def down_rule(hold: int = 0, name: str = "Down", **labels: str) -> AlertingRule:
    return AlertingRule(name, "up == 0", expander=plain, hold=hold, labels=labels)


def make_manager(store: Store, clock: Clock, **kwargs: object) -> tuple[RuleManager, Jobs, Sink]:
    jobs, sink = Jobs(), Sink()
    manager = RuleManager(
        store,
        engine_query_func(Engine(store)),
        scheduler=jobs,
        sink=sink,
        selectors=selectors,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )
    return manager, jobs, sink


def up(store: Store, ts: int, value: float = 0.0, instance: str = "a") -> None:
    store.append([Sample("up", Labels.of(instance=instance), value)], ts)


def only_alert(manager: RuleManager) -> Alert:
    (alert,) = manager.active_alerts()
    return alert


# --- scheduling -------------------------------------------------------------------------------


async def test_a_group_is_scheduled_at_its_slots_and_missed_slots_are_counted() -> None:
    store, clock = Store(), Clock()
    manager, jobs, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 15 * S, [down_rule()])
    manager.update([group])
    await manager.start()
    ((job_id, (interval, first)),) = jobs.added.items()
    assert job_id == "rule group f.yml;g"
    assert interval == 15.0
    assert first * 1000 == group.eval_timestamp(T0) + 15 * S

    clock.ms = round(first * 1000) + 3  # the job runs a little late
    await jobs.funcs[job_id]()
    assert group.stats.last_eval_timestamp == round(first * 1000)
    assert (group.stats.iterations_total, group.stats.iterations_missed) == (1, 0)

    clock.ms += 50 * S  # three slots go by while something blocks
    await jobs.funcs[job_id]()
    assert group.stats.last_eval_timestamp == round(first * 1000) + 45 * S
    assert (group.stats.iterations_total, group.stats.iterations_missed) == (4, 2)
    await manager.stop()
    assert jobs.added == {}


async def test_a_reload_keeps_unchanged_groups_and_the_state_of_unchanged_rules() -> None:
    store, clock = Store(), Clock()
    manager, jobs, _ = make_manager(store, clock)
    unchanged = Group("a", "f.yml", 15 * S, [down_rule(hold=M)])
    changing = Group("b", "f.yml", 15 * S, [down_rule(hold=M, name="DownB")])
    manager.update([unchanged, changing])
    await manager.start()
    up(store, T0 - S)
    manager.evaluate(unchanged.key, T0)
    manager.evaluate(changing.key, T0)

    same_again = Group("a", "f.yml", 15 * S, [down_rule(hold=M)])
    changed = Group(
        "b", "f.yml", 15 * S, [RecordingRule("x", "up"), down_rule(hold=M, name="DownB")]
    )
    manager.update([same_again, changed])
    assert manager.group(unchanged.key) is unchanged
    assert manager.group(changing.key) is changed
    assert jobs.removed == [f"rule group {changing.key}"]
    assert set(jobs.added) == {f"rule group {unchanged.key}", f"rule group {changing.key}"}
    (kept,) = changed.alerting_rules()[0].active_alerts()
    assert kept.active_at == T0

    up(store, T0 + M - S)
    manager.evaluate(changed.key, T0 + M)
    (fired,) = changed.alerting_rules()[0].active_alerts()
    assert fired.state is AlertState.FIRING
    await manager.stop()


def test_a_removed_groups_series_get_staleness_markers() -> None:
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 15 * S, [RecordingRule("copy", "up")])
    manager.update([group])
    up(store, T0 - S)
    manager.evaluate(group.key, T0)
    clock.ms = T0 + 5 * S
    manager.update([])
    series = store.get("copy", Labels.of(instance="a"))
    assert series is not None
    assert series.points()[0] == (T0, 0.0)
    assert is_stale_nan(series.points()[-1][1])


def test_duplicate_groups_are_refused() -> None:
    manager, _, _ = make_manager(Store(), Clock())
    with pytest.raises(ValueError, match=r"duplicate rule groups: f\.yml;g"):
        manager.update([Group("g", "f.yml", S, []), Group("g", "f.yml", S, [])])


def test_alerts_are_handed_over_with_external_labels_that_they_lack() -> None:
    store, clock = Store(), Clock()
    options = ManagerOptions(external_labels={"dc": "east", "instance": "not this"})
    manager, _, sink = make_manager(store, clock, options=options)
    group = Group("g", "f.yml", 15 * S, [down_rule()])
    manager.update([group])
    up(store, T0 - S)
    manager.evaluate(group.key, T0)
    ((sent,),) = sink.batches
    assert sent.labels == Labels.of(alertname="Down", dc="east", instance="a")
    assert only_alert(manager).labels == Labels.of(alertname="Down", instance="a")
    assert (sent.starts_at, sent.ends_at) == (T0, T0 + 4 * M)


def test_alerts_are_handed_over_with_prometheus_generator_url() -> None:
    store, clock = Store(), Clock()
    options = ManagerOptions(external_url="http://mon.example:9090/")
    manager, _, sink = make_manager(store, clock, options=options)
    group = Group("g", "f.yml", 15 * S, [down_rule()])
    manager.update([group])
    up(store, T0 - S)
    manager.evaluate(group.key, T0)
    ((sent,),) = sink.batches
    assert sent.generator_url == "http://mon.example:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1"


# --- restarts -----------------------------------------------------------------------------------


def run_until(manager: RuleManager, store: Store, clock: Clock, key: str, end: int) -> None:
    """Evaluate the group every 15 s while ``up`` stays 0, until ``end``."""
    while clock.ms <= end:
        up(store, clock.ms - S)
        manager.evaluate(key, clock.ms)
        clock.ms += 15 * S
    clock.ms -= 15 * S


def restart(path: Path, clock: Clock, hold: int, downtime: int) -> tuple[RuleManager, Store, Group]:
    store = Store()
    clock.ms += downtime
    manager, _, _ = make_manager(store, clock, saved=AlertStateStore(path).load())
    group = Group("g", "f.yml", 15 * S, [down_rule(hold=hold)])
    manager.update([group])
    return manager, store, group


def test_a_firing_alert_fires_again_right_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "monitord.db"
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 15 * S, [down_rule(hold=10 * M)])
    manager.update([group])
    run_until(manager, store, clock, group.key, T0 + 12 * M)
    assert only_alert(manager).state is AlertState.FIRING
    AlertStateStore(path).save(manager.for_states())

    manager, store, group = restart(path, clock, hold=10 * M, downtime=2 * M)
    start = clock.ms
    run_until(manager, store, clock, group.key, start + 15 * S)  # two evaluations: pending
    alert = only_alert(manager)
    assert alert.state is AlertState.PENDING
    assert alert.active_at == T0  # restored after the second evaluation
    run_until(manager, store, clock, group.key, start + 30 * S)
    assert only_alert(manager).state is AlertState.FIRING


def test_a_pending_alert_does_not_restart_its_for_clock(tmp_path: Path) -> None:
    path = tmp_path / "monitord.db"
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 15 * S, [down_rule(hold=30 * M)])
    manager.update([group])
    run_until(manager, store, clock, group.key, T0 + 20 * M)
    down_at = clock.ms
    AlertStateStore(path).save(manager.for_states())

    manager, store, group = restart(path, clock, hold=30 * M, downtime=5 * M)
    run_until(manager, store, clock, group.key, clock.ms + 15 * S)
    restored_at = clock.ms
    # 20 minutes were spent pending; the 5 minutes down are added to active_at.
    assert only_alert(manager).active_at == T0 + (restored_at - down_at)
    run_until(manager, store, clock, group.key, T0 + 30 * M + (restored_at - down_at) - S)
    assert only_alert(manager).state is AlertState.PENDING
    run_until(manager, store, clock, group.key, clock.ms + 15 * S)
    assert only_alert(manager).state is AlertState.FIRING


def test_nothing_is_restored_after_the_outage_tolerance(tmp_path: Path) -> None:
    path = tmp_path / "monitord.db"
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 15 * S, [down_rule(hold=30 * M)])
    manager.update([group])
    run_until(manager, store, clock, group.key, T0 + 20 * M)
    AlertStateStore(path).save(manager.for_states())

    manager, store, group = restart(path, clock, hold=30 * M, downtime=61 * M)
    start = clock.ms
    run_until(manager, store, clock, group.key, start + 15 * S)
    assert only_alert(manager).active_at == start


def test_a_restart_before_restoring_passes_the_saved_state_on(tmp_path: Path) -> None:
    path = tmp_path / "monitord.db"
    saved = [ForState(Labels.of(alertname="Down", instance="a"), T0, T0 // 1000 - 600)]
    AlertStateStore(path).save(saved)
    manager, store, group = restart(path, Clock(), hold=30 * M, downtime=M)
    up(store, T0 + M - S)
    manager.evaluate(group.key, T0 + M)  # one evaluation: not restored yet
    assert manager.for_states() == saved
    assert AlertStateStore(path).load() == saved


async def test_with_on_arrival_the_restore_waits_for_the_first_samples(tmp_path: Path) -> None:
    """The store starts empty: two evaluations before any check has written its samples
    must not use up the restore, or a pending alert would restart its for clock."""
    path = tmp_path / "monitord.db"
    saved = [ForState(Labels.of(alertname="Down", instance="a"), T0, T0 // 1000 - 600)]
    AlertStateStore(path).save(saved)
    manager, store, group = restart(path, Clock(), hold=30 * M, downtime=M)
    await manager.start()
    manager.evaluate(group.key, T0 + M)
    manager.evaluate(group.key, T0 + M + 15 * S)  # two evaluations, no data yet
    assert manager.for_states() == saved  # still waiting to restore
    up(store, T0 + M + 20 * S)
    manager.samples_written([Sample("up", Labels.of(instance="a"), 0.0)], T0 + M + 20 * S)
    await asyncio.sleep(0.05)
    await manager.stop()
    assert only_alert(manager).active_at < T0 + M  # restored: the pending time counts


# --- on arrival ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    """The options the scheduler reads of a check."""

    interval: float = 3600.0
    timeout: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


class Probe:
    """A check kind of this test: reports the target up or down as told."""

    kind = "probe"
    config = ProbeConfig()
    identify_series = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True

    async def run(self) -> CheckResult:
        value = 1.0 if self.healthy else 0.0
        return CheckResult(Status.OK, "", (Sample("probe_success", Labels(), value),))

    async def aclose(self) -> None:
        pass


async def test_a_failing_check_makes_its_alert_pending_within_100_ms() -> None:
    store = Store()
    scheduler = Scheduler(store, start_offset_cap=0)
    manager = RuleManager(
        store, engine_query_func(Engine(store)), scheduler=scheduler, selectors=selectors
    )
    scheduler.on_write = manager.samples_written
    pending = asyncio.Event()
    manager.on_evaluated = lambda group: pending.set() if rule.active_alerts() else None
    rule = AlertingRule("ProbeFailed", "probe_success == 0", expander=plain, hold=5 * M)
    other = Group("other", "f.yml", 3600 * S, [RecordingRule("x", "node_load1")])
    manager.update([Group("probes", "f.yml", 3600 * S, [rule]), other])
    probe = Probe("web")
    await scheduler.start()
    await scheduler.set_checks([probe])
    await manager.start()
    try:
        await scheduler.run_check("web")
        await asyncio.sleep(0.002)  # the store keeps one sample per series and millisecond
        probe.healthy = False
        await scheduler.run_check("web")
        written = time.monotonic()
        async with asyncio.timeout(0.1):
            await pending.wait()
        latency = time.monotonic() - written
    finally:
        await manager.stop()
        await scheduler.stop()
    (alert,) = rule.active_alerts()
    assert alert.state is AlertState.PENDING
    series = store.get("probe_success", Labels())
    assert series is not None and alert.active_at == series.last_timestamp  # sample time
    assert latency < 0.1
    assert other.stats.iterations_total == 0  # a group that selects nothing written stays put


async def test_a_burst_of_arrivals_runs_the_group_at_once_and_then_once_more() -> None:
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock, options=ManagerOptions(arrival_window=0.05))
    second = asyncio.Event()
    manager.on_evaluated = lambda g: second.set() if g.stats.arrival_iterations_total == 2 else None
    group = Group("g", "f.yml", 3600 * S, [down_rule()])
    manager.update([group])
    await manager.start()
    try:
        for i in range(5):
            up(store, T0 + i)
            manager.samples_written([Sample("up", Labels.of(instance="a"), 0.0)], T0 + i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert group.stats.arrival_iterations_total == 1
        assert group.stats.last_eval_timestamp == T0 + 4
        for i in range(5, 10):
            up(store, T0 + i)
            manager.samples_written([Sample("up", Labels.of(instance="a"), 0.0)], T0 + i)
            await asyncio.sleep(0.001)
        assert group.stats.arrival_iterations_total == 1  # waiting out the window
        async with asyncio.timeout(1):
            await second.wait()
        await asyncio.sleep(0.1)
        assert group.stats.arrival_iterations_total == 2
        assert group.stats.last_eval_timestamp == T0 + 9
    finally:
        await manager.stop()


async def test_on_arrival_evaluation_can_be_switched_off() -> None:
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock, options=ManagerOptions(on_arrival=False))
    group = Group("g", "f.yml", 3600 * S, [down_rule()])
    manager.update([group])
    await manager.start()
    up(store, T0)
    manager.samples_written([Sample("up", Labels.of(instance="a"), 0.0)], T0)
    await asyncio.sleep(0.01)
    assert group.stats.iterations_total == 0
    await manager.stop()


async def test_an_arrival_never_moves_the_group_time_backwards() -> None:
    store, clock = Store(), Clock()
    manager, _, _ = make_manager(store, clock)
    group = Group("g", "f.yml", 3600 * S, [down_rule()])
    manager.update([group])
    await manager.start()
    up(store, T0 - S)
    manager.evaluate(group.key, T0 + 10 * S)
    manager.samples_written([Sample("up", Labels.of(instance="a"), 0.0)], T0 - S)
    await asyncio.sleep(0.01)
    assert group.stats.last_eval_timestamp == T0 + 10 * S + 1
    await manager.stop()


def test_the_state_file_is_replaced_as_a_whole_and_errors_are_translated(tmp_path: Path) -> None:
    from rules.state import AlertStateError

    state = AlertStateStore(tmp_path / "monitord.db")
    assert state.load() == []  # no file yet
    first = ForState(Labels.of(alertname="A"), T0, T0 // 1000)
    second = ForState(Labels.of(alertname="B", x="1"), T0 + S, T0 // 1000 - 5)
    state.save([first, second])
    state.save([second])
    assert state.load() == [second]
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AlertStateError, match=r"cannot read alert state in .*dir\.db"):
        AlertStateStore(tmp_path / "dir.db").load()
