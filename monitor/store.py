"""The in-memory time-series store: one fixed-capacity ring of points per series, plus an index.

A series is a metric name plus :class:`~monitor.model.Labels`. Each keeps its newest
``samples_per_series`` points as ``(timestamp, value)``: timestamps are int
milliseconds since the epoch, as in Prometheus, and values are floats stored
bit for bit, so the staleness marker :data:`~monitor.model.STALE_NAN` survives.
Points live in two compact arrays (signed 64-bit ints and doubles) that grow
up to the capacity and are then overwritten in place, so memory is bounded by
``samples_per_series * max_series``: 16 bytes a point, plus per-series overhead.

Concurrency: none. The daemon is single-threaded asyncio and no method here
awaits, so every call runs to completion without interleaving; there are no
locks, and the store must not be shared with other threads.
"""

from __future__ import annotations

import enum
import re
import struct
from array import array
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final, cast

from monitor.model import Labels, MetricMetadata, Sample

__all__ = ["MatchOp", "Matcher", "Series", "Store", "StoreStats"]

NAME_LABEL: Final = "__name__"

_NO_TIMESTAMP: Final = -(2**63)  # below every storable timestamp: an empty series' "last"
# Timestamps are signed 64-bit. "l" is that on 64-bit Linux and converts faster than "q".
_TS_CODE: Final = "l" if array("l").itemsize == 8 else "q"
_DOUBLE: Final = struct.Struct("<d")
_NO_VIEW: Final = memoryview(b"")
# How many matchers' matched values are kept per label name, at most.
_MATCHED_PER_LABEL: Final = 512


