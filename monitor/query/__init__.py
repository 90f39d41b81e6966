"""PromQL over the store: parsing (by the ``promql-parser`` package) and evaluation."""

from __future__ import annotations

from monitor.query.parser import Expr, parse_expr

__all__ = ["Expr", "parse_expr"]
