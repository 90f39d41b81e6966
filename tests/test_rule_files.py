"""Rule files: Prometheus' format and promtool's validation, every issue located."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.errors import ConfigError
from monitor.model import Labels
from rules.files import (
    AlertingRuleSpec,
    DuplicateRule,
    RecordingRuleSpec,
    find_duplicate_rules,
    load_rule_file,
    parse_rule_file,
)
from tests.support import require_program

CONFORMANCE = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "promtool"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_rule_file(text, "r.yml")
    return [str(issue) for issue in info.value.issues]


GOOD = """\
groups:
  - name: node
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: ops}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {source: rules}
      - alert: InstanceDown
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is down"
  - name: defaults
    rules:
      - alert: Always
        expr: vector(1)
"""


def test_a_good_file_becomes_frozen_groups_and_rules() -> None:
    rule_file = parse_rule_file(GOOD, "r.yml")
    node, defaults = rule_file.groups
    assert (node.name, node.file, node.interval, node.query_offset, node.limit, node.line) == (
        "node",
        "r.yml",
        30.0,
        60.0,
        10,
        2,
    )
    assert node.labels == Labels.of(team="ops")
    record, alert = node.rules
    assert isinstance(record, RecordingRuleSpec)
    assert (record.record, record.name, record.expr, record.labels, record.line) == (
        "job:up:sum",
        "job:up:sum",
        "sum by (job) (up)",
        Labels.of(source="rules"),
        8,
    )
    assert isinstance(alert, AlertingRuleSpec)
    assert (alert.name, alert.for_, alert.keep_firing_for) == ("InstanceDown", 300.0, 60.0)
    assert alert.annotations == Labels.of(summary="{{ $labels.instance }} is down")
    assert alert.parsed is not None
    assert (defaults.interval, defaults.query_offset, defaults.limit) == (None, None, 0)
    assert rule_file.rule_count == 3
    with pytest.raises(AttributeError):
        alert.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: a\n"
            "        expr: up\n",
            ["r.yml:5: group \"g\", rule 1 \"A\": only one of 'record' and 'alert' must be set"],
            id="a rule with both alert and record is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - expr: up\n",
            ["r.yml:4: group \"g\", rule 1: one of 'record' or 'alert' must be set"],
            id="a rule with neither alert nor record is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n",
            ['r.yml:4: group "g", rule 1 "A": field \'expr\' must be set in rule'],
            id="a rule without expr is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(up\n",
            [
                'r.yml:5: group "g", rule 1 "A": expr: could not parse expression: '
                "cannot parse 'sum(rate(up': unclosed left parenthesis"
            ],
            id="an expression that does not parse is located at expr",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n"
            "        for: 5m\n        keep_firing_for: 1m\n        annotations: {x: y}\n",
            [
                'r.yml:4: group "g", rule 1 "a": invalid field \'annotations\' in recording rule',
                'r.yml:4: group "g", rule 1 "a": invalid field \'for\' in recording rule',
                'r.yml:4: group "g", rule 1 "a": '
                "invalid field 'keep_firing_for' in recording rule",
            ],
            id="for, keep_firing_for and annotations are refused on a recording rule",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - record: 'up{job=\"a\"}'\n        expr: up\n",
            [
                'r.yml:4: group "g", rule 1 "up{job=\\"a\\"}": '
                'invalid recording rule name: up{job="a"}',
                'r.yml:4: group "g", rule 1 "up{job=\\"a\\"}": braces present in the '
                'recording rule name; should it be in expr?: up{job="a"}',
            ],
            id="a recording rule name must be a metric name",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        labels:\n          __name__: x\n          bad-name: y\n",
            [
                'r.yml:7: group "g", rule 1 "A": invalid label name: __name__',
                'r.yml:8: group "g", rule 1 "A": invalid label name: bad-name',
            ],
            id="label names must be valid and not __name__",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        annotations:\n          bad-name: y\n",
            ['r.yml:7: group "g", rule 1 "A": invalid annotation name: bad-name'],
            id="annotation names must be valid label names",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        annotations:\n          summary: '{{ $label.foo }}'\n",
            [
                'r.yml:7: group "g", rule 1 "A": annotation "summary": '
                'template: undefined variable "$label"'
            ],
            id="an annotation template is parsed at load time",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        labels:\n          severity: '{{ if $value }}x'\n",
            [
                'r.yml:7: group "g", rule 1 "A": label "severity": '
                "template: unexpected EOF: {{if}} has no {{end}}"
            ],
            id="a label template of an alerting rule is parsed at load time",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        for: 5 minutes\n",
            [
                'r.yml:6: group "g", rule 1 "A": for: \'5 minutes\' is not a duration; '
                "use units ms, s, m, h, d, w, y as in 1h30m"
            ],
            id="durations are Prometheus durations",
        ),
        pytest.param(
            "groups:\n  - name: g\n    limit: -1\n    rules: []\n",
            ['r.yml:3: group "g": limit: must be 0 (no limit) or more, not -1'],
            id="a negative limit is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
            ['r.yml:4: group "g": group name "g" is repeated in the same file (first at line 2)'],
            id="group names are unique in a file",
        ),
        pytest.param(
            "groups:\n  - rules: []\n",
            ["r.yml:2: groups[0]: name: a group name must not be empty"],
            id="a group needs a name",
        ),
        pytest.param(
            "groups:\n  - name: g\n    labels: {bad-name: x}\n    rules: []\n",
            ['r.yml:3: group "g": invalid label name: bad-name'],
            id="group label names must be valid",
        ),
        pytest.param(
            "groups:\n  - name: g\n    intervall: 1m\n    rules: []\n",
            ['r.yml:3: group "g": unknown field "intervall"; did you mean "interval"?'],
            id="an unknown group field suggests the closest one",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        annotation: {}\n",
            [
                'r.yml:6: group "g", rule 1 "A": unknown field "annotation"; '
                'did you mean "annotations"?'
            ],
            id="an unknown rule field suggests the closest one",
        ),
        pytest.param(
            "groups: []\ntests: []\n",
            ['r.yml:2: unknown field "tests"'],
            id="a unit test file is not a rule file",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n"
            "        expr: up\n        expr: down\n",
            ['r.yml:6: group "g", rule 1 "A": mapping key "expr" already defined at line 5'],
            id="a duplicate key is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: [A]\n        expr: up\n",
            [
                'r.yml:4: group "g", rule 1: alert: expected a string, found a list',
                "r.yml:4: group \"g\", rule 1: one of 'record' or 'alert' must be set",
            ],
            id="a list where a string belongs is refused",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n"
            "        expr: histogram_count(h)\n",
            [
                'r.yml:5: group "g", rule 1 "A": expr: monitord cannot evaluate this: '
                "the native histogram function histogram_count() is not supported "
                "(in 'histogram_count(h)')"
            ],
            id="valid PromQL that monitord cannot evaluate is refused at load time",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules: [a\n",
            ["r.yml:4: invalid YAML: expected ',' or ']', but got '<stream end>'"],
            id="invalid YAML gives the line",
        ),
    ],
)
def test_each_problem_is_located_by_file_line_group_and_rule(
    text: str, expected: list[str]
) -> None:
    assert errors_of(text) == expected


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = (
        "groups:\n"
        "  - name: a\n"
        "    rules:\n"
        "      - alert: A\n"
        "        expr: up ==\n"
        "      - record: b\n"
        "        expr: up\n"
        "        for: 1m\n"
        "  - name: a\n"
        "    rules: []\n"
    )
    assert [e.split(": ", 1)[0] for e in errors_of(text)] == ["r.yml:5", "r.yml:6", "r.yml:9"]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        pytest.param("", 0, id="an empty file has no rules"),
        pytest.param("groups:\n", 0, id="null groups are no groups"),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n---\nx: 1\n",
            1,
            id="only the first YAML document counts, as in Prometheus",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n"
            "        for: 0\n",
            1,
            id="a zero for on a recording rule is allowed, as in Prometheus",
        ),
        pytest.param(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 1\n"
            "        labels: {severity: 1}\n",
            1,
            id="numbers are read as strings where strings belong",
        ),
    ],
)
def test_edge_cases_prometheus_accepts(text: str, count: int) -> None:
    assert parse_rule_file(text, "r.yml").rule_count == count


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_rule_file(tmp_path / "none.yml")
    assert str(info.value) == f"{tmp_path / 'none.yml'}: cannot read: No such file or directory"


def test_duplicates_share_name_and_labels_and_are_reported_once() -> None:
    text = (
        "groups:\n"
        "  - name: a\n"
        "    rules:\n"
        "      - {record: x, expr: up}\n"
        "      - {record: x, expr: down}\n"
        "      - {record: x, expr: up, labels: {k: v}}\n"
        "  - name: b\n"
        "    rules:\n"
        "      - {record: x, expr: up}\n"
        "      - {alert: Y, expr: up, labels: {k: v}}\n"
        "      - {alert: Y, expr: down, labels: {k: v}}\n"
    )
    assert find_duplicate_rules(parse_rule_file(text, "r.yml")) == [
        DuplicateRule("Y", Labels.of(k="v")),
        DuplicateRule("x", Labels()),
    ]


# --- monitord check-rules ----------------------------------------------------------------


def test_check_rules_prints_like_promtool_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    assert main(["check-rules", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == f"Checking {good}\n  SUCCESS: 3 rules found\n\n"
    assert err == ""


def test_check_rules_lists_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(GOOD)
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n      - record: b-c\n")
    assert main(["check-rules", str(bad), str(good)]) == 1
    out, err = capsys.readouterr()
    assert out == f"Checking {bad}\n\nChecking {good}\n  SUCCESS: 3 rules found\n\n"
    assert err == (
        "  FAILED:\n"
        f'{bad}:4: group "g", rule 1 "A": field \'expr\' must be set in rule\n'
        f'{bad}:5: group "g", rule 2 "b-c": field \'expr\' must be set in rule\n'
        f'{bad}:5: group "g", rule 2 "b-c": invalid recording rule name: b-c\n'
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param([], 0, id="duplicates are a lint finding that does not fail by default"),
        pytest.param(["--lint-fatal"], 3, id="with --lint-fatal duplicates exit 3"),
        pytest.param(["--lint=none", "--lint-fatal"], 0, id="with --lint=none nothing is linted"),
    ],
)
def test_check_rules_lints_duplicates_like_promtool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int
) -> None:
    dup = tmp_path / "dup.yml"
    dup.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: A, expr: up, labels: {severity: page}}\n"
        "      - {alert: A, expr: up, labels: {severity: page}}\n"
    )
    assert main(["check-rules", *args, str(dup)]) == code
    out, err = capsys.readouterr()
    if "--lint=none" in args:
        assert out.endswith("  SUCCESS: 2 rules found\n\n") and err == ""
    else:
        assert err == (
            "  FAILED:\nlint error 1 duplicate rule(s) found.\nMetric: A\nLabel(s):\n"
            "\tseverity: page\nMight cause inconsistency while recording expressions\n"
        )


# --- side by side with promtool ----------------------------------------------------------


def _conformance_files() -> list[Path]:
    if not CONFORMANCE.is_dir():
        return []
    return sorted([*CONFORMANCE.glob("*.yml"), *CONFORMANCE.glob("rules_fixtures/*.yaml")])


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=f"{p.relative_to(CONFORMANCE)} gets promtool's verdict")
        for p in _conformance_files()
    ]
    or [pytest.param(None, id="the conformance data is absent")],
)
def test_check_rules_agrees_with_promtool(
    path: Path | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if path is None:
        pytest.skip(f"no conformance data at {CONFORMANCE}")
    promtool = require_program("promtool", "prometheus")
    reference = subprocess.run(
        [promtool, "check", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reference.returncode in (0, 1), reference.stderr
    ours = main(["check-rules", str(path)])
    out, err = capsys.readouterr()
    assert ours == reference.returncode, f"promtool:\n{reference.stderr}\nmonitord:\n{err}"
    if ours == 0 and "SUCCESS" in reference.stdout:
        assert out.splitlines()[1] == reference.stdout.splitlines()[1]
    if "lint error" in reference.stderr:
        assert err == reference.stderr
