"""PromQL functions: range-vector functions over one window, and per-value maths.

Semantics follow ``promql/functions.go``: ``rate``/``increase``/``delta``
extrapolate towards the window's edges (at most half an average sample
interval beyond the samples, never below zero for counters), ``irate`` and
``idelta`` use the last two samples, ``deriv`` and ``predict_linear`` a
least-squares fit with Kahan sums, and the ``*_over_time`` functions aggregate
the raw samples of the window. Float special cases follow Go's ``math``
package (``ln(0)`` is ``-Inf``, ``sqrt(-1)`` is ``NaN``, ...).
"""

from __future__ import annotations

import calendar
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Final

from monitor.query.aggregations import quantile
from monitor.query.samples import kahan_inc

__all__ = [
    "DATE_FUNCTIONS",
    "MATH_FUNCTIONS",
    "RANGE_FUNCTIONS",
    "RangeFn",
    "Window",
    "go_max",
    "go_min",
    "round_to",
    "utc_time",
]


@dataclass(frozen=True, slots=True)
class Window:
    """The non-stale points of one series in ``(start, end]``, for evaluation time ``t``.

    The points are two columns of the same length: timestamps (ms) and values.
    """

    times: Sequence[int]
    values: Sequence[float]
    t: int
    start: int
    end: int


RangeFn = Callable[[Sequence[int], Sequence[float], int, int, int, list[float]], "float | None"]
"""A range function: ``fn(times, values, start, end, t, params)`` over a window's points.

``times`` and ``values`` are the non-stale points in ``(start, end]`` (at least
one), ``t`` is the evaluation time and ``params`` the scalar arguments at it;
None means no sample.
"""


