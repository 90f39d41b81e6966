"""Binary operators: arithmetic, comparison and set operators, and vector matching.

The semantics are Prometheus's (``promql/engine.go``: ``VectorBinop``,
``VectorAnd``/``Or``/``Unless``, ``VectorscalarBinop``, ``resultMetric``):
one-to-one matching unless ``group_left``/``group_right`` says otherwise,
matching on every label but ``__name__`` unless ``on``/``ignoring`` says
otherwise, comparison operators filter unless ``bool`` is given, and
arithmetic drops the metric name.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from monitor.model import Labels
from monitor.query.samples import NAME, EvalError, Sample

__all__ = [
    "ARITHMETIC",
    "COMPARISON",
    "SET_OPERATORS",
    "Card",
    "Matching",
    "scalar_binop",
    "vector_binop",
    "vector_scalar_binop",
]


class Card(enum.Enum):
    """The cardinality of a vector matching."""

    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"


@dataclass(frozen=True, slots=True)
class Matching:
    """How two vectors' samples are paired: ``on``/``ignoring`` labels, group side, ``bool``."""

    card: Card = Card.ONE_TO_ONE
    on: bool = False
    labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    return_bool: bool = False


def _mod(a: float, b: float) -> float:
    # Go's math.Mod: the result has the sign of a; NaN for b == 0 or infinite a.
    if b == 0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return math.nan
    if math.isinf(b):
        return a
    return math.fmod(a, b)


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf if a > 0 or (float(b).is_integer() and b % 2 == 0) else -math.inf
    except ValueError:
        # Go: Pow(0, negative) is +Inf (or ±Inf for odd integers); negative base, fraction: NaN.
        if a == 0:
            odd = float(b).is_integer() and b % 2 == 1
            return math.copysign(math.inf, a) if odd else math.inf
        return math.nan


def _div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


ARITHMETIC: Final[dict[str, Callable[[float, float], float]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
    "^": _pow,
    "atan2": math.atan2,
}
COMPARISON: Final[dict[str, Callable[[float, float], bool]]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
SET_OPERATORS: Final = frozenset({"and", "or", "unless"})


def scalar_binop(op: str, a: float, b: float) -> float:
    """Apply an operator to two scalars (comparisons yield 1 or 0)."""
    if op in ARITHMETIC:
        return _arith(op, a, b)
    return 1.0 if COMPARISON[op](a, b) else 0.0


def _arith(op: str, a: float, b: float) -> float:
    try:
        return ARITHMETIC[op](a, b)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError):
        return math.nan


def vector_scalar_binop(
    op: str, vector: list[Sample], scalar: float, *, scalar_left: bool, return_bool: bool
) -> list[Sample]:
    """Apply an operator between every sample of a vector and a scalar."""
    out: list[Sample] = []
    arithmetic = op in ARITHMETIC
    for s in vector:
        left, right = (scalar, s.value) if scalar_left else (s.value, scalar)
        if arithmetic:
            value, keep = _arith(op, left, right), True
        else:
            keep = COMPARISON[op](left, right)
            value = s.value  # a comparison keeps the vector's value, whichever side it is on
        if return_bool:
            value, keep = (1.0 if keep else 0.0), True
        if keep:
            out.append(Sample(s.labels, value, s.drop_name or arithmetic or return_bool, s.ts))
    return out


def signature_fn(matching: Matching) -> Callable[[Labels], tuple[tuple[str, str], ...]]:
    """The function computing a sample's join key under ``matching``."""
    if matching.on:
        names = tuple(sorted(matching.labels))
        return lambda labels: tuple((n, labels.get(n, "")) for n in names)
    excluded = frozenset((NAME, *matching.labels))
    return lambda labels: tuple((k, v) for k, v in labels.items_tuple() if k not in excluded)


def vector_binop(op: str, lhs: list[Sample], rhs: list[Sample], matching: Matching) -> list[Sample]:
    """Apply an operator between two vectors under ``matching``."""
    sig = signature_fn(matching)
    if op in SET_OPERATORS:
        return _set_op(op, lhs, rhs, sig)
    if not lhs or not rhs:
        return []
    swap = matching.card is Card.ONE_TO_MANY
    if swap:
        lhs, rhs = rhs, lhs
    right: dict[tuple[tuple[str, str], ...], Sample] = {}
    for rs in rhs:
        key = sig(rs.labels)
        dup = right.get(key)
        if dup is not None:
            side = "left" if swap else "right"
            raise EvalError(
                f"found duplicate series for the match group {_match_labels(rs.labels, matching)} "
                f"on the {side} hand-side of the operation: [{_show(dup.labels)}, "
                f"{_show(rs.labels)}];many-to-many matching not allowed: "
                "matching labels must be unique on one side"
            )
        right[key] = rs
    matched: dict[tuple[tuple[str, str], ...], set[Labels] | None] = {}
    arithmetic = op in ARITHMETIC
    out: list[Sample] = []
    for ls in lhs:
        key = sig(ls.labels)
        match = right.get(key)
        if match is None:
            continue
        rs = match
        left_value, right_value = (rs.value, ls.value) if swap else (ls.value, rs.value)
        if arithmetic:
            value, keep = _arith(op, left_value, right_value), True
        else:
            keep = COMPARISON[op](left_value, right_value)
            value = left_value
        if matching.return_bool:
            value, keep = (1.0 if keep else 0.0), True
        labels = _result_labels(ls.labels, rs.labels, arithmetic, matching)
        if matching.card is Card.ONE_TO_ONE:
            if key in matched:
                raise EvalError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)"
                )
            matched[key] = None
        else:
            seen = matched.setdefault(key, set())
            assert seen is not None
            if labels in seen:
                raise EvalError(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                )
            seen.add(labels)
        if keep:
            drop = matching.return_bool or (not arithmetic and ls.drop_name)
            out.append(Sample(labels, value, drop, ls.ts))
    return out


