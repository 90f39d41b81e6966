"""``monitord test-rules``: promtool's rule unit-test files, run with promtool's verdicts.

The file format is ``promtool test rules``' (Prometheus 2.42): ``rule_files``,
``evaluation_interval``, ``group_eval_order`` and ``tests``, each test with
``interval``, ``input_series`` (the expanding notation of
:mod:`monitor.query.notation`), ``alert_rule_test``, ``promql_expr_test``,
``external_labels``, ``external_url`` and ``name``. Unknown keys are errors, as
promtool unmarshals strictly.

A test group runs as promtool runs it: the input series are loaded at
``i * interval`` (an interval of 0, the default, puts every point at time 0);
the rule groups are evaluated every ``evaluation_interval`` from 0 to the
largest ``eval_time`` of the group, each evaluation seeing the input points up
to its own time; alerts are compared after the evaluation at the latest
evaluation time not after their ``eval_time``, and expressions are queried at
their ``eval_time`` once every evaluation has run. Alerting rules count as
restored from the start, so ``ALERTS`` exists at once. A rule that fails to
evaluate ends the test group. Values compare exactly, as promtool's do.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

from monitor.errors import ConfigError, QueryError
from monitor.model import AlertState, Labels, Sample
from monitor.query import Engine, parse_expr
from monitor.query.notation import (
    NativeHistogramNotation,
    parse_series_description,
    parse_series_line,
)
from monitor.query.values import Scalar, Vector
from monitor.schema import format_duration, parse_duration
from monitor.store import Store
from rules.files import RuleFile, load_rule_file
from rules.group import EvalContext, Group, build_group
from rules.query import engine_query_func
from rules.templates import TemplateExpander

__all__ = ["TestFileError", "run_test_files"]

NAME_LABEL = "__name__"
ALERTNAME_LABEL = "alertname"
DEFAULT_EVALUATION_INTERVAL = 60_000


class TestFileError(Exception):
    """A unit-test file cannot be read or does not have promtool's shape."""

    __test__ = False  # not a pytest test class


# --- the file's shape --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputSeries:
    """One ``input_series`` item."""

    series: str
    values: str


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    """One ``exp_alerts`` item: labels (``alertname`` added) and annotations."""

    labels: Labels
    annotations: Labels


@dataclass(frozen=True, slots=True)
class AlertTest:
    """One ``alert_rule_test`` item."""

    eval_time: int
    eval_time_text: str
    alertname: str
    expected: tuple[ExpectedAlert, ...]


@dataclass(frozen=True, slots=True)
class ExpectedSample:
    """One ``exp_samples`` item, its labels still in the series notation."""

    labels: str
    value: float


@dataclass(frozen=True, slots=True)
class ExprTest:
    """One ``promql_expr_test`` item."""

    expr: str
    eval_time: int
    eval_time_text: str
    expected: tuple[ExpectedSample, ...]


@dataclass(frozen=True, slots=True)
class TestGroup:
    """One item of ``tests``."""

    __test__ = False

    interval: int
    input_series: tuple[InputSeries, ...]
    alert_tests: tuple[AlertTest, ...]
    expr_tests: tuple[ExprTest, ...]
    external_labels: Labels
    external_url: str
    name: str

    def max_eval_time(self) -> int:
        """The largest ``eval_time`` of its alert and expression tests (0 when none)."""
        times = [t.eval_time for t in self.alert_tests] + [t.eval_time for t in self.expr_tests]
        return max(times, default=0)


@dataclass(frozen=True, slots=True)
class TestFile:
    """A whole unit-test file, with its rule file globs resolved."""

    __test__ = False

    path: str
    rule_files: tuple[str, ...]
    unmatched_globs: tuple[str, ...]
    evaluation_interval: int
    group_eval_order: tuple[str, ...]
    tests: tuple[TestGroup, ...]


