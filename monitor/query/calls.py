"""The PromQL functions that are more than a map of values: labels, clamps, sorting, time, types.

Each takes the evaluator and the call's arguments (parentheses removed) and
returns the value at every step; ``monitor.query.functions`` holds the
range-vector functions and the per-value maths they share with the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Protocol

import promql_parser as pp

from monitor.model import Labels
from monitor.query.functions import go_max, go_min, round_to
from monitor.query.histogram import histogram_quantile
from monitor.query.parser import Expr, match_op_text
from monitor.query.regex import compile_go_regex, expand_go_template
from monitor.query.samples import (
    DUPLICATE_LABELSET,
    NAME,
    EvalError,
    Evaluated,
    Sample,
    Scalars,
    StepVectors,
    StringValue,
    set_label,
)

__all__ = ["CALLS", "Evaluator", "absent_labels", "go_quote", "map_values", "valid_label_name"]


class Evaluator(Protocol):
    """What a function needs from the engine: the steps and the evaluation of arguments."""

    times: list[int]

    def eval(self, node: Expr) -> Evaluated: ...

    def scalars(self, node: Expr) -> list[float]: ...

    def vectors(self, node: Expr) -> list[list[Sample]]: ...


def map_values(steps: list[list[Sample]], fn: Callable[[float], float]) -> StepVectors:
    return StepVectors([[Sample(s.labels, fn(s.value), True) for s in step] for step in steps])


def absent_labels(node: Expr) -> Labels:
    """The labels ``absent()`` reports: those fixed by exactly one equality matcher."""
    selector = node.vector_selector if isinstance(node, pp.MatrixSelector) else node
    if not isinstance(selector, pp.VectorSelector):
        return Labels()
    items: dict[str, str] = {}
    seen: set[str] = set()
    for m in selector.matchers.matchers:
        if m.name == NAME:
            continue
        if match_op_text(m.op) == "=" and m.name not in seen:
            items[m.name] = m.value
            seen.add(m.name)
        else:
            items.pop(m.name, None)
    return Labels(items)


def valid_label_name(name: str) -> bool:
    if not name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def go_quote(text: str) -> str:
    """Quote like Go's ``%q``: invalid bytes as ``\\xNN``."""
    raw = text.encode("utf-8", errors="surrogateescape")
    out = []
    for ch in raw.decode("utf-8", errors="backslashreplace"):
        if ch == '"':
            out.append('\\"')
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# -- the functions that do not map one value to one value ----------------------------------------


def _scalar_args(ev: Evaluator, args: list[Expr], start: int) -> list[list[float]]:
    return [ev.scalars(a) for a in args[start:]]


def _fn_time(ev: Evaluator, args: list[Expr]) -> Scalars:
    return Scalars([t / 1000 for t in ev.times])


def _fn_pi(ev: Evaluator, args: list[Expr]) -> Scalars:
    return Scalars([math.pi] * len(ev.times))


def _fn_vector(ev: Evaluator, args: list[Expr]) -> StepVectors:
    return StepVectors([[Sample(Labels(), v)] for v in ev.scalars(args[0])])


def _fn_scalar(ev: Evaluator, args: list[Expr]) -> Scalars:
    return Scalars([step[0].value if len(step) == 1 else math.nan for step in ev.vectors(args[0])])


def _fn_timestamp(ev: Evaluator, args: list[Expr]) -> StepVectors:
    steps = ev.vectors(args[0])
    from_selector = isinstance(args[0], pp.VectorSelector)
    return StepVectors(
        [
            [Sample(s.labels, (s.ts if from_selector else t) / 1000, True) for s in step]
            for t, step in zip(ev.times, steps, strict=True)
        ]
    )


def _fn_absent(ev: Evaluator, args: list[Expr]) -> StepVectors:
    labels = absent_labels(args[0])
    return StepVectors([[] if step else [Sample(labels, 1.0)] for step in ev.vectors(args[0])])


def _fn_round(ev: Evaluator, args: list[Expr]) -> StepVectors:
    steps = ev.vectors(args[0])
    nearest = ev.scalars(args[1]) if len(args) > 1 else [1.0] * len(steps)
    return StepVectors(
        [
            [Sample(s.labels, round_to(s.value, n), True) for s in step]
            for step, n in zip(steps, nearest, strict=True)
        ]
    )


def _clamp_steps(steps: list[list[Sample]], lows: list[float], highs: list[float]) -> StepVectors:
    out: list[list[Sample]] = []
    for step, low, high in zip(steps, lows, highs, strict=True):
        if high < low:
            out.append([])
            continue
        out.append([Sample(s.labels, go_max(low, go_min(high, s.value)), True) for s in step])
    return StepVectors(out)


