"""Parse PromQL text into ``promql-parser``'s AST and refuse what monitord does not evaluate.

The grammar is the ``promql-parser`` package's; this module translates its
errors into :class:`~monitor.errors.QueryError` and walks the tree once so that
anything outside monitord's subset (native-histogram and experimental
functions, ``@`` before 1970, ...) raises
:class:`~monitor.errors.UnsupportedQueryError` before evaluation starts, never
a wrong answer later.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeAlias

import promql_parser

from monitor.errors import QueryError, UnsupportedQueryError
from monitor.query.regex import translate_go_regex
from monitor.query.timing import at_literal_ms

__all__ = [
    "AGGREGATIONS",
    "FUNCTIONS",
    "Expr",
    "match_op_text",
    "parse_expr",
    "unsupported_reason",
]

Expr: TypeAlias = Any  # promql_parser.Expr; the package ships no type information

#: The functions the engine evaluates.
FUNCTIONS: Final = frozenset(
    {
        # rates and changes of counters and gauges
        "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear",
        "changes", "resets",
        # over time
        "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
        "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
        "last_over_time", "present_over_time", "absent_over_time",
        # instant vector maths
        "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "sgn",
        "exp", "ln", "log2", "log10", "sqrt",
        "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
        "asinh", "acosh", "atanh", "deg", "rad", "pi",
        # time and dates
        "time", "timestamp", "day_of_month", "day_of_week", "day_of_year",
        "days_in_month", "hour", "minute", "month", "year",
        # types, labels, ordering, presence
        "vector", "scalar", "absent", "label_replace", "label_join", "sort", "sort_desc",
        # classic histograms
        "histogram_quantile",
    }
)  # fmt: skip

#: The aggregation operators the engine evaluates.
AGGREGATIONS: Final = frozenset(
    {
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
        "quantile", "topk", "bottomk", "count_values",
    }
)  # fmt: skip

_NATIVE_HISTOGRAM_FUNCTIONS: Final = frozenset(
    {
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantiles",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
    }
)
# Experimental in Prometheus (behind --enable-feature=promql-experimental-functions).
_EXPERIMENTAL_FUNCTIONS: Final = frozenset(
    {
        "double_exponential_smoothing",
        "first_over_time",
        "info",
        "mad_over_time",
        "sort_by_label",
        "sort_by_label_desc",
        "ts_of_first_over_time",
        "ts_of_last_over_time",
        "ts_of_max_over_time",
        "ts_of_min_over_time",
        "start",
        "end",
        "range",
        "step",
    }
)
# Strings and comments, which may contain anything; and an @ followed by a negative number.
_STRINGS_AND_COMMENTS: Final = re.compile(
    r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|#[^\n]*"""
)
_NEGATIVE_AT: Final = re.compile(r"@\s*-\s*([0-9A-Za-z_.]+(?:[eE][+-]?[0-9]+)?)")


def parse_expr(text: str) -> Expr:
    """Parse ``text`` as PromQL; raise :class:`QueryError` if it is invalid.

    Valid PromQL that needs a feature monitord does not implement raises
    :class:`UnsupportedQueryError`, naming the feature.
    """
    try:
        expr = promql_parser.parse(text)
    except ValueError as exc:
        raise QueryError(text, f"cannot parse {text!r}: {exc}") from exc
    # promql-parser keeps a time before 1970 in a form that cannot be read back
    # (see monitor.query.timing), so it is caught in the text.
    reason = "a negative @ timestamp" if _has_negative_at(text) else unsupported_reason(expr)
    if reason is not None:
        raise UnsupportedQueryError(text, f"{reason} is not supported (in {text!r})")
    return expr


def unsupported_reason(expr: Expr) -> str | None:
    """Name the first feature of a parsed expression that monitord does not evaluate, if any."""
    found: list[str] = []

    def visit(node: Expr) -> bool:
        reason = _node_reason(node)
        if reason is not None:
            found.append(reason)
            return False
        return True

    promql_parser.walk(expr, visit)
    return found[0] if found else None


def _has_negative_at(text: str) -> bool:
    code = _STRINGS_AND_COMMENTS.sub(" ", text)
    return any(not _is_zero(m.group(1)) for m in _NEGATIVE_AT.finditer(code))


def _is_zero(number: str) -> bool:
    try:
        return float(number) == 0
    except ValueError:
        pass
    try:
        return int(number, 0) == 0
    except ValueError:
        return False  # a duration such as 1m


def _at_reason(modifier: Any) -> str | None:
    if modifier is None or modifier.type != promql_parser.AtModifierType.At:
        return None
    try:
        at_literal_ms(modifier)
    except ValueError as exc:
        return str(exc)
    return None


def _node_reason(node: Expr) -> str | None:
    if isinstance(node, promql_parser.SubqueryExpr):
        return _at_reason(node.at)
    if isinstance(node, promql_parser.VectorSelector):
        return _selector_reason(node)
    if isinstance(node, promql_parser.MatrixSelector):
        return _selector_reason(node.vector_selector)
    if isinstance(node, promql_parser.Call):
        name = node.func.name
        if name in FUNCTIONS:
            return None
        if name in _NATIVE_HISTOGRAM_FUNCTIONS:
            return f"the native histogram function {name}()"
        if name in _EXPERIMENTAL_FUNCTIONS or node.func.experimental:
            return f"the experimental function {name}()"
        return f"the function {name}()"
    if isinstance(node, promql_parser.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS:
            return f"the experimental aggregation {op}()"
        return None
    if isinstance(node, promql_parser.BinaryExpr):
        modifier = node.modifier
        if modifier is not None and getattr(modifier, "fill_values", None) is not None:
            fill = modifier.fill_values
            if fill.lhs is not None or fill.rhs is not None:
                return "the fill() modifier"
    return None


def _selector_reason(selector: Expr) -> str | None:
    reason = _at_reason(selector.at)
    if reason is not None:
        return reason
    if selector.matchers.or_matchers:
        return "'or' inside a label matcher list"
    for m in selector.matchers.matchers:
        if m.op in (promql_parser.MatchOp.Re, promql_parser.MatchOp.NotRe):
            try:
                translate_go_regex(m.value)
            except ValueError as exc:
                return f"the regular expression {m.value!r} ({exc})"
    return None


def match_op_text(op: Any) -> str:
    """A promql-parser matcher operator spelt as in PromQL (``=``, ``!=``, ``=~``, ``!~``)."""
    for candidate, text in (
        (promql_parser.MatchOp.Equal, "="),
        (promql_parser.MatchOp.NotEqual, "!="),
        (promql_parser.MatchOp.Re, "=~"),
        (promql_parser.MatchOp.NotRe, "!~"),
    ):
        if op == candidate:
            return text
    raise ValueError(f"unknown matcher operator {op!r}")