# Each type's fields and how to read them; the names are promtool's Go type names, which
# its error messages use.
_FILE_FIELDS = ("rule_files", "evaluation_interval", "group_eval_order", "tests")
_GROUP_FIELDS = (
    "interval",
    "input_series",
    "alert_rule_test",
    "promql_expr_test",
    "external_labels",
    "external_url",
    "name",
)
_SERIES_FIELDS = ("series", "values")
_ALERT_TEST_FIELDS = ("eval_time", "alertname", "exp_alerts")
_ALERT_FIELDS = ("exp_labels", "exp_annotations")
_EXPR_TEST_FIELDS = ("expr", "eval_time", "exp_samples")
_SAMPLE_FIELDS = ("labels", "value")


class _Reader:
    """Reads a composed YAML tree strictly, collecting every unknown field with its line."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def mapping(self, node: yaml.Node, type_name: str, fields: Sequence[str]) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            self._wrong(node, f"main.{type_name}")
            return {}
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in fields:
                self.problems.append(
                    f"line {key_node.start_mark.line + 1}: field {key} not found in type "
                    f"main.{type_name}"
                )
                continue
            out[key] = value_node
        return out

    def sequence(self, node: yaml.Node | None) -> list[yaml.Node]:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self._wrong(node, "[]")
            return []
        return list(node.value)

    def string(self, node: yaml.Node | None) -> str:
        if node is None:
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self._wrong(node, "string")
            return ""
        return "" if node.tag == "tag:yaml.org,2002:null" else str(node.value)

    def duration(self, node: yaml.Node | None) -> tuple[int, str]:
        text = self.string(node)
        if not text:
            return 0, "0s"
        try:
            seconds = parse_duration(text)
        except ValueError:
            assert node is not None
            self.problems.append(
                f"line {node.start_mark.line + 1}: not a valid duration string: {text!r}"
            )
            return 0, "0s"
        return round(seconds * 1000), format_duration(seconds)

    def number(self, node: yaml.Node | None) -> float:
        text = self.string(node)
        if not text:
            return 0.0
        try:
            return _go_float(text)
        except ValueError:
            assert node is not None
            self.problems.append(
                f"line {node.start_mark.line + 1}: cannot unmarshal {text!r} into float64"
            )
            return 0.0

    def string_map(self, node: yaml.Node | None) -> dict[str, str]:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self._wrong(node, "map[string]string")
            return {}
        return {self.string(k): self.string(v) for k, v in node.value}

    def _wrong(self, node: yaml.Node, want: str) -> None:
        self.problems.append(
            f"line {node.start_mark.line + 1}: cannot unmarshal {_yaml_kind(node)} into {want}"
        )


def _yaml_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "!!map"
    if isinstance(node, yaml.SequenceNode):
        return "!!seq"
    return f"!!{node.tag.rsplit(':', 1)[-1]} `{node.value}`"


def _go_float(text: str) -> float:
    lowered = text.strip().lower()
    if lowered in ("inf", "+inf", ".inf", "+.inf"):
        return math.inf
    if lowered in ("-inf", "-.inf"):
        return -math.inf
    if lowered in ("nan", ".nan"):
        return math.nan
    return float(text)


def load_test_file(path: str) -> TestFile:
    """Read and check a unit-test file; raise :class:`TestFileError` as promtool would fail."""
    try:
        with open(path, encoding="utf-8") as fh:
            root = yaml.compose(fh, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise TestFileError(f"open {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TestFileError(f"yaml: {exc}") from None
    reader = _Reader()
    top = reader.mapping(root, "unitTestFile", _FILE_FIELDS) if root is not None else {}
    rule_globs = [reader.string(n) for n in reader.sequence(top.get("rule_files"))]
    evaluation_interval, _ = reader.duration(top.get("evaluation_interval"))
    order = tuple(reader.string(n) for n in reader.sequence(top.get("group_eval_order")))
    tests = tuple(_read_group(reader, n) for n in reader.sequence(top.get("tests")))
    if reader.problems:
        raise TestFileError("yaml: unmarshal errors:\n  " + "\n  ".join(reader.problems))
    base = os.path.dirname(path)
    files: list[str] = []
    unmatched: list[str] = []
    for pattern in rule_globs:
        if pattern and not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        matched = sorted(glob.glob(pattern))
        if not matched:
            unmatched.append(pattern)
        files.extend(matched)
    return TestFile(
        path=path,
        rule_files=tuple(files),
        unmatched_globs=tuple(unmatched),
        evaluation_interval=evaluation_interval or DEFAULT_EVALUATION_INTERVAL,
        group_eval_order=order,
        tests=tests,
    )


def _read_group(reader: _Reader, node: yaml.Node) -> TestGroup:
    m = reader.mapping(node, "testGroup", _GROUP_FIELDS)
    interval, _ = reader.duration(m.get("interval"))
    series = []
    for item in reader.sequence(m.get("input_series")):
        s = reader.mapping(item, "series", _SERIES_FIELDS)
        series.append(InputSeries(reader.string(s.get("series")), reader.string(s.get("values"))))
    alert_tests = []
    for item in reader.sequence(m.get("alert_rule_test")):
        a = reader.mapping(item, "alertTestCase", _ALERT_TEST_FIELDS)
        eval_time, eval_text = reader.duration(a.get("eval_time"))
        alertname = reader.string(a.get("alertname"))
        expected = []
        for exp in reader.sequence(a.get("exp_alerts")):
            e = reader.mapping(exp, "alert", _ALERT_FIELDS)
            labels = reader.string_map(e.get("exp_labels"))
            labels[ALERTNAME_LABEL] = alertname
            annotations = reader.string_map(e.get("exp_annotations"))
            expected.append(ExpectedAlert(Labels(labels), Labels(annotations)))
        alert_tests.append(AlertTest(eval_time, eval_text, alertname, tuple(expected)))
    expr_tests = []
    for item in reader.sequence(m.get("promql_expr_test")):
        p = reader.mapping(item, "promqlTestCase", _EXPR_TEST_FIELDS)
        eval_time, eval_text = reader.duration(p.get("eval_time"))
        samples = []
        for exp in reader.sequence(p.get("exp_samples")):
            s = reader.mapping(exp, "sample", _SAMPLE_FIELDS)
            samples.append(
                ExpectedSample(reader.string(s.get("labels")), reader.number(s.get("value")))
            )
        expr_tests.append(
            ExprTest(reader.string(p.get("expr")), eval_time, eval_text, tuple(samples))
        )
    return TestGroup(
        interval=interval,
        input_series=tuple(series),
        alert_tests=tuple(alert_tests),
        expr_tests=tuple(expr_tests),
        external_labels=Labels(reader.string_map(m.get("external_labels"))),
        external_url=reader.string(m.get("external_url")),
        name=reader.string(m.get("name")),
    )


# --- running -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loader:
    """promtool's lazy loader: input points are appended up to each evaluation time."""

    store: Store
    points: list[tuple[int, Sample]] = field(default_factory=list)
    next: int = 0

    @classmethod
    def build(cls, group: TestGroup, store: Store) -> _Loader:
        points: list[tuple[int, Sample]] = []
        for item in group.input_series:
            try:
                spec = parse_series_line(f"{item.series} {item.values}")
            except NativeHistogramNotation as exc:
                raise TestFileError(f"native histograms are not supported: {exc}") from None
            except ValueError as exc:
                raise TestFileError(str(exc)) from None
            for i, value in enumerate(spec.values):
                if value is not None:
                    t = i * group.interval
                    points.append((t, Sample(spec.name, spec.labels, value, t)))
        points.sort(key=lambda p: p[0])  # stable: a series' points keep their order
        return cls(store, points)

    def load_till(self, ts: int) -> None:
        """Append every input point with a timestamp up to ``ts``."""
        end = self.next
        while end < len(self.points) and self.points[end][0] <= ts:
            end += 1
        if end > self.next:
            self.store.append([s for _, s in self.points[self.next : end]], ts)
            self.next = end


