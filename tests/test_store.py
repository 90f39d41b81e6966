"""Tests for the ring store: ring reads against a list model, the index, limits and counters."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.model import STALE_NAN, Labels, MetricMetadata, MetricType, Sample, is_stale_nan
from monitor.store import Matcher, MatchOp, Series, Store

T0 = 1_700_000_000_000
NAME = "up"
LABELS = Labels.of(job="node", instance="a:9100")


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


def as_bits(points: Sequence[tuple[int, float]]) -> list[tuple[int, bytes]]:
    """Points with values as their bit patterns, so NaNs compare exactly."""
    return [(ts, bits(v)) for ts, v in points]


def series_of(store: Store, name: str = NAME, labels: Labels = LABELS) -> Series:
    series = store.get(name, labels)
    assert series is not None
    return series


# -- the ring against a list model ---------------------------------------------------------------


class RingModel:
    """The ring's meaning, written the obvious way: a list of the newest points."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.points: list[tuple[int, float]] = []
        self.out_of_order = 0
        self.newest_nan: int | None = None  # the newest NaN ever appended, overwritten or not

    def append(self, ts: int, value: float) -> int:
        if self.points:
            last_ts, last_value = self.points[-1]
            if ts < last_ts or (ts == last_ts and bits(value) != bits(last_value)):
                self.out_of_order += 1
                return 0
            if ts == last_ts:
                return 0
        self.points = [*self.points, (ts, value)][-self.capacity :]
        if math.isnan(value):
            self.newest_nan = ts
        return 1

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self.points = self.points[-capacity:]

    def range(self, start: int, end: int) -> list[tuple[int, float]]:
        return [(ts, v) for ts, v in self.points if start < ts <= end]

    def latest(self, t: int, lookback: int) -> tuple[int, float] | None:
        inside = [(ts, v) for ts, v in self.points if t - lookback < ts <= t]
        return inside[-1] if inside else None


values = st.sampled_from([0.0, -0.0, 1.5, -2.0, math.inf, math.nan, STALE_NAN])
appends = st.tuples(st.just("append"), st.integers(-3, 6), values)
resizes = st.tuples(st.just("resize"), st.integers(1, 9), st.just(0.0))


def check_reads(series: Series, model: RingModel, queries: Sequence[tuple[int, int]]) -> None:
    assert as_bits(series.points()) == as_bits(model.points)
    assert len(series) == len(model.points)
    if model.points:
        assert series.last_timestamp == model.points[-1][0]
        assert series.last_value is not None
        assert bits(series.last_value) == bits(model.points[-1][1])
    for a, b in queries:
        start, end = T0 + a, T0 + b
        assert as_bits(series.range(start, end)) == as_bits(model.range(start, end))
        times, values = series.columns(start, end)
        assert as_bits(list(zip(times, values, strict=True))) == as_bits(model.range(start, end))
        got, want = series.latest(end, b - a), model.latest(end, b - a)
        assert as_bits([got] if got else []) == as_bits([want] if want else [])
        # The NaN indicator: never "no NaN" while the ring holds one after start, and
        # "no NaN" whenever none was ever appended after start.
        may_hold_nan = series.nan_after(start)
        if any(math.isnan(v) for _, v in model.range(start, 2**62)):
            assert may_hold_nan
        if model.newest_nan is None or model.newest_nan <= start:
            assert not may_hold_nan
    # Windows whose edges fall on stored points, on either side of a wrapped ring's seam.
    stamps = [ts for ts, _ in model.points]
    for end in stamps:
        for start in {s - d for s in stamps if s <= end for d in (0, 1)}:
            times, values = series.columns(start, end)
            want = as_bits(model.range(start, end))
            assert as_bits(list(zip(times, values, strict=True))) == want


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 8),
    ops=st.lists(st.one_of(appends, appends, appends, resizes), min_size=1, max_size=60),
    queries=st.lists(st.tuples(st.integers(-5, 150), st.integers(-5, 150)), max_size=12),
)
def test_ring_reads_match_a_list_of_the_newest_points(
    capacity: int, ops: list[tuple[str, int, float]], queries: list[tuple[int, int]]
) -> None:
    store = Store(samples_per_series=capacity)
    model = RingModel(capacity)
    ts = T0
    for kind, number, value in ops:
        if kind == "resize":
            store.reconfigure(samples_per_series=number)
            model.resize(number)
        else:
            ts += number
            accepted = store.append([Sample(NAME, LABELS, value, ts)], 0)
            assert accepted == model.append(ts, value)
        series = store.get(NAME, LABELS)
        if series is None:
            assert model.points == [], "only a resize so far"
        else:
            check_reads(series, model, queries)
    assert store.stats().samples_out_of_order_total == model.out_of_order


