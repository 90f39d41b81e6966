"""What alerting and recording rules share: health, the query function, evaluation errors.

Mirrors Prometheus' ``rules.Rule`` interface: a rule is evaluated at one
timestamp through a :data:`QueryFunc` and returns the samples to write to the
store; an evaluation that fails raises and leaves the rule's state as it was.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from monitor.errors import MonitordError
from monitor.model import Labels, Sample

__all__ = [
    "ALERTNAME_LABEL",
    "NAME_LABEL",
    "QueryFunc",
    "QueryResultSample",
    "Rule",
    "RuleEvaluationError",
    "RuleHealth",
]

NAME_LABEL: Final = "__name__"
ALERTNAME_LABEL: Final = "alertname"


class RuleEvaluationError(MonitordError):
    """A rule's evaluation failed for a reason of its own (duplicate labelsets, limit).

    Query errors reach the group as :class:`~monitor.errors.QueryError`; both
    are counted as evaluation failures and leave the rule's state unchanged.
    """

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(reason)


class RuleHealth(enum.StrEnum):
    """A rule's health after its last evaluation, spelt as Prometheus' API spells it."""

    UNKNOWN = "unknown"
    GOOD = "ok"
    BAD = "err"


class QueryResultSample(Protocol):
    """One element of an instant vector: labels (with ``__name__`` if any) and value."""

    @property
    def labels(self) -> Labels:
        """The series' labels, ``__name__`` included when the series has a name."""

    @property
    def value(self) -> float:
        """The sample's value."""


QueryFunc = Callable[[str, int], Sequence[QueryResultSample]]
"""Evaluate a PromQL expression at a millisecond timestamp into an instant vector.

A scalar result comes back as one sample with no labels (Prometheus'
``EngineQueryFunc``); any other result type raises.
"""


class Rule(abc.ABC):
    """An alerting or recording rule: its definition plus the outcome of its last evaluation."""

    kind: str
    """``"alerting"`` or ``"recording"``, as the rules API names the type."""

    def __init__(self, name: str, expr: str, labels: Labels, query: str | None = None) -> None:
        self.name = name
        self.expr = expr
        self.query = query if query is not None else expr
        """The expression as Prometheus prints it, for the API; ``expr`` is as written."""
        self.labels = labels
        self.health = RuleHealth.UNKNOWN
        self.last_error: str | None = None
        self.evaluation_duration = 0.0
        self.evaluation_timestamp: float | None = None

    @property
    def identity(self) -> tuple[str, Labels]:
        """What a reload matches rules by: name and labels (Prometheus' ``nameAndLabels``)."""
        return self.name, self.labels

    @abc.abstractmethod
    def definition(self) -> tuple[object, ...]:
        """Everything configured about the rule; equal definitions mean an unchanged rule."""

    @abc.abstractmethod
    def eval(
        self, ts: int, query: QueryFunc, *, query_offset: int = 0, limit: int = 0
    ) -> list[Sample]:
        """Evaluate at ``ts`` (ms), querying at ``ts - query_offset``; the samples to store.

        Raises :class:`RuleEvaluationError` or the query's error; the rule's
        state is then unchanged (except that exceeding ``limit`` clears alerts).
        """

    def record_success(self) -> None:
        """Note that the last evaluation worked."""
        self.health = RuleHealth.GOOD
        self.last_error = None

    def record_failure(self, error: BaseException) -> None:
        """Note that the last evaluation failed, and why."""
        self.health = RuleHealth.BAD
        self.last_error = str(error)
