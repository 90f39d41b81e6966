"""``/api/v1/rules`` and ``/api/v1/alerts`` in Prometheus' JSON shapes (``web/api/v1/api.go``).

The handlers read rule groups through the protocols below, which
:mod:`rules` satisfies without ``monitor`` importing it. Times are RFC 3339 in
UTC as Go writes them (``0001-01-01T00:00:00Z`` for "never"), alert values are
Go's ``%e``-style shortest spelling (``1e+00``), durations are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, cast

from aiohttp import web

from monitor.model import Alert, AlertState, Labels

__all__ = [
    "AlertingRuleView",
    "RuleGroupView",
    "RuleView",
    "RulesAPI",
    "format_go_e",
    "format_go_time",
]

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class RuleView(Protocol):
    """What the API reads of any rule."""

    @property
    def kind(self) -> str:
        """``alerting`` or ``recording``."""

    @property
    def name(self) -> str:
        """The alert name or recorded metric name."""

    @property
    def query(self) -> str:
        """The expression as Prometheus prints it."""

    @property
    def labels(self) -> Labels:
        """The rule's labels."""

    @property
    def health(self) -> str:
        """``ok``, ``err`` or ``unknown``."""

    @property
    def last_error(self) -> str | None:
        """Why the last evaluation failed, if it did."""

    @property
    def evaluation_duration(self) -> float:
        """Seconds the last evaluation took."""

    @property
    def evaluation_timestamp(self) -> float | None:
        """Wall-clock time (epoch seconds) of the last evaluation, None before the first."""


class AlertingRuleView(RuleView, Protocol):
    """What the API reads of an alerting rule besides what every rule has."""

    @property
    def hold(self) -> int:
        """``for``, in ms."""

    @property
    def keep_firing_for(self) -> int:
        """``keep_firing_for``, in ms."""

    @property
    def annotations(self) -> Labels:
        """The annotation templates, unexpanded."""

    def state(self) -> AlertState | None:
        """The highest state of its alerts; None before its first evaluation."""

    def active_alerts(self) -> list[Alert]:
        """Its pending and firing alerts."""


class GroupStatsView(Protocol):
    """What the API reads of a group's figures."""

    @property
    def last_duration(self) -> float:
        """Seconds the last evaluation took."""

    @property
    def last_evaluation(self) -> float | None:
        """Wall-clock time (epoch seconds) the last evaluation started."""


class RuleGroupView(Protocol):
    """What the API reads of a rule group."""

    @property
    def name(self) -> str:
        """The group's name."""

    @property
    def file(self) -> str:
        """The file it came from."""

    @property
    def interval(self) -> int:
        """Its interval, in ms."""

    @property
    def limit(self) -> int:
        """Its limit (0 for none)."""

    @property
    def rules(self) -> Sequence[RuleView]:
        """Its rules, in file order."""

    @property
    def stats(self) -> GroupStatsView:
        """Its figures."""


