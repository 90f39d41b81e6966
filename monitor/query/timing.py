"""When selectors and subqueries read: the ``@`` modifier, ``offset`` and subquery steps.

At an evaluation step ``t``, a selector or subquery reads at ``t - offset``;
with ``@`` it reads at that fixed time instead, ``@ T offset o`` at ``T - o``,
whatever the step. ``@ start()`` and ``@ end()`` are the query's own start and
end, also inside subqueries. A subquery ``expr[range:step]`` read at ``r``
evaluates ``expr`` at the multiples of ``step`` since the epoch that fall in
``(r - range, r]``, so its steps do not depend on when the query runs; without
a step (``expr[range:]``) it uses the engine's default, as Prometheus uses the
global evaluation interval. These are the semantics of ``promql/engine.go``
(``subqueryTimes``, ``setOffsetForAtModifier``, the evaluation of
``SubqueryExpr``), computed directly rather than by rewriting offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import promql_parser as pp

__all__ = ["at_literal_ms", "at_ms", "read_times", "subquery_steps"]

_MAX_MS: Final = 2**63 - 1
# promql-parser prints every @ timestamp with three decimals, and any time before
# 1970 as zero; reading such a time from the AST makes the Rust side panic.
_ZERO: Final = "@ 0.000"


def at_literal_ms(modifier: Any) -> int:
    """The time of ``@ <number>`` in ms; ValueError names a time monitord cannot use."""
    text = str(modifier)
    if text == _ZERO and _before_epoch(modifier):
        raise ValueError("a negative @ timestamp")
    ms = int(Decimal(text.removeprefix("@ ")) * 1000)
    if ms > _MAX_MS:
        raise ValueError(f"the @ timestamp {text.removeprefix('@ ')} (out of bounds)")
    return ms


def _before_epoch(modifier: Any) -> bool:
    try:
        modifier.at  # noqa: B018 - only reading it tells 0 from a time before 1970
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        return True
    return False


def at_ms(modifier: Any, start_ms: int, end_ms: int) -> int | None:
    """The fixed time (ms) an ``@`` modifier sets, or None without one.

    ``start_ms`` and ``end_ms`` are the query's start and end, which ``@ start()``
    and ``@ end()`` stand for.
    """
    if modifier is None:
        return None
    if modifier.type == pp.AtModifierType.Start:
        return start_ms
    if modifier.type == pp.AtModifierType.End:
        return end_ms
    return at_literal_ms(modifier)


def read_times(times: Sequence[int], at: int | None, offset_ms: int) -> list[int]:
    """The time a selector or subquery reads at for each evaluation step."""
    if at is not None:
        return [at - offset_ms] * len(times)
    return [t - offset_ms for t in times]


def subquery_steps(first_ms: int, last_ms: int, range_ms: int, step_ms: int) -> range:
    """The inner steps of a subquery read from ``first_ms`` to ``last_ms``.

    They are the multiples of ``step_ms`` in ``(first_ms - range_ms, last_ms]``,
    one evaluation covering the windows of every read, as in Prometheus.
    """
    lowest = first_ms - range_ms
    start = (lowest // step_ms + 1) * step_ms  # the first multiple after ``lowest``
    return range(start, last_ms + 1, step_ms)
