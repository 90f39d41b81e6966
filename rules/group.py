"""A rule group: rules evaluated in order at one timestamp, as in Prometheus' ``rules/group.go``.

Every rule of a group sees the same evaluation time. A rule's output is
written to the store before the next rule runs, so recording rules feed later
rules of the same group. A series a rule produced last time and not this time
gets a staleness marker. A rule whose evaluation fails is counted and logged,
and its state and series are left as they were.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.errors import QueryError
from monitor.log import get_logger
from monitor.model import STALE_NAN, Alert, Labels, Sample
from monitor.store import Store
from rules.alerting import AlertingRule, Expander, ForState
from rules.files import AlertingRuleSpec, RuleGroup
from rules.recording import RecordingRule
from rules.rule import QueryFunc, Rule, RuleEvaluationError
from rules.templates import TemplateExpander

__all__ = [
    "DEFAULT_RESEND_DELAY",
    "EvalContext",
    "Group",
    "GroupStats",
    "build_group",
    "group_key",
]

log = get_logger("rules.group")

DEFAULT_RESEND_DELAY = 60_000
"""Prometheus' ``--rules.alert.resend-delay`` default, 1m, in ms."""

SeriesKey = tuple[str, Labels]
NotifyFunc = Callable[[str, Sequence[Alert]], None]


def group_key(file: str, name: str) -> str:
    """A group's identity: names need only be unique within a file (Prometheus' ``GroupKey``)."""
    return f"{file};{name}"


@dataclass(slots=True)
class EvalContext:
    """What evaluating needs from outside the group (Prometheus' ``ManagerOptions``)."""

    query: QueryFunc
    store: Store
    notify: NotifyFunc = lambda expr, alerts: None
    resend_delay: int = DEFAULT_RESEND_DELAY
    default_query_offset: int = 0
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


@dataclass(slots=True)
class GroupStats:
    """A group's counters and the figures of its last evaluation, for metrics and the API."""

    iterations_total: int = 0
    iterations_missed: int = 0
    arrival_iterations_total: int = 0
    evaluations_total: int = 0
    evaluation_failures_total: int = 0
    last_duration: float = 0.0
    last_rule_duration_sum: float = 0.0
    last_evaluation: float | None = None
    """Wall-clock time (seconds) at which the last evaluation started."""
    last_eval_timestamp: int | None = None
    """The evaluation time (ms) the last evaluation used."""
    last_samples: int = 0
    last_restore_duration: float = 0.0


