"""Prometheus's promqltest files against the query engine: no eval of the baseline may regress.

The baseline holds the passing evals of every scope: in the issue's scope, with
``@`` or subqueries, and the ``@`` variants of in-scope evals (``file:line@``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.at_variants import at_variant, at_variant_times
from tests.conformance.promqltest import BASELINE, DEFAULT_DIR, Outcome, Scope, run_file


def _baseline() -> set[str]:
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    return {*baseline["passing"], *baseline["passing_beyond_scope"]}


def _file_params() -> list[object]:
    if not DEFAULT_DIR.is_dir():
        reason = f"the promqltest folder {DEFAULT_DIR} is absent"
        return [pytest.param(None, id="conformance-folder-absent", marks=pytest.mark.skip(reason))]
    return [pytest.param(p, id=p.stem) for p in sorted(DEFAULT_DIR.glob("*.test"))]


@pytest.mark.parametrize("path", _file_params())
def test_file_keeps_every_baseline_eval_passing(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = run_file(path)
    expected = {i for i in _baseline() if i.startswith(path.name + ":")}
    passing = {r.id for r in results if r.outcome is Outcome.PASSED}
    regressions = [r for r in results if r.id in expected - passing]
    lost = expected - {r.id for r in results}
    assert not lost, f"baseline evals no longer in {path.name}: {sorted(lost)}"
    assert not regressions, "\n".join(
        f"{r.id} {r.expr}: {r.outcome} {r.detail}" for r in regressions
    )
    newly = sorted(passing - expected)
    if newly:
        with capsys.disabled():
            print(f"\n{path.name}: newly passing, add to baseline.json: {', '.join(newly)}")


def test_baseline_names_only_existing_files() -> None:
    if not DEFAULT_DIR.is_dir():
        pytest.skip(f"the promqltest folder {DEFAULT_DIR} is absent")
    files = {p.name for p in DEFAULT_DIR.glob("*.test")}
    assert {i.rsplit(":", 1)[0] for i in _baseline()} <= files


_SAMPLE_FILE = """
load 1m
  metric{job="a"} 0+1x10
  hist {{schema:0 sum:1 count:1}}

eval instant at 5m metric
  metric{job="a"} 5

eval instant at 5m metric
  metric{job="a"} 6

eval instant at 5m metric @ 2m
  metric{job="a"} 2

eval instant at 5m max_over_time(metric[5m:2m])
  {job="a"} 4

eval instant at 5m hist
  {} 1

eval instant at 5m rate(metric[5m])
  expect warn
  {job="a"} 0.0166666

eval range from 0 to 2m step 1m metric * 2
  {job="a"} 0 2 4

eval instant at 5m time()
  300

eval instant at 5m metric @ 2m
  metric{job="a"} 3
"""


def test_runner_passes_fails_and_skips_by_inspection(tmp_path: Path) -> None:
    path = tmp_path / "sample.test"
    path.write_text(_SAMPLE_FILE, encoding="utf-8")
    results = {r.id: r for r in run_file(path)}
    assert {i: (r.scope, r.outcome) for i, r in results.items()} == {
        "sample.test:6": (Scope.IN_SCOPE, Outcome.PASSED),
        "sample.test:6@": (Scope.AT_VARIANTS, Outcome.PASSED),
        "sample.test:9": (Scope.IN_SCOPE, Outcome.FAILED),
        "sample.test:12": (Scope.AT_OR_SUBQUERY, Outcome.PASSED),
        "sample.test:15": (Scope.AT_OR_SUBQUERY, Outcome.PASSED),
        "sample.test:18": (Scope.IN_SCOPE, Outcome.SKIPPED),
        "sample.test:21": (Scope.IN_SCOPE, Outcome.SKIPPED),
        "sample.test:25": (Scope.IN_SCOPE, Outcome.PASSED),
        "sample.test:28": (Scope.IN_SCOPE, Outcome.PASSED),
        "sample.test:31": (Scope.AT_OR_SUBQUERY, Outcome.FAILED),
    }
    assert "native histogram" in results["sample.test:18"].detail
    assert "annotations" in results["sample.test:21"].detail
    assert "expected 6.0" in results["sample.test:9"].detail
    assert "expected 3.0" in results["sample.test:31"].detail


AT_VARIANTS = [
    pytest.param(
        "rate(foo[5m:]) + bar offset -1m",
        "(rate((foo{})[300000ms:60000ms] @ 60.000)) + (bar{} @ 60.000 offset -60000ms)",
        id="selectors and subqueries get @, a subquery its step",
    ),
    pytest.param(
        "max_over_time((foo + bar @ 3)[5m:] @ 10)",
        "max_over_time(((foo{}) + (bar{} @ 3.000))[300000ms:60000ms] @ 10.000)",
        id="inside a subquery that has @ nothing changes",
    ),
    pytest.param(
        "max_over_time(timestamp(foo)[5m:])",
        "max_over_time((timestamp(foo{}))[300000ms:60000ms] @ 60.000)",
        id="a time-dependent function inside a pinned subquery is not looked at",
    ),
    pytest.param("time() + foo", None, id="time() gets no variants"),
    pytest.param("timestamp(foo)", None, id="timestamp() gets no variants"),
    pytest.param(
        'sum by (job) (x{a="\\\\d", "b.c"="q\\"t"}) / on() group_left(y) -z',
        '(sum by (job) (x{a="\\\\d", "b.c"="q\\"t"} @ 60.000))'
        " / on() group_left(y) (-(z{} @ 60.000))",
        id="escapes, quoted names and matching modifiers are written back",
    ),
]


@pytest.mark.parametrize(("expr", "variant"), AT_VARIANTS)
def test_at_variant_pins_like_prometheus_runner(expr: str, variant: str | None) -> None:
    assert at_variant(expr, 60_000) == variant


@pytest.mark.parametrize(
    ("t_ms", "times"),
    [
        pytest.param(0, [-1000, 0, 1000], id="at zero: a second either side"),
        pytest.param(
            300_000, [-3_000_000, 0, 60_000, 300_000, 3_000_000], id="else -10t, 0, t/5, t, 10t"
        ),
    ],
)
def test_at_variant_times(t_ms: int, times: list[int]) -> None:
    assert at_variant_times(t_ms) == times
