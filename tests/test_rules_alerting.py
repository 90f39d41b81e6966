"""The alert state machine over sequences of vectors: for, keep_firing_for, retention, resend."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from monitor.model import Alert, AlertState, Labels
from rules.alerting import (
    ALERTS_FOR_STATE_METRIC,
    ALERTS_METRIC,
    DUPLICATE_LABELSET,
    AlertingRule,
    ForState,
)
from rules.rule import RuleEvaluationError

T0 = 1_700_000_000_000
S = 1000  # one second in ms
M = 60 * S


@dataclass(frozen=True)
class VectorSample:
    """One element of a query's result, as rules read it."""

    labels: Labels
    value: float


def series(**labels: str) -> Labels:
    return Labels({"__name__": "up", **labels})


A = series(instance="a")
B = series(instance="b")


def plain(text: str, labels: Mapping[str, str], value: float) -> str:
    """A stand-in for the template expander: $value and $labels.<name> only."""
    out = text.replace("$value", format(value, "g"))
    for name, val in labels.items():
        out = out.replace(f"$labels.{name}", val)
    return out


class ScriptedQuery:
    """Answers the rule's query with the vector scripted for each evaluation time."""

    def __init__(self, script: Mapping[int, Mapping[Labels, float]]) -> None:
        self.script = script
        self.asked: list[tuple[str, int]] = []

    def __call__(self, expr: str, ts: int) -> list[VectorSample]:
        self.asked.append((expr, ts))
        return [VectorSample(lbl, v) for lbl, v in self.script.get(ts, {}).items()]


def make_rule(**kwargs: object) -> AlertingRule:
    options: dict[str, object] = {
        "expander": plain,
        "labels": {"severity": "page"},
        "annotations": {"summary": "$labels.instance is at $value"},
        "restored": True,
    }
    options.update(kwargs)
    return AlertingRule("InstanceDown", "up == 0", **options)  # type: ignore[arg-type]


def alert_labels(s: Labels) -> Labels:
    return s.without("__name__").merge({"severity": "page", "alertname": "InstanceDown"})


@dataclass
class Step:
    """Evaluate at ``at`` (ms after T0) with this vector; then the rule's alerts should be these."""

    at: int
    vector: dict[Labels, float]
    expect: dict[Labels, tuple[AlertState, int, int | None, int | None]] = field(
        default_factory=dict
    )
    """Per series: state, active_at, fired_at, resolved_at (all ms after T0)."""


def run(rule: AlertingRule, steps: Sequence[Step]) -> None:
    query = ScriptedQuery({T0 + s.at: s.vector for s in steps})
    for step in steps:
        rule.eval(T0 + step.at, query)
        got = {
            a.labels: (
                a.state,
                a.active_at - T0,
                None if a.fired_at is None else a.fired_at - T0,
                None if a.resolved_at is None else a.resolved_at - T0,
            )
            for a in rule.current_alerts()
        }
        want = {alert_labels(lbl): v for lbl, v in step.expect.items()}
        assert got == want, f"after the evaluation at +{step.at}ms"


P, F, GONE = AlertState.PENDING, AlertState.FIRING, AlertState.INACTIVE