def _result_labels(lhs: Labels, rhs: Labels, arithmetic: bool, matching: Matching) -> Labels:
    """Prometheus's ``resultMetric``: the "many" side's labels, trimmed by the matching."""
    items = dict(lhs.items_tuple())
    if arithmetic:
        items.pop(NAME, None)
    if matching.card is Card.ONE_TO_ONE:
        if matching.on:
            keep = set(matching.labels)
            items = {k: v for k, v in items.items() if k in keep}
        else:
            for name in matching.labels:
                items.pop(name, None)
    for name in matching.include:
        value = rhs.get(name, "")
        if value:
            items[name] = value
        else:
            items.pop(name, None)
    return Labels(items)


def _set_op(
    op: str,
    lhs: list[Sample],
    rhs: list[Sample],
    sig: Callable[[Labels], tuple[tuple[str, str], ...]],
) -> list[Sample]:
    if op == "and":
        if not lhs or not rhs:
            return []
        present = {sig(s.labels) for s in rhs}
        return [s for s in lhs if sig(s.labels) in present]
    if op == "or":
        if not lhs or not rhs:
            return [*lhs, *rhs]
        left = {sig(s.labels) for s in lhs}
        return [*lhs, *(s for s in rhs if sig(s.labels) not in left)]
    if not rhs:
        return list(lhs)
    present = {sig(s.labels) for s in rhs}
    return [s for s in lhs if sig(s.labels) not in present]


def _match_labels(labels: Labels, matching: Matching) -> str:
    """The labels the match group is keyed on, spelt as Prometheus prints them."""
    if matching.on:
        kept = {k: v for k, v in labels.items_tuple() if k in matching.labels}
    else:
        excluded = {NAME, *matching.labels}
        kept = {k: v for k, v in labels.items_tuple() if k not in excluded}
    return _show(Labels(kept))


def _show(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items_tuple()) + "}"
