"""Prometheus rule files: YAML to frozen rule groups, validated as Prometheus validates them.

The format is Prometheus' unchanged (``model/rulefmt``): ``groups`` of ``name``,
``interval``, ``query_offset``, ``limit``, ``labels`` and ``rules``; a rule has
``alert`` or ``record``, ``expr``, and for alerting rules ``for``,
``keep_firing_for``, ``labels`` and ``annotations``. Validation follows
``rulefmt.go`` (unknown fields, empty or repeated group names, exactly one of
``alert``/``record``, a parseable ``expr``, no ``for``/``keep_firing_for``/
``annotations`` on recording rules, valid metric, label and annotation names,
templates of alerting rules parsed at load time) and adds ``limit >= 0``. Every
problem of a file is reported at once as a :class:`~monitor.errors.ConfigIssue`
naming the file, the line, the group and the rule. Nothing here evaluates rules.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml

from monitor.errors import ConfigError, ConfigIssue, QueryError, UnsupportedQueryError
from monitor.model import Labels
from monitor.query import Expr, parse_expr
from monitor.schema import parse_duration
from rules.templates import TemplateError, TemplateExpander

__all__ = [
    "AlertingRuleSpec",
    "DuplicateRule",
    "RecordingRuleSpec",
    "RuleFile",
    "RuleGroup",
    "RuleSpec",
    "check_rule_files",
    "find_duplicate_rules",
    "load_rule_file",
    "parse_rule_file",
]

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

_FILE_FIELDS = ("groups",)
_GROUP_FIELDS = ("name", "interval", "query_offset", "limit", "rules", "labels")
_RULE_FIELDS = (
    "record",
    "alert",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
)


@dataclass(frozen=True, slots=True)
class AlertingRuleSpec:
    """An alerting rule as written: ``alert`` name, ``expr`` (text and parsed), ``for``
    and ``keep_firing_for`` in seconds (0 when absent), and ``labels`` and
    ``annotations``, whose values are templates (checked, not expanded)."""

    name: str
    expr: str
    parsed: Expr = field(compare=False, repr=False)
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: Labels = field(default_factory=Labels)
    annotations: Labels = field(default_factory=Labels)
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RecordingRuleSpec:
    """A recording rule as written: the metric name ``record``, ``expr`` and ``labels``."""

    record: str
    expr: str
    parsed: Expr = field(compare=False, repr=False)
    labels: Labels = field(default_factory=Labels)
    line: int | None = None

    @property
    def name(self) -> str:
        """The recorded metric name, the rule's name."""
        return self.record


RuleSpec: TypeAlias = AlertingRuleSpec | RecordingRuleSpec
"""One rule of a group, alerting or recording."""


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """A group of rules evaluated in order, every ``interval`` seconds.

    ``interval`` and ``query_offset`` are None when the file leaves them out (the
    global ``evaluation_interval`` and no offset apply); ``limit`` 0 means no limit on
    the alerts or series one rule may produce; ``labels`` are added to every rule's
    result, a rule's own labels winning. ``file`` is the path the group came from.
    """

    name: str
    file: str
    rules: tuple[RuleSpec, ...]
    interval: float | None = None
    limit: int = 0
    query_offset: float | None = None
    labels: Labels = field(default_factory=Labels)
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RuleFile:
    """The groups of one rule file, in file order."""

    path: str
    groups: tuple[RuleGroup, ...]

    @property
    def rule_count(self) -> int:
        """How many rules the file holds, in all groups."""
        return sum(len(g.rules) for g in self.groups)


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """Rules sharing a name and labels (promtool's ``duplicate-rules`` lint)."""

    name: str
    labels: Labels


# --- reading ------------------------------------------------------------------------------

_NULL = "tag:yaml.org,2002:null"
_INT = "tag:yaml.org,2002:int"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a scalar"


