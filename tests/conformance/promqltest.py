"""Run Prometheus's promqltest files against monitord's query engine.

The DSL is ``promql/promqltest``'s (see its README.md and test.go)::

    load 5m
        http_requests_total{job="api"} 0+10x10
    eval instant at 50m rate(http_requests_total[5m])
        expect no_warn
        {job="api"} 0.0333
    eval range from 0 to 10m step 5m sum(http_requests_total)
        {} 0 10 20
    clear

Every eval ends up passed, failed (with the reason) or skipped with the
reason it needs a feature monitord does not implement. Whether an eval is
skipped is decided by inspecting it, never by running it: its expression
(experimental and native-histogram functions), the data it selects (native
histogram samples, ``load_with_nhcb`` histograms), its expected output
(``{{...}}`` histograms) and its expectations (``expect warn``/``info``:
monitord reports no annotations).

As in Prometheus's runner, an instant eval is also run as a range query
(from ``t-1m`` to ``t+1m`` step ``1m``) and its middle step compared, unless
it mentions ``start()``, ``end()``, ``range()`` or ``step()``; and its
``@``-modifier variants are run (see :mod:`tests.conformance.at_variants`).
Subqueries without a step use 1m, as in Prometheus's test engine.

The issue that set monitord's PromQL scope leaves ``@`` and subqueries out, so
results come in three scopes (:class:`Scope`): the evals in the issue's scope;
the evals that use ``@`` or a subquery, run with their ``@`` variants as
Prometheus does; and the ``@`` variants of the in-scope instant evals that
pass, one result per eval. Only the first counts towards the in-scope share.

``python -m tests.conformance.promqltest [DIR]`` prints the figures per file.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import promql_parser

from monitor.errors import QueryError
from monitor.model import Labels, Sample, is_stale_nan
from monitor.query import Engine, Matrix, Scalar, String, Vector, VectorSample, selectors
from monitor.query.notation import (
    NativeHistogramNotation,
    SeriesSpec,
    parse_go_string,
    parse_series_line,
)
from monitor.query.parser import unsupported_reason
from monitor.store import Matcher, Store
from tests.conformance.at_variants import at_variant, at_variant_times

__all__ = [
    "BASELINE",
    "DEFAULT_DIR",
    "EvalResult",
    "Outcome",
    "Scope",
    "passing_ids",
    "run_dir",
    "run_file",
]

DEFAULT_DIR: Final = (
    Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "promqltest"
)
BASELINE: Final = Path(__file__).with_name("baseline.json")
EPSILON: Final = 1e-6
_MIN_NORMAL: Final = 2.2250738585072014e-308

_PAT_LOAD: Final = re.compile(r"^load(?:_(with_nhcb))?\s+(.+?)$")
_PAT_EVAL_INSTANT: Final = re.compile(
    r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$"
)
_PAT_EVAL_RANGE: Final = re.compile(
    r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$"
)
_PAT_EXPECT: Final = re.compile(
    r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$"
)
_PAT_EXPECT_RANGE: Final = re.compile(
    r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$"
)
_PAT_DURATION: Final = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS_MS: Final = (
    365 * 86_400_000,
    7 * 86_400_000,
    86_400_000,
    3_600_000,
    60_000,
    1000,
    1,
)
_ANNOTATIONS: Final = "checks warn/info annotations, which monitord does not report"
# Prometheus's runner skips the range-mode check for these (reQueryContextFuncs).
_QUERY_CONTEXT_FUNCS: Final = re.compile(r"(start|end|range|step)\(\)")
_ID: Final = re.compile(r"^(.*):(\d+)(@?)$")
# Syntax that only Prometheus's experimental parser options accept.
_EXPERIMENTAL_SYNTAX: Final = (
    (re.compile(r"\b(anchored|smoothed)\b"), "needs extended range selectors (anchored/smoothed)"),
    (re.compile(r"\bfill(_left|_right)?\s*\("), "needs the experimental fill() binop modifier"),
)


class Outcome(enum.StrEnum):
    """What became of one eval."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class Scope(enum.StrEnum):
    """Which count a result goes to."""

    IN_SCOPE = "in scope"
    AT_OR_SUBQUERY = "beyond the issue's scope: @/subquery"
    AT_VARIANTS = "beyond the issue's scope: @ variants of passing in-scope instant evals"


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One eval's outcome; ``detail`` is the failure or the skip reason.

    The ``@`` variants of an in-scope eval ``file:line`` are the result ``file:line@``.
    """

    id: str
    expr: str
    outcome: Outcome
    detail: str = ""
    scope: Scope = Scope.IN_SCOPE
    #: For an eval skipped only for its annotation expectations: did the values match?
    values_match: bool | None = None


# -- parsing the DSL -------------------------------------------------------------------------


def parse_duration_ms(text: str) -> int:
    """Prometheus's ``model.ParseDuration`` in milliseconds (``1h30m``, ``10s53ms``, ``0``)."""
    text = text.strip()
    if text == "0":
        return 0
    match = _PAT_DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"not a valid duration string: {text!r}")
    return sum(
        int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS_MS, strict=True) if g
    )


