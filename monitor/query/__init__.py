"""PromQL over the store: parsing (by the ``promql-parser`` package) and evaluation.

``parse_expr`` parses and refuses what monitord does not implement,
:class:`Engine` evaluates instant and range queries, and :func:`selectors`
tells which series an expression reads.
"""

from __future__ import annotations

import promql_parser

from monitor.errors import QueryError
from monitor.query.engine import Engine, selector_matchers
from monitor.query.parser import Expr, parse_expr
from monitor.query.samples import EvalError
from monitor.query.values import (
    Matrix,
    RangeSeries,
    Scalar,
    String,
    Value,
    Vector,
    VectorSample,
    format_float,
)
from monitor.store import Matcher

__all__ = [
    "Engine",
    "Expr",
    "Matrix",
    "RangeSeries",
    "Scalar",
    "String",
    "Value",
    "Vector",
    "VectorSample",
    "format_float",
    "parse_expr",
    "selectors",
]


def selectors(expr: str | Expr) -> list[list[Matcher]]:
    """The matchers of every vector and range selector in ``expr``, ``__name__`` included.

    Regular expressions appear translated to Python's syntax (see
    :mod:`monitor.query.regex`), ready for :meth:`monitor.store.Store.select`.
    """
    node = parse_expr(expr) if isinstance(expr, str) else expr
    found: list[list[Matcher]] = []

    def visit(n: Expr) -> bool:
        if isinstance(n, promql_parser.VectorSelector):
            found.append(selector_matchers(n))
        return True

    try:
        promql_parser.walk(node, visit)
    except EvalError as exc:
        raise QueryError(str(node), str(exc)) from exc
    return found
