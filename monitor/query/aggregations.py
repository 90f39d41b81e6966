"""Aggregation operators (``sum``, ``avg``, ``topk``, ``count_values``, ...) over one step's vector.

Semantics follow ``promql/engine.go`` (``aggregation``, ``aggregationK``,
``aggregationCountValues``): Kahan summation for ``sum`` and ``avg``, Welford's
method for ``stddev``/``stdvar``, ``quantile`` interpolating between ranks,
``topk``/``bottomk`` keeping the input labels, and the groups' output order
following the first appearance of each group in the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

from monitor.model import Labels
from monitor.query.samples import NAME, EvalError, Sample, kahan_inc, set_label
from monitor.query.values import format_float

__all__ = ["aggregate", "aggregate_k", "count_values", "grouping_key", "quantile"]

_MAX_INT64: Final = 2.0**63


def grouping_key(labels: Labels, grouping: Sequence[str], without: bool) -> tuple[str, ...]:
    """The key of the group a sample belongs to."""
    if without:
        excluded = {NAME, *grouping}
        return tuple(x for k, v in labels.items_tuple() if k not in excluded for x in (k, v))
    return tuple(labels.get(name, "") for name in grouping)


def _group_labels(labels: Labels, grouping: Sequence[str], without: bool) -> Labels:
    if without:
        excluded = {NAME, *grouping}
        return Labels((k, v) for k, v in labels.items_tuple() if k not in excluded)
    keep = set(grouping)
    return Labels((k, v) for k, v in labels.items_tuple() if k in keep)


class _Group:
    __slots__ = ("comp", "count", "drop_name", "incremental", "labels", "mean", "value", "values")

    def __init__(self, labels: Labels, first: Sample) -> None:
        self.labels = labels
        self.value = first.value
        self.mean = first.value
        self.comp = 0.0
        self.count = 1.0
        self.drop_name = first.drop_name
        self.incremental = False
        self.values: list[float] = [first.value]


def aggregate(
    op: str, vector: list[Sample], grouping: Sequence[str], without: bool, param: float
) -> list[Sample]:
    """Evaluate ``sum avg min max count group stddev stdvar quantile`` on one step's vector."""
    groups: dict[tuple[str, ...], _Group] = {}
    update = _UPDATES[op]
    for s in vector:
        key = grouping_key(s.labels, grouping, without)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(_group_labels(s.labels, grouping, without), s)
            if op in ("stddev", "stdvar"):
                group.value = math.nan if math.isnan(s.value) or math.isinf(s.value) else 0.0
            elif op == "group":
                group.value = 1.0
            continue
        if s.drop_name:
            group.drop_name = True
        update(group, s.value)
    out: list[Sample] = []
    for group in groups.values():
        out.append(Sample(group.labels, _finish(op, group, param), group.drop_name))
    return out


def _sum(group: _Group, f: float) -> None:
    group.value, group.comp = kahan_inc(f, group.value, group.comp)


def _avg(group: _Group, f: float) -> None:
    group.count += 1
    if not group.incremental:
        total, comp = kahan_inc(f, group.value, group.comp)
        if not math.isinf(total):
            group.value, group.comp = total, comp
            return
        # The sum would overflow: from here on, keep an incremental mean instead.
        group.incremental = True
        group.mean = group.value / (group.count - 1)
        group.comp /= group.count - 1
    q = (group.count - 1) / group.count
    group.mean, group.comp = kahan_inc(f / group.count, q * group.mean, q * group.comp)


def _max(group: _Group, f: float) -> None:
    if group.value < f or math.isnan(group.value):
        group.value = f


def _min(group: _Group, f: float) -> None:
    if group.value > f or math.isnan(group.value):
        group.value = f


def _count(group: _Group, f: float) -> None:
    group.count += 1


def _group(group: _Group, f: float) -> None:
    return None


def _variance(group: _Group, f: float) -> None:
    group.count += 1
    delta = f - group.mean
    group.mean += delta / group.count
    group.value += delta * (f - group.mean)


def _collect(group: _Group, f: float) -> None:
    group.values.append(f)


_UPDATES: Final[dict[str, Callable[[_Group, float], None]]] = {
    "sum": _sum,
    "avg": _avg,
    "max": _max,
    "min": _min,
    "count": _count,
    "group": _group,
    "stddev": _variance,
    "stdvar": _variance,
    "quantile": _collect,
}


