"""Rules' view of the query engine: instant queries whose result is a vector.

Prometheus' ``EngineQueryFunc``: a scalar result becomes a one-sample vector
without labels, and any other result type is an error. Parsed expressions are
cached, since every rule runs the same text at every evaluation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from monitor.errors import QueryError
from monitor.model import Labels
from monitor.query import Engine, Expr, Scalar, Vector, VectorSample, parse_expr
from rules.rule import QueryFunc, QueryResultSample

__all__ = ["engine_query_func"]

NOT_A_VECTOR = "rule result is not a vector or scalar"


def engine_query_func(engine: Engine, *, cache_size: int = 4096) -> QueryFunc:
    """A :data:`~rules.rule.QueryFunc` over ``engine``."""
    parse = functools.lru_cache(maxsize=cache_size)(parse_expr)

    def query(expr: str, ts: int) -> Sequence[QueryResultSample]:
        parsed: Expr = parse(expr)
        value = engine.instant(parsed, ts)
        if isinstance(value, Vector):
            return value
        if isinstance(value, Scalar):
            return [VectorSample(Labels(), value.value)]
        raise QueryError(expr, NOT_A_VECTOR)

    return query