CASES = [
    pytest.param(
        {"hold": M},
        [
            Step(0, {A: 0}, {A: (P, 0, None, None)}),
            Step(30 * S, {A: 0}, {A: (P, 0, None, None)}),
            Step(M - 1, {A: 0}, {A: (P, 0, None, None)}),
            Step(M, {A: 0}, {A: (F, 0, M, None)}),
        ],
        id="pending becomes firing at exactly for, not a millisecond earlier",
    ),
    pytest.param(
        {"hold": 0},
        [Step(0, {A: 0}, {A: (F, 0, 0, None)})],
        id="without for an alert fires at its first evaluation",
    ),
    pytest.param(
        {"hold": M},
        [
            Step(0, {A: 0}, {A: (P, 0, None, None)}),
            Step(30 * S, {}, {}),
            Step(45 * S, {A: 0}, {A: (P, 45 * S, None, None)}),
        ],
        id="a pending alert that goes away is forgotten and starts over",
    ),
    pytest.param(
        {"hold": 0},
        [
            Step(0, {A: 0}, {A: (F, 0, 0, None)}),
            Step(15 * S, {}, {A: (GONE, 0, 0, 15 * S)}),
            Step(15 * S + 15 * M, {}, {A: (GONE, 0, 0, 15 * S)}),
            Step(15 * S + 15 * M + 1, {}, {}),
        ],
        id="a resolved alert is retained for exactly 15 minutes",
    ),
    pytest.param(
        {"hold": 0},
        [
            Step(0, {A: 0}, {A: (F, 0, 0, None)}),
            Step(15 * S, {}, {A: (GONE, 0, 0, 15 * S)}),
            Step(30 * S, {A: 0}, {A: (F, 30 * S, 30 * S, None)}),
        ],
        id="a resolved alert that comes back is a new alert",
    ),
    pytest.param(
        {"hold": 0, "keep_firing_for": M},
        [
            Step(0, {A: 0}, {A: (F, 0, 0, None)}),
            Step(15 * S, {}, {A: (F, 0, 0, None)}),
            Step(15 * S + M - 1, {}, {A: (F, 0, 0, None)}),
            Step(15 * S + M, {}, {A: (GONE, 0, 0, 15 * S + M)}),
        ],
        id="keep_firing_for keeps firing from the first evaluation without the alert",
    ),
    pytest.param(
        {"hold": 0, "keep_firing_for": M},
        [
            Step(0, {A: 0}, {A: (F, 0, 0, None)}),
            Step(15 * S, {}, {A: (F, 0, 0, None)}),
            Step(30 * S, {A: 0}, {A: (F, 0, 0, None)}),
            Step(45 * S, {}, {A: (F, 0, 0, None)}),
            Step(45 * S + M - 1, {}, {A: (F, 0, 0, None)}),
            Step(45 * S + M, {}, {A: (GONE, 0, 0, 45 * S + M)}),
        ],
        id="keep_firing_for starts over when the alert comes back",
    ),
    pytest.param(
        {"hold": M, "keep_firing_for": M},
        [
            Step(0, {A: 0}, {A: (P, 0, None, None)}),
            Step(15 * S, {}, {}),
        ],
        id="keep_firing_for does not keep a pending alert",
    ),
    pytest.param(
        {"hold": 30 * S},
        [
            Step(0, {A: 0}, {A: (P, 0, None, None)}),
            Step(15 * S, {A: 0, B: 0}, {A: (P, 0, None, None), B: (P, 15 * S, None, None)}),
            Step(30 * S, {A: 0, B: 0}, {A: (F, 0, 30 * S, None), B: (P, 15 * S, None, None)}),
            Step(45 * S, {B: 0}, {A: (GONE, 0, 30 * S, 45 * S), B: (F, 15 * S, 45 * S, None)}),
        ],
        id="each labelset has its own clock",
    ),
]


@pytest.mark.parametrize(("options", "steps"), CASES)
def test_state_machine(options: dict[str, object], steps: list[Step]) -> None:
    run(make_rule(**options), steps)


def test_labels_annotations_and_value_are_what_prometheus_gives() -> None:
    rule = make_rule(labels={"severity": "page", "instance": "overridden by the rule"})
    query = ScriptedQuery({T0: {A: 0.5}, T0 + S: {A: 2.0}})
    rule.eval(T0, query)
    (alert,) = rule.active_alerts()
    assert alert.labels == Labels(
        {"alertname": "InstanceDown", "instance": "overridden by the rule", "severity": "page"}
    )
    assert alert.annotations == Labels({"summary": "a is at 0.5"})
    assert alert.value == 0.5
    rule.eval(T0 + S, query)
    (alert,) = rule.active_alerts()
    assert (alert.value, alert.annotations["summary"]) == (2.0, "a is at 2")
    assert alert.active_at == T0


def test_rule_labels_are_expanded_before_alertname_is_set() -> None:
    rule = make_rule(labels={"alertname": "ignored", "who": "$labels.instance"})
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}))
    (alert,) = rule.active_alerts()
    assert alert.labels == Labels({"alertname": "InstanceDown", "instance": "a", "who": "a"})