def _peek(node: yaml.Node, *keys: str) -> str:
    """The first non-empty scalar value of ``keys`` in a mapping node, to name it in issues."""
    if not isinstance(node, yaml.MappingNode):
        return ""
    for key in keys:
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.value == key
                and isinstance(value_node, yaml.ScalarNode)
                and value_node.tag != _NULL
                and value_node.value
            ):
                return str(value_node.value)
    return ""


def _line(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


class _Reader:
    """Walks the YAML nodes of one rule file, collecting every issue with its line."""

    def __init__(self, file: str, expander: TemplateExpander) -> None:
        self.file = file
        self.expander = expander
        self.issues: list[ConfigIssue] = []
        self.loader: yaml.SafeLoader | None = None

    def issue(self, node: yaml.Node | None, where: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, _line(node), where, message))

    def mapping(
        self, node: yaml.Node, where: str, known: Sequence[str] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Key -> (key node, value node); unknown keys (when ``known`` is given) reported."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.issue(node, where, f"expected a mapping, found {_kind(node)}")
            return None
        assert self.loader is not None
        self.loader.flatten_mapping(node)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node, where, f"a key must be a scalar, found {_kind(key_node)}")
                continue
            key = key_node.value
            if key in out:
                first = _line(out[key][0])
                self.issue(key_node, where, f'mapping key "{key}" already defined at line {first}')
                continue
            if known is not None and key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                self.issue(key_node, where, f'unknown field "{key}"{hint}')
                continue
            out[key] = (key_node, value_node)
        return out

    def string(self, node: yaml.Node | None, where: str, name: str) -> str:
        """A scalar read as a string, as yaml.v3 reads one into a Go string ("" for null)."""
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.issue(node, where, f"{name}: expected a string, found {_kind(node)}")
            return ""
        return str(node.value)

    def duration(self, node: yaml.Node | None, where: str, name: str) -> float | None:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            return None
        text = self.string(node, where, name)
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            if text != text.strip():
                raise ValueError(text)
            return parse_duration(text)
        except ValueError:
            self.issue(
                node,
                where,
                f"{name}: {text!r} is not a duration; use units ms, s, m, h, d, w, y as in 1h30m",
            )
            return None

    def string_map(
        self, node: yaml.Node | None, where: str, name: str
    ) -> dict[str, tuple[str, yaml.Node]]:
        """A map of strings (labels, annotations): name -> (value, key node)."""
        if node is None:
            return {}
        entries = self.mapping(node, where, None)
        if entries is None:
            return {}
        return {
            key: (self.string(value, where, f"{name}.{key}"), key_node)
            for key, (key_node, value) in entries.items()
        }

    def labels(self, node: yaml.Node | None, where: str) -> dict[str, tuple[str, yaml.Node]]:
        out = self.string_map(node, where, "labels")
        for key, (_, key_node) in out.items():
            if not LABEL_NAME_RE.match(key) or key == "__name__":
                self.issue(key_node, where, f"invalid label name: {key}")
        return out

    # --- the file --------------------------------------------------------------------------

    def read(self, text: str) -> tuple[RuleGroup, ...]:
        loader = yaml.SafeLoader(text)
        self.loader = loader
        try:
            root = loader.get_node() if loader.check_node() else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            line = mark.line + 1 if mark is not None else None
            self.issues.append(ConfigIssue(self.file, line, "", f"invalid YAML: {problem}"))
            return ()
        finally:
            loader.dispose()
        # Only the first YAML document counts, as in Prometheus.
        if root is None:
            return ()
        top = self.mapping(root, "", _FILE_FIELDS)
        if top is None or "groups" not in top:
            return ()
        groups_node = top["groups"][1]
        if isinstance(groups_node, yaml.ScalarNode) and groups_node.tag == _NULL:
            return ()
        if not isinstance(groups_node, yaml.SequenceNode):
            self.issue(groups_node, "groups", f"expected a list, found {_kind(groups_node)}")
            return ()
        groups: list[RuleGroup] = []
        seen: dict[str, int | None] = {}
        for index, group_node in enumerate(groups_node.value):
            group = self.group(index, group_node, seen)
            if group is not None:
                groups.append(group)
        return tuple(groups)

    def group(self, index: int, node: yaml.Node, seen: dict[str, int | None]) -> RuleGroup | None:
        peeked = _peek(node, "name")
        where = f"group {_quote(peeked)}" if peeked else f"groups[{index}]"
        fields = self.mapping(node, where, _GROUP_FIELDS)
        if fields is None:
            return None
        name_node = fields.get("name", (None, None))[1]
        name = self.string(name_node, where, "name")
        if not name:
            self.issue(name_node or node, where, "name: a group name must not be empty")
        elif name in seen:
            self.issue(
                name_node,
                where,
                f"group name {_quote(name)} is repeated in the same file "
                f"(first at line {seen[name]})",
            )
        else:
            seen[name] = _line(name_node)
        interval = self.duration(fields.get("interval", (None, None))[1], where, "interval")
        offset = self.duration(fields.get("query_offset", (None, None))[1], where, "query_offset")
        limit = self.limit(fields.get("limit", (None, None))[1], where)
        labels = self.labels(fields.get("labels", (None, None))[1], where)
        rules: list[RuleSpec] = []
        rules_node = fields.get("rules", (None, None))[1]
        if rules_node is not None and not (
            isinstance(rules_node, yaml.ScalarNode) and rules_node.tag == _NULL
        ):
            if not isinstance(rules_node, yaml.SequenceNode):
                self.issue(rules_node, where, f"rules: expected a list, found {_kind(rules_node)}")
            else:
                for number, rule_node in enumerate(rules_node.value, start=1):
                    rule = self.rule(where, number, rule_node)
                    if rule is not None:
                        rules.append(rule)
        return RuleGroup(
            name=name,
            file=self.file,
            rules=tuple(rules),
            interval=interval,
            limit=limit,
            query_offset=offset,
            labels=Labels({k: v for k, (v, _) in labels.items()}),
            line=_line(node),
        )

    def limit(self, node: yaml.Node | None, where: str) -> int:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            return 0
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            value = node.value if isinstance(node, yaml.ScalarNode) else _kind(node)
            self.issue(node, where, f"limit: expected an integer, found {value!r}")
            return 0
        assert self.loader is not None
        value = self.loader.construct_object(node)
        if not isinstance(value, int) or value < 0:
            self.issue(node, where, f"limit: must be 0 (no limit) or more, not {value}")
            return 0
        return value

    def rule(self, group_where: str, number: int, node: yaml.Node) -> RuleSpec | None:
        first = f"{group_where}, rule {number}"
        before = len(self.issues)
        peeked = _peek(node, "alert", "record")
        fields = self.mapping(node, f"{first} {_quote(peeked)}" if peeked else first, _RULE_FIELDS)
        if fields is None:
            return None

        def value(key: str) -> yaml.Node | None:
            return fields[key][1] if key in fields else None

        alert = self.string(value("alert"), first, "alert")
        record = self.string(value("record"), first, "record")
        rule_name = alert or record
        where = f"{first} {_quote(rule_name)}" if rule_name else first
        if alert and record:
            self.issue(value("record"), where, "only one of 'record' and 'alert' must be set")
        elif not alert and not record:
            self.issue(node, where, "one of 'record' or 'alert' must be set")
        expr = self.string(value("expr"), where, "expr")
        parsed: Expr = None
        if not expr:
            self.issue(value("expr") or node, where, "field 'expr' must be set in rule")
        else:
            try:
                parsed = parse_expr(expr)
            except UnsupportedQueryError as exc:
                self.issue(
                    value("expr"), where, f"expr: monitord cannot evaluate this: {exc.reason}"
                )
            except QueryError as exc:
                self.issue(value("expr"), where, f"expr: could not parse expression: {exc.reason}")
        for_ = self.duration(value("for"), where, "for")
        keep = self.duration(value("keep_firing_for"), where, "keep_firing_for")
        labels = self.labels(value("labels"), where)
        annotations = self.string_map(value("annotations"), where, "annotations")
        for key, (_, key_node) in annotations.items():
            if not LABEL_NAME_RE.match(key):
                self.issue(key_node, where, f"invalid annotation name: {key}")
        if record and not alert:
            record_node = value("record")
            if annotations:
                self.issue(record_node, where, "invalid field 'annotations' in recording rule")
            if for_:
                self.issue(record_node, where, "invalid field 'for' in recording rule")
            if keep:
                self.issue(record_node, where, "invalid field 'keep_firing_for' in recording rule")
            if not METRIC_NAME_RE.match(record):
                self.issue(record_node, where, f"invalid recording rule name: {record}")
            if "{" in record or "}" in record:
                self.issue(
                    record_node,
                    where,
                    "braces present in the recording rule name; should it be in expr?: " + record,
                )
        if alert:
            self.templates(where, "label", labels)
            self.templates(where, "annotation", annotations)
        if len(self.issues) > before:
            return None
        label_set = Labels({k: v for k, (v, _) in labels.items()})
        if alert:
            return AlertingRuleSpec(
                name=alert,
                expr=expr,
                parsed=parsed,
                for_=for_ or 0.0,
                keep_firing_for=keep or 0.0,
                labels=label_set,
                annotations=Labels({k: v for k, (v, _) in annotations.items()}),
                line=_line(node),
            )
        return RecordingRuleSpec(
            record=record, expr=expr, parsed=parsed, labels=label_set, line=_line(node)
        )

    def templates(self, where: str, what: str, entries: dict[str, tuple[str, yaml.Node]]) -> None:
        for key, (text, key_node) in entries.items():
            try:
                self.expander.check(text)
            except TemplateError as exc:
                self.issue(key_node, where, f"{what} {_quote(key)}: template: {exc.reason}")


