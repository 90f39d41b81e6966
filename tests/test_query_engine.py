"""The query engine over a real store: lookback, staleness, offsets, windows, results, errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from monitor.errors import QueryError, UnsupportedQueryError
from monitor.model import STALE_NAN, Labels, Sample
from monitor.query import (
    Engine,
    Matrix,
    RangeSeries,
    Scalar,
    String,
    Vector,
    VectorSample,
    parse_expr,
)
from monitor.store import Store

S = 1000  # ms
M = 60 * S


def name_labels(name: str, **labels: str) -> Labels:
    return Labels({**labels, "__name__": name})


StoreFactory = Callable[..., Store]


@pytest.fixture
def make_store() -> StoreFactory:
    """A store holding series given as ``(name, labels, [(t_ms, value), ...])``."""

    def make(*series: tuple[str, dict[str, str], Sequence[tuple[int, float]]]) -> Store:
        store = Store(samples_per_series=10_000)
        for name, labels, points in series:
            store.append([Sample(name, Labels(labels), v, t) for t, v in points], 0)
        return store

    return make


def test_instant_selector_looks_back_five_minutes_left_open(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("up", {"job": "a"}, [(0, 1.0)])))
    assert engine.instant("up", 5 * M - 1) == Vector(
        [VectorSample(name_labels("up", job="a"), 1.0)]
    )
    assert engine.instant("up", 5 * M) == Vector()


def test_lookback_delta_is_configurable(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("up", {}, [(0, 1.0)])), lookback_delta=60.0)
    assert engine.instant("up", 59 * S) == Vector([VectorSample(name_labels("up"), 1.0)])
    assert engine.instant("up", 60 * S) == Vector()


def test_stale_marker_hides_the_series_until_the_next_sample(make_store: StoreFactory) -> None:
    store = make_store(("up", {}, [(0, 1.0), (10 * S, STALE_NAN), (20 * S, 2.0)]))
    engine = Engine(store)
    assert engine.instant("up", 5 * S) == Vector([VectorSample(name_labels("up"), 1.0)])
    assert engine.instant("up", 15 * S) == Vector()
    assert engine.instant("up", 20 * S) == Vector([VectorSample(name_labels("up"), 2.0)])


def test_range_functions_skip_stale_markers(make_store: StoreFactory) -> None:
    store = make_store(("up", {}, [(0, 1.0), (10 * S, STALE_NAN), (20 * S, 2.0)]))
    result = Engine(store).instant("count_over_time(up[1m])", 30 * S)
    assert result == Vector([VectorSample(Labels(), 2.0)])


def test_range_window_is_open_on_the_left(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("up", {}, [(0, 1.0), (60 * S, 2.0)])))
    assert engine.instant("count_over_time(up[1m])", 60 * S) == Vector(
        [VectorSample(Labels(), 1.0)]
    )
    assert engine.instant("count_over_time(up[61s])", 60 * S) == Vector(
        [VectorSample(Labels(), 2.0)]
    )


def test_offset_shifts_instant_and_range_selectors(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("c", {}, [(i * M, float(i)) for i in range(11)])))
    assert engine.instant("c offset 5m", 10 * M) == Vector([VectorSample(name_labels("c"), 5.0)])
    assert engine.instant("c offset -2m", 5 * M) == Vector([VectorSample(name_labels("c"), 7.0)])
    assert engine.instant("max_over_time(c[2m] offset 3m)", 10 * M) == Vector(
        [VectorSample(Labels(), 7.0)]
    )


def test_instant_range_selector_returns_raw_points(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("c", {}, [(0, 1.0), (30 * S, STALE_NAN), (60 * S, 3.0)])))
    assert engine.instant("c[1m]", 60 * S) == Matrix(
        [RangeSeries(name_labels("c"), [(60 * S, 3.0)])]
    )
    assert engine.instant("c[2m]", 60 * S) == Matrix(
        [RangeSeries(name_labels("c"), [(0, 1.0), (60 * S, 3.0)])]
    )


def test_range_query_returns_sorted_series_with_a_point_per_step(make_store: StoreFactory) -> None:
    store = make_store(
        ("m", {"i": "b"}, [(0, 1.0), (M, 2.0)]),
        ("m", {"i": "a"}, [(M, 5.0)]),
    )
    result = Engine(store).range("m * 2", 0, 2 * M, M)
    assert result == Matrix(
        [
            RangeSeries(Labels.of(i="a"), [(M, 10.0), (2 * M, 10.0)]),
            RangeSeries(Labels.of(i="b"), [(0, 2.0), (M, 4.0), (2 * M, 4.0)]),
        ]
    )


def test_range_query_of_a_scalar_is_one_unlabelled_series(make_store: StoreFactory) -> None:
    result = Engine(make_store()).range("time() * 2", 0, 2 * S, S)
    assert result == Matrix([RangeSeries(Labels(), [(0, 0.0), (S, 2.0), (2 * S, 4.0)])])


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("up[5m]", id="a range vector"),
        pytest.param('"text"', id="a string"),
    ],
)
def test_range_query_refuses_non_instant_types(make_store: StoreFactory, expr: str) -> None:
    with pytest.raises(QueryError, match="invalid expression type"):
        Engine(make_store()).range(expr, 0, M, S)


def test_range_query_refuses_a_zero_step(make_store: StoreFactory) -> None:
    with pytest.raises(QueryError, match="step"):
        Engine(make_store()).range("1", 0, M, 0)


def test_scalar_and_string_results(make_store: StoreFactory) -> None:
    engine = Engine(make_store())
    assert engine.instant("1 + 2 * 3", 0) == Scalar(7.0)
    assert engine.instant('"hello"', 0) == String("hello")
    result = engine.instant("0 / 0", 0)
    assert isinstance(result, Scalar)
    assert math.isnan(result.value)


NAME_CASES = [
    pytest.param("rate(c_total[5m])", Labels.of(job="a"), id="rate drops the name"),
    pytest.param(
        "last_over_time(c_total[5m])", name_labels("c_total", job="a"), id="last_over_time keeps it"
    ),
    pytest.param("c_total > 0", name_labels("c_total", job="a"), id="a filter keeps it"),
    pytest.param("c_total > bool 0", Labels.of(job="a"), id="a bool comparison drops it"),
    pytest.param(
        'label_replace(rate(c_total[5m]), "__name__", "r_$1", "__name__", "(.+)")',
        name_labels("r_c_total", job="a"),
        id="label_replace can keep a name rate would drop",
    ),
    pytest.param("sum by (__name__) (c_total)", name_labels("c_total"), id="sum by name keeps it"),
]


@pytest.mark.parametrize(("expr", "labels"), NAME_CASES)
def test_metric_name_dropping(make_store: StoreFactory, expr: str, labels: Labels) -> None:
    store = make_store(("c_total", {"job": "a"}, [(i * M, float(i)) for i in range(6)]))
    result = Engine(store).instant(expr, 5 * M)
    assert isinstance(result, Vector)
    assert [s.labels for s in result] == [labels]


def test_same_labelset_after_name_drop_is_an_error(make_store: StoreFactory) -> None:
    store = make_store(("a", {"x": "1"}, [(0, 1.0)]), ("b", {"x": "1"}, [(0, 2.0)]))
    with pytest.raises(QueryError, match="same labelset"):
        Engine(store).instant('abs({__name__=~"a|b"})', 0)


def test_many_to_many_matching_is_an_error(make_store: StoreFactory) -> None:
    store = make_store(
        ("l", {"x": "1"}, [(0, 1.0)]),
        ("r", {"x": "1", "y": "a"}, [(0, 1.0)]),
        ("r", {"x": "1", "y": "b"}, [(0, 1.0)]),
    )
    with pytest.raises(QueryError, match="many-to-many matching not allowed"):
        Engine(store).instant("l + on(x) r", 0)


def test_group_left_copies_labels_from_the_one_side(make_store: StoreFactory) -> None:
    store = make_store(
        ("m", {"pod": "p", "c": "1"}, [(0, 2.0)]),
        ("m", {"pod": "p", "c": "2"}, [(0, 3.0)]),
        ("info", {"pod": "p", "node": "n1"}, [(0, 1.0)]),
    )
    result = Engine(store).instant("m * on(pod) group_left(node) info", 0)
    assert sorted(result, key=lambda s: s.labels.items_tuple()) == [  # type: ignore[arg-type]
        VectorSample(Labels.of(pod="p", c="1", node="n1"), 2.0),
        VectorSample(Labels.of(pod="p", c="2", node="n1"), 3.0),
    ]


def test_regex_matcher_uses_go_syntax(make_store: StoreFactory) -> None:
    store = make_store(("m", {"g": "production"}, [(0, 1.0)]), ("m", {"g": "canary"}, [(0, 1.0)]))
    result = Engine(store).instant('m{g=~"((?i)PRO).*"}', 0)
    assert result == Vector([VectorSample(name_labels("m", g="production"), 1.0)])


def test_parsed_expression_is_accepted(make_store: StoreFactory) -> None:
    engine = Engine(make_store(("up", {}, [(0, 1.0)])))
    assert engine.instant(parse_expr("up * 3"), 0) == Vector([VectorSample(Labels(), 3.0)])


def test_unsupported_feature_in_a_parsed_expression_is_refused(make_store: StoreFactory) -> None:
    import promql_parser

    with pytest.raises(UnsupportedQueryError, match="native histogram"):
        Engine(make_store()).instant(promql_parser.parse("histogram_count(up)"), 0)


def test_topk_orders_its_result(make_store: StoreFactory) -> None:
    store = make_store(*[("m", {"i": str(i)}, [(0, float(v))]) for i, v in enumerate([3, 9, 1, 5])])
    result = Engine(store).instant("topk(3, m)", 0)
    assert [s.value for s in result] == [9.0, 5.0, 3.0]  # type: ignore[union-attr]


def test_histogram_quantile_over_classic_buckets(make_store: StoreFactory) -> None:
    buckets = {"0.1": 10.0, "0.5": 50.0, "1": 90.0, "+Inf": 100.0}
    store = make_store(*[("h_bucket", {"le": le}, [(0, v)]) for le, v in buckets.items()])
    result = Engine(store).instant("histogram_quantile(0.5, h_bucket)", 0)
    assert result == Vector([VectorSample(Labels(), 0.5)])


def test_lookback_delta_must_be_positive(make_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="lookback_delta"):
        Engine(make_store(), lookback_delta=0)
