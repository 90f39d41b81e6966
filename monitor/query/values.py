"""The values a PromQL expression evaluates to, and Prometheus's spelling of floats.

An instant query yields a :class:`Scalar`, a :class:`String`, a :class:`Vector`
(one sample per series) or, for a range selector such as ``up[5m]``, a
:class:`Matrix` of raw points; a range query always yields a :class:`Matrix`.
Labels include ``__name__`` when the series has a name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from monitor.model import Labels

__all__ = [
    "Matrix",
    "RangeSeries",
    "Scalar",
    "String",
    "Value",
    "Vector",
    "VectorSample",
    "format_float",
]


@dataclass(frozen=True, slots=True)
class Scalar:
    """A single float, not attached to any series."""

    value: float


@dataclass(frozen=True, slots=True)
class String:
    """A string literal's value."""

    value: str


@dataclass(frozen=True, slots=True)
class VectorSample:
    """One series' value at the evaluation time."""

    labels: Labels
    value: float


class Vector(list[VectorSample]):
    """An instant vector: at most one sample per label set."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series' points, ``(timestamp in ms, value)``, oldest first."""

    labels: Labels
    points: list[tuple[int, float]]


class Matrix(list[RangeSeries]):
    """A range vector, or the result of a range query: one entry per label set."""

    __slots__ = ()


Value: TypeAlias = Scalar | String | Vector | Matrix


def format_float(v: float) -> str:
    """Spell a float as Prometheus's API does: ``+Inf``, ``-Inf``, ``NaN``, else Go's 'f', -1.

    Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` writes the shortest decimal that
    reads back as ``v``, without an exponent: ``1e+21`` is ``1000000000000000000000``
    and ``1e-7`` is ``0.0000001``.
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    # repr() gives the shortest digits that read back as ``v``, as Go's precision -1 does.
    return format(Decimal(repr(v)).normalize(), "f")