def test_a_duplicate_labelset_fails_the_evaluation_and_changes_nothing() -> None:
    rule = make_rule(hold=M)
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}))
    twins = {A: 0.0, Labels({"__name__": "other", "instance": "a"}): 0.0}
    with pytest.raises(RuleEvaluationError) as caught:
        rule.eval(T0 + M, ScriptedQuery({T0 + M: twins}))
    assert str(caught.value) == DUPLICATE_LABELSET
    assert str(caught.value) == (
        "vector contains metrics with the same labelset after applying alert labels"
    )
    (alert,) = rule.current_alerts()
    assert (alert.state, alert.active_at) == (AlertState.PENDING, T0)


def test_a_failing_query_leaves_the_alerts_as_they_were() -> None:
    rule = make_rule(hold=0)
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}))

    def broken(expr: str, ts: int) -> list[VectorSample]:
        raise RuntimeError("engine exploded")

    with pytest.raises(RuntimeError):
        rule.eval(T0 + S, broken)
    (alert,) = rule.current_alerts()
    assert (alert.state, alert.resolved_at) == (AlertState.FIRING, None)


def test_exceeding_the_limit_fails_and_clears_every_alert() -> None:
    rule = make_rule(hold=0)
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}), limit=1)
    assert len(rule.active_alerts()) == 1
    with pytest.raises(RuleEvaluationError) as caught:
        rule.eval(T0 + S, ScriptedQuery({T0 + S: {A: 0, B: 0}}), limit=1)
    assert str(caught.value) == "exceeded limit of 1 with 2 alerts"
    assert rule.current_alerts() == []


def test_the_limit_counts_alerts_kept_firing() -> None:
    rule = make_rule(hold=0, keep_firing_for=M)
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}), limit=1)
    with pytest.raises(RuleEvaluationError, match="exceeded limit of 1 with 2 alerts"):
        rule.eval(T0 + S, ScriptedQuery({T0 + S: {B: 0}}), limit=1)