@dataclass(slots=True)
class _Load:
    gap_ms: int
    with_nhcb: bool
    lines: list[tuple[int, str]]


@dataclass(slots=True)
class _Clear:
    pass


@dataclass(slots=True)
class _Expected:
    """An expected series (``labels`` None for a scalar) and its values, with its position."""

    labels: Labels | None
    values: list[float | None]
    pos: int
    histogram: bool = False


@dataclass(slots=True)
class _Eval:
    line: int
    expr: str
    is_range: bool
    start: int
    end: int = 0
    step: int = 0
    fail: bool = False
    fail_msg: str | None = None
    fail_regex: re.Pattern[str] | None = None
    ordered: bool = False
    annotations: list[str] = field(default_factory=list)
    expected: list[_Expected] = field(default_factory=list)
    expected_string: str | None = None
    range_vector: tuple[int, int, int] | None = None
    bad_expectation: str | None = None

    @property
    def expect_scalar(self) -> bool:
        return bool(self.expected) and self.expected[0].labels is None


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.split("\n"):
        line = raw.strip()
        out.append("" if line.startswith("#") else line)
    return out


def parse_test(text: str) -> list[_Load | _Clear | _Eval]:
    """Parse a promqltest file into its commands."""
    lines = _lines(text)
    cmds: list[_Load | _Clear | _Eval] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        word = re.split(r"[\t ]+", line, maxsplit=1)[0].lower()
        if word == "clear":
            cmds.append(_Clear())
            i += 1
        elif word.startswith("load"):
            match = _PAT_LOAD.match(line)
            if match is None:
                raise ValueError(f"line {i + 1}: invalid load command {line!r}")
            load = _Load(parse_duration_ms(match.group(2)), match.group(1) == "with_nhcb", [])
            i += 1
            while i < len(lines) and lines[i]:
                load.lines.append((i + 1, lines[i]))
                i += 1
            cmds.append(load)
        elif word.startswith("eval"):
            cmd, i = _parse_eval(lines, i)
            cmds.append(cmd)
        else:
            raise ValueError(f"line {i + 1}: invalid command {line!r}")
    return cmds


def _parse_eval(lines: list[str], i: int) -> tuple[_Eval, int]:
    line = lines[i]
    instant = _PAT_EVAL_INSTANT.match(line)
    rng = _PAT_EVAL_RANGE.match(line)
    if instant is not None:
        mod, at, expr = instant.groups()
        cmd = _Eval(i + 1, expr, False, parse_duration_ms(at or "0"))
    elif rng is not None:
        mod, start, end, step, expr = rng.groups()
        cmd = _Eval(
            i + 1,
            expr,
            True,
            parse_duration_ms(start),
            parse_duration_ms(end),
            parse_duration_ms(step),
        )
    else:
        raise ValueError(f"line {i + 1}: invalid eval command {line!r}")
    if mod == "fail":
        cmd.fail = True
    elif mod == "ordered":
        cmd.ordered = True
    elif mod in ("warn", "info"):
        cmd.annotations.append(f"eval_{mod}")
    pos = 0
    i += 1
    while i < len(lines) and lines[i]:
        def_line = lines[i]
        i += 1
        if cmd.fail and def_line.startswith("expected_fail_message"):
            cmd.fail_msg = def_line.removeprefix("expected_fail_message").strip()
            continue
        if cmd.fail and def_line.startswith("expected_fail_regexp"):
            cmd.fail_regex = re.compile(def_line.removeprefix("expected_fail_regexp").strip())
            continue
        if def_line.startswith("expect range vector"):
            match = _PAT_EXPECT_RANGE.match(def_line)
            if match is None:
                raise ValueError(f"line {i}: invalid range vector definition {def_line!r}")
            cmd.range_vector = tuple(parse_duration_ms(g) for g in match.groups())  # type: ignore[assignment]
            continue
        if def_line.startswith("expect string"):
            literal = def_line.removeprefix("expect string").strip()
            cmd.expected_string, _ = parse_go_string(literal, 0)
            continue
        if def_line.split(" ")[0] == "expect":
            _parse_expect(cmd, def_line, i)
            continue
        number = _parse_number(def_line)
        if number is not None:
            cmd.expected = [_Expected(None, [number], 0)]
            continue
        pos += 1
        try:
            spec = parse_series_line(def_line)
        except NativeHistogramNotation:
            cmd.expected.append(_Expected(Labels(), [], pos, histogram=True))
            continue
        cmd.expected.append(_Expected(_full_labels(spec), spec.values, pos))
    return cmd, i


