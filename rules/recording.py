"""Recording rules, as Prometheus' ``rules/recording.go`` has them.

The output vector is renamed to the rule's name, the rule's labels are set on
every sample, and the result is refused if two samples end up with the same
labels or if there are more than the group's ``limit``.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.model import Labels, Sample
from rules.rule import NAME_LABEL, QueryFunc, Rule, RuleEvaluationError

__all__ = ["DUPLICATE_RECORDED_LABELSET", "RecordingRule"]

DUPLICATE_RECORDED_LABELSET = (
    "vector contains metrics with the same labelset after applying rule labels"
)


class RecordingRule(Rule):
    """A recording rule: evaluates its expression and stores the result under a new name."""

    kind = "recording"

    def __init__(
        self,
        name: str,
        expr: str,
        *,
        query: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, expr, Labels(labels or {}), query)

    def definition(self) -> tuple[object, ...]:
        """Name, expression and labels."""
        return ("record", self.name, self.expr, self.labels)

    def eval(
        self, ts: int, query: QueryFunc, *, query_offset: int = 0, limit: int = 0
    ) -> list[Sample]:
        """Evaluate at ``ts``; the samples to store, stamped ``ts - query_offset``."""
        at = ts - query_offset
        result = query(self.expr, at)
        out: list[Sample] = []
        seen: set[Labels] = set()
        for sample in result:
            labels = sample.labels.without(NAME_LABEL).merge(self.labels)
            if labels in seen:
                raise RuleEvaluationError(self.name, DUPLICATE_RECORDED_LABELSET)
            seen.add(labels)
            out.append(Sample(self.name, labels, sample.value, at))
        if limit > 0 and len(out) > limit:
            raise RuleEvaluationError(
                self.name, f"exceeded limit of {limit} with {len(out)} series"
            )
        return out
