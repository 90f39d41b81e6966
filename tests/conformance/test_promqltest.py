"""Prometheus's promqltest files against the query engine: no eval of the baseline may regress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.promqltest import BASELINE, DEFAULT_DIR, Outcome, run_file


def _baseline() -> set[str]:
    return set(json.loads(BASELINE.read_text(encoding="utf-8"))["passing"])


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

eval instant at 5m metric @ 1m
  expect fail

eval instant at 5m hist
  {} 1

eval instant at 5m rate(metric[5m])
  expect warn
  {job="a"} 0.0166666

eval range from 0 to 2m step 1m metric * 2
  {job="a"} 0 2 4
"""


def test_runner_passes_fails_and_skips_by_inspection(tmp_path: Path) -> None:
    path = tmp_path / "sample.test"
    path.write_text(_SAMPLE_FILE, encoding="utf-8")
    results = {r.id: r for r in run_file(path)}
    assert {i: r.outcome for i, r in results.items()} == {
        "sample.test:6": Outcome.PASSED,
        "sample.test:9": Outcome.FAILED,
        "sample.test:12": Outcome.SKIPPED,
        "sample.test:15": Outcome.SKIPPED,
        "sample.test:18": Outcome.SKIPPED,
        "sample.test:22": Outcome.PASSED,
    }
    assert results["sample.test:12"].detail == "needs the @ modifier"
    assert "native histogram" in results["sample.test:15"].detail
    assert "annotations" in results["sample.test:18"].detail
    assert "expected 6.0" in results["sample.test:9"].detail