class MatchOp(enum.StrEnum):
    """A label matcher's operator, spelt as in PromQL."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    """A PromQL label matcher; ``name`` ``__name__`` matches the metric name.

    Regular expressions are fully anchored, as in Prometheus, and compiled once.
    A label a series does not have matches as the empty string.
    """

    name: str
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = field(
        init=False, default=None, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        op = MatchOp(self.op)
        object.__setattr__(self, "op", op)
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regular expression in matcher {self}: {exc}") from exc
            object.__setattr__(self, "_pattern", pattern)

    def matches(self, value: str) -> bool:
        """Tell whether a label value (``""`` for a missing label) satisfies this matcher."""
        op = self.op
        if op is MatchOp.EQ:
            return value == self.value
        if op is MatchOp.NE:
            return value != self.value
        assert self._pattern is not None
        found = self._pattern.fullmatch(value) is not None
        return found if op is MatchOp.RE else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value!r}"


class Series:
    """One metric name plus labels, with a fixed-capacity ring of its newest points.

    ``labels`` never holds ``__name__``. Timestamps are strictly increasing.
    Use the :class:`Store` to write; a series on its own is read-only.
    """

    # _head is -1 while the ring is still growing (points are in order in
    # [0, len)); once full, it is the slot of the oldest point, the next to go,
    # and _tsw/_vsw are memoryviews of the arrays: item assignment through a
    # memoryview converts the number directly, where the array parses a format.
    # _nan_ts is the timestamp of the newest NaN value seen (a staleness marker is
    # a NaN), so readers can skip their NaN scan of a window that starts after it.
    # The points up to _scanned_ts have been looked at; newer ones are looked at
    # when nan_after() is next asked, so the append path does no work for it.
    # Being times rather than slots, neither needs upkeep as the ring wraps or
    # resizes. _named caches labels_with_name().
    __slots__ = (
        "_head",
        "_last_ts",
        "_named",
        "_nan_ts",
        "_scanned_ts",
        "_ts",
        "_tsw",
        "_vs",
        "_vsw",
        "labels",
        "name",
    )

    name: str
    labels: Labels
    _ts: array[int]
    _vs: array[float]
    _tsw: memoryview[int]
    _vsw: memoryview[float]
    _head: int
    _last_ts: int
    _nan_ts: int
    _scanned_ts: int
    _named: Labels | None

    def __init__(self, name: str, labels: Labels) -> None:
        self.name = name
        self.labels = labels
        self._set_arrays(array(_TS_CODE), array("d"), -1)
        self._last_ts = _NO_TIMESTAMP
        self._nan_ts = self._scanned_ts = _NO_TIMESTAMP
        self._named = None

    def __len__(self) -> int:
        return len(self._ts)

    def __repr__(self) -> str:
        return f"<Series {self.name}{self.labels} with {len(self._ts)} points>"

    @property
    def last_timestamp(self) -> int | None:
        """The newest point's timestamp, or None when there is no point."""
        return self._last_ts if self._ts else None

    @property
    def last_value(self) -> float | None:
        """The newest point's value, or None when there is no point."""
        return self._vs[self._newest_slot()] if self._vs else None

    def latest(self, t_ms: int, lookback_ms: int) -> tuple[int, float] | None:
        """The newest point with ``t_ms - lookback_ms < timestamp <= t_ms``, if any.

        A staleness marker is returned like any other value; the caller decides.
        """
        ts = self._ts
        for lo, hi in reversed(self._segments()):
            i = bisect_right(ts, t_ms, lo, hi)
            if i > lo:
                if ts[i - 1] > t_ms - lookback_ms:
                    return ts[i - 1], self._vs[i - 1]
                return None
        return None

    def range(self, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        """The points with ``start_ms < timestamp <= end_ms``, oldest first."""
        ts, vs = self._ts, self._vs
        out: list[tuple[int, float]] = []
        for lo, hi in self._segments():
            a = bisect_right(ts, start_ms, lo, hi)
            b = bisect_right(ts, end_ms, a, hi)
            if a < b:
                out.extend(zip(ts[a:b], vs[a:b], strict=True))
        return out

    def columns(self, start_ms: int, end_ms: int) -> tuple[array[int], array[float]]:
        """The points with ``start_ms < timestamp <= end_ms`` as two arrays: timestamps, values."""
        ts, vs, h = self._ts, self._vs, self._head
        if h > 0 and ts[0] > start_ms:  # the window reaches into the older segment
            a = bisect_right(ts, start_ms, h)
            b = bisect_right(ts, end_ms, a)
            c = bisect_right(ts, end_ms, 0, h)
            return ts[a:b] + ts[:c], vs[a:b] + vs[:c]
        # Every point in the window is in one sorted run: the newest segment, or all of them.
        hi = h if h > 0 else len(ts)
        a = bisect_right(ts, start_ms, 0, hi)
        b = bisect_right(ts, end_ms, a, hi)
        return ts[a:b], vs[a:b]

    def nan_after(self, start_ms: int) -> bool:
        """Tell whether a point newer than ``start_ms`` may be NaN; False means none is."""
        if self._scanned_ts != self._last_ts:
            times, values = self.columns(self._scanned_ts, self._last_ts)
            for i in range(len(values) - 1, -1, -1):
                v = values[i]
                if v != v:  # NaN
                    self._nan_ts = times[i]
                    break
            self._scanned_ts = self._last_ts
        return self._nan_ts > start_ms

    def labels_with_name(self) -> Labels:
        """The labels with ``__name__`` added, built once per series."""
        named = self._named
        if named is None:
            named = self._named = Labels((*self.labels.items_tuple(), (NAME_LABEL, self.name)))
        return named

    def points(self) -> list[tuple[int, float]]:
        """All points, oldest first."""
        ts, vs = self._ts, self._vs
        out: list[tuple[int, float]] = []
        for lo, hi in self._segments():
            out.extend(zip(ts[lo:hi], vs[lo:hi], strict=True))
        return out

    def _set_arrays(self, ts: array[int], vs: array[float], head: int) -> None:
        """Install new storage; ``head`` -1 means still growing, else the ring is full."""
        self._ts, self._vs, self._head = ts, vs, head
        # An exported array cannot grow, so growing rings get views of nothing.
        self._tsw = memoryview(ts) if head >= 0 else _NO_VIEW
        self._vsw = cast("memoryview[float]", memoryview(vs) if head >= 0 else _NO_VIEW)

    def _segments(self) -> tuple[tuple[int, int], ...]:
        """The ring's slot ranges in time order: each is sorted, and each is older than the next."""
        h, n = self._head, len(self._ts)
        return ((h, n), (0, h)) if h > 0 else ((0, n),)

    def _newest_slot(self) -> int:
        h = self._head
        return h - 1 if h > 0 else -1

    def _same_as_last(self, value: float) -> bool:
        """Tell whether ``value`` is bit for bit the newest value (so NaN equals the same NaN)."""
        # array("d") converts like the ring does, and raises TypeError as the ring would.
        return array("d", (value,)).tobytes() == _DOUBLE.pack(self._vs[self._newest_slot()])

    def _linearize(self, capacity: int) -> None:
        """Put the points in time order from slot 0, keeping at most the newest ``capacity``."""
        h = self._head
        ts, vs = self._ts, self._vs
        if h > 0:
            ts, vs = ts[h:] + ts[:h], vs[h:] + vs[:h]
        if len(ts) > capacity:
            ts, vs = ts[-capacity:], vs[-capacity:]
        elif h <= 0:
            # Copy anyway: array slices are allocated at their exact size, growth is not.
            ts, vs = ts[:], vs[:]
        self._set_arrays(ts, vs, 0 if len(ts) == capacity else -1)

    def _drop_slot(self, slot: int) -> None:
        """Remove a full ring's oldest point (``slot``, the head): repairs a half-done overwrite."""
        ts, vs = self._ts, self._vs
        self._set_arrays(ts[slot + 1 :] + ts[:slot], vs[slot + 1 :] + vs[:slot], -1)


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of the store's size and counters, for the exporter."""

    series: int
    samples: int
    appended_total: int
    series_refused_total: int
    samples_out_of_order_total: int
    series_removed_total: int
    capacity: int
    max_series: int
    samples_invalid_total: int = 0


class Store:
    """The in-memory time-series store: rings of points, indexed by name and label pairs.

    Not thread-safe, and needs no locks: see the module docstring.
    """

    def __init__(
        self,
        *,
        samples_per_series: int = 720,
        retention: float = 7200.0,
        max_series: int = 100_000,
    ) -> None:
        _check_settings(samples_per_series, retention, max_series)
        self._capacity = samples_per_series
        self._next_slot = _next_slots(samples_per_series)
        self._retention_ms = round(retention * 1000)
        self._max_series = max_series
        # name -> labels -> series: the append path's lookup, and the name index.
        self._by_name: dict[str, dict[Labels, Series]] = {}
        # label name -> label value -> series having it; "__name__" indexes the metric name.
        self._postings: dict[str, dict[str, set[Series]]] = {}
        # label name -> matcher (other than =) -> the posting sets of the values it
        # matches: the live sets, so new series of those values are in them. Forgotten
        # when the label gains or loses a value.
        self._matched: dict[str, dict[Matcher, list[set[Series]]]] = {}
        self._metadata: dict[str, MetricMetadata] = {}
        self._count = 0
        self._appended_total = 0
        self._series_refused_total = 0
        self._out_of_order_total = 0
        self._invalid_total = 0
        self._removed_total = 0

    # -- writing -------------------------------------------------------------------------------

    def append(self, samples: Iterable[Sample], default_timestamp: int) -> int:
        """Store samples (timestamp None means ``default_timestamp``); return how many were stored.

        Refused and counted: a sample older than its series' newest point, one
        with the same timestamp but a different value, one that would create a
        series beyond ``max_series``, and, as invalid, one whose timestamp is not
        an int64 or whose value is not a float. A repeat of the newest point is
        ignored. A refused or invalid sample does not stop the rest of the batch.
        """
        batch = samples if isinstance(samples, Collection) else list(samples)
        by_name = self._by_name
        cap = self._capacity
        next_slot = self._next_slot
        no_series: dict[Labels, Series] = {}
        rejected = 0
        invalid = 0
        # The hot path: two dict lookups and the ring write inlined, through
        # memoryviews once the ring is full; no method call and no allocation
        # per sample. Accepted samples are not counted: rejected ones are.
        for s in batch:
            try:
                ts = s.timestamp
                if ts is None:
                    ts = default_timestamp
                ser = by_name.get(s.name, no_series).get(s.labels)
                if ser is None:
                    if not self._create(s, ts):
                        rejected += 1
                    continue
                if ts <= ser._last_ts:
                    self._refuse_old(ser, ts, s.value)
                    rejected += 1
                    continue
                h = ser._head
                if h >= 0:
                    ser._tsw[h] = ts
                    try:
                        ser._vsw[h] = s.value
                    except BaseException:
                        ser._drop_slot(h)
                        raise
                    ser._head = next_slot[h]
                else:
                    tsa = ser._ts
                    tsa.append(ts)
                    try:
                        ser._vs.append(s.value)
                    except BaseException:
                        tsa.pop()
                        raise
                    if len(tsa) == cap:
                        ser._set_arrays(tsa, ser._vs, 0)
                ser._last_ts = ts
            except (AttributeError, TypeError, ValueError, OverflowError):
                invalid += 1
        accepted = len(batch) - rejected - invalid
        self._appended_total += accepted
        self._invalid_total += invalid
        return accepted

    def _create(self, sample: Sample, ts: int) -> bool:
        """Start a series with its first point; False if ``max_series`` refuses it."""
        if self._count >= self._max_series:
            self._series_refused_total += 1
            return False
        name, labels = sample.name, sample.labels
        ser = Series(name, labels)
        # Build the arrays before touching the index, so a bad sample leaves no trace.
        ser._set_arrays(
            array(_TS_CODE, (ts,)), array("d", (sample.value,)), 0 if self._capacity == 1 else -1
        )
        ser._last_ts = ts
        inner = self._by_name.get(name)
        if inner is None:
            self._by_name[name] = {labels: ser}
        else:
            inner[labels] = ser
        postings = self._postings
        for label, value in ((NAME_LABEL, name), *labels.items_tuple()):
            by_value = postings.setdefault(label, {})
            holders = by_value.get(value)
            if holders is None:
                holders = by_value[value] = set()
                self._matched.pop(label, None)
            holders.add(ser)
        self._count += 1
        return True

    def _refuse_old(self, ser: Series, ts: int, value: float) -> None:
        """Count a sample not newer than its series' newest point, unless it repeats it exactly."""
        if ts != ser._last_ts or not ser._same_as_last(value):
            self._out_of_order_total += 1

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str, labels: Labels) -> Series | None:
        """The series with exactly this name and labels, if stored."""
        inner = self._by_name.get(name)
        return None if inner is None else inner.get(labels)

    def select(self, matchers: Sequence[Matcher], *, sort: bool = True) -> list[Series]:
        """The series matching every matcher (all series when there is none).

        Sorted by name, then labels, unless ``sort`` is False (for a caller that
        orders them its own way). Matchers that a missing label cannot satisfy
        pick candidates from the index; the others then filter them.
        """
        # Per matcher, the posting sets of the values it matches. A series has one
        # value per label, so they are disjoint: their sizes add up to their union's.
        required: list[list[set[Series]]] = []
        filters: list[Matcher] = []
        for m in matchers:
            if m.matches(""):
                filters.append(m)
                continue
            parts = self._postings_for(m)
            if not parts:
                return []
            required.append(parts)
        if required:
            required.sort(key=_total_size)
            first = required[0]
            found: AbstractSet[Series] = first[0] if len(first) == 1 else set().union(*first)
            for parts in required[1:]:
                if len(parts) == 1:
                    found = found & parts[0]
                else:  # cheaper than building the union: each & walks the smaller set
                    found = set().union(*[found & part for part in parts])
            for m in filters:
                found = {s for s in found if m.matches(_label_value(s, m.name))}
            return sorted(found, key=_series_key) if sort else list(found)
        candidates = set(self)
        for m in filters:
            # Drop the series whose value of the label fails; a missing label passes.
            for value, holders in self._postings.get(m.name, {}).items():
                if not m.matches(value):
                    candidates -= holders
        return sorted(candidates, key=_series_key) if sort else list(candidates)

    def _postings_for(self, m: Matcher) -> list[set[Series]]:
        """The posting sets of the values of label ``m.name`` that satisfy ``m``; not to be mutated.

        Which values match is remembered until the label gains or loses a value.
        """
        by_value = self._postings.get(m.name)
        if by_value is None:
            return []
        if m.op is MatchOp.EQ:
            holders = by_value.get(m.value)
            return [] if holders is None else [holders]
        known = self._matched.get(m.name)
        if known is None:
            known = self._matched[m.name] = {}
        parts = known.get(m)
        if parts is None:
            if len(known) >= _MATCHED_PER_LABEL:
                known.clear()
            parts = known[m] = [s for value, s in by_value.items() if m.matches(value)]
        return parts

    def __iter__(self) -> Iterator[Series]:
        """Every series, from a snapshot: writes during the iteration do not disturb it."""
        return iter([s for inner in self._by_name.values() for s in inner.values()])

    def __len__(self) -> int:
        return self._count

    def names(self) -> list[str]:
        """The metric names that have at least one series, sorted."""
        return sorted(self._by_name)

    def set_metadata(self, name: str, metadata: MetricMetadata) -> None:
        """Record the type and help of a metric name (kept even while it has no series)."""
        self._metadata[name] = metadata

    def metadata(self, name: str) -> MetricMetadata | None:
        """The type and help recorded for a metric name, if any."""
        return self._metadata.get(name)

    # -- upkeep --------------------------------------------------------------------------------

    def gc(self, now_ms: int) -> int:
        """Drop the series not written since ``now_ms - retention``; return how many."""
        cutoff = now_ms - self._retention_ms
        dead = [s for s in self if s._last_ts < cutoff]
        for ser in dead:
            self._remove(ser)
        self._removed_total += len(dead)
        return len(dead)

    def _remove(self, ser: Series) -> None:
        inner = self._by_name[ser.name]
        del inner[ser.labels]
        if not inner:
            del self._by_name[ser.name]
        postings = self._postings
        for label, value in ((NAME_LABEL, ser.name), *ser.labels.items_tuple()):
            by_value = postings[label]
            holders = by_value[value]
            holders.discard(ser)
            if not holders:
                del by_value[value]
                self._matched.pop(label, None)
                if not by_value:
                    del postings[label]
        self._count -= 1

    def reconfigure(
        self,
        *,
        samples_per_series: int | None = None,
        retention: float | None = None,
        max_series: int | None = None,
    ) -> None:
        """Apply new limits on a config reload; None keeps a setting.

        A new capacity resizes every ring, keeping its newest points. A lower
        ``max_series`` drops nothing: it only refuses new series until below it.
        """
        capacity = self._capacity if samples_per_series is None else samples_per_series
        retention_s = self._retention_ms / 1000 if retention is None else retention
        limit = self._max_series if max_series is None else max_series
        _check_settings(capacity, retention_s, limit)
        if capacity != self._capacity:
            for ser in self:
                ser._linearize(capacity)
            self._capacity = capacity
            self._next_slot = _next_slots(capacity)
        self._retention_ms = round(retention_s * 1000)
        self._max_series = limit

    def stats(self) -> StoreStats:
        """Current size and counters; counts the points, so O(series)."""
        return StoreStats(
            series=self._count,
            samples=sum(len(s._ts) for inner in self._by_name.values() for s in inner.values()),
            appended_total=self._appended_total,
            series_refused_total=self._series_refused_total,
            samples_out_of_order_total=self._out_of_order_total,
            series_removed_total=self._removed_total,
            capacity=self._capacity,
            max_series=self._max_series,
            samples_invalid_total=self._invalid_total,
        )


def _check_settings(samples_per_series: int, retention: float, max_series: int) -> None:
    if samples_per_series < 1:
        raise ValueError(f"samples_per_series must be at least 1, got {samples_per_series}")
    if not retention > 0:
        raise ValueError(f"retention must be a positive number of seconds, got {retention}")
    if max_series < 0:
        raise ValueError(f"max_series must not be negative, got {max_series}")


def _next_slots(capacity: int) -> list[int]:
    """``slot + 1`` wrapping to 0, precomputed: the hot path then allocates no int per write."""
    return [*range(1, capacity), 0]


def _total_size(parts: list[set[Series]]) -> int:
    return sum(map(len, parts))


def _label_value(series: Series, name: str) -> str:
    if name == NAME_LABEL:
        return series.name
    return series.labels.get(name, "")


def _series_key(series: Series) -> tuple[str, tuple[tuple[str, str], ...]]:
    return series.name, series.labels.items_tuple()