def _go_duration(ms: int) -> str:
    """Go's ``time.Duration.String()`` for whole milliseconds (``0s``, ``1m0s``, ``24h0m0s``)."""
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = rest / 1000
    sec = f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{sec}"
    if minutes:
        return f"{sign}{minutes}m{sec}"
    if ms < 1000:
        return f"{sign}{ms}ms"
    return f"{sign}{sec}"


def _go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` for label values."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _labels_string(labels: Labels) -> str:
    """Prometheus' ``labels.Labels.String()``: ``{a="1", b="2"}``."""
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in labels.items_tuple()) + "}"


def _go_float_e(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'E', -1, 64)``: the shortest exact form, ``1.5E+00``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    for digits in range(17):
        text = f"{value:.{digits}E}"
        if float(text) == value:
            return text
    return f"{value:.17E}"


def _samples_string(samples: Sequence[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{_labels_string(lb)} {_go_float_e(v)}" for lb, v in samples)


def _alerts_string(alerts: Sequence[tuple[Labels, Labels]]) -> str:
    if not alerts:
        return "[]"
    parts = [
        f"{i}:" + _indent(f"\nLabels:{_labels_string(lb)}\nAnnotations:{_labels_string(an)}", "  ")
        for i, (lb, an) in enumerate(alerts)
    ]
    return "[\n" + ",\n".join(parts) + "\n]"


def _indent(text: str, prefix: str) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0], *(prefix + line for line in lines[1:])])


def _label_key(labels: Labels) -> tuple[tuple[str, str], ...]:
    return labels.items_tuple()


def _same_samples(a: Sequence[tuple[Labels, float]], b: Sequence[tuple[Labels, float]]) -> bool:
    # reflect.DeepEqual on float64: NaN equals nothing, not even NaN.
    return len(a) == len(b) and all(
        la == lb and va == vb for (la, va), (lb, vb) in zip(a, b, strict=True)
    )


_STORE_CAPACITY = 1 << 20  # points per series: a unit test holds all of its input


def _run_group(
    test: TestGroup,
    spec: TestFile,
    rule_files: Sequence[RuleFile],
    expander: TemplateExpander,
) -> list[str]:
    """Run one test group as promtool does; the failures, as promtool words them."""
    store = Store(samples_per_series=_STORE_CAPACITY, retention=1e12, max_series=10_000_000)
    engine = Engine(store, default_subquery_step=spec.evaluation_interval / 1000)
    try:
        loader = _Loader.build(test, store)
    except TestFileError as exc:
        return [str(exc)]
    ctx = EvalContext(query=engine_query_func(engine), store=store)
    default_interval = (test.interval or spec.evaluation_interval) / 1000
    groups = [
        build_group(
            group,
            default_interval=default_interval,
            expander=expander,
            external_labels=dict(test.external_labels.items_tuple()),
            external_url=test.external_url,
        )
        for rule_file in rule_files
        for group in rule_file.groups
    ]
    order = {name: i for i, name in enumerate(spec.group_eval_order)}
    groups.sort(key=lambda g: order.get(g.name, 0))
    for group in groups:
        for rule in group.alerting_rules():
            rule.restored = True  # so that ALERTS is written from the first evaluation

    for case in test.alert_tests:
        if not case.alertname:
            where = f" (in TestGroup {test.name})" if test.name else ""
            return [
                "an item under alert_rule_test misses required attribute alertname at "
                f"eval_time {case.eval_time_text}{where}"
            ]
    alert_times = sorted({case.eval_time for case in test.alert_tests})
    step = spec.evaluation_interval
    errors: list[str] = []
    current = 0
    ts = 0
    while ts <= test.max_eval_time():
        loader.load_till(ts)
        eval_errors: list[str] = []
        for group in groups:
            group.eval(ts, ctx)
            eval_errors.extend(
                f"    rule: {rule.name}, time: {_go_duration(ts)}, err: {rule.last_error}"
                for rule in group.rules
                if rule.last_error is not None
            )
        if eval_errors:
            return errors + eval_errors
        while current < len(alert_times) and ts <= alert_times[current] < ts + step:
            errors.extend(_check_alerts(test, groups, alert_times[current]))
            current += 1
        ts += step

    for expr_test in test.expr_tests:
        errors.extend(_check_expr(expr_test, engine))
    return errors


def _check_alerts(test: TestGroup, groups: Sequence[Group], eval_time: int) -> list[str]:
    """Compare the firing alerts with every ``alert_rule_test`` at ``eval_time``."""
    cases = [c for c in test.alert_tests if c.eval_time == eval_time]
    names = {c.alertname for c in cases}
    got: dict[str, list[tuple[Labels, Labels]]] = {}
    for group in groups:
        for rule in group.alerting_rules():
            if rule.name in names:
                got.setdefault(rule.name, []).extend(
                    (a.labels, a.annotations)
                    for a in rule.active_alerts()
                    if a.state is AlertState.FIRING
                )
    errors = []
    for case in cases:
        found = sorted(got.get(case.alertname, []), key=_alert_key)
        expected = sorted(((e.labels, e.annotations) for e in case.expected), key=_alert_key)
        if found != expected:
            name = f"    name: {test.name},\n" if test.name else ""
            exp = _indent(_alerts_string(expected), "            ")
            actual = _indent(_alerts_string(found), "            ")
            errors.append(
                f"{name}    alertname: {case.alertname}, time: {case.eval_time_text}, \n"
                f"        exp:{exp}, \n        got:{actual}"
            )
    return errors


def _alert_key(alert: tuple[Labels, Labels]) -> tuple[object, ...]:
    return (_label_key(alert[0]), _label_key(alert[1]))


def _check_expr(case: ExprTest, engine: Engine) -> list[str]:
    """Query ``case.expr`` at its ``eval_time`` and compare with the expected samples."""
    where = f"    expr: {_go_quote(case.expr)}, time: {case.eval_time_text}"
    try:
        value = engine.instant(parse_expr(case.expr), case.eval_time)
    except QueryError as exc:
        return [f"{where}, err: {exc}"]
    if isinstance(value, Vector):
        got = [(s.labels, s.value) for s in value]
    elif isinstance(value, Scalar):
        got = [(Labels(), value.value)]
    else:
        return [f"{where}, err: rule result is not a vector or scalar"]
    expected = []
    for sample in case.expected:
        try:
            name, labels = parse_series_description(sample.labels)
        except ValueError as exc:
            return [f"{where}, err: labels {_go_quote(sample.labels)}: {exc}"]
        if name:
            labels = labels.merge({NAME_LABEL: name})
        expected.append((labels, sample.value))
    got.sort(key=lambda s: _label_key(s[0]))
    expected.sort(key=lambda s: _label_key(s[0]))
    if _same_samples(expected, got):
        return []
    return [
        f"{where},\n        exp: {_samples_string(expected)}\n        got: {_samples_string(got)}"
    ]


def run_test_file(path: str, out: TextIO, err: TextIO) -> bool:
    """Run one unit-test file, printing as promtool prints; True if every test passed."""
    print(f"Unit Testing:  {path}", file=out)
    errors = _test_file_errors(path, err)
    if errors:
        print("  FAILED:", file=err)
        for error in errors:
            print(error, file=err)
            print(file=out)
    else:
        print("  SUCCESS", file=out)
    print(file=out)
    return not errors


def _test_file_errors(path: str, err: TextIO) -> list[str]:
    try:
        spec = load_test_file(path)
    except TestFileError as exc:
        return [str(exc)]
    for pattern in spec.unmatched_globs:
        print(f"  WARNING: no file match pattern {pattern}", file=err)
    order_seen: set[str] = set()
    for name in spec.group_eval_order:
        if name in order_seen:
            return [f"group name repeated in evaluation order: {name}"]
        order_seen.add(name)
    expander = TemplateExpander()
    errors: list[str] = []
    for test in spec.tests:
        try:
            rule_files = [load_rule_file(f, expander=expander) for f in spec.rule_files]
        except ConfigError as exc:
            errors.extend(str(issue) for issue in exc.issues)
            continue
        errors.extend(_run_group(test, spec, rule_files, expander))
    return errors


def run_test_files(paths: Iterable[str], out: TextIO, err: TextIO) -> int:
    """``monitord test-rules``: run every file; exit code 0 if all passed, else 1."""
    results = [run_test_file(path, out, err) for path in paths]
    return 0 if all(results) else 1