def test_range_is_left_open_and_right_closed() -> None:
    store = Store()
    store.append([Sample(NAME, LABELS, float(i), T0 + i * 1000) for i in range(6)], 0)
    series = series_of(store)
    assert series.range(T0 + 1000, T0 + 4000) == [
        (T0 + 2000, 2.0),
        (T0 + 3000, 3.0),
        (T0 + 4000, 4.0),
    ]
    assert series.latest(T0 + 4000, 1000) == (T0 + 4000, 4.0)
    assert series.latest(T0 + 4500, 500) is None, "a point exactly lookback ago is out"
    assert series.latest(T0 + 4500, 501) == (T0 + 4000, 4.0)
    assert series.latest(T0 - 1, 10_000) is None


def test_a_wrapped_ring_keeps_the_newest_points_in_order() -> None:
    store = Store(samples_per_series=4)
    store.append([Sample(NAME, LABELS, float(i), T0 + i) for i in range(11)], 0)
    series = series_of(store)
    assert series.points() == [(T0 + i, float(i)) for i in range(7, 11)]
    assert series.range(T0 + 7, T0 + 9) == [(T0 + 8, 8.0), (T0 + 9, 9.0)]
    assert series.latest(T0 + 100, 1000) == (T0 + 10, 10.0)


# -- out of order, duplicates, stale markers, bad samples ----------------------------------------


@pytest.mark.parametrize(
    ("second", "accepted", "counted"),
    [
        pytest.param((T0 + 1, 5.0), 1, 0, id="a newer sample is stored"),
        pytest.param((T0 - 1, 5.0), 0, 1, id="an older sample is refused and counted"),
        pytest.param((T0, 1.0), 0, 0, id="an exact repeat of the newest point is ignored"),
        pytest.param((T0, 2.0), 0, 1, id="a new value at the same timestamp is refused"),
    ],
)
def test_out_of_order_and_duplicates(
    second: tuple[int, float], accepted: int, counted: int
) -> None:
    store = Store()
    assert store.append([Sample(NAME, LABELS, 1.0, T0)], 0) == 1
    ts, value = second
    assert store.append([Sample(NAME, LABELS, value, ts)], 0) == accepted
    stats = store.stats()
    assert stats.samples_out_of_order_total == counted
    assert stats.appended_total == 1 + accepted
    assert len(series_of(store)) == 1 + accepted


@pytest.mark.parametrize(
    ("first", "second", "counted"),
    [
        pytest.param(math.nan, math.nan, 0, id="the same NaN twice is a repeat"),
        pytest.param(STALE_NAN, STALE_NAN, 0, id="the stale marker twice is a repeat"),
        pytest.param(math.nan, STALE_NAN, 1, id="a stale marker after a plain NaN is a new value"),
        pytest.param(0.0, -0.0, 1, id="negative zero after zero is a new value"),
    ],
)
def test_same_timestamp_compares_values_bit_for_bit(
    first: float, second: float, counted: int
) -> None:
    store = Store()
    store.append([Sample(NAME, LABELS, first, T0), Sample(NAME, LABELS, second, T0)], 0)
    assert store.stats().samples_out_of_order_total == counted
    assert bits(series_of(store).points()[0][1]) == bits(first)


