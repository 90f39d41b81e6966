"""Rule evaluation's self metrics, under Prometheus' names with ``monitord_`` for ``prometheus_``.

One collector, registered in the daemon's registry next to the exporter's own;
every family has a ``rule_group`` label of ``file;name``, as in Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rules.group import Group

__all__ = ["RuleCollector"]

_LABELS = ["rule_group"]


class RuleCollector(Collector):
    """Figures of every rule group: evaluations, failures, misses, durations, last times."""

    def __init__(self, groups: Callable[[], Sequence[Group]]) -> None:
        self._groups = groups

    def collect(self) -> Iterable[Metric]:
        """The rule metrics, freshly read from the groups."""
        groups = self._groups()
        counters = {
            "evaluations": ("The total number of rule evaluations.", "evaluations_total"),
            "evaluation_failures": (
                "The total number of rule evaluation failures.",
                "evaluation_failures_total",
            ),
            "group_iterations": (
                "The total number of scheduled rule group evaluations, whether executed or missed.",
                "iterations_total",
            ),
            "group_iterations_missed": (
                "The total number of rule group evaluations missed due to slow rule group "
                "evaluation.",
                "iterations_missed",
            ),
            "group_arrival_iterations": (
                "The total number of rule group evaluations started by the arrival of samples "
                "the group's rules select.",
                "arrival_iterations_total",
            ),
        }
        for name, (doc, attribute) in counters.items():
            family = CounterMetricFamily(f"monitord_rule_{name}", doc, labels=_LABELS)
            for group in groups:
                family.add_metric([group.key], getattr(group.stats, attribute))
            yield family

        gauges: dict[str, tuple[str, Callable[[Group], float]]] = {
            "group_interval_seconds": ("The interval of a rule group.", _interval),
            "group_rules": ("The number of rules.", _rule_count),
            "group_last_duration_seconds": (
                "The duration of the last rule group evaluation.",
                _last_duration,
            ),
            "group_last_rule_duration_sum_seconds": (
                "The sum of time in seconds it took to evaluate each rule in the group.",
                _rule_duration_sum,
            ),
            "group_last_evaluation_timestamp_seconds": (
                "The timestamp of the last rule group evaluation in seconds.",
                _last_evaluation,
            ),
            "group_last_evaluation_samples": (
                "The number of samples returned during the last rule group evaluation.",
                _last_samples,
            ),
            "group_last_restore_duration_seconds": (
                "The duration of the last alert rules alerts restoration.",
                _restore_duration,
            ),
        }
        for name, (doc, read) in gauges.items():
            gauge = GaugeMetricFamily(f"monitord_rule_{name}", doc, labels=_LABELS)
            for group in groups:
                gauge.add_metric([group.key], read(group))
            yield gauge


def _interval(group: Group) -> float:
    return group.interval / 1000


def _rule_count(group: Group) -> float:
    return len(group.rules)


def _last_duration(group: Group) -> float:
    return group.stats.last_duration


def _rule_duration_sum(group: Group) -> float:
    return group.stats.last_rule_duration_sum


def _last_evaluation(group: Group) -> float:
    # Prometheus reports the zero time, which is negative seconds; 0 reads better and
    # means the same ("never").
    return group.stats.last_evaluation or 0.0


def _last_samples(group: Group) -> float:
    return group.stats.last_samples


def _restore_duration(group: Group) -> float:
    return group.stats.last_restore_duration
