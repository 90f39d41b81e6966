"""Alerting rules and the alert state machine, as Prometheus' ``rules/alerting.go`` has them.

Each evaluation turns the expression's output vector into alerts: the sample's
labels without ``__name__``, the rule's labels (templates expanded) over them,
then ``alertname``. A new labelset starts PENDING with ``active_at`` the
evaluation time; it becomes FIRING at the first evaluation at least ``for``
after that. When its labelset leaves the output, a pending alert is dropped and
a firing one resolves (INACTIVE with ``resolved_at``), unless
``keep_firing_for`` keeps it firing that much longer, counted from the first
evaluation it was missing. Resolved alerts are kept, and re-sent, for 15
minutes. Every active alert yields an ``ALERTS{alertstate}`` sample of value 1
and an ``ALERTS_FOR_STATE`` sample whose value is ``active_at`` in seconds,
once the rule's ``for`` state has been restored after a start.

Times are int milliseconds, as in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from monitor.log import get_logger
from monitor.model import Alert, AlertState, Labels, Sample
from rules.rule import ALERTNAME_LABEL, NAME_LABEL, QueryFunc, Rule, RuleEvaluationError

__all__ = [
    "ALERTS_FOR_STATE_METRIC",
    "ALERTS_METRIC",
    "ALERT_STATE_LABEL",
    "DUPLICATE_LABELSET",
    "RESOLVED_RETENTION",
    "AlertingRule",
    "Expander",
    "ForState",
    "for_state_index",
]

log = get_logger("rules.alerting")

ALERTS_METRIC: Final = "ALERTS"
ALERTS_FOR_STATE_METRIC: Final = "ALERTS_FOR_STATE"
ALERT_STATE_LABEL: Final = "alertstate"

RESOLVED_RETENTION: Final = 15 * 60 * 1000
"""How long a resolved alert is kept, and so re-sent, after it resolved (ms)."""

DUPLICATE_LABELSET: Final = (
    "vector contains metrics with the same labelset after applying alert labels"
)


Expander = Callable[[str, Mapping[str, str], float], str]
"""Expands one label or annotation template for one alert: ``(text, labels, value)``.