def test_the_nan_indicator_follows_the_newest_nan_through_wrap_and_resize() -> None:
    store = Store(samples_per_series=3)
    store.append([Sample(NAME, LABELS, 1.0, T0)], 0)
    series = series_of(store)
    assert not series.nan_after(T0 - 1), "no NaN yet"
    store.append([Sample(NAME, LABELS, STALE_NAN, T0 + 1)], 0)
    assert series.nan_after(T0) and not series.nan_after(T0 + 1)
    store.append([Sample(NAME, LABELS, float(i), T0 + i) for i in range(2, 9)], 0)
    assert [v for _, v in series.points()] == [6.0, 7.0, 8.0], "the marker was overwritten"
    assert not series.nan_after(T0 + 5)
    store.append([Sample(NAME, LABELS, math.nan, T0 + 9), Sample(NAME, LABELS, 1.0, T0 + 10)], 0)
    store.reconfigure(samples_per_series=5)
    assert series_of(store).nan_after(T0 + 8) and not series_of(store).nan_after(T0 + 9)


def test_a_first_point_that_is_nan_sets_the_indicator() -> None:
    store = Store()
    store.append([Sample(NAME, LABELS, STALE_NAN, T0)], 0)
    assert series_of(store).nan_after(T0 - 1)


def test_labels_with_name_adds_the_name_once() -> None:
    store = Store()
    store.append([Sample(NAME, LABELS, 1.0, T0)], 0)
    named = series_of(store).labels_with_name()
    assert named == Labels({**LABELS, "__name__": NAME})
    assert series_of(store).labels_with_name() is named


def test_stale_marker_keeps_its_bit_pattern_through_wrap_and_resize() -> None:
    store = Store(samples_per_series=3)
    store.append([Sample(NAME, LABELS, STALE_NAN if i % 2 else 1.0, T0 + i) for i in range(8)], 0)
    series = series_of(store)
    assert [is_stale_nan(v) for _, v in series.points()] == [True, False, True]
    assert series.last_value is not None and is_stale_nan(series.last_value)
    store.reconfigure(samples_per_series=2)
    assert [is_stale_nan(v) for _, v in series_of(store).points()] == [False, True]
    latest = series_of(store).latest(T0 + 7, 1)
    assert latest is not None and is_stale_nan(latest[1])


def test_timestamp_none_takes_the_default() -> None:
    store = Store()
    assert store.append([Sample(NAME, LABELS, 3.0), Sample("other", LABELS, 4.0, T0 + 9)], T0) == 2
    assert series_of(store).points() == [(T0, 3.0)]
    assert series_of(store, "other").points() == [(T0 + 9, 4.0)]


@pytest.mark.parametrize(
    "capacity",
    [
        pytest.param(10, id="a growing ring stays intact after a bad sample"),
        pytest.param(3, id="a full ring stays intact after a bad sample"),
    ],
)
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(Sample(NAME, LABELS, 9.0, T0 + 5.5), id="when its timestamp is a float"),  # type: ignore[arg-type]
        pytest.param(Sample(NAME, LABELS, 9.0, 2**63), id="when its timestamp overflows int64"),
        pytest.param(Sample(NAME, LABELS, "9", T0 + 5), id="when its value is a string"),  # type: ignore[arg-type]
        pytest.param(Sample(NAME, LABELS, None, T0 + 5), id="when its value is None"),  # type: ignore[arg-type]
    ],
)
def test_bad_samples_are_counted_and_skipped(capacity: int, bad: Sample) -> None:
    store = Store(samples_per_series=capacity)
    store.append([Sample(NAME, LABELS, float(i), T0 + i) for i in range(5)], 0)
    before = series_of(store).points()
    assert store.append([bad], 0) == 0
    after = series_of(store).points()
    # A half-done overwrite may cost the oldest point, which was going anyway; nothing else.
    assert after == before[len(before) - len(after) :]
    assert len(after) >= len(before) - 1
    assert store.append([Sample(NAME, LABELS, 7.0, T0 + 7)], 0) == 1
    assert series_of(store).points()[-1] == (T0 + 7, 7.0)
    stats = store.stats()
    assert stats.samples_invalid_total == 1
    assert stats.samples_out_of_order_total == 0


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(list, id="a list batch"),
        pytest.param(iter, id="a one-shot iterator batch"),
    ],
)
def test_a_foreign_object_in_a_batch_is_counted_and_the_rest_is_stored(wrap: Any) -> None:
    store = Store()
    batch = [Sample(NAME, LABELS, 1.0, T0), object(), Sample(NAME, LABELS, 2.0, T0 + 1)]
    assert store.append(wrap(batch), 0) == 2
    assert series_of(store).points() == [(T0, 1.0), (T0 + 1, 2.0)]
    stats = store.stats()
    assert (stats.appended_total, stats.samples_invalid_total) == (2, 1)


