"""The engine's working values: samples that remember whether their name must go, step by step.

Evaluation runs over the steps of a range (an instant query is a range of one
step), so every instant-vector expression evaluates to one list of
:class:`Sample` per step, and every scalar expression to one float per step.

Prometheus removes ``__name__`` late ("delayed name removal"): a function or
operator that changes a series' meaning only marks the sample (``drop_name``),
so that ``label_replace`` can still read or keep the name; the engine drops
marked names when it hands the result out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from monitor.model import Labels

__all__ = [
    "DUPLICATE_LABELSET",
    "NAME",
    "EvalError",
    "Evaluated",
    "Sample",
    "Scalars",
    "StepVectors",
    "StringValue",
    "kahan_inc",
    "set_label",
]

NAME: Final = "__name__"
DUPLICATE_LABELSET: Final = "vector cannot contain metrics with the same labelset"


class EvalError(Exception):
    """Evaluation failed; the engine turns this into a QueryError naming the expression."""


class Sample:
    """One series' value at one step; ``labels`` include ``__name__``."""

    __slots__ = ("drop_name", "labels", "ts", "value")

    def __init__(self, labels: Labels, value: float, drop_name: bool = False, ts: int = 0) -> None:
        self.labels = labels
        self.value = value
        self.drop_name = drop_name
        self.ts = ts  # the sample's own timestamp, for timestamp()

    def __repr__(self) -> str:
        flag = " (drop name)" if self.drop_name else ""
        return f"<Sample {self.labels} {self.value}{flag}>"


@dataclass(slots=True)
class StepVectors:
    """An instant-vector expression's value at every step."""

    steps: list[list[Sample]] = field(default_factory=list)


@dataclass(slots=True)
class Scalars:
    """A scalar expression's value at every step."""

    values: list[float]


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string literal."""

    value: str


Evaluated = Scalars | StepVectors | StringValue


def set_label(labels: Labels, name: str, value: str) -> Labels:
    """A copy of ``labels`` with ``name`` set to ``value``; an empty value removes the label."""
    items = {k: v for k, v in labels.items_tuple() if k != name}
    if value:
        items[name] = value
    return Labels(items)


def kahan_inc(inc: float, total: float, comp: float) -> tuple[float, float]:
    """One step of Neumaier's compensated summation, as Prometheus's ``kahansum.Inc``."""
    t = total + inc
    if math.isinf(t):
        comp = 0.0
    elif abs(total) >= abs(inc):
        comp += (total - t) + inc
    else:
        comp += (inc - t) + total
    return t, comp
