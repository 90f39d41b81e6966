"""The ``@``-modifier variants Prometheus's promqltest runner adds to every instant eval.

``promql/promqltest/test.go`` (``atModifierTestCases``) pins every selector and
subquery of an instant eval's expression to the eval time with ``@`` (the
selectors inside a subquery that has ``@`` are left alone, as are those that
already have one) and expects the same result at other evaluation times:
``-10t, 0, t/5, t, 10t``, or ``-1s, 0, 1s`` when ``t`` is 0. An expression
calling a function whose value depends on the evaluation time even when its
arguments do not (``time()``, ``timestamp()``, ``predict_linear()``, the date
functions) gets no variants.

The variant is written out by :func:`to_promql`, because promql-parser's own
``str()`` loses the colon of ``expr[5m:]`` and the escaping of backslashes in
label values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Final

import promql_parser as pp

from monitor.query.parser import match_op_text
from monitor.query.timing import at_literal_ms

__all__ = ["AT_MODIFIER_UNSAFE", "at_variant", "at_variant_times", "to_promql"]

#: promql's ``AtModifierUnsafeFunctions``.
AT_MODIFIER_UNSAFE: Final = frozenset(
    {
        "days_in_month", "day_of_month", "day_of_week", "day_of_year",
        "hour", "minute", "month", "year", "predict_linear", "time", "timestamp",
    }
)  # fmt: skip
#: The subquery step of Prometheus's test engine (``NoStepSubqueryIntervalFn``).
TEST_SUBQUERY_STEP: Final = timedelta(minutes=1)
_IDENTIFIER: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def at_variant_times(t_ms: int) -> list[int]:
    """The evaluation times (ms) of the variants of an instant eval at ``t_ms``."""
    if t_ms == 0:
        return [-1000, 0, 1000]
    fifth = int(t_ms / 5)  # Go's integer division truncates towards zero
    return [-10 * t_ms, 0, fifth, t_ms, 10 * t_ms]


def at_variant(expr: str, t_ms: int) -> str | None:
    """``expr`` with every selector and subquery pinned at ``t_ms``; None if it gets none."""
    node = pp.parse(expr)
    at = pp.parse(f"x @ {_seconds(t_ms)}").at
    unsafe = False

    def pin(n: Any, under_pinned_subquery: bool) -> None:
        nonlocal unsafe
        if isinstance(n, pp.SubqueryExpr) and n.step is None:
            n.step = TEST_SUBQUERY_STEP  # the same subquery, written so that it prints
        if not under_pinned_subquery:
            if isinstance(n, pp.VectorSelector | pp.SubqueryExpr) and n.at is None:
                n.at = at
            elif isinstance(n, pp.MatrixSelector) and n.vector_selector.at is None:
                n.vector_selector.at = at
            elif isinstance(n, pp.Call):
                unsafe = unsafe or n.func.name in AT_MODIFIER_UNSAFE
        pinned = under_pinned_subquery or (isinstance(n, pp.SubqueryExpr) and n.at is not None)
        for child in _children(n):
            pin(child, pinned)

    pin(node, False)
    return None if unsafe else to_promql(node)


def _children(n: Any) -> Iterator[Any]:
    # Children are read through attributes, which give the tree's own nodes, so that
    # setting an attribute changes the tree (promql_parser.walk hands out copies).
    if isinstance(n, pp.AggregateExpr):
        yield n.expr
        if n.param is not None:
            yield n.param
    elif isinstance(n, pp.BinaryExpr):
        yield n.lhs
        yield n.rhs
    elif isinstance(n, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        yield n.expr
    elif isinstance(n, pp.MatrixSelector):
        yield n.vector_selector
    elif isinstance(n, pp.Call):
        yield from n.args


def to_promql(n: Any) -> str:
    """PromQL text for a promql-parser AST that parses back to the same meaning.

    Operands of operators are put in parentheses, so precedence never matters.
    """
    if isinstance(n, pp.NumberLiteral):
        return _number(n.val)
    if isinstance(n, pp.StringLiteral):
        return _quote(n.val)
    if isinstance(n, pp.VectorSelector):
        return _selector(n) + _modifiers(n.at, n.offset)
    if isinstance(n, pp.MatrixSelector):
        vs = n.vector_selector
        return f"{_selector(vs)}[{_duration(n.range)}]" + _modifiers(vs.at, vs.offset)
    if isinstance(n, pp.SubqueryExpr):
        step = _duration(n.step) if n.step is not None else ""
        inner = f"{_operand(n.expr)}[{_duration(n.range)}:{step}]"
        return inner + _modifiers(n.at, n.offset)
    if isinstance(n, pp.ParenExpr):
        return f"({to_promql(n.expr)})"
    if isinstance(n, pp.UnaryExpr):
        return f"-{_operand(n.expr)}"
    if isinstance(n, pp.Call):
        return f"{n.func.name}({', '.join(to_promql(a) for a in n.args)})"
    if isinstance(n, pp.AggregateExpr):
        return _aggregation(n)
    if isinstance(n, pp.BinaryExpr):
        return f"{_operand(n.lhs)} {_operator(n)} {_operand(n.rhs)}"
    raise ValueError(f"cannot write {type(n).__name__} as PromQL")


def _operand(n: Any) -> str:
    text = to_promql(n)
    return text if isinstance(n, pp.ParenExpr) else f"({text})"


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "(-Inf)"
    return repr(v) if v >= 0 else f"({v!r})"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are PromQL's too


def _name(label: str) -> str:
    return label if _IDENTIFIER.fullmatch(label) else _quote(label)


def _selector(vs: Any) -> str:
    matchers = vs.matchers.matchers
    parts = [f"{_name(m.name)}{match_op_text(m.op)}{_quote(m.value)}" for m in matchers]
    name = vs.name
    if name and not any(m.name == "__name__" for m in matchers):
        if _METRIC_NAME.fullmatch(name):
            return f"{name}{{{', '.join(parts)}}}"
        parts.insert(0, _quote(name))
    return f"{{{', '.join(parts)}}}"


def _duration(delta: timedelta) -> str:
    return f"{delta // timedelta(milliseconds=1)}ms"


def _seconds(ms: int) -> str:
    sign = "-" if ms < 0 else ""
    whole, frac = divmod(abs(ms), 1000)
    return f"{sign}{whole}.{frac:03d}"


def _modifiers(at: Any, offset: timedelta | None) -> str:
    text = ""
    if at is not None:
        if at.type == pp.AtModifierType.Start:
            text += " @ start()"
        elif at.type == pp.AtModifierType.End:
            text += " @ end()"
        else:
            text += f" @ {_seconds(at_literal_ms(at))}"
    if offset:
        text += f" offset {_duration(offset)}"
    return text


def _aggregation(n: Any) -> str:
    modifier = ""
    if n.modifier is not None:
        kind = "without" if n.modifier.type == pp.AggModifierType.Without else "by"
        modifier = f" {kind} ({', '.join(_name(label) for label in n.modifier.labels)})"
    args = [to_promql(n.expr)]
    if n.param is not None:
        args.insert(0, to_promql(n.param))
    return f"{n.op}{modifier} ({', '.join(args)})"


def _operator(n: Any) -> str:
    op = str(n.op)
    modifier = n.modifier
    if modifier is None:
        return op
    fill = getattr(modifier, "fill_values", None)
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise ValueError("cannot write the fill() modifier as PromQL")
    text = op + (" bool" if modifier.return_bool else "")
    matching = modifier.matching
    if matching is not None:
        kind = "on" if matching.type == pp.LabelModifierType.Include else "ignoring"
        text += f" {kind}({', '.join(_name(label) for label in matching.labels)})"
    group = ", ".join(_name(label) for label in modifier.group_labels or ())
    if modifier.card == pp.VectorMatchCardinality.ManyToOne:
        text += f" group_left({group})"
    elif modifier.card == pp.VectorMatchCardinality.OneToMany:
        text += f" group_right({group})"
    return text