def _finish(op: str, group: _Group, param: float) -> float:
    if op == "sum":
        return group.value + group.comp
    if op == "avg":
        if group.incremental:
            return group.mean + group.comp
        return group.value / group.count + group.comp / group.count
    if op == "count":
        return group.count
    if op == "stdvar":
        return group.value / group.count
    if op == "stddev":
        return math.sqrt(group.value / group.count)
    if op == "quantile":
        return quantile(param, group.values)
    return group.value


def quantile(q: float, values: list[float]) -> float:
    """The q-quantile of values, interpolating between ranks (Prometheus's ``quantile``)."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=_nan_first)
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _nan_first(v: float) -> tuple[int, float]:
    return (0, 0.0) if math.isnan(v) else (1, v)


def aggregate_k(
    op: str, vector: list[Sample], grouping: Sequence[str], without: bool, param: float
) -> list[Sample]:
    """Evaluate ``topk``/``bottomk``: the k largest/smallest samples of each group, labels kept.

    Within a group the result is ordered (descending for topk), and groups appear
    in the order they are first met, as Prometheus returns an instant query.
    """
    if math.isnan(param):
        raise EvalError("Parameter value is NaN")
    if param <= -_MAX_INT64:
        raise EvalError(f"Scalar value {format_float(param)} underflows int64")
    if param >= _MAX_INT64:
        raise EvalError(f"Scalar value {format_float(param)} overflows int64")
    k = min(int(param), len(vector))
    if k < 1:
        return []
    # "less" puts the sample to evict first at the top of the heap, NaN always first.
    if op == "topk":

        def less(a: float, b: float) -> bool:
            return math.isnan(a) or a < b
    else:

        def less(a: float, b: float) -> bool:
            return math.isnan(a) or a > b

    def better(new: float, worst: float) -> bool:
        beats = new > worst if op == "topk" else new < worst
        return beats or (math.isnan(worst) and not math.isnan(new))

    heaps: dict[tuple[str, ...], list[Sample]] = {}
    for s in vector:
        key = grouping_key(s.labels, grouping, without)
        heap = heaps.setdefault(key, [])
        if len(heap) < k:
            heap.append(s)
            _up(heap, len(heap) - 1, less)
        elif better(s.value, heap[0].value):
            heap[0] = s
            if k > 1:
                _down(heap, 0, less)
    out: list[Sample] = []
    for heap in heaps.values():
        _go_reverse_sort(heap, less)
        out.extend(heap)
    return out


def count_values(
    label: str, vector: list[Sample], grouping: Sequence[str], without: bool
) -> list[Sample]:
    """Evaluate ``count_values``: how many samples of each group have each value."""
    groups: dict[tuple[str, ...], Sample] = {}
    keys = list(grouping) if without else sorted({*grouping, label})
    for s in vector:
        labels = set_label(s.labels, label, format_float(s.value))
        key = grouping_key(labels, keys, without)
        group = groups.get(key)
        if group is None:
            groups[key] = Sample(_group_labels(labels, keys, without), 1.0)
        else:
            group.value += 1
    return list(groups.values())


# Go's container/heap and its small-slice insertion sort, so that ties come out as in Prometheus.


def _up(heap: list[Sample], j: int, less: Callable[[float, float], bool]) -> None:
    while j > 0:
        i = (j - 1) // 2
        if i == j or not less(heap[j].value, heap[i].value):
            break
        heap[i], heap[j] = heap[j], heap[i]
        j = i


def _down(heap: list[Sample], i0: int, less: Callable[[float, float], bool]) -> None:
    n = len(heap)
    i = i0
    while True:
        j1 = 2 * i + 1
        if j1 >= n:
            break
        j = j1
        j2 = j1 + 1
        if j2 < n and less(heap[j2].value, heap[j1].value):
            j = j2
        if not less(heap[j].value, heap[i].value):
            break
        heap[i], heap[j] = heap[j], heap[i]
        i = j


def _go_reverse_sort(heap: list[Sample], less: Callable[[float, float], bool]) -> None:
    """``sort.Sort(sort.Reverse(heap))``: insertion sort as Go does for short slices."""
    if len(heap) > 12:
        heap.sort(key=lambda s: _Reversed(s.value, less))
        return
    for i in range(1, len(heap)):
        j = i
        # Reverse(less)(j, j-1) is less(j-1, j).
        while j > 0 and less(heap[j - 1].value, heap[j].value):
            heap[j], heap[j - 1] = heap[j - 1], heap[j]
            j -= 1


class _Reversed:
    """A sort key ordering values by the reverse of ``less``."""

    __slots__ = ("less", "value")

    def __init__(self, value: float, less: Callable[[float, float], bool]) -> None:
        self.value = value
        self.less = less

    def __lt__(self, other: _Reversed) -> bool:
        return self.less(other.value, self.value)