:meth:`rules.templates.TemplateExpander.expand` with the rule's name and the
external labels bound; a failure should come back as the error text, as in
Prometheus (one that raises is caught and shown the same way).
"""


@dataclass(frozen=True, slots=True)
class ForState:
    """The last ``ALERTS_FOR_STATE`` sample of one alert: what a restart restores from.

    ``labels`` are the alert's labels (``alertname`` included), ``timestamp`` the
    sample's time in ms and ``active_at`` its value, the alert's ``active_at``
    in whole seconds.
    """

    labels: Labels
    timestamp: int
    active_at: int


class _Instance:
    """One alert of a rule, mutable while the rule evaluates (Prometheus' ``*Alert``)."""

    __slots__ = (
        "active_at",
        "annotations",
        "fired_at",
        "for_state_at",
        "keep_firing_since",
        "labels",
        "last_sent_at",
        "resolved_at",
        "state",
        "valid_until",
        "value",
    )

    def __init__(self, labels: Labels, annotations: Labels, active_at: int, value: float) -> None:
        self.labels = labels
        self.annotations = annotations
        self.state = AlertState.PENDING
        self.active_at = active_at
        self.value = value
        self.fired_at: int | None = None
        self.resolved_at: int | None = None
        self.keep_firing_since: int | None = None
        self.last_sent_at: int | None = None
        self.valid_until: int | None = None
        self.for_state_at: int | None = None  # time of its last ALERTS_FOR_STATE sample

    def needs_sending(self, ts: int, resend_delay: int) -> bool:
        """Prometheus' ``needsSending``: never pending; newly resolved; else every resend delay."""
        if self.state is AlertState.PENDING:
            return False
        if self.resolved_at is not None and (
            self.last_sent_at is None or self.resolved_at > self.last_sent_at
        ):
            return True
        return self.last_sent_at is None or self.last_sent_at + resend_delay < ts

    def snapshot(self) -> Alert:
        """An immutable copy for the API and notifiers."""
        return Alert(
            labels=self.labels,
            annotations=self.annotations,
            state=self.state,
            active_at=self.active_at,
            value=self.value,
            fired_at=self.fired_at,
            resolved_at=self.resolved_at,
            keep_firing_since=self.keep_firing_since,
            last_sent_at=self.last_sent_at,
            valid_until=self.valid_until,
        )


class AlertingRule(Rule):
    """An alerting rule and its alerts: evaluation, sending cadence and ``for`` restoration."""

    kind = "alerting"

    def __init__(
        self,
        name: str,
        expr: str,
        *,
        expander: Expander,
        query: str | None = None,
        hold: int = 0,
        keep_firing_for: int = 0,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        restored: bool = False,
    ) -> None:
        super().__init__(name, expr, Labels(labels or {}), query)
        self.hold = hold
        self.keep_firing_for = keep_firing_for
        self.annotations = Labels(annotations or {})
        self.restored = restored
        self._expander = expander
        # Keyed by the alert's labels (Prometheus keys by their hash).
        self._active: dict[Labels, _Instance] = {}

    def definition(self) -> tuple[object, ...]:
        """Name, expression, ``for``, ``keep_firing_for``, labels and annotations."""
        return (
            "alert",
            self.name,
            self.expr,
            self.hold,
            self.keep_firing_for,
            self.labels,
            self.annotations,
        )

    # --- evaluation -----------------------------------------------------------------------

    def eval(
        self, ts: int, query: QueryFunc, *, query_offset: int = 0, limit: int = 0
    ) -> list[Sample]:
        """Evaluate at ``ts``, update the alerts, return their ALERTS and ALERTS_FOR_STATE."""
        result = query(self.expr, ts - query_offset)
        fresh: dict[Labels, _Instance] = {}
        for sample in result:
            data = dict(sample.labels.items_tuple())  # the template's $labels keep __name__
            value = sample.value
            built = {k: v for k, v in data.items() if k != NAME_LABEL}
            for label, text in self.labels.items_tuple():
                built[label] = self._expand(text, data, value)
            built[ALERTNAME_LABEL] = self.name
            annotations = Labels(
                (k, self._expand(v, data, value)) for k, v in self.annotations.items_tuple()
            )
            labels = Labels(built)
            if labels in fresh:
                raise RuleEvaluationError(self.name, DUPLICATE_LABELSET)
            fresh[labels] = _Instance(labels, annotations, ts, value)

        for labels, new in fresh.items():
            known = self._active.get(labels)
            if known is not None and known.state is not AlertState.INACTIVE:
                known.value = new.value
                known.annotations = new.annotations
                continue
            self._active[labels] = new

        active_or_pending = 0
        out: list[Sample] = []
        for labels, alert in list(self._active.items()):
            if labels not in fresh:
                keep_firing = False
                if alert.state is AlertState.FIRING and self.keep_firing_for > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = ts
                    keep_firing = ts - alert.keep_firing_since < self.keep_firing_for
                if alert.state is AlertState.PENDING or (
                    alert.resolved_at is not None and ts - alert.resolved_at > RESOLVED_RETENTION
                ):
                    del self._active[labels]
                if alert.state is not AlertState.INACTIVE and not keep_firing:
                    alert.state = AlertState.INACTIVE
                    alert.resolved_at = ts
                if not keep_firing:
                    continue
            else:
                alert.keep_firing_since = None
            active_or_pending += 1
            if alert.state is AlertState.PENDING and ts - alert.active_at >= self.hold:
                alert.state = AlertState.FIRING
                alert.fired_at = ts
            if self.restored:
                at = ts - query_offset
                out.append(self._alerts_sample(alert, at))
                out.append(self._for_state_sample(alert, at))
                alert.for_state_at = at

        if limit > 0 and active_or_pending > limit:
            self._active = {}
            raise RuleEvaluationError(
                self.name, f"exceeded limit of {limit} with {active_or_pending} alerts"
            )
        return out

    def _expand(self, text: str, labels: Mapping[str, str], value: float) -> str:
        try:
            return self._expander(text, labels, value)
        except Exception as exc:  # a template's failure is shown in its place, as in Prometheus
            log.warning(
                "expanding alert template failed: %s",
                exc,
                extra={"alertname": self.name, "template": text},
            )
            return f"<error expanding template: {exc}>"

    def _alerts_sample(self, alert: _Instance, at: int) -> Sample:
        labels = self.labels.merge(alert.labels).merge(
            {ALERTNAME_LABEL: self.name, ALERT_STATE_LABEL: alert.state.value}
        )
        return Sample(ALERTS_METRIC, labels, 1.0, at)

    def _for_state_sample(self, alert: _Instance, at: int) -> Sample:
        labels = self.labels.merge(alert.labels).merge({ALERTNAME_LABEL: self.name})
        return Sample(ALERTS_FOR_STATE_METRIC, labels, float(alert.active_at // 1000), at)

    # --- sending --------------------------------------------------------------------------

    def alerts_to_send(self, ts: int, resend_delay: int, interval: int) -> list[Alert]:
        """Prometheus' ``sendAlerts``: the alerts due at ``ts``, marked as sent.

        An alert is due when it fired or resolved since it was last sent, or
        ``resend_delay`` has passed since. Each sent alert is valid until
        ``ts + 4 * max(interval, resend_delay)``, which allows for two failed
        evaluations or deliveries.
        """
        due: list[Alert] = []
        for alert in self._active.values():
            if alert.needs_sending(ts, resend_delay):
                alert.last_sent_at = ts
                alert.valid_until = ts + 4 * max(interval, resend_delay)
                due.append(alert.snapshot())
        return due

    # --- views ----------------------------------------------------------------------------

    def state(self) -> AlertState | None:
        """The highest state of the rule's alerts; None before its first evaluation."""
        if self.evaluation_timestamp is None:
            return None
        highest = AlertState.INACTIVE
        for alert in self._active.values():
            if alert.state.rank > highest.rank:
                highest = alert.state
        return highest

    def active_alerts(self) -> list[Alert]:
        """The pending and firing alerts (resolved ones excluded), as the API lists them."""
        return [a.snapshot() for a in self._active.values() if a.resolved_at is None]

    def current_alerts(self) -> list[Alert]:
        """Every alert held, resolved ones still retained included."""
        return [a.snapshot() for a in self._active.values()]

    # --- state across reloads and restarts --------------------------------------------------

    def take_alerts_from(self, other: AlertingRule) -> None:
        """Adopt ``other``'s alerts (a reload that kept this rule's identity)."""
        self._active.update(other._active)

    def for_states(self) -> list[ForState]:
        """The last ALERTS_FOR_STATE sample of each alert that is pending or firing."""
        return [
            ForState(a.labels, a.for_state_at, a.active_at // 1000)
            for a in self._active.values()
            if a.state is not AlertState.INACTIVE and a.for_state_at is not None
        ]

    def restore_for_state(
        self,
        now: int,
        saved: Mapping[Labels, ForState],
        *,
        grace_period: int,
    ) -> int:
        """Prometheus' ``RestoreForState`` for this rule; returns how many alerts were restored.

        For every alert active now whose ``ALERTS_FOR_STATE`` was saved: if it
        had already waited its whole ``for`` when monitord went down, its old
        ``active_at`` comes back (it fires at the next evaluation); if less than
        ``grace_period`` was left, it fires ``grace_period`` from now; otherwise
        the downtime is added to its old ``active_at``. A rule whose ``for`` is
        shorter than the grace period is not restored at all. ``saved`` must
        only hold samples within the outage tolerance.
        """
        self.restored = True
        if self.hold < grace_period:
            return 0
        restored = 0
        for alert in self._active.values():
            state = saved.get(alert.labels)
            if state is None:
                continue
            down_at = state.timestamp // 1000 * 1000  # Prometheus: time.Unix(t/1000, 0)
            active_at = state.active_at * 1000
            remaining = self.hold - (down_at - active_at)
            if remaining <= 0:
                pass
            elif remaining < grace_period:
                active_at = now + grace_period - self.hold
            else:
                active_at += now - down_at
            alert.active_at = active_at
            restored += 1
            log.debug(
                "'for' state restored",
                extra={"alertname": self.name, "labels": str(alert.labels), "active_at": active_at},
            )
        return restored


def for_state_index(states: Iterable[ForState], since: int) -> dict[Labels, ForState]:
    """Saved for-states by alert labels, keeping those with a sample after ``since`` (ms)."""
    return {s.labels: s for s in states if s.timestamp >= since}