def _parse_expect(cmd: _Eval, line: str, line_no: int) -> None:
    match = _PAT_EXPECT.match(line.strip())
    if match is None:
        raise ValueError(f"line {line_no}: invalid expect statement {line!r}")
    kind, how, text = match.groups()
    if kind == "fail":
        cmd.fail = True
        if how == "msg":
            cmd.fail_msg = text.strip()
        elif how == "regex":
            cmd.fail_regex = re.compile(text.strip())
    elif kind == "ordered":
        cmd.ordered = True
    elif kind in ("warn", "info"):
        cmd.annotations.append(line.strip())
    # no_warn and no_info hold: monitord never reports annotations.


def _parse_number(text: str) -> float | None:
    try:
        return float(int(text, 0))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _full_labels(spec: SeriesSpec) -> Labels:
    if spec.name:
        return Labels((*spec.labels.items_tuple(), ("__name__", spec.name)))
    return spec.labels


# -- running ---------------------------------------------------------------------------------


class _World:
    """A fresh store per ``clear``, plus the native histogram series it could not load."""

    def __init__(self) -> None:
        self.store = Store(samples_per_series=1_000_000, retention=1e12, max_series=1_000_000)
        self.engine = Engine(self.store, default_subquery_step=60.0)
        self.native: list[Labels] = []

    def load(self, cmd: _Load) -> None:
        defs: dict[tuple[str, Labels], list[float | None]] = {}
        for line_no, text in cmd.lines:
            try:
                spec = parse_series_line(text)
            except NativeHistogramNotation:
                spec_name, labels = _description_only(text)
                self.native.append(_full_labels(SeriesSpec(spec_name, labels, [])))
                continue
            except ValueError as exc:
                raise ValueError(f"line {line_no}: {exc}") from exc
            defs[(spec.name, spec.labels)] = spec.values
        for (name, labels), values in defs.items():
            samples = [
                Sample(name, labels, v, i * cmd.gap_ms)
                for i, v in enumerate(values)
                if v is not None
            ]
            self.store.append(samples, 0)
            if cmd.with_nhcb:
                self.native.extend(_nhcb_series(name, labels))

    def selects_native(self, matcher_sets: Sequence[Sequence[Matcher]]) -> Labels | None:
        for labels in self.native:
            for matchers in matcher_sets:
                if all(m.matches(labels.get(m.name, "")) for m in matchers):
                    return labels
        return None


def _description_only(text: str) -> tuple[str, Labels]:
    # The description ends where the values begin: at the first blank outside braces/quotes.
    depth = 0
    quote = ""
    for j, ch in enumerate(text):
        if quote:
            if ch == quote and text[j - 1] != "\\":
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch in " \t" and depth == 0:
            spec = parse_series_line(text[:j] + " 0")
            return spec.name, spec.labels
    spec = parse_series_line(text + " 0")
    return spec.name, spec.labels


def _nhcb_series(name: str, labels: Labels) -> Iterator[Labels]:
    """The native histogram ``load_with_nhcb`` derives from a classic histogram series."""
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            if suffix == "_bucket":
                try:
                    le = float(labels.get("le", ""))
                except ValueError:
                    return
                if math.isnan(le):
                    return
            base = labels.without("le")
            yield Labels((*base.items_tuple(), ("__name__", name.removesuffix(suffix))))
            return


