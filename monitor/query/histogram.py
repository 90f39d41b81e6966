"""``histogram_quantile`` over classic histograms: ``_bucket`` series with an ``le`` label.

As ``promql/quantile.go``'s ``BucketQuantile``: buckets of one histogram (same
labels but ``le``) are sorted by upper bound, buckets with equal bounds merged,
float precision noise and non-monotonic counts flattened out, and the quantile
interpolated linearly within its bucket (from 0 for the lowest bucket if its
bound is positive). Native histograms are not stored by monitord.
"""

from __future__ import annotations

import bisect
import math

from monitor.model import Labels
from monitor.query.samples import Sample

__all__ = ["bucket_quantile", "histogram_quantile"]

_LE = "le"


def histogram_quantile(q: float, vector: list[Sample]) -> list[Sample]:
    """One sample per classic histogram in ``vector``: its q-quantile."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for s in vector:
        try:
            upper = float(s.labels.get(_LE, ""))
        except ValueError:
            continue  # Prometheus warns about a bad "le" and skips the sample
        key = s.labels.without(_LE)
        groups.setdefault(key, []).append((upper, s.value))
    return [Sample(labels, bucket_quantile(q, buckets), True) for labels, buckets in groups.items()]


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile of one classic histogram given as ``(upper bound, cumulative count)``."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if ordered[-1][0] != math.inf:
        return math.nan
    bounds, counts = _coalesce(ordered)
    _correct_precision_errors(counts, 1e-12)
    _ensure_monotonic(counts)
    if len(bounds) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = bisect.bisect_left(counts, rank, 0, len(counts) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def _coalesce(ordered: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    bounds: list[float] = []
    counts: list[float] = []
    for upper, count in ordered:
        if bounds and bounds[-1] == upper:
            counts[-1] += count
        else:
            bounds.append(upper)
            counts.append(count)
    return bounds, counts


def _correct_precision_errors(counts: list[float], tolerance: float) -> None:
    prev = counts[0]
    for i in range(1, len(counts)):
        curr = counts[i]
        delta = abs(curr - prev)
        if delta == 0:
            continue
        if curr != 0 and delta / curr <= tolerance:
            counts[i] = prev
        else:
            prev = curr


def _ensure_monotonic(counts: list[float]) -> None:
    highest = counts[0]
    for i in range(1, len(counts)):
        if counts[i] > highest:
            highest = counts[i]
        elif counts[i] < highest:
            counts[i] = highest
