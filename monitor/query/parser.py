"""Parse PromQL text into ``promql-parser``'s AST, translating its errors into QueryError."""

from __future__ import annotations

from typing import Any, TypeAlias

import promql_parser

from monitor.errors import QueryError

__all__ = ["Expr", "parse_expr"]

Expr: TypeAlias = Any  # promql_parser.Expr; the package ships no type information


def parse_expr(text: str) -> Expr:
    """Parse ``text`` as PromQL; raise :class:`QueryError` naming the problem if it is invalid."""
    try:
        return promql_parser.parse(text)
    except ValueError as exc:
        raise QueryError(text, f"cannot parse {text!r}: {exc}") from exc