def skip_reason(cmd: _Eval, world: _World) -> str | None:
    """Why an eval needs a feature monitord does not implement, found by inspection."""
    for pattern, reason in _EXPERIMENTAL_SYNTAX:
        if pattern.search(cmd.expr):
            return reason
    try:
        node = promql_parser.parse(cmd.expr)
    except ValueError:
        node = None
    if node is not None:
        reason = unsupported_reason(node)
        if reason is not None:
            return "needs " + reason
    if any(e.histogram for e in cmd.expected):
        return "needs native histograms (expects a histogram result)"
    if node is not None:
        try:
            native = world.selects_native(selectors(node))
        except QueryError:
            native = None
        if native is not None:
            return "needs native histograms (selects a native histogram series)"
    if cmd.annotations:
        return _ANNOTATIONS
    return None


def uses_at_or_subquery(expr: str) -> bool:
    """Whether an expression needs ``@`` or a subquery, which the issue's scope leaves out."""
    try:
        node = promql_parser.parse(expr)
    except ValueError:
        return False
    found: list[bool] = []

    def visit(n: object) -> bool:
        if isinstance(n, promql_parser.SubqueryExpr) or getattr(n, "at", None) is not None:
            found.append(True)
            return False
        return True

    promql_parser.walk(node, visit)
    return bool(found)


def run_eval(cmd: _Eval, world: _World, *, at_variants: bool = True) -> str | None:
    """Run one eval, with its ``@`` variants if asked; None if it passed, else what went wrong."""
    if cmd.is_range:
        try:
            result = world.engine.range(cmd.expr, cmd.start, cmd.end, cmd.step)
        except QueryError as exc:
            return _check_failure(cmd, exc)
        if cmd.fail:
            return "expected an error, got none"
        return _compare_matrix(cmd, result, cmd.start, cmd.end, cmd.step)
    problem = _run_instant(cmd, world, cmd.expr, cmd.start)
    if problem is not None or not at_variants:
        return problem
    return run_at_variants(cmd, world)


def has_at_variants(cmd: _Eval) -> bool:
    """Whether Prometheus's runner adds ``@`` variants to this eval."""
    return not cmd.is_range and at_variant(cmd.expr, cmd.start) is not None


def run_at_variants(cmd: _Eval, world: _World) -> str | None:
    """Run an instant eval's ``@`` variants; None if all pass (or there are none)."""
    text = None if cmd.is_range else at_variant(cmd.expr, cmd.start)
    if text is None:
        return None
    for t in at_variant_times(cmd.start):
        problem = _run_instant(cmd, world, text, t)
        if problem is not None:
            return f"@ variant {text} at {t / 1000:g}s: {problem}"
    return None


def _run_instant(cmd: _Eval, world: _World, expr: str, t: int) -> str | None:
    try:
        value = world.engine.instant(expr, t)
    except QueryError as exc:
        return _check_failure(cmd, exc)
    if cmd.fail:
        return "expected an error, got none"
    problem = _compare_instant(cmd, value)
    if problem is not None or cmd.range_vector is not None or cmd.expected_string is not None:
        return problem
    if not isinstance(value, Vector | Scalar) or _QUERY_CONTEXT_FUNCS.search(expr):
        return None
    # The same query in range mode, compared at its middle step.
    try:
        mat = world.engine.range(expr, t - 60_000, t + 60_000, 60_000)
    except QueryError as exc:
        return f"range mode: error {exc}"
    if cmd.ordered:
        return None
    sorted_problem = _assert_sorted(mat)
    if sorted_problem is not None:
        return "range mode: " + sorted_problem
    middle = Vector()
    for series in mat:
        for point_t, v in series.points:
            if point_t == t:
                middle.append(VectorSample(series.labels, v))
                break
    if isinstance(value, Scalar):
        if not middle:
            return "range mode: no value at the evaluation time"
        problem = _compare_instant(cmd, Scalar(middle[0].value))
    else:
        problem = _compare_instant(cmd, middle)
    return None if problem is None else "range mode: " + problem


def _check_failure(cmd: _Eval, exc: QueryError) -> str | None:
    if not cmd.fail:
        return f"unexpected error: {exc}"
    message = str(exc)
    if cmd.fail_msg is not None and cmd.fail_msg != message:
        return f"expected error {cmd.fail_msg!r}, got {message!r}"
    if cmd.fail_regex is not None and cmd.fail_regex.search(message) is None:
        return f"expected error matching {cmd.fail_regex.pattern!r}, got {message!r}"
    return None


