"""Custom queries in postgres_exporter's shape, and password redaction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from checks.dbcommon import CustomQuery, custom_query_samples, redact_password
from monitor.model import Labels, MetricType


def query(*metrics: dict[str, dict[str, str]]) -> CustomQuery:
    return CustomQuery.model_validate({"query": "SELECT 1", "metrics": list(metrics)})


def test_label_columns_label_the_value_columns_and_nulls_are_skipped() -> None:
    q = query(
        {"datname": {"usage": "LABEL"}},
        {"lag": {"usage": "GAUGE", "description": "Replication lag"}},
        {"commits": {"usage": "COUNTER"}},
        {"junk": {"usage": "DISCARD"}},
    )
    rows = [("a", 2.5, 10, "x"), ("b", None, 3, "y")]
    samples, metadata = custom_query_samples(
        "pg_rep", q, ["DATNAME", "lag", "commits", "junk"], rows, {"server": "db:5432"}
    )
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("pg_rep_lag", Labels.of(datname="a", server="db:5432"), 2.5),
        ("pg_rep_commits", Labels.of(datname="a", server="db:5432"), 10.0),
        ("pg_rep_commits", Labels.of(datname="b", server="db:5432"), 3.0),
    ]
    assert metadata["pg_rep_lag"].type is MetricType.GAUGE
    assert metadata["pg_rep_lag"].help == "Replication lag"
    assert metadata["pg_rep_commits"].type is MetricType.COUNTER
    assert "pg_rep_junk" not in metadata


def test_a_queries_yaml_entry_with_master_pastes_unchanged() -> None:
    q = CustomQuery.model_validate(
        {"query": "SELECT 1 AS one", "master": True, "metrics": [{"one": {"usage": "GAUGE"}}]}
    )
    assert q.master is True
    with pytest.raises(ValidationError, match="cache_seconds"):
        CustomQuery.model_validate(
            {"query": "SELECT 1", "cache_seconds": 30, "metrics": [{"one": {"usage": "GAUGE"}}]}
        )


def test_a_value_that_is_not_a_number_is_an_error() -> None:
    q = query({"v": {"usage": "GAUGE"}})
    with pytest.raises(ValueError, match="column v is not a number: 'high'"):
        custom_query_samples("ns", q, ["v"], [("high",)])


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        pytest.param([{"a": {"usage": "LABEL"}}], "GAUGE or a COUNTER", id="nothing measured"),
        pytest.param([{"a": {"usage": "SUM"}}], "usage", id="unknown usage"),
        pytest.param(
            [{"a": {"usage": "GAUGE"}, "b": {"usage": "GAUGE"}}], "exactly one", id="two columns"
        ),
        pytest.param([{"a-b": {"usage": "GAUGE"}}], "valid metric", id="bad column name"),
    ],
)
def test_bad_queries_are_config_errors(metrics: list[dict[str, object]], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        CustomQuery.model_validate({"query": "SELECT 1", "metrics": metrics})


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        pytest.param(
            "cannot connect to postgresql://app:hunter2@127.0.0.1:5432/db",
            None,
            "cannot connect to postgresql://app:<redacted>@127.0.0.1:5432/db",
            id="in a URL",
        ),
        pytest.param(
            "dsn host=db user=app password=hunter2 dbname=x",
            None,
            "dsn host=db user=app password=<redacted> dbname=x",
            id="a key=value pair",
        ),
        pytest.param(
            "auth failed for 'p@ss:word' on mysql://root:p@ss:word@h/",
            "p@ss:word",
            "auth failed for '<redacted>' on mysql://root:<redacted>@h/",
            id="a given secret, even with @ and :",
        ),
    ],
)
def test_passwords_are_redacted(text: str, secret: str | None, expected: str) -> None:
    assert redact_password(text, secret) == expected
