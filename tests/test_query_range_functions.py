"""Range functions at one step (every instant query) against the general path of a range query.

An instant query of ``fn(x[r])`` takes the engine's single-step path, which reads
each window straight from the store's arrays and skips the staleness scan for
series without a recent NaN; a range query of two or more steps takes the
general path. At the same time, both must give the same samples, bit for bit.
"""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.model import STALE_NAN, Labels, Sample, is_stale_nan
from monitor.query import Engine, Matrix, Vector
from monitor.query.functions import RANGE_FUNCTIONS
from monitor.store import Store

S = 1000  # ms
T0 = 1_700_000_000_000

FUNCTIONS = sorted(RANGE_FUNCTIONS)
PARAMS = {"quantile_over_time": ("0.3, ", ""), "predict_linear": ("", ", 60")}

# Counters that mostly grow, reset now and then, and hold the odd NaN, marker or infinity.
values = st.one_of(
    st.floats(0, 1000, allow_nan=False),
    st.floats(0, 1000, allow_nan=False),
    st.floats(0, 1000, allow_nan=False),
    st.sampled_from([0.0, -0.0, -3.0, math.inf, -math.inf, math.nan, STALE_NAN]),
)
# Dense, regular, sparse and far apart: windows of zero, one or many points.
gaps = st.sampled_from([1 * S, 15 * S, 15 * S, 15 * S, 60 * S, 200 * S, 7 * S + 3])
series_points = st.lists(st.tuples(gaps, values), max_size=40)
ranges = st.sampled_from(["1s", "10s", "1m", "5m"])
modifiers = st.sampled_from(
    ["", " offset 1m", " offset -30s", " @ start()", f" @ {(T0 + 600 * S) // 1000}", " @ 0"]
)


def bits(value: float) -> bytes:
    """The value bit for bit, except that any NaN computed is one NaN: its sign is the CPU's."""
    return struct.pack("<d", value) if not math.isnan(value) or is_stale_nan(value) else b"NaN"


def instant_samples(vector: Vector) -> dict[Labels, bytes]:
    return {s.labels: bits(s.value) for s in vector}


def first_step_samples(matrix: Matrix, t: int) -> dict[Labels, bytes]:
    return {rs.labels: bits(v) for rs in matrix for ts, v in rs.points if ts == t}


@settings(max_examples=400, deadline=None)
@given(
    capacity=st.integers(2, 30),
    data=st.lists(series_points, min_size=1, max_size=4),
    fn=st.sampled_from(FUNCTIONS),
    range_=ranges,
    modifier=modifiers,
    at=st.integers(0, 2000),
    growing=st.booleans(),
)
def test_one_step_equals_the_general_path(
    capacity: int,
    data: list[list[tuple[int, float]]],
    fn: str,
    range_: str,
    modifier: str,
    at: int,
    growing: bool,
) -> None:
    # A full ring wraps; a large one is still growing.
    store = Store(samples_per_series=10_000 if growing else capacity)
    for i, points in enumerate(data):
        ts = T0
        batch = []
        for gap, value in points:
            ts += gap
            batch.append(Sample("x", Labels.of(i=str(i)), value, ts))
        store.append(batch, 0)
    engine = Engine(store)
    before, after = PARAMS.get(fn, ("", ""))
    expr = f"{fn}({before}x[{range_}]{modifier}{after})"
    t = T0 + at * S
    one_step = engine.instant(expr, t)
    assert isinstance(one_step, Vector)
    general = engine.range(expr, t, t + 15 * S, 15 * S)
    assert instant_samples(one_step) == first_step_samples(general, t)


def test_a_window_of_only_staleness_markers_gives_nothing() -> None:
    store = Store()
    store.append([Sample("x", Labels(), STALE_NAN, T0 + i * S) for i in range(3)], 0)
    engine = Engine(store)
    for fn in FUNCTIONS:
        before, after = PARAMS.get(fn, ("", ""))
        assert engine.instant(f"{fn}({before}x[1m]{after})", T0 + 10 * S) == Vector(), fn


def test_a_marker_before_the_window_does_not_hide_it() -> None:
    store = Store()
    store.append(
        [Sample("x", Labels(), STALE_NAN, T0)]
        + [Sample("x", Labels(), float(i), T0 + i * 15 * S) for i in range(1, 9)],
        0,
    )
    got = Engine(store).instant("count_over_time(x[1m])", T0 + 8 * 15 * S)
    assert [s.value for s in got] == [4.0]