def _quote(text: str) -> str:
    """A name quoted as Go's %q quotes it."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- entry points -------------------------------------------------------------------------


def parse_rule_file(
    text: str, file: str = "<rules>", *, expander: TemplateExpander | None = None
) -> RuleFile:
    """Validate rule-file text completely; raise ConfigError listing every issue."""
    reader = _Reader(file, expander if expander is not None else TemplateExpander())
    groups = reader.read(text)
    if reader.issues:
        reader.issues.sort(key=lambda i: i.line if i.line is not None else 0)
        raise ConfigError(reader.issues)
    return RuleFile(file, groups)


def load_rule_file(
    path: str | os.PathLike[str], *, expander: TemplateExpander | None = None
) -> RuleFile:
    """Read and validate the rule file at ``path``; raise ConfigError listing every issue."""
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"not UTF-8 text: {exc.reason}")]) from None
    return parse_rule_file(text, file, expander=expander)


def check_rule_files(
    paths: Iterable[str | os.PathLike[str]], *, expander: TemplateExpander | None = None
) -> list[ConfigIssue]:
    """Every issue of every rule file in ``paths`` (empty when all are valid)."""
    shared = expander if expander is not None else TemplateExpander()
    issues: list[ConfigIssue] = []
    for path in paths:
        try:
            load_rule_file(path, expander=shared)
        except ConfigError as exc:
            issues.extend(exc.issues)
    return issues


def find_duplicate_rules(rule_file: RuleFile) -> list[DuplicateRule]:
    """Rules of the file that share name and labels, each reported once, sorted."""
    keys = sorted(
        ((rule.name, rule.labels) for group in rule_file.groups for rule in group.rules),
        key=_duplicate_key,
    )
    duplicates: list[DuplicateRule] = []
    for previous, current in itertools.pairwise(keys):
        if previous == current and (
            not duplicates or (duplicates[-1].name, duplicates[-1].labels) != current
        ):
            duplicates.append(DuplicateRule(*current))
    return duplicates


def _duplicate_key(key: tuple[str, Labels]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return key[0], tuple(key[1].items())