def test_a_bad_first_sample_leaves_no_series_behind() -> None:
    store = Store()
    assert store.append([Sample(NAME, LABELS, "x")], T0) == 0  # type: ignore[arg-type]
    assert store.get(NAME, LABELS) is None
    assert len(store) == 0 and store.names() == [] and store.select([]) == []
    assert store.stats().samples_invalid_total == 1


# -- the index -----------------------------------------------------------------------------------

label_values = st.sampled_from(["", "a", "b", "ab", "ba", "c"])
label_sets = st.dictionaries(st.sampled_from(["job", "env", "x"]), label_values)
series_keys = st.tuples(st.sampled_from(["up", "errors_total", "a"]), label_sets)
matchers = st.builds(
    Matcher,
    name=st.sampled_from(["__name__", "job", "env", "missing"]),
    op=st.sampled_from(list(MatchOp)),
    value=st.sampled_from(["", "a", "b", "up", "a|b", "a.*", ".*", ".+", "b?a", "errors_.*"]),
)


def brute_force(store: Store, selectors: Sequence[Matcher]) -> set[tuple[str, Labels]]:
    def value(series: Series, name: str) -> str:
        return series.name if name == "__name__" else series.labels.get(name, "")

    return {
        (s.name, s.labels) for s in store if all(m.matches(value(s, m.name)) for m in selectors)
    }


def keys(found: Sequence[Series]) -> list[tuple[str, Labels]]:
    return [(s.name, s.labels) for s in found]


@settings(max_examples=300, deadline=None)
@given(
    stored=st.lists(series_keys, max_size=25),
    dropped=st.lists(st.integers(0, 24), max_size=8),
    selectors=st.lists(matchers, max_size=3),
)
def test_select_equals_brute_force(
    stored: list[tuple[str, dict[str, str]]], dropped: list[int], selectors: list[Matcher]
) -> None:
    store = Store(retention=1.0)
    for i, (name, labels) in enumerate(stored):
        # The dropped ones are written long ago, so gc removes them and the index must forget them.
        ts = T0 if i in dropped else T0 + 10_000
        store.append([Sample(name, Labels(labels), 1.0, ts)], 0)
    store.gc(T0 + 10_000)
    found = store.select(selectors)
    assert len(found) == len(set(found)), "no series twice"
    assert set(keys(found)) == brute_force(store, selectors)
    assert keys(found) == sorted(keys(found), key=lambda k: (k[0], k[1].items_tuple()))


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(st.lists(series_keys, max_size=10), st.lists(matchers, max_size=3)),
        min_size=1,
        max_size=8,
    ),
)
def test_select_stays_right_as_series_and_label_values_come_and_go(
    rounds: list[tuple[list[tuple[str, dict[str, str]]], list[Matcher]]],
) -> None:
    # Each round writes some series and drops the rest, then selects: whatever the store
    # remembers of earlier selections must follow the index.
    store = Store(retention=1.0)
    for i, (written, selectors) in enumerate(rounds):
        now = T0 + i * 10_000
        store.append([Sample(name, Labels(labels), 1.0, now) for name, labels in written], 0)
        store.gc(now)
        for chosen in (selectors, selectors[:1], selectors[1:]):
            found = store.select(chosen)
            assert set(keys(found)) == brute_force(store, chosen)
            assert len(found) == len(set(found))