def _fn_clamp(ev: Evaluator, args: list[Expr]) -> StepVectors:
    low, high = _scalar_args(ev, args, 1)
    return _clamp_steps(ev.vectors(args[0]), low, high)


def _fn_clamp_min(ev: Evaluator, args: list[Expr]) -> StepVectors:
    (low,) = _scalar_args(ev, args, 1)
    return _clamp_steps(ev.vectors(args[0]), low, [math.inf] * len(low))


def _fn_clamp_max(ev: Evaluator, args: list[Expr]) -> StepVectors:
    (high,) = _scalar_args(ev, args, 1)
    return _clamp_steps(ev.vectors(args[0]), [-math.inf] * len(high), high)


def _sort_key(descending: bool) -> Callable[[Sample], tuple[int, float]]:
    def key(s: Sample) -> tuple[int, float]:
        if math.isnan(s.value):
            return (1, 0.0)
        return (0, -s.value if descending else s.value)

    return key


def _fn_sort(ev: Evaluator, args: list[Expr]) -> StepVectors:
    return StepVectors([sorted(step, key=_sort_key(False)) for step in ev.vectors(args[0])])


def _fn_sort_desc(ev: Evaluator, args: list[Expr]) -> StepVectors:
    return StepVectors([sorted(step, key=_sort_key(True)) for step in ev.vectors(args[0])])


def _fn_histogram_quantile(ev: Evaluator, args: list[Expr]) -> StepVectors:
    qs = ev.scalars(args[0])
    steps = ev.vectors(args[1])
    return StepVectors([histogram_quantile(q, step) for q, step in zip(qs, steps, strict=True)])


def _string_arg(ev: Evaluator, node: Expr, what: str) -> str:
    value = ev.eval(node)
    if not isinstance(value, StringValue):
        raise EvalError(f"{what} must be a string")
    return value.value


def _fn_label_replace(ev: Evaluator, args: list[Expr]) -> StepVectors:
    dst = _string_arg(ev, args[1], "label_replace() destination")
    template = _string_arg(ev, args[2], "label_replace() replacement")
    src = _string_arg(ev, args[3], "label_replace() source")
    regex_text = _string_arg(ev, args[4], "label_replace() regex")
    try:
        regex = compile_go_regex(regex_text)
    except ValueError as exc:
        raise EvalError(f"invalid regular expression in label_replace(): {regex_text}") from exc
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_replace(): {dst}")
    out: list[list[Sample]] = []
    for step in ev.vectors(args[0]):
        replaced: list[Sample] = []
        for s in step:
            match = regex.fullmatch(s.labels.get(src, ""))
            if match is None:
                replaced.append(s)
                continue
            labels = set_label(s.labels, dst, expand_go_template(template, match))
            replaced.append(Sample(labels, s.value, False if dst == NAME else s.drop_name, s.ts))
        out.append(_check_unique(replaced))
    return StepVectors(out)


def _fn_label_join(ev: Evaluator, args: list[Expr]) -> StepVectors:
    dst = _string_arg(ev, args[1], "label_join() destination")
    separator = _string_arg(ev, args[2], "label_join() separator")
    sources = [_string_arg(ev, a, "label_join() source") for a in args[3:]]
    for src in sources:
        if not valid_label_name(src):
            raise EvalError(f"invalid source label name in label_join(): {src}")
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_join(): {dst}")
    out: list[list[Sample]] = []
    for step in ev.vectors(args[0]):
        joined: list[Sample] = []
        for s in step:
            value = separator.join(s.labels.get(src, "") for src in sources)
            labels = set_label(s.labels, dst, value)
            joined.append(Sample(labels, s.value, False if dst == NAME else s.drop_name, s.ts))
        out.append(_check_unique(joined))
    return StepVectors(out)


def _check_unique(step: list[Sample]) -> list[Sample]:
    if len({s.labels for s in step}) != len(step):
        raise EvalError(DUPLICATE_LABELSET)
    return step


CALLS: Final[dict[str, Callable[[Evaluator, list[Expr]], Evaluated]]] = {
    "time": _fn_time,
    "pi": _fn_pi,
    "vector": _fn_vector,
    "scalar": _fn_scalar,
    "timestamp": _fn_timestamp,
    "absent": _fn_absent,
    "round": _fn_round,
    "clamp": _fn_clamp,
    "clamp_min": _fn_clamp_min,
    "clamp_max": _fn_clamp_max,
    "sort": _fn_sort,
    "sort_desc": _fn_sort_desc,
    "histogram_quantile": _fn_histogram_quantile,
    "label_replace": _fn_label_replace,
    "label_join": _fn_label_join,
}
