"""``monitord test-rules``: promtool's unit-test format, verdicts and failure text.

Each case runs through monitord and, when it is installed, through the real
``promtool test rules`` (Debian package ``prometheus``, 2.42), which must agree.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.cli import main
from rules.unittest import run_test_files
from tests.support import require_program

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "promtool"

RULES = """\
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 2m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.instance }} down, value {{ $value }}"
          where: "{{ $externalLabels.site }} {{ $externalURL }}"
"""

INPUT = """\
    input_series:
      - series: 'up{job="a", instance="x"}'
        values: '1 1 0 0 0 0 stale'
      - series: 'up{job="a", instance="y"}'
        values: '1x6'
"""


@dataclass(frozen=True)
class Case:
    tests: str
    passes: bool
    rules: str = RULES
    evaluation_interval: str = "1m"


CASES = [
    pytest.param(
        Case(
            """\
  - interval: 1m
    external_labels: {site: lab}
    external_url: http://mon.example:9090
"""
            + INPUT
            + """\
    alert_rule_test:
      - eval_time: 3m
        alertname: Down
        exp_alerts: []
      - eval_time: 4m
        alertname: Down
        exp_alerts:
          - exp_labels: {severity: page, instance: x, job: a}
            exp_annotations:
              summary: "x down, value 0"
              where: "lab http://mon.example:9090"
      - eval_time: 7m
        alertname: Down
        exp_alerts: []
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 2m
        exp_samples:
          - labels: 'job:up:sum{job="a"}'
            value: 1
      - expr: ALERTS
        eval_time: 3m
        exp_samples:
          - labels: 'ALERTS{alertname="Down", alertstate="pending", instance="x",
                      job="a", severity="page"}'
            value: 1
""",
            passes=True,
        ),
        id="alerts go pending then firing after for, and resolve when the series goes stale",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
"""
            + INPUT
            + """\
    alert_rule_test:
      - eval_time: 3m
        alertname: Down
        exp_alerts:
          - exp_labels: {severity: page, instance: x, job: a}
""",
            passes=False,
        ),
        id="a pending alert is not a firing one",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
"""
            + INPUT
            + """\
    alert_rule_test:
      - eval_time: 4m30s
        alertname: Down
        exp_alerts:
          - exp_labels: {severity: page, instance: x, job: a}
            exp_annotations: {summary: "x down, value 0", where: " "}
""",
            passes=True,
        ),
        id="an eval_time between evaluations sees the evaluation before it",
    ),
    pytest.param(
        Case(
            """\
  - input_series:
      - series: test
        values: 0 1
    promql_expr_test:
      - expr: test
        eval_time: 1m
        exp_samples:
          - value: 1
            labels: test
""",
            passes=False,
        ),
        id="with no interval every input point lands at time 0 and the first one stays",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
    input_series:
      - series: 'm{a="1"}'
        values: '_ 2 _x2 5 stale 7'
    promql_expr_test:
      - expr: m
        eval_time: 0m
        exp_samples: []
      - expr: m
        eval_time: 3m
        exp_samples:
          - {labels: 'm{a="1"}', value: 2}
      - expr: m
        eval_time: 5m
        exp_samples: []
      - expr: m + 0.5
        eval_time: 6m
        exp_samples:
          - {labels: '{a="1"}', value: 7.5}
""",
            passes=True,
        ),
        id="gaps, stale markers and arithmetic in the input notation",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
    input_series:
      - series: 'm'
        values: '1'
    promql_expr_test:
      - expr: m / 0 * 0
        eval_time: 0m
        exp_samples:
          - {labels: '{}', value: NaN}
""",
            passes=False,
        ),
        id="NaN never equals NaN, as in promtool",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
    input_series:
      - series: 'a{k="1"}'
        values: '1'
      - series: 'b{k="1", x="1"}'
        values: '1'
      - series: 'b{k="1", x="2"}'
        values: '1'
""",
            passes=False,
            rules="""\
groups:
  - name: g
    rules:
      - record: joined
        expr: a + on(k) b
""",
        ),
        id="a rule that fails to evaluate fails the test",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
    input_series:
      - series: 'up'
        values: '1'
    alert_rule_test:
      - eval_time: 0m
        exp_alerts: []
""",
            passes=False,
        ),
        id="an alert test without alertname is refused",
    ),
    pytest.param(
        Case(
            """\
  - interval: 1m
    promql_expr_test:
      - expr: up
        eval_time: 0m
        exp_sample: []