class RulesAPI:
    """The rules and alerts endpoints over whatever groups ``groups`` returns at each request."""

    def __init__(self, groups: Callable[[], Sequence[RuleGroupView]]) -> None:
        self._groups = groups

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_get("/api/v1/rules", self.rules)
        app.router.add_get("/api/v1/alerts", self.alerts)

    async def alerts(self, request: web.Request) -> web.Response:
        """Every pending and firing alert."""
        alerts = [
            _alert_json(alert)
            for group in self._groups()
            for rule in group.rules
            if rule.kind == "alerting"
            for alert in cast(AlertingRuleView, rule).active_alerts()
        ]
        return _success({"alerts": alerts})

    async def rules(self, request: web.Request) -> web.Response:
        """The rule groups with their rules, filtered as Prometheus filters them."""
        query = request.query
        kind = query.get("type", "").lower()
        if kind not in ("", "alert", "record"):
            return _error("bad_data", f'invalid parameter "type": not supported value "{kind}"')
        exclude = query.get("exclude_alerts", "false").lower()
        if exclude not in ("true", "false", "1", "0", "t", "f"):
            return _error(
                "bad_data",
                f'invalid parameter "exclude_alerts": strconv.ParseBool: parsing "{exclude}": '
                "invalid syntax",
            )
        exclude_alerts = exclude in ("true", "1", "t")
        names = set(query.getall("rule_name[]", []))
        group_names = set(query.getall("rule_group[]", []))
        files = set(query.getall("file[]", []))
        groups = []
        for group in self._groups():
            if (group_names and group.name not in group_names) or (
                files and group.file not in files
            ):
                continue
            rules = []
            for rule in group.rules:
                if names and rule.name not in names:
                    continue
                if rule.kind == "alerting" and kind in ("", "alert"):
                    rules.append(_alerting_json(cast(AlertingRuleView, rule), exclude_alerts))
                elif rule.kind == "recording" and kind in ("", "record"):
                    rules.append(_recording_json(rule))
            if not rules:
                continue  # Prometheus leaves out a group whose rules were all filtered
            groups.append(
                {
                    "name": group.name,
                    "file": group.file,
                    "rules": rules,
                    "interval": group.interval / 1000,
                    "limit": group.limit,
                    "evaluationTime": group.stats.last_duration,
                    "lastEvaluation": format_go_time(group.stats.last_evaluation),
                }
            )
        return _success({"groups": groups})


def _alerting_json(rule: AlertingRuleView, exclude_alerts: bool) -> dict[str, Any]:
    state = rule.state()
    out: dict[str, Any] = {
        "state": "unknown" if state is None else state.value,
        "name": rule.name,
        "query": rule.query,
        "duration": rule.hold / 1000,
        "keepFiringFor": rule.keep_firing_for / 1000,
        "labels": _labels(rule.labels),
        "annotations": _labels(rule.annotations),
        "alerts": [] if exclude_alerts else [_alert_json(a) for a in rule.active_alerts()],
        "health": str(rule.health),
    }
    if rule.last_error:
        out["lastError"] = rule.last_error
    out.update(
        evaluationTime=rule.evaluation_duration,
        lastEvaluation=format_go_time(rule.evaluation_timestamp),
        type="alerting",
    )
    return out


def _recording_json(rule: RuleView) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rule.name, "query": rule.query}
    if rule.labels:
        out["labels"] = _labels(rule.labels)
    out["health"] = str(rule.health)
    if rule.last_error:
        out["lastError"] = rule.last_error
    out.update(
        evaluationTime=rule.evaluation_duration,
        lastEvaluation=format_go_time(rule.evaluation_timestamp),
        type="recording",
    )
    return out


def _alert_json(alert: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": _labels(alert.labels),
        "annotations": _labels(alert.annotations),
        "state": alert.state.value,
        "activeAt": format_go_time(alert.active_at / 1000),
    }
    if alert.keep_firing_since is not None:
        out["keepFiringSince"] = format_go_time(alert.keep_firing_since / 1000)
    out["value"] = format_go_e(alert.value)
    return out


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    return dict(sorted(labels.items()))


def _success(data: Mapping[str, Any]) -> web.Response:
    return web.json_response({"status": "success", "data": data})


def _error(kind: str, message: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": kind, "error": message}, status=400)


def format_go_time(seconds: float | None) -> str:
    """An epoch time as Go's ``time.Time`` marshals to JSON in UTC (RFC 3339, ms precision)."""
    if seconds is None:
        return GO_ZERO_TIME
    ms = round(seconds * 1000)
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = ms % 1000
    if fraction:
        text += f".{fraction:03d}".rstrip("0")
    return text + "Z"


def format_go_e(value: float) -> str:
    """``strconv.FormatFloat(value, 'e', -1, 64)``: the shortest digits, exponent form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0e+00"
    number = Decimal(repr(abs(value)))
    digits = "".join(map(str, number.as_tuple().digits)).rstrip("0")
    exponent = number.adjusted()
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