def two_jobs() -> Store:
    store = Store()
    store.append(
        [
            Sample("up", Labels.of(job="api", env="prod"), 1.0),
            Sample("up", Labels.of(job="db"), 1.0),
            Sample("errors_total", Labels.of(job="api", env="dev"), 3.0),
        ],
        T0,
    )
    return store


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        pytest.param([], ["errors_total/api", "up/api", "up/db"], id="no matcher selects all"),
        pytest.param(
            [Matcher("__name__", MatchOp.EQ, "up")], ["up/api", "up/db"], id="the name selects"
        ),
        pytest.param(
            [Matcher("job", MatchOp.NE, "api")], ["up/db"], id="not equal excludes a value"
        ),
        pytest.param(
            [Matcher("env", MatchOp.EQ, "")], ["up/db"], id="equal to empty means label missing"
        ),
        pytest.param(
            [Matcher("env", MatchOp.NE, "")],
            ["errors_total/api", "up/api"],
            id="not equal to empty means label present",
        ),
        pytest.param(
            [Matcher("job", MatchOp.RE, "a")], [], id="a regex must match the whole value"
        ),
        pytest.param(
            [Matcher("job", MatchOp.RE, "a.*"), Matcher("env", MatchOp.NRE, "d.*")],
            ["up/api"],
            id="a regex and a negated regex combine",
        ),
        pytest.param(
            [Matcher("env", MatchOp.NRE, "prod")],
            ["errors_total/api", "up/db"],
            id="a negated regex keeps series without the label",
        ),
        pytest.param(
            [Matcher("__name__", MatchOp.RE, "up|nothing"), Matcher("nope", MatchOp.EQ, "x")],
            [],
            id="an unknown label selects nothing",
        ),
    ],
)
def test_select_examples(selectors: list[Matcher], expected: list[str]) -> None:
    found = two_jobs().select(selectors)
    assert [f"{s.name}/{s.labels['job']}" for s in found] == expected


def test_matcher_compiles_its_regex_once_and_checks_the_op() -> None:
    assert Matcher("job", "=~", "a+").op is MatchOp.RE  # type: ignore[arg-type]
    assert Matcher("job", MatchOp.RE, "a+") == Matcher("job", MatchOp.RE, "a+")
    with pytest.raises(ValueError, match="bad regular expression"):
        Matcher("job", MatchOp.RE, "(")
    with pytest.raises(ValueError, match="'=='"):
        Matcher("job", "==", "a")  # type: ignore[arg-type]


# -- retention, limits, reconfiguration, metadata ------------------------------------------------


def test_gc_drops_series_not_written_within_retention_and_unindexes_them() -> None:
    store = Store(retention=60.0)
    old, fresh = Labels.of(job="old"), Labels.of(job="fresh")
    store.append([Sample(NAME, old, 1.0, T0), Sample("gone", old, 1.0, T0)], 0)
    store.append([Sample(NAME, fresh, 1.0, T0 + 30_000)], 0)
    assert store.gc(T0 + 60_000) == 0, "a series written exactly retention ago stays"
    assert store.gc(T0 + 60_001) == 2
    assert store.get(NAME, old) is None and store.get(NAME, fresh) is not None
    assert store.names() == [NAME]
    assert len(store) == 1 and [s.labels for s in store] == [fresh]
    assert store.select([Matcher("job", MatchOp.EQ, "old")]) == []
    assert store.select([Matcher("__name__", MatchOp.EQ, "gone")]) == []
    assert store.select([Matcher("job", MatchOp.NE, "")]) == [series_of(store, NAME, fresh)]
    assert store.stats().series_removed_total == 2
    # A series that comes back starts afresh.
    store.append([Sample("gone", old, 2.0, T0 + 90_000)], 0)
    assert series_of(store, "gone", old).points() == [(T0 + 90_000, 2.0)]