def test_alerts_and_alerts_for_state_samples() -> None:
    rule = make_rule(hold=M)
    query = ScriptedQuery({T0 + 300: {A: 0}, T0 + M + 300: {A: 0}})
    out = rule.eval(T0 + 500, query, query_offset=200)
    base = {"alertname": "InstanceDown", "instance": "a", "severity": "page"}
    assert [(s.name, dict(s.labels), s.value, s.timestamp) for s in out] == [
        (ALERTS_METRIC, {**base, "alertstate": "pending"}, 1.0, T0 + 300),
        (ALERTS_FOR_STATE_METRIC, base, float((T0 + 500) // 1000), T0 + 300),
    ]
    assert query.asked == [("up == 0", T0 + 300)]
    out = rule.eval(T0 + M + 500, query, query_offset=200)
    assert out[0].labels["alertstate"] == "firing"
    assert out[1].value == float((T0 + 500) // 1000)


def test_nothing_is_written_until_the_for_state_is_restored() -> None:
    rule = make_rule(restored=False)
    assert rule.eval(T0, ScriptedQuery({T0: {A: 0}})) == []
    assert len(rule.active_alerts()) == 1


def test_a_template_that_raises_reads_as_the_error() -> None:
    def failing(text: str, labels: Mapping[str, str], value: float) -> str:
        raise ValueError("no such function")

    rule = make_rule(expander=failing, labels={})
    rule.eval(T0, ScriptedQuery({T0: {A: 0}}))
    (alert,) = rule.active_alerts()
    assert alert.annotations["summary"] == "<error expanding template: no such function>"


# --- sending --------------------------------------------------------------------------------


def sends(rule: AlertingRule, script: dict[int, dict[Labels, float]], every: int) -> list[Alert]:
    """Evaluate at each scripted time (ms after T0) and collect what is due, as a group does."""
    query = ScriptedQuery({T0 + t: v for t, v in script.items()})
    sent: list[Alert] = []
    for t in sorted(script):
        rule.eval(T0 + t, query)
        sent += rule.alerts_to_send(T0 + t, resend_delay=M, interval=every)
    return sent


def test_firing_alerts_are_sent_then_resent_every_resend_delay() -> None:
    rule = make_rule(hold=15 * S)
    sent = sends(rule, {t * 15 * S: {A: 0} for t in range(7)}, every=15 * S)
    # pending at 0 is not sent; fired at 15s; resent once last_sent + 1m < ts, at 90s.
    assert [(a.last_sent_at - T0, a.state) for a in sent] == [
        (15 * S, AlertState.FIRING),
        (90 * S, AlertState.FIRING),
    ]
    first = sent[0]
    assert first.starts_at == first.fired_at == T0 + 15 * S
    assert first.valid_until == first.ends_at == T0 + 15 * S + 4 * M


def test_valid_until_allows_four_intervals_when_the_interval_is_longer() -> None:
    rule = make_rule(hold=0)
    (alert,) = sends(rule, {0: {A: 0}}, every=5 * M)
    assert alert.valid_until == T0 + 4 * 5 * M


def test_a_resolved_alert_is_sent_at_once_and_resent_while_retained() -> None:
    rule = make_rule(hold=0)
    script: dict[int, dict[Labels, float]] = {0: {A: 0}}
    script.update({t * 30 * S: {} for t in range(1, 33)})  # absent from 30s to 16 min
    sent = sends(rule, script, every=30 * S)
    resolved = [a for a in sent if a.resolved_at is not None]
    assert resolved[0].last_sent_at == T0 + 30 * S
    assert resolved[0].ends_at == resolved[0].resolved_at == T0 + 30 * S
    assert resolved[0].state is AlertState.INACTIVE
    times = [(a.last_sent_at - T0) // S for a in resolved]
    assert times == [30, 120, 210, 300, 390, 480, 570, 660, 750, 840, 930]
    assert rule.current_alerts() == []  # dropped once 15 minutes had passed


# --- restoring the for state ----------------------------------------------------------------

H = 60 * M


@pytest.mark.parametrize(
    ("hold", "active_at", "down_at", "now", "want"),
    [
        pytest.param(
            10 * M, 0, 20 * M, 25 * M, 0, id="an alert that had fired keeps its old active_at"
        ),
        pytest.param(
            30 * M,
            0,
            25 * M,
            40 * M,
            40 * M + 10 * M - 30 * M,
            id="less than the grace period left: it fires one grace period from now",
        ),
        pytest.param(
            60 * M,
            0,
            20 * M,
            30 * M,
            10 * M,
            id="otherwise the downtime is added to its active_at",
        ),
        pytest.param(
            5 * M,
            0,
            1 * M,
            2 * M,
            2 * M - 1000,
            id="a for shorter than the grace period is not restored",
        ),
    ],
)
def test_restore_for_state(hold: int, active_at: int, down_at: int, now: int, want: int) -> None:
    rule = make_rule(hold=hold, restored=False)
    query = ScriptedQuery({T0 + now - 1000: {A: 0}})
    rule.eval(T0 + now - 1000, query)  # the first evaluation after the restart
    saved = {alert_labels(A): ForState(alert_labels(A), T0 + down_at, (T0 + active_at) // 1000)}
    rule.restore_for_state(T0 + now, saved, grace_period=10 * M)
    (alert,) = rule.active_alerts()
    assert alert.active_at - T0 == want
    assert rule.restored


def test_restored_alert_fires_at_the_next_evaluation_and_keeps_writing_its_active_at() -> None:
    rule = make_rule(hold=10 * M, restored=False)
    query = ScriptedQuery({T0 + H: {A: 0}, T0 + H + 15 * S: {A: 0}})
    rule.eval(T0 + H, query)
    saved = {alert_labels(A): ForState(alert_labels(A), T0 + H - 30 * S, T0 // 1000)}
    rule.restore_for_state(T0 + H + 5 * S, saved, grace_period=10 * M)
    out = rule.eval(T0 + H + 15 * S, query)
    assert out[0].labels["alertstate"] == "firing"
    assert out[1].value == T0 // 1000
    (state,) = rule.for_states()
    assert state == ForState(alert_labels(A), T0 + H + 15 * S, T0 // 1000)


def test_value_nan_is_kept() -> None:
    rule = make_rule(hold=0)
    rule.eval(T0, ScriptedQuery({T0: {A: math.nan}}))
    (alert,) = rule.active_alerts()
    assert math.isnan(alert.value)
