"""The @ modifier and subqueries: pinned reads, offsets, step alignment, default steps, nesting."""

from __future__ import annotations

import promql_parser
import pytest

from monitor.errors import QueryError, UnsupportedQueryError
from monitor.model import Labels, Sample
from monitor.query import Engine, Matrix, RangeSeries, Vector
from monitor.store import Store

S = 1000  # ms


def name_labels(name: str, **labels: str) -> Labels:
    return Labels({**labels, "__name__": name})


@pytest.fixture
def store() -> Store:
    """``m`` counts the tens of seconds: one sample every 10 s from 0 to 600 s, value t/10s.

    ``n{i="1"}`` and ``n{i="2"}`` hold -1 and -2 at the same times.
    """
    store = Store(samples_per_series=1000)
    for t in range(0, 601 * S, 10 * S):
        store.append([Sample("m", Labels(), t / (10 * S), t)], 0)
        store.append([Sample("n", Labels.of(i=i), -float(i), t) for i in ("1", "2")], 0)
    return store


def values(result: object) -> list[float]:
    assert isinstance(result, Vector)
    return [s.value for s in result]


AT_INSTANT = [
    pytest.param("m @ 300", 30.0, id="an instant selector reads at the @ time"),
    pytest.param("m @ 300 offset 1m", 24.0, id="offset counts back from the @ time"),
    pytest.param("m offset 1m @ 300", 24.0, id="offset may come before @"),
    pytest.param("m @ 300 offset -1m", 36.0, id="a negative offset reads after the @ time"),
    pytest.param("m @ 300.5", 30.0, id="an @ time between samples looks back"),
    pytest.param("max_over_time(m[1m] @ 300)", 30.0, id="a range selector's window ends at @"),
    pytest.param("count_over_time(m[1m] @ 300 offset 2m)", 6.0, id="window (120s, 180s]"),
    pytest.param("timestamp(m @ 255)", 250.0, id="timestamp() gives the pinned sample's time"),
    pytest.param("m @ start() + m @ end()", 40.0, id="start() and end() are the evaluation time"),
]


@pytest.mark.parametrize(("expr", "expected"), AT_INSTANT)
def test_at_modifier_in_an_instant_query(store: Store, expr: str, expected: float) -> None:
    assert values(Engine(store).instant(expr, 200 * S)) == [expected]


def test_at_start_and_end_are_the_range_query_bounds(store: Store) -> None:
    result = Engine(store).range("m @ start() - m @ end() + m", 100 * S, 300 * S, 100 * S)
    # m @ 100s = 10, m @ 300s = 30; m itself follows the steps.
    assert result == Matrix(
        [RangeSeries(Labels(), [(100 * S, -10.0), (200 * S, 0.0), (300 * S, 10.0)])]
    )


def test_at_pins_every_step_of_a_range_query(store: Store) -> None:
    result = Engine(store).range("m @ 250 offset 50s", 0, 600 * S, 200 * S)
    steps = [0, 200 * S, 400 * S, 600 * S]
    assert result == Matrix([RangeSeries(name_labels("m"), [(t, 20.0) for t in steps])])


def test_at_start_inside_a_subquery_is_the_query_start(store: Store) -> None:
    # The subquery's own steps do not change what start() stands for.
    result = Engine(store).range("max_over_time((m @ start())[1m:10s])", 100 * S, 200 * S, 100 * S)
    assert result == Matrix([RangeSeries(Labels(), [(100 * S, 10.0), (200 * S, 10.0)])])


def test_predict_linear_with_at_uses_the_pinned_window_and_the_step_time(store: Store) -> None:
    # m grows by 0.1 a second; its window at 300s predicts from the evaluation time.
    engine = Engine(store)
    assert values(engine.instant("predict_linear(m[1m] @ 300, 0)", 300 * S)) == [
        pytest.approx(30.0)
    ]
    assert values(engine.instant("predict_linear(m[1m] @ 300, 0)", 400 * S)) == [
        pytest.approx(40.0)
    ]


def test_subquery_steps_are_multiples_of_the_step_since_the_epoch(store: Store) -> None:
    result = Engine(store).instant("m[1m:20s]", 65 * S)
    # (5s, 65s]: the multiples of 20 s, not 65 s minus multiples of 20 s.
    assert result == Matrix(
        [RangeSeries(name_labels("m"), [(20 * S, 2.0), (40 * S, 4.0), (60 * S, 6.0)])]
    )


def test_subquery_window_is_open_on_the_left(store: Store) -> None:
    result = Engine(store).instant("m[1m:20s]", 80 * S)
    assert result == Matrix(
        [RangeSeries(name_labels("m"), [(40 * S, 4.0), (60 * S, 6.0), (80 * S, 8.0)])]
    )


SUBQUERY_TIMES = [
    pytest.param("m[1m:20s] offset 10s", [0, 20, 40], id="offset moves the window, not the steps"),
    pytest.param("m[1m:20s] @ 130", [80, 100, 120], id="@ pins the window"),
    pytest.param(
        "m[1m:20s] @ 130 offset 30s", [60, 80, 100], id="@ and offset: window ends at 100s"
    ),
    pytest.param("m[1m:20s] offset -1m", [80, 100, 120], id="a negative offset looks ahead"),
]


@pytest.mark.parametrize(("expr", "seconds"), SUBQUERY_TIMES)
def test_subquery_offset_and_at(store: Store, expr: str, seconds: list[int]) -> None:
    result = Engine(store).instant(expr, 65 * S)
    assert isinstance(result, Matrix)
    assert [t for t, _ in result[0].points] == [s * S for s in seconds]


