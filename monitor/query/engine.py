"""Evaluate PromQL over the store with Prometheus's semantics.

An instant query is a range query of one step: every node of the AST is
evaluated for all steps at once, instant vectors as one list of samples per
step and scalars as one float per step (as ``promql/engine.go``'s
``rangeEval``). Instant selectors look back ``lookback_delta`` (5 minutes) for
the newest sample, ``(t - lookback, t]``, and a staleness marker hides the
series; range selectors read ``(t - range, t]``; ``offset`` shifts both and
``@`` pins them to one time (see :mod:`monitor.query.timing`). A subquery
evaluates its expression with a second evaluator whose steps are the
subquery's, once for all the outer steps, and hands each outer step the
window of points it covers, as a range selector would. ``__name__`` is
dropped late, when the result is handed out, so that ``label_replace`` can
still use it; a result with two series of the same labels is an error, as in
Prometheus.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from typing import Any, Final

import promql_parser as pp

from monitor.errors import QueryError, UnsupportedQueryError
from monitor.model import Labels, is_stale_nan
from monitor.query.aggregations import aggregate, aggregate_k, count_values
from monitor.query.binary import (
    SET_OPERATORS,
    Card,
    Matching,
    scalar_binop,
    vector_binop,
    vector_scalar_binop,
)
from monitor.query.calls import CALLS, absent_labels, go_quote, map_values, valid_label_name
from monitor.query.functions import (
    DATE_FUNCTIONS,
    MATH_FUNCTIONS,
    RANGE_FUNCTIONS,
    Window,
    utc_time,
)
from monitor.query.parser import Expr, match_op_text, parse_expr, unsupported_reason
from monitor.query.regex import translate_go_regex
from monitor.query.samples import (
    DUPLICATE_LABELSET,
    NAME,
    EvalError,
    Evaluated,
    Sample,
    Scalars,
    StepVectors,
    StringValue,
)
from monitor.query.timing import at_ms, read_times, subquery_steps
from monitor.query.values import Matrix, RangeSeries, Scalar, String, Value, Vector, VectorSample
from monitor.store import Matcher, MatchOp, Series, Store

__all__ = ["Engine", "selector_matchers"]

_MATCH_OPS: Final = {"=": MatchOp.EQ, "!=": MatchOp.NE, "=~": MatchOp.RE, "!~": MatchOp.NRE}
_CARDS: Final = (
    (pp.VectorMatchCardinality.OneToOne, Card.ONE_TO_ONE),
    (pp.VectorMatchCardinality.ManyToOne, Card.MANY_TO_ONE),
    (pp.VectorMatchCardinality.OneToMany, Card.ONE_TO_MANY),
    (pp.VectorMatchCardinality.ManyToMany, Card.MANY_TO_MANY),
)


class Engine:
    """Evaluates PromQL expressions over a :class:`~monitor.store.Store`.

    ``lookback_delta`` (seconds) is how far an instant selector looks back;
    ``default_subquery_step`` (seconds) is the step of a subquery written without
    one (``expr[5m:]``), Prometheus's global evaluation interval.
    """

    def __init__(
        self, store: Store, *, lookback_delta: float = 300.0, default_subquery_step: float = 60.0
    ) -> None:
        if not lookback_delta > 0:
            raise ValueError(f"lookback_delta must be positive, got {lookback_delta}")
        if not default_subquery_step > 0:
            raise ValueError(f"default_subquery_step must be positive, got {default_subquery_step}")
        self._store = store
        self._lookback_ms = round(lookback_delta * 1000)
        self._subquery_step_ms = max(1, round(default_subquery_step * 1000))

    @property
    def default_subquery_step(self) -> float:
        """The step (seconds) of a subquery written without one; settable, e.g. on reload."""
        return self._subquery_step_ms / 1000

    @default_subquery_step.setter
    def default_subquery_step(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"default_subquery_step must be positive, got {seconds}")
        self._subquery_step_ms = max(1, round(seconds * 1000))

    def instant(self, expr: str | Expr, t_ms: int) -> Value:
        """Evaluate at one time (ms); a range selector or subquery gives its points as a Matrix."""
        text, node = _prepare(expr)
        ev = _Evaluator(self._query(t_ms, t_ms), [t_ms])
        try:
            top = _unwrap(node)
            if isinstance(top, pp.MatrixSelector | pp.SubqueryExpr):
                return ev.raw_matrix(top)
            return _instant_result(ev.eval(node))
        except EvalError as exc:
            raise QueryError(text, str(exc)) from exc

    def range(self, expr: str | Expr, start_ms: int, end_ms: int, step_ms: int) -> Matrix:
        """Evaluate at every step from ``start_ms`` to ``end_ms``: one series per label set."""
        text, node = _prepare(expr)
        if step_ms <= 0:
            raise QueryError(text, "zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise QueryError(text, "end timestamp must not be before start time")
        top = _unwrap(node)
        if isinstance(top, pp.MatrixSelector | pp.SubqueryExpr | pp.StringLiteral):
            kind = "string" if isinstance(top, pp.StringLiteral) else "range vector"
            reason = f'invalid expression type "{kind}" for range query'
            raise QueryError(text, reason + ", must be Scalar or instant Vector")
        ev = _Evaluator(self._query(start_ms, end_ms), range(start_ms, end_ms + 1, step_ms))
        try:
            return _range_result(ev.eval(node), ev.times)
        except EvalError as exc:
            raise QueryError(text, str(exc)) from exc

    def _query(self, start_ms: int, end_ms: int) -> _Query:
        return _Query(self._store, start_ms, end_ms, self._lookback_ms, self._subquery_step_ms)


def _prepare(expr: str | Expr) -> tuple[str, Expr]:
    if isinstance(expr, str):
        return expr, parse_expr(expr)
    text = str(expr)
    reason = unsupported_reason(expr)
    if reason is not None:
        raise UnsupportedQueryError(text, f"{reason} is not supported (in {text!r})")
    return text, expr


def _unwrap(node: Expr) -> Expr:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)


def selector_matchers(selector: Expr) -> list[Matcher]:
    """The store matchers of a vector selector, ``__name__`` included, regexes translated."""
    matchers: list[Matcher] = []
    if selector.name:
        matchers.append(Matcher(NAME, MatchOp.EQ, selector.name))
    for m in selector.matchers.matchers:
        op = _MATCH_OPS[match_op_text(m.op)]
        value = m.value
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                value = translate_go_regex(value)
            except ValueError as exc:
                raise EvalError(f"invalid regular expression {m.value!r}: {exc}") from exc
        try:
            matchers.append(Matcher(m.name, op, value))
        except ValueError as exc:
            raise EvalError(f"invalid regular expression {m.value!r}: {exc}") from exc
    return matchers


def _instant_result(value: Evaluated) -> Value:
    if isinstance(value, Scalars):
        return Scalar(value.values[0])
    if isinstance(value, StringValue):
        return String(value.value)
    out = Vector()
    seen: set[Labels] = set()
    for s in value.steps[0]:
        labels = s.labels.without(NAME) if s.drop_name else s.labels
        if labels in seen:
            raise EvalError(DUPLICATE_LABELSET)
        seen.add(labels)
        out.append(VectorSample(labels, s.value))
    return out


def _range_result(value: Evaluated, times: list[int]) -> Matrix:
    if isinstance(value, Scalars):
        return Matrix([RangeSeries(Labels(), list(zip(times, value.values, strict=True)))])
    if isinstance(value, StringValue):  # pragma: no cover - refused before evaluation
        raise EvalError("a string cannot be evaluated as a range query")
    series: dict[Labels, list[tuple[int, float]]] = {}
    for t, step in zip(times, value.steps, strict=True):
        for s in step:
            labels = s.labels.without(NAME) if s.drop_name else s.labels
            points = series.setdefault(labels, [])
            if points and points[-1][0] == t:
                raise EvalError(DUPLICATE_LABELSET)
            points.append((t, s.value))
    return Matrix(
        RangeSeries(labels, series[labels]) for labels in sorted(series, key=Labels.items_tuple)
    )


@dataclass(slots=True)
class _Query:
    """What the evaluators of one query share, its subqueries' included."""

    store: Store
    start: int  # what @ start() and @ end() stand for
    end: int
    lookback: int
    subquery_step: int
    selected: dict[str, list[tuple[Series, Labels]]] = field(default_factory=dict)