""",
            passes=False,
        ),
        id="an unknown field is refused with its line",
    ),
    pytest.param(
        Case(
            """\
  - interval: 30s
    input_series:
      - series: 'm'
        values: '1x20'
    promql_expr_test:
      - expr: count_over_time(m[2m15s:])
        eval_time: 5m
        exp_samples:
          - {labels: '{}', value: 5}
""",
            passes=True,
            evaluation_interval="30s",
        ),
        id="a subquery without a step steps by the file's evaluation_interval",
    ),
]


def _write(tmp_path: Path, case: Case) -> Path:
    (tmp_path / "rules.yml").write_text(case.rules)
    test = tmp_path / "test.yml"
    test.write_text(
        f"rule_files: [rules.yml]\nevaluation_interval: {case.evaluation_interval}\n"
        "tests:\n" + case.tests
    )
    return test


def _monitord(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_test_files([str(path)], out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_verdict(tmp_path: Path, case: Case) -> None:
    path = _write(tmp_path, case)
    code, out, err = _monitord(path)
    assert code == (0 if case.passes else 1), out + err
    assert ("SUCCESS" in out) == case.passes


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES)
def test_verdict_matches_promtool(tmp_path: Path, case: Case) -> None:
    promtool = require_program("promtool", "prometheus")
    path = _write(tmp_path, case)
    code, _, _ = _monitord(path)
    theirs = subprocess.run(
        [promtool, "test", "rules", path.name], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert code == theirs.returncode, theirs.stderr.decode()


def test_alert_failure_reads_like_promtool(tmp_path: Path) -> None:
    case = Case(
        "  - interval: 1m\n" + INPUT + "    alert_rule_test:\n"
        "      - eval_time: 4m\n"
        "        alertname: Down\n"
        "        exp_alerts:\n"
        "          - exp_labels: {severity: page, instance: x, job: a}\n"
        '            exp_annotations: {summary: "x down, value 1", where: " "}\n',
        passes=False,
    )
    code, _, err = _monitord(_write(tmp_path, case))
    assert code == 1
    labels = 'Labels:{alertname="Down", instance="x", job="a", severity="page"}'
    assert err.splitlines() == [
        "  FAILED:",
        "    alertname: Down, time: 4m, ",
        "        exp:[",
        "            0:",
        f"              {labels}",
        '              Annotations:{summary="x down, value 1", where=" "}',
        "            ], ",
        "        got:[",
        "            0:",
        f"              {labels}",
        '              Annotations:{summary="x down, value 0", where=" "}',
        "            ]",
    ]


def test_expression_failure_reads_like_promtool(tmp_path: Path) -> None:
    case = Case(
        "  - interval: 1m\n"
        "    input_series:\n"
        "      - {series: 'test', values: '0'}\n"
        "    promql_expr_test:\n"
        "      - expr: test\n"
        "        eval_time: 0m\n"
        "        exp_samples:\n"
        "          - {labels: test, value: 1.5}\n",
        passes=False,
    )
    code, _, err = _monitord(_write(tmp_path, case))
    assert code == 1
    assert err.splitlines() == [
        "  FAILED:",
        '    expr: "test", time: 0s,',
        '        exp: {__name__="test"} 1.5E+00',
        '        got: {__name__="test"} 0E+00',
    ]


def test_unknown_field_names_line_and_type(tmp_path: Path) -> None:
    test = tmp_path / "t.yml"
    test.write_text("tests:\n  - interval: 1m\n    fuzzy_compare: true\n")
    code, _, err = _monitord(test)
    assert code == 1
    assert "line 3: field fuzzy_compare not found in type main.testGroup" in err


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, CASES[0].values[0])  # type: ignore[arg-type]
    assert main(["test-rules", str(good)]) == 0
    assert "SUCCESS" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text("tests: [{interval: nonsense}]\n")
    assert main(["test-rules", str(good), str(bad)]) == 1


def _conformance_files() -> list[str]:
    if not CONFORMANCE.is_dir():
        return []
    return sorted(p.name for p in CONFORMANCE.glob("*.yml"))


@pytest.mark.integration
@pytest.mark.parametrize("name", _conformance_files() or ["<absent>"])
def test_promtool_files_get_promtool_verdict(name: str) -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"{CONFORMANCE} is absent: Prometheus' promtool test files are not here")
    promtool = require_program("promtool", "prometheus")
    theirs = subprocess.run(
        [promtool, "test", "rules", name], cwd=CONFORMANCE, capture_output=True, timeout=120
    )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(CONFORMANCE):
        ours = run_test_files([name], out, err)
    assert ours == theirs.returncode, (
        f"promtool said {theirs.returncode}:\n{theirs.stderr.decode()}\n"
        f"monitord said {ours}:\n{err.getvalue()}"
    )