def almost_equal(a: float, b: float, epsilon: float = EPSILON) -> bool:
    """Prometheus's ``almost.Equal``: relative tolerance, NaN equals NaN, stale only stale."""
    if is_stale_nan(a) or is_stale_nan(b):
        return is_stale_nan(a) and is_stale_nan(b)
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < epsilon


def _compare_instant(cmd: _Eval, value: object) -> str | None:
    if isinstance(value, String):
        if cmd.expected_string != value.value:
            return f"expected string {cmd.expected_string!r}, got {value.value!r}"
        return None
    if isinstance(value, Scalar):
        if not cmd.expect_scalar:
            return f"expected a vector or matrix, got scalar {value.value}"
        expected = cmd.expected[0].values[0]
        assert expected is not None
        if not almost_equal(expected, value.value):
            return f"expected scalar {expected}, got {value.value}"
        return None
    if isinstance(value, Matrix):
        if cmd.range_vector is None:
            return f"expected an instant result, got a matrix of {len(value)} series"
        start, end, step = cmd.range_vector
        return _compare_matrix(cmd, value, start, end, step)
    assert isinstance(value, Vector)
    if cmd.expect_scalar:
        return f"expected a scalar, got a vector of {len(value)} samples"
    expected = {e.labels: e for e in cmd.expected}
    seen: set[Labels] = set()
    for index, sample in enumerate(value):
        exp = expected.get(sample.labels)
        if exp is None:
            return f"unexpected series {sample.labels} {sample.value}"
        if cmd.ordered and exp.pos != index + 1:
            return f"expected {sample.labels} at position {exp.pos}, got it at {index + 1}"
        want = exp.values[0]
        if want is None or not almost_equal(want, sample.value):
            return f"expected {want} for {sample.labels}, got {sample.value}"
        seen.add(sample.labels)
    missing = [str(e.labels) for e in cmd.expected if e.labels not in seen]
    if missing:
        return f"expected series not found: {', '.join(missing)}"
    return None


def _compare_matrix(cmd: _Eval, mat: Matrix, start: int, end: int, step: int) -> str | None:
    if cmd.ordered:
        return "expected an ordered result, got a matrix"
    if cmd.expect_scalar:
        return "expected a scalar, got a matrix"
    sorted_problem = _assert_sorted(mat)
    if sorted_problem is not None:
        return sorted_problem
    expected = {e.labels: e for e in cmd.expected}
    seen: set[Labels] = set()
    for series in mat:
        exp = expected.get(series.labels)
        if exp is None:
            return f"unexpected series {series.labels} {series.points}"
        seen.add(series.labels)
        want: list[tuple[int, float]] = []
        for i, v in enumerate(exp.values):
            t = start + i * step
            if t > end:
                return f"expected {len(exp.values)} points for {series.labels}, more than the range"
            if v is not None:
                want.append((t, v))
        if len(want) != len(series.points):
            return f"expected {want} for {series.labels}, got {series.points}"
        for (wt, wv), (gt, gv) in zip(want, series.points, strict=True):
            if wt != gt or not almost_equal(wv, gv):
                return f"expected {want} for {series.labels}, got {series.points}"
    missing = [str(e.labels) for e in cmd.expected if e.labels not in seen]
    if missing:
        return f"expected series not found: {', '.join(missing)}"
    return None


def _assert_sorted(mat: Matrix) -> str | None:
    keys = [s.labels.items_tuple() for s in mat]
    if keys != sorted(keys):
        return "matrix is not sorted by labels"
    return None


def run_file(path: Path) -> list[EvalResult]:
    """Run every command of one promqltest file; one result per eval, one per @ variant set."""
    world = _World()
    results: list[EvalResult] = []
    for cmd in parse_test(path.read_text(encoding="utf-8")):
        if isinstance(cmd, _Clear):
            world = _World()
        elif isinstance(cmd, _Load):
            world.load(cmd)
        else:
            results.extend(_run_cmd(f"{path.name}:{cmd.line}", cmd, world))
    return results