#: One series of a range vector: its labels, whether its name is to go, its window per step.
_RangeSeries = tuple[Labels, bool, Iterator[Window]]


class _Points:
    """A subquery's result for one series: points in time order, as two columns."""

    __slots__ = ("drop_name", "times", "values")

    def __init__(self, drop_name: bool) -> None:
        self.drop_name = drop_name
        self.times: list[int] = []
        self.values: list[float] = []

    def columns(self, start: int, end: int) -> tuple[list[int], list[float]]:
        """The points in ``(start, end]``: timestamps and values."""
        a, b = bisect_right(self.times, start), bisect_right(self.times, end)
        return self.times[a:b], self.values[a:b]


def _may_hold_nan(_start: int) -> bool:
    return True


def _without_stale(
    times: Sequence[int], values: Sequence[float]
) -> tuple[Sequence[int], Sequence[float]]:
    """The points whose value is not a staleness marker."""
    keep = [i for i, v in enumerate(values) if not is_stale_nan(v)]
    return [times[i] for i in keep], [values[i] for i in keep]


class _Evaluator:
    """One evaluation over a list of steps: the query's, or a subquery's own."""

    def __init__(self, query: _Query, times: Sequence[int]) -> None:
        self.query = query
        self.times = list(times)

    # -- selectors -----------------------------------------------------------------------------

    def select(self, selector: Expr) -> list[tuple[Series, Labels]]:
        """The series a vector selector picks, with their labels including ``__name__``."""
        key = str(selector)
        found = self.query.selected.get(key)
        if found is None:
            found = [
                (series, series.labels_with_name())
                for series in self.query.store.select(selector_matchers(selector), sort=False)
            ]
            found.sort(key=_by_labels)
            self.query.selected[key] = found
        return found

    def reads(self, at: Any, offset: timedelta | None) -> list[int]:
        """The time a selector or subquery with these modifiers reads at, for every step."""
        return read_times(self.times, at_ms(at, self.query.start, self.query.end), _ms(offset))

    def vector_selector(self, node: Expr) -> StepVectors:
        reads = self.reads(node.at, node.offset)
        out = StepVectors([[] for _ in self.times])
        for series, labels in self.select(node):
            read: int | None = None
            sample: Sample | None = None
            for i, r in enumerate(reads):
                if r != read:  # with @, every step reads at the same time
                    read = r
                    point = series.latest(r, self.query.lookback)
                    if point is None or is_stale_nan(point[1]):
                        sample = None
                    else:
                        sample = Sample(labels, point[1], False, point[0])
                if sample is not None:
                    out.steps[i].append(sample)
        return out

    def range_vector(self, node: Expr) -> list[_RangeSeries]:
        """Every series of a range selector or subquery, with its window at each step."""
        if isinstance(node, pp.SubqueryExpr):
            return self.subquery(node)
        selector = node.vector_selector
        reads = self.reads(selector.at, selector.offset)
        range_ms = _ms(node.range)
        return [
            (labels, False, self.windows(series.columns, series.nan_after, reads, range_ms))
            for series, labels in self.select(selector)
        ]

    def subquery(self, node: Expr) -> list[_RangeSeries]:
        """Evaluate a subquery's expression at its own steps, then window it like a selector."""
        reads = self.reads(node.at, node.offset)
        range_ms = _ms(node.range)
        step_ms = _ms(node.step) or self.query.subquery_step
        inner = _Evaluator(self.query, subquery_steps(reads[0], reads[-1], range_ms, step_ms))
        if not inner.times:
            return []
        value = inner.eval(node.expr)
        if not isinstance(value, StepVectors):
            raise EvalError(f"a subquery needs an instant vector, got {_kind(value)}")
        found: dict[Labels, _Points] = {}
        for t, step in zip(inner.times, value.steps, strict=True):
            for s in step:
                series = found.get(s.labels)
                if series is None:
                    series = found[s.labels] = _Points(s.drop_name)
                elif series.times[-1] == t:
                    raise EvalError(DUPLICATE_LABELSET)
                series.times.append(t)
                series.values.append(s.value)
        return [
            (labels, series.drop_name, self.windows(series.columns, _may_hold_nan, reads, range_ms))
            for labels, series in found.items()
        ]

    def windows(
        self,
        fetch: Callable[[int, int], tuple[Sequence[int], Sequence[float]]],
        may_hold_nan: Callable[[int], bool],
        reads: list[int],
        range_ms: int,
    ) -> Iterator[Window]:
        """One series' non-stale points in ``(read - range, read]`` at each step.

        ``may_hold_nan(start)`` False says no point after ``start`` is NaN, so
        the window needs no scan for staleness markers.
        """
        read: int | None = None
        times: Sequence[int] = ()
        values: Sequence[float] = ()
        for t, end in zip(self.times, reads, strict=True):
            start = end - range_ms
            if end != read:  # with @, every step reads the same window
                read = end
                times, values = fetch(start, end)
                # Only a NaN can be a staleness marker.
                if may_hold_nan(start) and any(v != v for v in values):
                    times, values = _without_stale(times, values)
            yield Window(times, values, t, start, end)

    def raw_matrix(self, node: Expr) -> Matrix:
        """An instant query of a range selector or subquery: the points of each series."""
        merged: dict[Labels, list[tuple[int, float]]] = {}
        for labels, drop_name, windows in self.range_vector(node):
            window = next(windows)
            points = list(zip(window.times, window.values, strict=True))
            if not points:
                continue
            key = labels.without(NAME) if drop_name else labels
            if key in merged:  # names dropped: series merge unless they share a time
                both = sorted([*merged[key], *points])
                if any(a[0] == b[0] for a, b in pairwise(both)):
                    raise EvalError(DUPLICATE_LABELSET)
                points = both
            merged[key] = points
        return Matrix(
            RangeSeries(labels, merged[labels]) for labels in sorted(merged, key=Labels.items_tuple)
        )

    # -- dispatch ------------------------------------------------------------------------------

    def eval(self, node: Expr) -> Evaluated:
        if isinstance(node, pp.NumberLiteral):
            return Scalars([node.val] * len(self.times))
        if isinstance(node, pp.StringLiteral):
            return StringValue(node.val)
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr)
        if isinstance(node, pp.UnaryExpr):
            return self.negate(self.eval(node.expr))
        if isinstance(node, pp.VectorSelector):
            return self.vector_selector(node)
        if isinstance(node, pp.BinaryExpr):
            return self.binary(node)
        if isinstance(node, pp.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, pp.Call):
            return self.call(node)
        if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
            raise EvalError("a range vector cannot be used here; apply a function to it")
        raise EvalError(f"{type(node).__name__} is not supported")

    def scalars(self, node: Expr) -> list[float]:
        value = self.eval(node)
        if not isinstance(value, Scalars):
            raise EvalError(f"expected a scalar, got {_kind(value)} in {node}")
        return value.values

    def vectors(self, node: Expr) -> list[list[Sample]]:
        value = self.eval(node)
        if not isinstance(value, StepVectors):
            raise EvalError(f"expected an instant vector, got {_kind(value)} in {node}")
        return value.steps

    # -- operators -----------------------------------------------------------------------------

    def negate(self, value: Evaluated) -> Evaluated:
        if isinstance(value, Scalars):
            return Scalars([-v for v in value.values])
        if isinstance(value, StepVectors):
            return StepVectors(
                [[Sample(s.labels, -s.value, True, s.ts) for s in step] for step in value.steps]
            )
        raise EvalError("a string cannot be negated")

    def binary(self, node: Expr) -> Evaluated:
        op = str(node.op)
        modifier = node.modifier
        return_bool = bool(modifier is not None and modifier.return_bool)
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        if isinstance(lhs, Scalars) and isinstance(rhs, Scalars):
            return Scalars(
                [scalar_binop(op, a, b) for a, b in zip(lhs.values, rhs.values, strict=True)]
            )
        if isinstance(lhs, StepVectors) and isinstance(rhs, StepVectors):
            matching = _matching(op, modifier)
            return StepVectors(
                [
                    vector_binop(op, left, right, matching)
                    for left, right in zip(lhs.steps, rhs.steps, strict=True)
                ]
            )
        if op in SET_OPERATORS:
            raise EvalError(f"set operator {op!r} not allowed in binary scalar expression")
        if isinstance(lhs, StepVectors) and isinstance(rhs, Scalars):
            return StepVectors(
                [
                    vector_scalar_binop(op, vec, sc, scalar_left=False, return_bool=return_bool)
                    for vec, sc in zip(lhs.steps, rhs.values, strict=True)
                ]
            )
        if isinstance(lhs, Scalars) and isinstance(rhs, StepVectors):
            return StepVectors(
                [
                    vector_scalar_binop(op, vec, sc, scalar_left=True, return_bool=return_bool)
                    for sc, vec in zip(lhs.values, rhs.steps, strict=True)
                ]
            )
        raise EvalError(f"operator {op!r} cannot be applied to {_kind(lhs)} and {_kind(rhs)}")

    def aggregate(self, node: Expr) -> StepVectors:
        op = str(node.op)
        modifier = node.modifier
        without = modifier is not None and modifier.type == pp.AggModifierType.Without
        grouping = sorted(modifier.labels) if modifier is not None else []
        steps = self.vectors(node.expr)
        if op == "count_values":
            label = self.eval(node.param)
            if not isinstance(label, StringValue):
                raise EvalError("count_values needs a string parameter")
            if not valid_label_name(label.value):
                raise EvalError(f"invalid label name {go_quote(label.value)}")
            return StepVectors([count_values(label.value, vec, grouping, without) for vec in steps])
        params = self.scalars(node.param) if node.param is not None else [math.nan] * len(steps)
        if op in ("topk", "bottomk"):
            if all(p < 1 for p in params if not math.isnan(p)) and not any(map(math.isnan, params)):
                return StepVectors([[] for _ in steps])
            return StepVectors(
                [
                    aggregate_k(op, vec, grouping, without, p)
                    for vec, p in zip(steps, params, strict=True)
                ]
            )
        return StepVectors(
            [aggregate(op, vec, grouping, without, p) for vec, p in zip(steps, params, strict=True)]
        )

    # -- functions -----------------------------------------------------------------------------

    def call(self, node: Expr) -> Evaluated:
        name = node.func.name
        args = [_unwrap(a) for a in node.args]
        if name in RANGE_FUNCTIONS or name == "absent_over_time":
            return self.range_function(name, args)
        handler = CALLS.get(name)
        if handler is not None:
            return handler(self, args)
        if name in MATH_FUNCTIONS:
            fn = MATH_FUNCTIONS[name]
            return map_values(self.vectors(args[0]), fn)
        if name in DATE_FUNCTIONS:
            return self.date_function(DATE_FUNCTIONS[name], args)
        raise EvalError(f"function {name}() is not supported")

    def range_function(self, name: str, args: list[Expr]) -> StepVectors:
        matrix_index = next(
            (i for i, a in enumerate(args) if isinstance(a, pp.MatrixSelector | pp.SubqueryExpr)),
            None,
        )
        if matrix_index is None:
            raise EvalError(f"{name}() needs a range vector argument")
        params = [self.scalars(a) for i, a in enumerate(args) if i != matrix_index]
        matrix = args[matrix_index]
        if len(self.times) == 1 and name != "absent_over_time":
            if isinstance(matrix, pp.MatrixSelector):
                return self.range_function_once(name, matrix, [p[0] for p in params])
        series = self.range_vector(matrix)
        if name == "absent_over_time":
            present = [False] * len(self.times)
            for _, _, windows in series:
                for i, window in enumerate(windows):
                    present[i] = present[i] or bool(window.times)
            labels = absent_labels(matrix)
            return StepVectors([[] if p else [Sample(labels, 1.0, True)] for p in present])
        fn = RANGE_FUNCTIONS[name]
        keeps_name = name == "last_over_time"
        out = StepVectors([[] for _ in self.times])
        for labels, drop_name, windows in series:
            for i, w in enumerate(windows):
                if not w.times:
                    continue
                value = fn(w.times, w.values, w.start, w.end, w.t, [p[i] for p in params])
                if value is not None:
                    out.steps[i].append(Sample(labels, value, drop_name or not keeps_name))
        return out

    def range_function_once(self, name: str, node: Expr, params: list[float]) -> StepVectors:
        """A range function of a range selector at a single step: every instant query.

        The same as :meth:`range_function`'s general path, reading each series'
        window straight from its arrays, without a generator or Window per series.
        """
        selector = node.vector_selector
        end = self.reads(selector.at, selector.offset)[0]
        start = end - _ms(node.range)
        t = self.times[0]
        fn = RANGE_FUNCTIONS[name]
        drop_name = name != "last_over_time"
        out: list[Sample] = []
        times: Sequence[int]
        values: Sequence[float]
        for series, labels in self.select(selector):
            times, values = series.columns(start, end)
            if not times:
                continue
            if series.nan_after(start) and any(v != v for v in values):
                times, values = _without_stale(times, values)
                if not times:
                    continue
            value = fn(times, values, start, end, t, params)
            if value is not None:
                out.append(Sample(labels, value, drop_name))
        return StepVectors([out])

    def date_function(self, fn: Callable[[Any], float], args: list[Expr]) -> StepVectors:
        if not args:
            values = []
            for t in self.times:
                when = utc_time(t // 1000)
                values.append([Sample(Labels(), math.nan if when is None else fn(when))])
            return StepVectors(values)

        def apply(v: float) -> float:
            when = utc_time(v)
            return math.nan if when is None else fn(when)

        return map_values(self.vectors(args[0]), apply)


def _by_labels(pair: tuple[Series, Labels]) -> tuple[tuple[str, str], ...]:
    return pair[1].items_tuple()


def _kind(value: Evaluated) -> str:
    if isinstance(value, Scalars):
        return "scalar"
    if isinstance(value, StringValue):
        return "string"
    return "instant vector"


def _matching(op: str, modifier: Any) -> Matching:
    set_op = op in SET_OPERATORS
    if modifier is None:
        return Matching(card=Card.MANY_TO_MANY if set_op else Card.ONE_TO_ONE)
    card = next(c for candidate, c in _CARDS if modifier.card == candidate)
    if set_op:
        card = Card.MANY_TO_MANY
    matching = modifier.matching
    on = matching is not None and matching.type == pp.LabelModifierType.Include
    labels = tuple(matching.labels) if matching is not None else ()
    include = tuple(modifier.group_labels or ())
    if card is Card.MANY_TO_MANY and not set_op:  # pragma: no cover - the parser refuses it
        raise EvalError("many-to-many matching is only allowed for set operators")
    return Matching(card, on, labels, include, bool(modifier.return_bool))