def _extrapolated_rate(
    times: Sequence[int],
    values: Sequence[float],
    start: int,
    end: int,
    is_counter: bool,
    is_rate: bool,
) -> float | None:
    if len(values) < 2:
        return None
    first_t, last_t = times[0], times[-1]
    first_v, last_v = values[0], values[-1]
    result = last_v - first_v
    # Looking for a reset in C first: most windows have none.
    if is_counter and any(map(operator.lt, islice(values, 1, None), values)):
        prev = first_v
        for v in islice(values, 1, None):
            if v < prev:
                result += prev
            prev = v
    duration_to_start = (first_t - start) / 1000
    duration_to_end = (end - last_t) / 1000
    sampled = (last_t - first_t) / 1000
    average = sampled / (len(values) - 1)
    threshold = average * 1.1
    if duration_to_start >= threshold:
        duration_to_start = average / 2
    if is_counter and result > 0 and first_v >= 0:
        duration_to_zero = sampled * (first_v / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    if duration_to_end >= threshold:
        duration_to_end = average / 2
    factor = (sampled + duration_to_start + duration_to_end) / sampled
    if is_rate:
        factor /= (end - start) / 1000
    return result * factor


def _instant_value(times: Sequence[int], values: Sequence[float], is_rate: bool) -> float | None:
    if len(values) < 2:
        return None
    t0, t1 = times[-2], times[-1]
    v0, v1 = values[-2], values[-1]
    interval = t1 - t0
    if interval == 0:
        return None
    result = v1 if is_rate and v1 < v0 else v1 - v0
    if is_rate:
        result /= interval / 1000
    return result


def _linear_regression(
    times: Sequence[int], values: Sequence[float], intercept_time: int
) -> tuple[float, float]:
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[0]
    const_y = True
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if const_y and i > 0 and v != init_y:
            const_y = False
        n += 1
        x = (t - intercept_time) / 1e3
        sum_x, c_x = kahan_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_inc(v, sum_y, c_y)
        sum_xy, c_xy = kahan_inc(x * v, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x if var_x != 0 else _go_div(cov_xy, var_x)
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def _go_div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _deriv(
    times: Sequence[int], values: Sequence[float], _s: int, _e: int, _t: int, _p: list[float]
) -> float | None:
    if len(values) < 2:
        return None
    return _linear_regression(times, values, times[0])[0]


def _predict_linear(
    times: Sequence[int], values: Sequence[float], _s: int, _e: int, t: int, params: list[float]
) -> float | None:
    if len(values) < 2:
        return None
    slope, intercept = _linear_regression(times, values, t)
    return slope * params[0] + intercept


def _changes(values: Sequence[float]) -> float:
    changes = 0
    prev = values[0]
    for v in islice(values, 1, None):
        if v != prev and not (math.isnan(v) and math.isnan(prev)):
            changes += 1
        prev = v
    return float(changes)


def _resets(values: Sequence[float]) -> float:
    return float(sum(map(operator.lt, islice(values, 1, None), values)))


def _avg_over_time(values: Sequence[float]) -> float:
    total, count = values[0], 1.0
    mean = comp = 0.0
    incremental = False
    for f in islice(values, 1, None):
        count += 1
        if not incremental:
            new_total, new_comp = kahan_inc(f, total, comp)
            if not math.isinf(new_total):
                total, comp = new_total, new_comp
                continue
            incremental = True
            mean = total / (count - 1)
            comp /= count - 1
        q = (count - 1) / count
        mean, comp = kahan_inc(f / count, q * mean, q * comp)
    if incremental:
        return mean + comp
    return total / count + comp / count


def _sum_over_time(values: Sequence[float]) -> float:
    total = comp = 0.0
    for v in values:
        total, comp = kahan_inc(v, total, comp)
    if math.isinf(total):
        return total
    return total + comp


def _compare_over_time(
    better: Callable[[float, float], bool],
) -> Callable[[Sequence[float]], float]:
    def fn(values: Sequence[float]) -> float:
        best = values[0]
        for v in values:
            if better(v, best) or math.isnan(best):
                best = v
        return best

    return fn


def _variance(values: Sequence[float]) -> float:
    count = mean = c_mean = aux = c_aux = 0.0
    for v in values:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _of_values(fn: Callable[[Sequence[float]], float]) -> RangeFn:
    """A range function of the values alone."""

    def apply(
        _t: Sequence[int], values: Sequence[float], _s: int, _e: int, _at: int, _p: list[float]
    ) -> float | None:
        return fn(values)

    return apply


def _quantile_over_time(
    _ts: Sequence[int], values: Sequence[float], _s: int, _e: int, _t: int, params: list[float]
) -> float | None:
    return quantile(params[0], list(values))


RANGE_FUNCTIONS: Final[dict[str, RangeFn]] = {
    "rate": lambda ts, vs, start, end, _t, _p: _extrapolated_rate(ts, vs, start, end, True, True),
    "increase": lambda ts, vs, start, end, _t, _p: _extrapolated_rate(
        ts, vs, start, end, True, False
    ),
    "delta": lambda ts, vs, start, end, _t, _p: _extrapolated_rate(
        ts, vs, start, end, False, False
    ),
    "irate": lambda ts, vs, _s, _e, _t, _p: _instant_value(ts, vs, True),
    "idelta": lambda ts, vs, _s, _e, _t, _p: _instant_value(ts, vs, False),
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "changes": _of_values(_changes),
    "resets": _of_values(_resets),
    "avg_over_time": _of_values(_avg_over_time),
    "sum_over_time": _of_values(_sum_over_time),
    "min_over_time": _of_values(_compare_over_time(lambda v, best: v < best)),
    "max_over_time": _of_values(_compare_over_time(lambda v, best: v > best)),
    "count_over_time": _of_values(lambda vs: float(len(vs))),
    "last_over_time": _of_values(lambda vs: vs[-1]),
    "present_over_time": _of_values(lambda _: 1.0),
    "quantile_over_time": _quantile_over_time,
    "stddev_over_time": _of_values(lambda vs: math.sqrt(_variance(vs))),
    "stdvar_over_time": _of_values(_variance),
}


# -- per-value maths with Go's special cases ---------------------------------------------------


def _log(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(x: float) -> float:
        if x == 0:
            return -math.inf
        if x < 0 or math.isnan(x):
            return math.nan
        if math.isinf(x):
            return math.inf
        return fn(x)

    return wrapped


def _total(
    fn: Callable[[float], float], overflow: Callable[[float], float]
) -> Callable[[float], float]:
    """``fn`` with Python's exceptions mapped to Go's results: NaN off-domain, ``overflow(x)``."""

    def wrapped(x: float) -> float:
        try:
            return fn(x)
        except OverflowError:
            return overflow(x)
        except ValueError:
            return math.nan

    return wrapped


def _atanh(x: float) -> float:
    if x == 1:
        return math.inf
    if x == -1:
        return -math.inf
    if math.isnan(x) or abs(x) > 1:
        return math.nan
    return math.atanh(x)


def _sgn(x: float) -> float:
    if x < 0:
        return -1.0
    if x > 0:
        return 1.0
    return x


def _floor(x: float) -> float:
    return x if math.isinf(x) or math.isnan(x) else float(math.floor(x))


def _ceil(x: float) -> float:
    return x if math.isinf(x) or math.isnan(x) else float(math.ceil(x))


def _sign_inf(x: float) -> float:
    return math.copysign(math.inf, x)


def _pos_inf(_: float) -> float:
    return math.inf


MATH_FUNCTIONS: Final[dict[str, Callable[[float], float]]] = {
    "abs": abs,
    "ceil": _ceil,
    "floor": _floor,
    "sgn": _sgn,
    "exp": _total(math.exp, _pos_inf),
    "sqrt": _total(math.sqrt, _pos_inf),
    "ln": _log(math.log),
    "log2": _log(math.log2),
    "log10": _log(math.log10),
    "sin": _total(math.sin, _pos_inf),
    "cos": _total(math.cos, _pos_inf),
    "tan": _total(math.tan, _pos_inf),
    "asin": _total(math.asin, _pos_inf),
    "acos": _total(math.acos, _pos_inf),
    "atan": _total(math.atan, _pos_inf),
    "sinh": _total(math.sinh, _sign_inf),
    "cosh": _total(math.cosh, _pos_inf),
    "tanh": _total(math.tanh, _pos_inf),
    "asinh": _total(math.asinh, _sign_inf),
    "acosh": _total(math.acosh, _pos_inf),
    "atanh": _atanh,
    "deg": lambda x: x * 180 / math.pi,
    "rad": lambda x: x * math.pi / 180,
}


def round_to(x: float, to_nearest: float) -> float:
    """``round(v, to_nearest)``: ties round up, as Prometheus does."""
    inverse = _go_div(1.0, to_nearest)
    return _go_div(_floor(x * inverse + 0.5), inverse)


def go_max(x: float, y: float) -> float:
    """Go's ``math.Max``: +Inf wins over NaN, NaN over everything else."""
    if (math.isinf(x) and x > 0) or (math.isinf(y) and y > 0):
        return math.inf
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0 and y == 0:
        return x if math.copysign(1.0, x) > 0 else y
    return x if x > y else y


def go_min(x: float, y: float) -> float:
    """Go's ``math.Min``: -Inf wins over NaN, NaN over everything else."""
    if (math.isinf(x) and x < 0) or (math.isinf(y) and y < 0):
        return -math.inf
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0 and y == 0:
        return x if math.copysign(1.0, x) < 0 else y
    return x if x < y else y


def utc_time(seconds: float) -> datetime | None:
    """The UTC time of a Unix timestamp, truncated to whole seconds; None if out of range."""
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    try:
        return datetime.fromtimestamp(int(seconds), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


DATE_FUNCTIONS: Final[dict[str, Callable[[datetime], float]]] = {
    "day_of_month": lambda t: float(t.day),
    "day_of_week": lambda t: float(t.isoweekday() % 7),
    "day_of_year": lambda t: float(t.timetuple().tm_yday),
    "days_in_month": lambda t: float(calendar.monthrange(t.year, t.month)[1]),
    "hour": lambda t: float(t.hour),
    "minute": lambda t: float(t.minute),
    "month": lambda t: float(t.month),
    "year": lambda t: float(t.year),
}
