"""The file check on real files in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from checks.file import FileCheck, FileConfig
from monitor.model import CheckResult, Labels, Status

NOW = 1_700_000_000.0


def make_check(path: Path, **options: Any) -> FileCheck:
    config = FileConfig.model_validate({"name": "f", "type": "file", "path": str(path), **options})
    return FileCheck(config, clock=lambda: NOW)


def value(result: CheckResult, name: str, **labels: str) -> float:
    (found,) = [
        s.value
        for s in result.samples
        if s.name == name and s.labels.get("pattern") == labels.get("pattern")
    ]
    return found


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("started\nall fine\n")
    os.utime(path, (NOW - 120, NOW - 120))
    return path


async def test_a_fresh_small_file_is_ok_with_its_figures(log: Path) -> None:
    result = await make_check(log, max_age={"warning": "5m", "critical": "1h"}).run()
    assert result.status is Status.OK
    assert result.message == f"{log}: modified 2m ago, 17 bytes"
    labels = Labels.of(path=str(log))
    assert {(s.name, s.labels, s.value) for s in result.samples} == {
        ("monitord_file_exists", labels, 1.0),
        ("monitord_file_modified_timestamp_seconds", labels, NOW - 120),
        ("monitord_file_size_bytes", labels, 17.0),
    }


async def test_a_missing_file_is_critical(tmp_path: Path) -> None:
    result = await make_check(tmp_path / "nope").run()
    assert result.status is Status.CRITICAL
    assert result.message == f"{tmp_path / 'nope'} does not exist"
    assert value(result, "monitord_file_exists") == 0.0


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        pytest.param(
            {"max_age": {"warning": "1m"}},
            Status.WARNING,
            "modified 2m ago",
            id="older than the warning age warns",
        ),
        pytest.param(
            {"max_age": {"warning": "30s", "critical": "90s"}},
            Status.CRITICAL,
            "modified 2m ago",
            id="older than the critical age is critical",
        ),
        pytest.param(
            {"max_size": {"warning": "10B"}},
            Status.WARNING,
            "17 bytes",
            id="bigger than the warning size warns",
        ),
        pytest.param(
            {"content_forbidden": "fine$"},
            Status.CRITICAL,
            "has 'all fine'",
            id="a forbidden line is critical and quoted",
        ),
        pytest.param(
            {"content_required": "^ready"},
            Status.CRITICAL,
            "has no line matching /^ready/",
            id="a missing required line is critical",
        ),
    ],
)
async def test_thresholds_and_content(
    log: Path, options: dict[str, Any], status: Status, message: str
) -> None:
    result = await make_check(log, **options).run()
    assert result.status is status
    assert result.message == f"{log}: {message}"


async def test_content_found_where_wanted_is_ok_and_counted(log: Path) -> None:
    result = await make_check(log, content_required="^started$", content_forbidden="ERROR").run()
    assert result.status is Status.OK, result.message
    assert value(result, "monitord_file_content_matched", pattern="required") == 1.0
    assert value(result, "monitord_file_content_matched", pattern="forbidden") == 0.0


async def test_only_the_tail_is_searched(log: Path) -> None:
    result = await make_check(log, content_required="started", content_max_bytes=9).run()
    assert result.status is Status.CRITICAL  # "all fine\n" is the last 9 bytes


def test_a_bad_pattern_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        FileConfig.model_validate(
            {"name": "f", "type": "file", "path": "/x", "content_required": "("}
        )
