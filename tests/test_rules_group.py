"""Rule groups: one timestamp, rules in order, stale markers, failures, ALERTS in the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from monitor.model import Alert, AlertState, Labels, Sample, is_stale_nan
from monitor.query import Engine, Vector
from monitor.store import Store
from rules.alerting import AlertingRule
from rules.group import EvalContext, Group, build_group
from rules.query import engine_query_func
from rules.recording import RecordingRule
from rules.rule import RuleHealth

T0 = 1_700_000_000_000
S = 1000
M = 60 * S


def plain(text: str, labels: Mapping[str, str], value: float) -> str:
    return text


def alert(name: str, expr: str, **kwargs: object) -> AlertingRule:
    return AlertingRule(name, expr, expander=plain, restored=True, **kwargs)  # type: ignore[arg-type]


class Notified:
    """Records what the group hands over for sending."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Alert]]] = []

    def __call__(self, expr: str, alerts: Sequence[Alert]) -> None:
        self.calls.append((expr, list(alerts)))


def context(store: Store, notified: Notified | None = None) -> EvalContext:
    return EvalContext(
        query=engine_query_func(Engine(store)),
        store=store,
        notify=notified or Notified(),
        clock=lambda: T0 / 1000,
    )


def instant(store: Store, expr: str, ts: int) -> list[tuple[dict[str, str], float]]:
    value = Engine(store).instant(expr, ts)
    assert isinstance(value, Vector)
    return sorted(((dict(s.labels), s.value) for s in value), key=lambda p: sorted(p[0].items()))


def up(store: Store, ts: int, **instances: float) -> None:
    store.append([Sample("up", Labels.of(instance=i), v) for i, v in instances.items()], ts)


def test_a_recording_rule_feeds_a_later_rule_at_the_same_timestamp() -> None:
    store = Store()
    up(store, T0 - S, a=0.0, b=0.0)
    group = Group(
        "g",
        "f.yml",
        15 * S,
        [RecordingRule("instances:up:sum", "sum(up)"), alert("NoneUp", "instances:up:sum == 0")],
    )
    group.run_iteration(T0, context(store))
    (fired,) = group.alerting_rules()[0].active_alerts()
    assert fired.state is AlertState.FIRING
    assert fired.active_at == T0
    series = store.get("instances:up:sum", Labels())
    assert series is not None and series.points() == [(T0, 0.0)]