def _run_cmd(eval_id: str, cmd: _Eval, world: _World) -> Iterator[EvalResult]:
    in_scope = not uses_at_or_subquery(cmd.expr)
    scope = Scope.IN_SCOPE if in_scope else Scope.AT_OR_SUBQUERY
    reason = skip_reason(cmd, world)
    if reason == _ANNOTATIONS:
        # Still worth knowing whether the values are right.
        matched = run_eval(cmd, world, at_variants=not in_scope) is None
        yield EvalResult(
            eval_id, cmd.expr, Outcome.SKIPPED, reason, scope=scope, values_match=matched
        )
        return
    if reason is not None:
        yield EvalResult(eval_id, cmd.expr, Outcome.SKIPPED, reason, scope=scope)
        return
    problem = run_eval(cmd, world, at_variants=not in_scope)
    outcome = Outcome.PASSED if problem is None else Outcome.FAILED
    yield EvalResult(eval_id, cmd.expr, outcome, problem or "", scope=scope)
    if in_scope and problem is None and has_at_variants(cmd):
        problem = run_at_variants(cmd, world)
        outcome = Outcome.PASSED if problem is None else Outcome.FAILED
        yield EvalResult(eval_id + "@", cmd.expr, outcome, problem or "", scope=Scope.AT_VARIANTS)


def run_dir(directory: Path) -> dict[str, list[EvalResult]]:
    """Run every ``*.test`` file of a directory, by file name."""
    return {path.name: run_file(path) for path in sorted(directory.glob("*.test"))}


def _report(results: dict[str, list[EvalResult]], *, verbose: bool) -> str:
    lines: list[str] = []
    for name, file_results in results.items():
        lines.extend(_figures(name, file_results))
        reasons = Counter((r.scope, r.detail) for r in file_results if r.outcome is Outcome.SKIPPED)
        for (scope, reason), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            where = "" if scope is Scope.IN_SCOPE else " (@/subquery)"
            lines.append(f"    skipped {n}{where}: {reason}")
            if reason == _ANNOTATIONS:
                matched = sum(
                    1
                    for r in file_results
                    if r.scope is scope and r.detail == reason and r.values_match
                )
                lines.append(f"        (their values: {matched} of {n} as expected)")
        if verbose:
            for r in file_results:
                if r.outcome is Outcome.FAILED:
                    lines.append(f"    FAILED {r.id} {r.expr}\n        {r.detail}")
    everything = [r for rs in results.values() for r in rs]
    lines.extend(_figures("total", everything))
    return "\n".join(lines)


def _figures(name: str, results: list[EvalResult]) -> list[str]:
    counts = Counter((r.scope, r.outcome) for r in results)
    passed, failed = counts[Scope.IN_SCOPE, Outcome.PASSED], counts[Scope.IN_SCOPE, Outcome.FAILED]
    share = f"{100 * passed / (passed + failed):.1f} %" if passed + failed else "n/a"
    lines = [
        f"{name}: {passed} passed, {failed} failed, "
        f"{counts[Scope.IN_SCOPE, Outcome.SKIPPED]} skipped; in scope {share}"
    ]
    for scope in (Scope.AT_OR_SUBQUERY, Scope.AT_VARIANTS):
        figures = [counts[scope, outcome] for outcome in Outcome]
        if any(figures):
            lines.append(
                f"    {scope}: {figures[0]} passed, {figures[1]} failed, {figures[2]} skipped"
            )
    return lines


def passing_ids(results: dict[str, list[EvalResult]], *scopes: Scope) -> list[str]:
    """The ids of every passed eval of the given scopes, sorted by file and line."""
    ids = [
        r.id
        for rs in results.values()
        for r in rs
        if r.outcome is Outcome.PASSED and r.scope in scopes
    ]
    return sorted(ids, key=id_sort_key)


def id_sort_key(eval_id: str) -> tuple[str, int, str]:
    """Sort ``file:line`` and ``file:line@`` by file, then line."""
    match = _ID.match(eval_id)
    if match is None:
        raise ValueError(f"not an eval id: {eval_id!r}")
    return match.group(1), int(match.group(2)), match.group(3)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-file figures; ``-v`` lists the failures, ``--write-baseline`` records them."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args
    write = "--write-baseline" in args
    args = [a for a in args if a not in ("-v", "--write-baseline")]
    directory = Path(args[0]) if args else DEFAULT_DIR
    if not directory.is_dir():
        print(f"no promqltest folder at {directory}", file=sys.stderr)
        return 2
    results = run_dir(directory)
    print(_report(results, verbose=verbose))
    if write:
        baseline = {
            "passing": passing_ids(results, Scope.IN_SCOPE),
            "passing_beyond_scope": passing_ids(results, Scope.AT_OR_SUBQUERY, Scope.AT_VARIANTS),
        }
        BASELINE.write_text(json.dumps(baseline, indent=1) + "\n")
        print(f"wrote {BASELINE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