def test_max_series_refuses_new_series_and_counts_them() -> None:
    store = Store(max_series=2)
    a, b, c = (Labels.of(job=j) for j in "abc")
    assert store.append([Sample(NAME, a, 1.0), Sample(NAME, b, 1.0), Sample(NAME, c, 1.0)], T0) == 2
    assert store.get(NAME, c) is None
    assert store.append([Sample(NAME, c, 1.0), Sample(NAME, a, 2.0)], T0 + 1) == 1
    stats = store.stats()
    assert stats.series_refused_total == 2
    assert stats.series == 2 and stats.max_series == 2
    assert series_of(store, NAME, a).points() == [(T0, 1.0), (T0 + 1, 2.0)]


def test_lowering_max_series_keeps_existing_series() -> None:
    store = Store(max_series=3)
    labels = [Labels.of(job=j) for j in "abc"]
    store.append([Sample(NAME, lb, 1.0) for lb in labels], T0)
    store.reconfigure(max_series=1)
    assert len(store) == 3
    assert store.append([Sample(NAME, lb, 2.0) for lb in labels], T0 + 1) == 3
    assert store.append([Sample(NAME, Labels.of(job="d"), 1.0)], T0 + 1) == 0
    assert store.stats().series_refused_total == 1


def test_reconfigure_changes_only_what_is_given() -> None:
    store = Store(samples_per_series=5, retention=10.0, max_series=7)
    store.append([Sample(NAME, LABELS, float(i), T0 + i) for i in range(5)], 0)
    store.reconfigure(retention=100.0)
    stats = store.stats()
    assert (stats.capacity, stats.max_series, stats.samples) == (5, 7, 5)
    assert store.gc(T0 + 50_000) == 0
    store.reconfigure(samples_per_series=2)
    assert series_of(store).points() == [(T0 + 3, 3.0), (T0 + 4, 4.0)]
    assert store.stats().capacity == 2


@pytest.mark.parametrize(
    "settings_",
    [
        pytest.param({"samples_per_series": 0}, id="a ring must hold at least one point"),
        pytest.param({"retention": 0.0}, id="retention must be positive"),
        pytest.param({"retention": math.nan}, id="retention must be a number"),
        pytest.param({"max_series": -1}, id="max series must not be negative"),
    ],
)
def test_bad_settings_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Store(**settings_)  # type: ignore[arg-type]
    store = Store()
    with pytest.raises(ValueError):
        store.reconfigure(**settings_)  # type: ignore[arg-type]
    assert store.stats().capacity == 720


def test_metadata_is_kept_per_name() -> None:
    store = Store()
    assert store.metadata(NAME) is None
    store.set_metadata(NAME, MetricMetadata(MetricType.COUNTER, "Things."))
    store.set_metadata(NAME, MetricMetadata(MetricType.GAUGE, "Up or not."))
    assert store.metadata(NAME) == MetricMetadata(MetricType.GAUGE, "Up or not.")
    assert store.metadata("other") is None


def test_iteration_is_a_snapshot_that_tolerates_writes() -> None:
    store = two_jobs()
    seen: list[str] = []
    for series in store:
        store.append([Sample(f"new_{len(seen)}", series.labels, 1.0)], T0)
        seen.append(series.name)
    assert len(seen) == 3
    assert len(store) == 6
    assert store.names() == ["errors_total", "new_0", "new_1", "new_2", "up"]


def test_stats_count_points_and_appends() -> None:
    store = Store(samples_per_series=3)
    store.append([Sample(NAME, LABELS, 1.0, T0 + i) for i in range(5)], 0)
    store.append([Sample("b", LABELS, 1.0, T0)], 0)
    stats = store.stats()
    assert (stats.series, stats.samples, stats.appended_total) == (2, 4, 6)
