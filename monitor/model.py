"""The values every part of monitord passes around: labels, samples, statuses, check results."""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "STALE_NAN",
    "Alert",
    "AlertState",
    "CheckResult",
    "Labels",
    "MetricMetadata",
    "MetricType",
    "Sample",
    "Status",
    "is_stale_nan",
]

# Prometheus' staleness marker: a NaN with a specific bit pattern (value.StaleNaN).
_STALE_NAN_BITS: Final = 0x7FF0000000000002
STALE_NAN: Final[float] = struct.unpack("<d", struct.pack("<Q", _STALE_NAN_BITS))[0]


def is_stale_nan(value: float) -> bool:
    """Tell whether ``value`` is Prometheus' staleness marker (not any NaN)."""
    return value != value and struct.pack("<d", value) == struct.pack("<Q", _STALE_NAN_BITS)


class Labels(Mapping[str, str]):
    """An immutable, hashable mapping of label name to value, kept sorted by name."""

    __slots__ = ("_hash", "_items")

    _items: tuple[tuple[str, str], ...]
    _hash: int

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = tuple(sorted(pairs))
        self._hash = hash(self._items)

    @classmethod
    def of(cls, **labels: str) -> Labels:
        """Build labels from keyword arguments: ``Labels.of(job="x")``."""
        return cls(labels)

    def __getitem__(self, key: str) -> str:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._hash == other._hash and self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._items)
        return f"Labels({inner})"

    def __str__(self) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in self._items)
        return "{" + inner + "}"

    def items_tuple(self) -> tuple[tuple[str, str], ...]:
        """The sorted ``(name, value)`` pairs."""
        return self._items

    def merge(self, other: Mapping[str, str]) -> Labels:
        """A copy with ``other``'s labels added; ``other`` wins on conflicts."""
        if not other:
            return self
        merged = dict(self._items)
        merged.update(other)
        return Labels(merged)

    def without(self, *names: str) -> Labels:
        """A copy without the given label names."""
        return Labels((k, v) for k, v in self._items if k not in names)


_EMPTY_LABELS: Final = Labels()


class MetricType(enum.StrEnum):
    """A metric family's type, as in the Prometheus exposition formats."""

    COUNTER = "counter"
    GAUGE = "gauge"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MetricMetadata:
    """What a producer says about a metric name: its type and help text."""

    type: MetricType = MetricType.GAUGE
    help: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series: metric name, labels, value and an optional timestamp.

    ``timestamp`` is in milliseconds since the epoch, as in Prometheus; ``None``
    means "stamp it with the time of the check run that produced it".
    """

    name: str
    labels: Labels = _EMPTY_LABELS
    value: float = 0.0
    timestamp: int | None = None


class Status(enum.IntEnum):
    """A check's verdict, with the Nagios plugin exit codes as values."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def is_up(self) -> bool:
        """OK and WARNING mean the target answered; CRITICAL and UNKNOWN do not."""
        return self <= Status.WARNING


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check run: status, one-line message, samples and duration.

    ``metadata`` tells the exporter the type and help of the metric names in
    ``samples``; names not listed are exported as gauges.
    """

    status: Status
    message: str = ""
    samples: tuple[Sample, ...] = ()
    duration: float = 0.0
    metadata: Mapping[str, MetricMetadata] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.duration) or self.duration < 0:
            raise ValueError(f"duration must be a non-negative number, got {self.duration!r}")


class AlertState(enum.StrEnum):
    """The state of one alert instance, spelt as Prometheus' API spells it.

    A resolved alert is an INACTIVE one with ``resolved_at`` set, as in Prometheus.
    """

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"

    @property
    def rank(self) -> int:
        """Order for "the highest state of a rule's alerts": firing > pending > inactive."""
        return _ALERT_STATE_RANK[self]


_ALERT_STATE_RANK: Final = {AlertState.INACTIVE: 0, AlertState.PENDING: 1, AlertState.FIRING: 2}


@dataclass(frozen=True, slots=True)
class Alert:
    """One instance of an alerting rule, as the API shows it and notifiers receive it.

    Times are int milliseconds since the epoch (``None`` when not reached), like
    sample timestamps. ``labels`` include ``alertname`` and the rule's labels;
    they do not include external labels (the hand-off to notifiers adds those).
    ``valid_until`` is set when the alert is sent: a receiver should consider a
    firing alert resolved if it hears nothing more of it by then.
    """

    labels: Labels
    annotations: Labels
    state: AlertState
    active_at: int
    value: float
    fired_at: int | None = None
    resolved_at: int | None = None
    keep_firing_since: int | None = None
    last_sent_at: int | None = None
    valid_until: int | None = None
    generator_url: str = ""
    """Where the rule's expression can be seen (Prometheus' ``GeneratorURL``); set on sending."""

    @property
    def starts_at(self) -> int | None:
        """When the alert began for a receiver: when it fired (Prometheus' ``StartsAt``)."""
        return self.fired_at

    @property
    def ends_at(self) -> int | None:
        """When it resolved, or else until when a firing alert stays valid (``EndsAt``)."""
        return self.resolved_at if self.resolved_at is not None else self.valid_until