def test_alerts_series_are_written_and_readable_by_queries() -> None:
    store = Store()
    up(store, T0 - S, a=0.0)
    group = Group("g", "f.yml", 15 * S, [alert("Down", "up == 0", hold=15 * S)])
    ctx = context(store)
    group.run_iteration(T0, ctx)
    assert instant(store, "ALERTS", T0) == [
        ({"__name__": "ALERTS", "alertname": "Down", "alertstate": "pending", "instance": "a"}, 1)
    ]
    up(store, T0 + 14 * S, a=0.0)
    group.run_iteration(T0 + 15 * S, ctx)
    assert instant(store, 'ALERTS{alertstate="firing"}', T0 + 15 * S) == [
        ({"__name__": "ALERTS", "alertname": "Down", "alertstate": "firing", "instance": "a"}, 1)
    ]
    assert instant(store, "ALERTS_FOR_STATE", T0 + 15 * S) == [
        ({"__name__": "ALERTS_FOR_STATE", "alertname": "Down", "instance": "a"}, T0 // 1000)
    ]
    # The pending series ended with the change of state: a staleness marker at once.
    pending = store.get("ALERTS", Labels.of(alertname="Down", alertstate="pending", instance="a"))
    assert pending is not None
    last_ts, last = pending.points()[-1]
    assert last_ts == T0 + 15 * S and is_stale_nan(last)


def test_series_a_rule_no_longer_produces_get_staleness_markers() -> None:
    store = Store()
    up(store, T0 - S, a=0.0, b=0.0)
    group = Group("g", "f.yml", 15 * S, [RecordingRule("down", "up == 0")])
    ctx = context(store)
    group.run_iteration(T0, ctx)
    up(store, T0 + 10 * S, a=1.0, b=0.0)
    group.run_iteration(T0 + 15 * S, ctx)
    a = store.get("down", Labels.of(instance="a"))
    b = store.get("down", Labels.of(instance="b"))
    assert a is not None and b is not None
    assert [t for t, _ in a.points()] == [T0, T0 + 15 * S]
    assert is_stale_nan(a.points()[-1][1])
    assert b.points() == [(T0, 0.0), (T0 + 15 * S, 0.0)]
    assert instant(store, "down", T0 + 15 * S) == [({"__name__": "down", "instance": "b"}, 0.0)]


def test_a_failing_rule_is_counted_and_the_others_still_run() -> None:
    store = Store()
    up(store, T0 - S, a=0.0)
    store.append([Sample("down", Labels.of(instance="a"), 0.0)], T0 - S)
    failing = alert("Twins", '{__name__=~"up|down"} == 0', hold=0)
    fine = alert("Down", "up == 0", hold=0)
    group = Group("g", "f.yml", 15 * S, [failing, fine])
    group.run_iteration(T0, context(store))
    assert group.stats.evaluation_failures_total == 1
    assert group.stats.evaluations_total == 2
    assert failing.health is RuleHealth.BAD
    assert failing.last_error == (
        "vector contains metrics with the same labelset after applying alert labels"
    )
    assert failing.active_alerts() == []
    assert fine.health is RuleHealth.GOOD and fine.last_error is None
    assert len(fine.active_alerts()) == 1


def test_a_query_error_leaves_alert_state_and_series_unchanged() -> None:
    store = Store()
    up(store, T0 - S, a=0.0)
    rule = alert("Down", "up == 0", hold=0)
    group = Group("g", "f.yml", 15 * S, [rule])
    ctx = context(store)
    group.run_iteration(T0, ctx)

    def broken(expr: str, ts: int) -> list[object]:
        from monitor.errors import QueryError

        raise QueryError(expr, "query timed out")

    ctx.query = broken  # type: ignore[assignment]
    group.run_iteration(T0 + 15 * S, ctx)
    assert rule.health is RuleHealth.BAD and rule.last_error == "query timed out"
    (still,) = rule.active_alerts()
    assert (still.state, still.active_at) == (AlertState.FIRING, T0)
    firing = store.get("ALERTS", Labels.of(alertname="Down", alertstate="firing", instance="a"))
    assert firing is not None and firing.points() == [(T0, 1.0)]  # no marker either


def test_recording_limit_and_duplicates() -> None:
    store = Store()
    up(store, T0 - S, a=0.0, b=0.0)
    limited = RecordingRule("copy", "up")
    twins = RecordingRule("same", "up", labels={"instance": "x"})
    group = Group("g", "f.yml", 15 * S, [limited, twins], limit=1)
    group.run_iteration(T0, context(store))
    assert limited.last_error == "exceeded limit of 1 with 2 series"
    assert twins.last_error == (
        "vector contains metrics with the same labelset after applying rule labels"
    )
    assert store.get("copy", Labels.of(instance="a")) is None


def test_alerts_are_handed_over_when_due() -> None:
    store = Store()
    notified = Notified()
    ctx = context(store, notified)
    group = Group("g", "f.yml", 15 * S, [alert("Down", "up == 0", hold=15 * S)])
    for step in range(7):
        ts = T0 + step * 15 * S
        up(store, ts - S, a=0.0)
        group.run_iteration(ts, ctx)
    # Pending at 0s is not sent; fired at 15s; resent once a minute has passed, at 90s.
    assert [(expr, [a.last_sent_at for a in alerts]) for expr, alerts in notified.calls] == [
        ("up == 0", [T0 + 15 * S]),
        ("up == 0", [T0 + 90 * S]),
    ]


def test_the_query_offset_shifts_queries_and_outputs() -> None:
    store = Store()
    up(store, T0 - 30 * S, a=0.0)
    group = Group("g", "f.yml", 15 * S, [RecordingRule("down", "up == 0")], query_offset=20 * S)
    group.run_iteration(T0, context(store))
    series = store.get("down", Labels.of(instance="a"))
    assert series is not None and series.points() == [(T0 - 20 * S, 0.0)]


def test_eval_timestamps_are_slots_offset_by_the_group() -> None:
    group = Group("g", "f.yml", 15 * S, [])
    other = Group("h", "f.yml", 15 * S, [])
    slot = group.eval_timestamp(T0)
    assert T0 - 15 * S < slot <= T0
    assert (slot - group.offset()) % (15 * S) == 0
    assert group.eval_timestamp(slot) == slot
    assert group.eval_timestamp(slot + 15 * S - 1) == slot
    assert group.offset() != other.offset()


def test_copy_state_keeps_alerts_of_rules_with_the_same_name_and_labels() -> None:
    store = Store()
    up(store, T0 - S, a=0.0)
    kept = alert("Down", "up == 0", hold=M, labels={"severity": "page"})
    relabelled = alert("Down2", "up == 0", hold=M, labels={"severity": "page"})
    old = Group("g", "f.yml", 15 * S, [kept, relabelled])
    old.run_iteration(T0, context(store))

    new_kept = alert("Down", "up < 1", hold=M, labels={"severity": "page"})
    new_relabelled = alert("Down2", "up == 0", hold=M, labels={"severity": "ticket"})
    new = Group("g", "f.yml", 15 * S, [new_relabelled, new_kept])
    assert not new.equals(old)
    new.copy_state(old)
    (carried,) = new_kept.current_alerts()
    assert carried.active_at == T0
    assert new_relabelled.current_alerts() == []
    up(store, T0 + 14 * S, a=0.0)
    new.run_iteration(T0 + M, context(store))
    (fired,) = new_kept.active_alerts()
    assert fired.state is AlertState.FIRING and fired.active_at == T0
    # The old Down2's series went stale; the new one started afresh.
    old_series = store.get(
        "ALERTS",
        Labels.of(alertname="Down2", alertstate="pending", instance="a", severity="page"),
    )
    assert old_series is not None and is_stale_nan(old_series.points()[-1][1])


def test_a_group_is_built_from_a_rule_file(tmp_path: object) -> None:
    from rules.files import parse_rule_file
    from rules.templates import TemplateExpander

    text = """
groups:
  - name: hosts
    interval: 30s
    query_offset: 5s
    limit: 10
    labels: {team: ops}
    rules:
      - record: instance:up:max
        expr: max by (instance) (up)
      - alert: Down
        expr: instance:up:max  ==  0
        for: 2m
        keep_firing_for: 1m
        labels: {severity: page, team: web}
        annotations:
          summary: "{{ $labels.instance }} is down ({{ $value }})"
"""
    spec = parse_rule_file(text, "hosts.yml").groups[0]
    group = build_group(
        spec, default_interval=15.0, expander=TemplateExpander(), external_labels={"dc": "x"}
    )
    assert (group.name, group.file, group.interval, group.limit, group.query_offset) == (
        "hosts",
        "hosts.yml",
        30 * S,
        10,
        5 * S,
    )
    record, down = group.rules
    assert isinstance(record, RecordingRule) and record.labels == Labels.of(team="ops")
    assert isinstance(down, AlertingRule)
    assert (down.hold, down.keep_firing_for) == (2 * M, M)
    assert down.labels == Labels.of(severity="page", team="web")
    assert down.expr == "instance:up:max  ==  0"
    assert down.query == "instance:up:max == 0"

    store = Store()
    up(store, T0 - 10 * S, a=0.0)  # the query offset is 5s
    group.should_restore = False
    down.restored = True
    group.run_iteration(T0, context(store))
    (pending,) = down.active_alerts()
    assert pending.annotations["summary"] == "a is down (0)"
    assert pending.labels == Labels.of(alertname="Down", instance="a", severity="page", team="web")


@pytest.mark.parametrize(
    ("interval", "default", "want"),
    [
        pytest.param("interval: 1m", 15.0, 60 * S, id="the group's own interval wins"),
        pytest.param("", 20.0, 20 * S, id="without one the evaluation_interval applies"),
    ],
)
def test_group_interval(interval: str, default: float, want: int) -> None:
    from rules.files import parse_rule_file
    from rules.templates import TemplateExpander

    text = f"groups:\n- name: g\n  {interval}\n  rules:\n  - record: x\n    expr: up\n"
    spec = parse_rule_file(text, "g.yml").groups[0]
    group = build_group(spec, default_interval=default, expander=TemplateExpander())
    assert group.interval == want