@pytest.mark.parametrize(
    ("step", "seconds"),
    [
        pytest.param(60.0, [60, 120], id="the default step is a minute"),
        pytest.param(30.0, [30, 60, 90, 120], id="the engine's default step is used"),
    ],
)
def test_subquery_without_a_step_uses_the_default(
    store: Store, step: float, seconds: list[int]
) -> None:
    engine = Engine(store) if step == 60.0 else Engine(store, default_subquery_step=step)
    result = engine.instant("m[2m:]", 120 * S)
    assert isinstance(result, Matrix)
    assert [t for t, _ in result[0].points] == [s * S for s in seconds]


def test_default_subquery_step_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="default_subquery_step"):
        Engine(store, default_subquery_step=0)


def test_nested_subqueries(store: Store) -> None:
    # Inner: sum_over_time(m[30s:10s]) at t is m(t-20s)+m(t-10s)+m(t) = 3t/10s - 3.
    # Outer at 100s reads it at 60s, 80s and 100s (steps of 20 s in (40s, 100s]).
    expr = "max_over_time(sum_over_time(m[30s:10s])[1m:20s])"
    assert values(Engine(store).instant(expr, 100 * S)) == [27.0]
    inner = Engine(store).instant("sum_over_time(m[30s:10s])[1m:20s]", 100 * S)
    assert inner == Matrix(
        [RangeSeries(Labels(), [(60 * S, 15.0), (80 * S, 21.0), (100 * S, 27.0)])]
    )


def test_at_inside_a_subquery_with_an_offset(store: Store) -> None:
    # m @ 300 is 30 whatever the subquery's steps and offset.
    expr = "sum_over_time((m @ 300)[1m:20s] offset 2m)"
    assert values(Engine(store).instant(expr, 500 * S)) == [90.0]


def test_subquery_in_a_range_query(store: Store) -> None:
    result = Engine(store).range("sum_over_time(m[30s:10s])", 100 * S, 120 * S, 10 * S)
    assert result == Matrix(
        [RangeSeries(Labels(), [(100 * S, 27.0), (110 * S, 30.0), (120 * S, 33.0)])]
    )


def test_rate_over_a_subquery(store: Store) -> None:
    # m rises by 1 every 10 s, sampled by the subquery every 20 s.
    assert values(Engine(store).instant("rate(m[1m:20s])", 300 * S)) == [pytest.approx(0.1)]


def test_absent_over_time_of_a_subquery(store: Store) -> None:
    engine = Engine(store)
    assert values(engine.instant("absent_over_time(nothing[1m:])", 300 * S)) == [1.0]
    assert values(engine.instant("absent_over_time(m[1m:])", 300 * S)) == []


NAMES = [
    pytest.param("last_over_time(m[1m:])", name_labels("m"), id="last_over_time keeps the name"),
    pytest.param("last_over_time(abs(m)[1m:])", Labels(), id="a name dropped inside stays dropped"),
    pytest.param("max_over_time(m[1m:])", Labels(), id="other functions drop it"),
]


@pytest.mark.parametrize(("expr", "labels"), NAMES)
def test_metric_name_through_a_subquery(store: Store, expr: str, labels: Labels) -> None:
    result = Engine(store).instant(expr, 300 * S)
    assert isinstance(result, Vector)
    assert [s.labels for s in result] == [labels]


def test_instant_subquery_drops_names_when_it_hands_out(store: Store) -> None:
    result = Engine(store).instant("abs(n)[20s:10s]", 100 * S)
    assert result == Matrix(
        [
            RangeSeries(Labels.of(i="1"), [(90 * S, 1.0), (100 * S, 1.0)]),
            RangeSeries(Labels.of(i="2"), [(90 * S, 2.0), (100 * S, 2.0)]),
        ]
    )


def test_series_that_collide_once_names_are_dropped_are_an_error(store: Store) -> None:
    # Grouping by the name keeps m and n apart until their names go at the end.
    expr = 'sum by (__name__) (abs({__name__=~"m|n"}))[20s:10s]'
    with pytest.raises(QueryError, match="same labelset"):
        Engine(store).instant(expr, 100 * S)


def test_range_query_of_a_subquery_is_refused(store: Store) -> None:
    with pytest.raises(QueryError, match='invalid expression type "range vector"'):
        Engine(store).range("m[5m:1m]", 0, 60 * S, 10 * S)


def test_subquery_steps_without_any_step_in_the_window_give_nothing(store: Store) -> None:
    # (61s, 65s] holds no multiple of 20 s.
    assert Engine(store).instant("m[4s:20s]", 65 * S) == Matrix()
    assert values(Engine(store).instant("count_over_time(m[4s:20s])", 65 * S)) == []


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("m @ -100", id="a negative @ on a selector"),
        pytest.param("rate(m[5m] @ -1.5)", id="a negative @ on a range selector"),
        pytest.param("max_over_time(m[5m:] @ -1e3)", id="a negative @ on a subquery"),
    ],
)
def test_negative_at_timestamps_are_refused(store: Store, expr: str) -> None:
    with pytest.raises(UnsupportedQueryError, match="negative @ timestamp"):
        Engine(store).instant(expr, 0)


def test_negative_at_timestamp_in_an_already_parsed_expression_is_refused(store: Store) -> None:
    # promql-parser cannot hand such a time back (its Rust side panics); the engine
    # must still refuse it rather than read it as 0.
    with pytest.raises(UnsupportedQueryError, match="negative @ timestamp"):
        Engine(store).instant(promql_parser.parse("m @ -100"), 0)
