"""What the database collectors share: custom queries in postgres_exporter's ``queries.yaml``
shape, the rows-to-samples mapping, and keeping passwords out of messages.

A custom query is configured under ``queries:`` exactly as postgres_exporter's
``queries.yaml`` (also the shape mysqld_exporter users know from it)::

    queries:
      pg_replication:                    # the namespace: each metric is <namespace>_<column>
        query: "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) AS lag"
        metrics:
          - lag:
              usage: GAUGE               # GAUGE, COUNTER, LABEL or DISCARD
              description: "Replication lag behind the primary in seconds"

Every ``LABEL`` column becomes a label of the other columns' samples; ``GAUGE`` and
``COUNTER`` columns become samples (a counter keeps its name, as postgres_exporter does);
``DISCARD`` columns are ignored, as are columns not listed. A NULL value is skipped.
``master: true``, which postgres_exporter uses to run a query only against the database
of its DSN rather than every discovered one, is accepted so that entries paste unchanged:
a monitord check queries only its configured database, so both values mean that here.
``cache_seconds`` and ``runonserver`` are refused rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Self

from pydantic import Field, RootModel, field_validator, model_validator

from monitor.model import Labels, MetricMetadata, MetricType, Sample
from monitor.schema import ConfigModel

__all__ = [
    "ColumnUsage",
    "CustomQuery",
    "QueryMetric",
    "custom_query_samples",
    "redact_password",
]

ColumnUsage = Literal["GAUGE", "COUNTER", "LABEL", "DISCARD"]

_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class QueryMetric(ConfigModel):
    """How one column is used."""

    usage: ColumnUsage
    description: str = ""


class _ColumnMap(RootModel[dict[str, QueryMetric]]):
    """``{column: {usage, description}}``, one column per list item as in queries.yaml."""

    @model_validator(mode="after")
    def _one_column(self) -> Self:
        if len(self.root) != 1:
            raise ValueError("each metrics item maps exactly one column to its usage")
        (column,) = self.root
        if not _NAME.match(column):
            raise ValueError(f"column {column!r} is not a valid metric or label name")
        return self


class CustomQuery(ConfigModel):
    """One namespace of custom metrics: a read-only query and what its columns mean."""

    query: str = Field(min_length=1)
    metrics: tuple[_ColumnMap, ...] = Field(min_length=1)
    master: bool = Field(
        default=False, description="postgres_exporter's; every query runs on the check's database"
    )

    @field_validator("metrics")
    @classmethod
    def _something_measured(cls, value: tuple[_ColumnMap, ...]) -> tuple[_ColumnMap, ...]:
        usages = [usage.usage for item in value for usage in item.root.values()]
        if not any(u in ("GAUGE", "COUNTER") for u in usages):
            raise ValueError("at least one column must be a GAUGE or a COUNTER")
        return value

    def columns(self) -> dict[str, QueryMetric]:
        """Every configured column and its usage, in order."""
        return {column: use for item in self.metrics for column, use in item.root.items()}


def custom_query_samples(
    namespace: str,
    query: CustomQuery,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    labels: Mapping[str, str] | None = None,
) -> tuple[list[Sample], dict[str, MetricMetadata]]:
    """The samples of one custom query's result (``columns`` names the result's columns),
    each with ``labels`` (the collector's, e.g. ``server``) and the LABEL columns; and
    the families' metadata. Values that are not numbers raise ``ValueError``."""
    configured = query.columns()
    index = {name.lower(): i for i, name in enumerate(columns)}
    label_columns = [c for c, use in configured.items() if use.usage == "LABEL"]
    value_columns = [c for c, use in configured.items() if use.usage in ("GAUGE", "COUNTER")]
    metadata = {
        f"{namespace}_{c}": MetricMetadata(
            MetricType.COUNTER if configured[c].usage == "COUNTER" else MetricType.GAUGE,
            configured[c].description,
        )
        for c in value_columns
    }
    samples: list[Sample] = []
    base = dict(labels or {})
    for row in rows:
        row_labels = dict(base)
        for column in label_columns:
            i = index.get(column.lower())
            if i is not None:
                row_labels[column] = "" if row[i] is None else str(row[i])
        for column in value_columns:
            i = index.get(column.lower())
            if i is None or row[i] is None:
                continue
            value = row[i]
            if isinstance(value, bool):
                number = 1.0 if value else 0.0
            else:
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{namespace}: column {column} is not a number: {value!r}"
                    ) from None
            samples.append(Sample(f"{namespace}_{column}", Labels(row_labels), number))
    return samples, metadata


_URL_PASSWORD: Final = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@\s]*(?=@)", re.I)
_KEY_PASSWORD: Final = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.I)


def redact_password(text: str, *secrets: str | None) -> str:
    """``text`` with passwords replaced by ``<redacted>``: those in URLs
    (``postgresql://u:pw@h``), ``password=...`` pairs, and every given secret wherever it
    appears (a driver may quote it in an error)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_PASSWORD.sub(r"\g<head><redacted>", text)
    return _KEY_PASSWORD.sub(r"\g<head><redacted>", text)