@dataclass(eq=False)
class Group:
    """A named, ordered list of rules evaluated together every ``interval`` (ms)."""

    name: str
    file: str
    interval: int
    rules: Sequence[Rule]
    limit: int = 0
    query_offset: int | None = None
    should_restore: bool = False
    stats: GroupStats = field(default_factory=GroupStats)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"group {self.name!r}: interval must be positive, got {self.interval}")
        self._previous: list[set[SeriesKey]] = [set() for _ in self.rules]
        self._stale: set[SeriesKey] = set()
        self.runs = 0  # evaluations by this group object: restoration waits for two

    @property
    def key(self) -> str:
        """``file;name``."""
        return group_key(self.file, self.name)

    def alerting_rules(self) -> list[AlertingRule]:
        """The group's alerting rules, in file order."""
        return [r for r in self.rules if isinstance(r, AlertingRule)]

    def effective_query_offset(self, ctx: EvalContext) -> int:
        """The group's ``query_offset``, or the global default."""
        return self.query_offset if self.query_offset is not None else ctx.default_query_offset

    # --- timing ---------------------------------------------------------------------------

    def offset(self) -> int:
        """This group's stable offset within its interval (ms), so groups do not all run at once."""
        digest = hashlib.sha256(self.key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.interval

    def eval_timestamp(self, now: int) -> int:
        """The latest evaluation slot at or before ``now`` (ms): Prometheus' ``EvalTimestamp``."""
        offset = self.offset()
        adjusted = now - offset
        return adjusted - adjusted % self.interval + offset

    # --- evaluation -----------------------------------------------------------------------

    def run_iteration(self, ts: int, ctx: EvalContext) -> None:
        """One evaluation of every rule at ``ts`` (ms), with the group's figures updated."""
        self.stats.iterations_total += 1
        self.runs += 1
        wall = ctx.clock()
        started = ctx.monotonic()
        self.eval(ts, ctx)
        self.stats.last_duration = ctx.monotonic() - started
        self.stats.last_evaluation = wall
        self.stats.last_eval_timestamp = ts

    def eval(self, ts: int, ctx: EvalContext) -> None:
        """Evaluate the rules in order at ``ts``, writing each one's output before the next runs."""
        offset = self.effective_query_offset(ctx)
        samples_total = 0
        for i, rule in enumerate(self.rules):
            wall = ctx.clock()
            started = ctx.monotonic()
            self.stats.evaluations_total += 1
            try:
                vector = rule.eval(ts, ctx.query, query_offset=offset, limit=self.limit)
            except (QueryError, RuleEvaluationError) as exc:
                self._failed(rule, exc)
                continue
            except Exception as exc:  # an engine bug must not stop the group's other rules
                log.debug("evaluating rule %s raised", rule.name, exc_info=True)
                self._failed(rule, exc)
                continue
            finally:
                rule.evaluation_duration = ctx.monotonic() - started
                rule.evaluation_timestamp = wall
            rule.record_success()
            samples_total += len(vector)
            if isinstance(rule, AlertingRule):
                due = rule.alerts_to_send(ts, ctx.resend_delay, self.interval)
                if due:
                    ctx.notify(rule.expr, due)
            current = {(s.name, s.labels) for s in vector}
            stale = [
                Sample(n, lbl, STALE_NAN, ts - offset) for n, lbl in self._previous[i] - current
            ]
            ctx.store.append([*vector, *stale], ts - offset)
            self._previous[i] = current
        self.stats.last_samples = samples_total
        self.stats.last_rule_duration_sum = sum(r.evaluation_duration for r in self.rules)
        if self._stale:
            self._write_stale(self._stale, ts - offset, ctx.store)
            self._stale = set()

    def _failed(self, rule: Rule, exc: Exception) -> None:
        rule.record_failure(exc)
        self.stats.evaluation_failures_total += 1
        log.warning(
            "evaluating rule %s failed: %s",
            rule.name,
            exc,
            extra={"group": self.name, "file": self.file, "rule": rule.name},
        )

    @staticmethod
    def _write_stale(series: set[SeriesKey], at: int, store: Store) -> None:
        # A series another rule has written since (a renamed rule) is left alone: the
        # store refuses a marker older than its newest point.
        store.append([Sample(n, lbl, STALE_NAN, at) for n, lbl in series], at)

    def previous_series(self) -> set[SeriesKey]:
        """Every series the group's rules produced at their last evaluation."""
        return set().union(*self._previous) | self._stale

    # --- reloads and restarts -------------------------------------------------------------

    def equals(self, other: Group) -> bool:
        """Same name, file, interval, limit, query offset and rule definitions, in order."""
        return (
            (self.name, self.file, self.interval, self.limit, self.query_offset)
            == (other.name, other.file, other.interval, other.limit, other.query_offset)
            and len(self.rules) == len(other.rules)
            and all(
                a.definition() == b.definition()
                for a, b in zip(self.rules, other.rules, strict=True)
            )
        )

    def copy_state(self, old: Group) -> None:
        """Take over ``old``'s alerts and series for rules with the same name and labels.

        Duplicates pair up in order, first with first. Series of old rules that
        found no partner get staleness markers at this group's next evaluation.
        """
        self.stats = old.stats
        by_identity: dict[tuple[str, Labels], list[int]] = {}
        for i, rule in enumerate(old.rules):
            by_identity.setdefault(rule.identity, []).append(i)
        for i, rule in enumerate(self.rules):
            candidates = by_identity.get(rule.identity)
            if not candidates:
                continue
            j = candidates.pop(0)
            self._previous[i] = old._previous[j]
            source = old.rules[j]
            if isinstance(rule, AlertingRule) and isinstance(source, AlertingRule):
                rule.take_alerts_from(source)
        self._stale = set(old._stale)
        for indexes in by_identity.values():
            for j in indexes:
                self._stale |= old._previous[j]

    def restore_for_state(
        self,
        now: int,
        saved: Mapping[Labels, ForState],
        *,
        grace_period: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Restore the ``for`` state of every alerting rule (``AlertingRule.restore_for_state``)."""
        started = monotonic()
        for rule in self.alerting_rules():
            count = rule.restore_for_state(now, saved, grace_period=grace_period)
            if count:
                log.info(
                    "restored the 'for' state of %d alerts of %s",
                    count,
                    rule.name,
                    extra={"group": self.name},
                )
        self.should_restore = False
        self.stats.last_restore_duration = monotonic() - started


def build_group(
    spec: RuleGroup,
    *,
    default_interval: float,
    expander: TemplateExpander,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
) -> Group:
    """A runnable group from a validated rule-file group (intervals in seconds, as in the file).

    The group's ``labels`` go under every rule's own labels, as in Prometheus.
    Templates in alerting rules are expanded with the rule's name, the external
    labels and the external URL.
    """
    externals = dict(external_labels or {})
    rules: list[Rule] = []
    for rule in spec.rules:
        labels = spec.labels.merge(rule.labels)
        query = _canonical(rule.parsed, rule.expr)
        if isinstance(rule, AlertingRuleSpec):
            rules.append(
                AlertingRule(
                    rule.name,
                    rule.expr,
                    query=query,
                    expander=_bind(expander, rule.name, externals, external_url),
                    hold=_ms(rule.for_),
                    keep_firing_for=_ms(rule.keep_firing_for),
                    labels=labels,
                    annotations=rule.annotations,
                )
            )
        else:
            rules.append(RecordingRule(rule.record, rule.expr, query=query, labels=labels))
    interval = spec.interval if spec.interval is not None else default_interval
    return Group(
        name=spec.name,
        file=spec.file,
        interval=_ms(interval),
        rules=rules,
        limit=spec.limit,
        query_offset=None if spec.query_offset is None else _ms(spec.query_offset),
    )


def _bind(
    expander: TemplateExpander, name: str, external_labels: Mapping[str, str], external_url: str
) -> Expander:
    def expand(text: str, labels: Mapping[str, str], value: float) -> str:
        return expander.expand(text, labels, value, external_labels, external_url, name=name)

    return expand


def _canonical(parsed: Any, text: str) -> str:
    """The expression as Prometheus prints it (``rule.Query().String()``), for the API.

    The parser's one-line pretty form is Prometheus' spelling; one that needs
    several lines is not, and the text as written is shown instead.
    """
    try:
        pretty = parsed.prettify()
    except Exception:  # the parser's printer is a convenience; the text is always right
        return text.strip()
    return pretty if isinstance(pretty, str) and "\n" not in pretty else text.strip()


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
