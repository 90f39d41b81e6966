"""From the rules' alerts to the outbox: the notification pipeline, Alertmanager's inside one
process.

:class:`NotificationPipeline` is the rules manager's :class:`~rules.manager.AlertSink`
(structurally: ``send(alerts)``). Each hand-off:

1. converts the rules' alerts to Alertmanager's (``startsAt`` when it fired, ``endsAt``
   when it resolved or, while firing, until when it stays valid), remembered by
   fingerprint for the inhibitor and ``/api/v2/alerts``;
2. gives them to the dispatcher, which routes them and groups them
   (:mod:`notifiers.dispatch`); kinds that are not grouped (``alertmanager``) get every
   alert routed to their receiver at once, through the outbox, as Prometheus' notifier
   sends to Alertmanager (monitord's silences and inhibitions are not applied there: the
   Alertmanager applies its own).

At each flush of an aggregation group (Alertmanager's notification pipeline,
notify/notify.go):

- time intervals: nothing is sent while a ``mute_time_intervals`` entry of the route
  holds, or while none of its ``active_time_intervals`` does;
- mute: alerts silenced or inhibited are left out;
- per integration, the notification log decides (:func:`notifiers.dispatch.needs_update`:
  a new firing alert, all resolved, a new resolved one with ``send_resolved``, else only
  after ``repeat_interval``); resolved alerts are left out without ``send_resolved``;
- the notification and its log entry are written to the outbox in one transaction, and
  the deliverer takes it from there (retries, backoff, restarts: :mod:`notifiers.outbox`).

A reload swaps the route, inhibition rules, time intervals and integrations; as in
Alertmanager, aggregation groups start afresh (the alerts held are routed again) and the
notification log keeps them from notifying twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from monitor.log import get_logger
from monitor.model import Alert, Labels
from monitor.plugins import PluginRegistry
from monitor.web.api import format_go_time
from notifiers.base import (
    LogEntry,
    Notification,
    NotifiedAlert,
    Notifier,
    NotifierConfig,
    NotifierContext,
)
from notifiers.config import AlertingConfig
from notifiers.dispatch import Dispatcher, DispatcherTask, Flush, IncomingAlert, needs_update
from notifiers.inhibit import Inhibitor
from notifiers.matchers import MatcherError, Matchers, parse_matchers
from notifiers.outbox import Deliverer, Outbox, RetryPolicy
from notifiers.route import Route
from notifiers.silences import SilenceError, SilenceStore
from notifiers.templates import Templates
from notifiers.timeintervals import NamedTimeInterval

__all__ = [
    "UNGROUPED_KEY",
    "AlertView",
    "NotificationPipeline",
    "PipelineSettings",
    "held_alerts",
]

log = get_logger("notifiers")

UNGROUPED_KEY = "{}:ungrouped"
"""The group key of what ungrouped kinds (``alertmanager``) are sent."""

RESOLVED_RETENTION = 15 * 60.0
"""How long a resolved alert stays listed (the rules re-send it for as long)."""

SILENCE_GC_INTERVAL = 15 * 60.0
"""How often silences expired beyond their retention are deleted (Alertmanager's period)."""

IntegrationKey = tuple[str, str, int]  # receiver, kind, index


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """What the pipeline takes from the whole config; a reload passes new ones."""

    alerting: AlertingConfig | None
    templates: Templates = field(default_factory=Templates)
    external_url: str = ""
    external_labels: Mapping[str, str] = field(default_factory=dict)
    resend_delay: float = 60.0


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as ``/api/v2/alerts`` and ``monitord alerts`` show it."""

    alert: IncomingAlert
    receivers: tuple[str, ...]
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]

    @property
    def state(self) -> str:
        """``suppressed`` when silenced or inhibited, else ``active`` (Alertmanager's)."""
        return "suppressed" if self.silenced_by or self.inhibited_by else "active"


class NotificationPipeline:
    """Routes, groups, mutes and deduplicates alerts, and hands notifications to the outbox."""

    def __init__(
        self,
        kinds: PluginRegistry[Notifier[Any]],
        db_path: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._kinds = kinds
        self._db_path = db_path
        self._clock = clock
        self._rng = rng
        self._settings = PipelineSettings(alerting=None)
        self._alerts: dict[str, IncomingAlert] = {}
        self._route: Route | None = None
        self._intervals: dict[str, NamedTimeInterval] = {}
        self._inhibitor = Inhibitor(())
        self._inhibits = False
        self._alerts_changed = True
        self._inhibitor_until = float("-inf")
        self._integrations: dict[IntegrationKey, Notifier[Any]] = {}
        self._dispatch: DispatcherTask | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self.silences: SilenceStore | None = None
        self.outbox: Outbox | None = None
        self.deliverer: Deliverer | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, settings: PipelineSettings) -> None:
        """Open the state, build the integrations and start dispatching and delivering
        (what was left in the outbox by the last run goes out now)."""
        alerting = settings.alerting
        retention = alerting.silences.retention if alerting is not None else 120 * 3600.0
        self.silences = SilenceStore(self._db_path, retention=retention, clock=self._clock)
        self.outbox = Outbox(self._db_path, clock=self._clock)
        self._session = aiohttp.ClientSession()
        self.deliverer = Deliverer(
            self.outbox,
            self._integration,
            policy=_policy(alerting),
            clock=self._clock,
            rng=self._rng,
            concurrency=alerting.delivery.concurrency if alerting is not None else 16,
        )
        await self.apply(settings)
        self.deliverer.start()
        self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop(), name="silence gc")

    async def apply(self, settings: PipelineSettings) -> None:
        """Use new settings (start and reload); the config was validated already."""
        assert self._session is not None, "start() first"
        alerting = settings.alerting
        old = self._integrations
        integrations: dict[IntegrationKey, Notifier[Any]] = {}
        context = NotifierContext(
            session=self._session,
            templates=settings.templates,
            external_url=settings.external_url,
            external_labels=Labels(settings.external_labels),
            resend_delay=settings.resend_delay,
        )
        if alerting is not None:
            for receiver in alerting.receivers:
                for kind, index, config in receiver.integrations():
                    integrations[(receiver.name, kind, index)] = self._build(config, context)
        self._settings = settings
        self._route = Route.from_config(alerting.route) if alerting is not None else None
        self._intervals = alerting.time_interval_map() if alerting is not None else {}
        rules = alerting.inhibit_rules if alerting is not None else ()
        self._inhibitor = Inhibitor(rules)
        self._inhibits = bool(rules)
        self._alerts_changed = True
        self._integrations = integrations
        if self.deliverer is not None and alerting is not None:
            self.deliverer.policy = _policy(alerting)
        if self._dispatch is not None:
            await self._dispatch.stop()
            self._dispatch = None
        if self._route is not None:
            self._dispatch = DispatcherTask(Dispatcher(self._route, self._clock))
            self._dispatch.start(self._on_flush)
            self._dispatch.put(self._held())
        for integration in old.values():
            await _close_quietly(integration)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop dispatching, let deliveries in flight finish up to ``grace``, and close
        everything; what is undelivered stays in the outbox for the next start."""
        if self._gc_task is not None:
            self._gc_task.cancel()
            await asyncio.gather(self._gc_task, return_exceptions=True)
            self._gc_task = None
        if self._dispatch is not None:
            await self._dispatch.stop()
            self._dispatch = None
        if self.deliverer is not None:
            await self.deliverer.stop(grace)
        for integration in self._integrations.values():
            await _close_quietly(integration)
        self._integrations = {}
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.outbox is not None:
            self.outbox.close()
        if self.silences is not None:
            self.silences.close()

    async def _gc_loop(self) -> None:
        while True:
            if self.silences is not None:
                try:
                    removed = self.silences.gc()
                except SilenceError as exc:
                    log.error("%s", exc)
                else:
                    if removed:
                        log.info("deleted %d silences expired beyond their retention", removed)
            await asyncio.sleep(SILENCE_GC_INTERVAL)

    def _build(self, config: NotifierConfig, context: NotifierContext) -> Notifier[Any]:
        cls = self._kinds.get(config.type)
        return cls(config, context)

    def _integration(self, receiver: str, kind: str, index: int) -> Notifier[Any] | None:
        return self._integrations.get((receiver, kind, index))

    # --- alerts in ----------------------------------------------------------------------------

    def send(self, alerts: Sequence[Alert]) -> None:
        """Take the rules' alerts (the :class:`~rules.manager.AlertSink` hand-off)."""
        now = self._clock()
        incoming = [_incoming(a, now) for a in alerts]
        for alert in incoming:
            self._alerts[alert.fingerprint] = alert
        self._alerts_changed = True
        self._forget_old(now)

        if self._route is None:
            return
        self._send_ungrouped(incoming)
        if self._dispatch is not None:
            self._dispatch.put(incoming)

    def _held(self) -> list[IncomingAlert]:
        return list(self._alerts.values())

    def _forget_old(self, now: float) -> None:
        for fp, alert in list(self._alerts.items()):
            if alert.ends_at is not None and alert.ends_at < now - RESOLVED_RETENTION:
                del self._alerts[fp]

    def _send_ungrouped(self, alerts: Sequence[IncomingAlert]) -> None:
        ungrouped = {key for key, n in self._integrations.items() if not n.grouped}
        if not ungrouped or self._route is None or self.outbox is None:
            return
        now = self._clock()
        by_receiver: dict[str, list[NotifiedAlert]] = {}
        for alert in alerts:
            for route in self._route.match(alert.labels):
                by_receiver.setdefault(route.receiver, []).append(_notified(alert, now))
        for receiver, kind, index in sorted(ungrouped):
            routed = by_receiver.get(receiver)
            if not routed:
                continue
            notification = Notification(
                receiver=receiver,
                group_key=UNGROUPED_KEY,
                group_labels=Labels(),
                alerts=tuple(routed),
                external_url=self._settings.external_url,
            )
            self.outbox.enqueue(receiver, kind, index, notification, None)
        if self.deliverer is not None:
            self.deliverer.wake()

    # --- a flush ----------------------------------------------------------------------------

    async def _on_flush(self, flush: Flush) -> bool:
        """Alertmanager's notification pipeline for one aggregation group's flush."""
        now = self._clock()
        route = flush.route
        if self._time_muted(route, now):
            return True
        self._refresh_inhibitor(now)
        alerts = [a for a in flush.alerts if not self._muted(a.labels, now)]
        if not alerts or self.outbox is None:
            return True
        firing = {a.fingerprint for a in alerts if a.status == "firing"}
        resolved = {a.fingerprint for a in alerts if a.status == "resolved"}
        entry = LogEntry(frozenset(firing), frozenset(resolved), now)
        for (receiver, kind, index), integration in sorted(self._integrations.items()):
            if receiver != route.receiver or not integration.grouped:
                continue
            send_resolved = integration.config.send_resolved
            key = f"{kind}[{index}]"
            last = self.outbox.log_entry(flush.group_key, receiver, key)
            if not needs_update(last, firing, resolved, send_resolved, route.repeat_interval, now):
                continue
            chosen = alerts if send_resolved else [a for a in alerts if a.status == "firing"]
            notification = Notification(
                receiver=receiver,
                group_key=flush.group_key,
                group_labels=flush.group_labels,
                alerts=tuple(chosen),
                external_url=self._settings.external_url,
            )
            if chosen:
                self.outbox.enqueue(receiver, kind, index, notification, entry)
            else:  # all resolved, not sent here: only the log learns it
                self.outbox.record(flush.group_key, receiver, key, entry)
        if self.deliverer is not None:
            self.deliverer.wake()
        return True

    def _time_muted(self, route: Route, now: float) -> bool:
        moment = datetime.fromtimestamp(now, UTC)
        for name in route.mute_time_intervals:
            interval = self._intervals.get(name)
            if interval is not None and interval.contains(moment):
                return True
        active = route.active_time_intervals
        if active:
            intervals = [self._intervals[n] for n in active if n in self._intervals]
            return not any(i.contains(moment) for i in intervals)
        return False

    def _muted(self, labels: Labels, now: float) -> bool:
        """Inhibited or silenced (the inhibitor refreshed by the caller)."""
        if self._inhibitor.inhibited_by(labels):
            return True
        return self.silences is not None and bool(self.silences.mutes(labels, now))

    def _refresh_inhibitor(self, now: float) -> None:
        """Give the inhibitor the alerts firing at ``now``: when alerts arrived since the
        last time, or one of those it has ended by the clock; else it is up to date."""
        if not self._inhibits or (not self._alerts_changed and now < self._inhibitor_until):
            return
        firing = [a for a in self._alerts.values() if not a.resolved(now)]
        self._inhibitor.update((a.fingerprint, a.labels) for a in firing)
        ends = [a.ends_at for a in firing if a.ends_at is not None]
        self._inhibitor_until = min(ends, default=float("inf"))
        self._alerts_changed = False

    # --- views ------------------------------------------------------------------------------

    def register(self, app: web.Application) -> None:
        """Add ``GET /api/v2/alerts`` (Alertmanager's, for ``monitord alerts`` and amtool)."""
        app.router.add_get("/api/v2/alerts", self._get_alerts)

    async def _get_alerts(self, request: web.Request) -> web.Response:
        """Alertmanager's query: ``filter`` matchers, and ``active``, ``silenced``,
        ``inhibited`` (each true by default) choosing which states to list."""
        try:
            wanted = Matchers.of(*(parse_matchers(f) for f in request.query.getall("filter", [])))
        except MatcherError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        show = {
            key: request.query.get(key, "true").lower() != "false"
            for key in ("active", "silenced", "inhibited")
        }
        views = [
            view
            for view in self.alerts()
            if wanted.matches(view.alert.labels)
            and (show["silenced"] or not view.silenced_by)
            and (show["inhibited"] or not view.inhibited_by)
            and (show["active"] or view.state != "active")
        ]
        return web.json_response(held_alerts(views))

    def alerts(self, *, include_resolved: bool = False) -> list[AlertView]:
        """The alerts held, with their receivers and what silences or inhibits them."""
        now = self._clock()
        self._refresh_inhibitor(now)
        views = []
        held = sorted(self._alerts.values(), key=lambda a: (a.labels.items_tuple(), a.fingerprint))
        for alert in held:
            if alert.resolved(now) and not include_resolved:
                continue
            routes = self._route.match(alert.labels) if self._route is not None else []
            silenced = self.silences.mutes(alert.labels, now) if self.silences else []
            views.append(
                AlertView(
                    alert=alert,
                    receivers=tuple(dict.fromkeys(r.receiver for r in routes)),
                    silenced_by=tuple(silenced),
                    inhibited_by=tuple(self._inhibitor.inhibited_by(alert.labels)),
                )
            )
        return views


def _policy(alerting: AlertingConfig | None) -> RetryPolicy:
    if alerting is None:
        return RetryPolicy()
    delivery = alerting.delivery
    return RetryPolicy(
        initial=delivery.initial_backoff, cap=delivery.max_backoff, max_age=delivery.max_age
    )


def _incoming(alert: Alert, now: float) -> IncomingAlert:
    starts = alert.starts_at if alert.starts_at is not None else alert.active_at
    ends = alert.ends_at / 1000 if alert.ends_at is not None else None
    if alert.resolved_at is not None and ends is not None:
        # Resolved by now: a resolved_at rounded to the millisecond may lie a little ahead
        # of this clock, and a not-yet-resolved version would keep the older, later end.
        ends = min(ends, now)
    return IncomingAlert(
        labels=alert.labels,
        annotations=alert.annotations,
        starts_at=starts / 1000,
        ends_at=ends,
        generator_url=alert.generator_url,
        updated_at=now,
    )


def _notified(alert: IncomingAlert, now: float) -> NotifiedAlert:
    return NotifiedAlert(
        status="resolved" if alert.resolved(now) else "firing",
        labels=alert.labels,
        annotations=alert.annotations,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        generator_url=alert.generator_url,
        fingerprint=alert.fingerprint,
    )


async def _close_quietly(integration: Notifier[Any]) -> None:
    try:
        await integration.aclose()
    except Exception:  # a plugin's close must not stop a reload
        log.exception("closing the %s integration failed", integration.kind)


def held_alerts(views: Iterable[AlertView]) -> list[dict[str, Any]]:
    """Alertmanager's GET /api/v2/alerts body (gettableAlerts) for these views."""
    out = []
    for view in views:
        alert = view.alert
        out.append(
            {
                "annotations": dict(alert.annotations),
                "endsAt": format_go_time(alert.ends_at),
                "fingerprint": alert.fingerprint,
                "receivers": [{"name": name} for name in view.receivers],
                "startsAt": format_go_time(alert.starts_at),
                "status": {
                    "inhibitedBy": list(view.inhibited_by),
                    "silencedBy": list(view.silenced_by),
                    "state": view.state,
                },
                "updatedAt": format_go_time(alert.updated_at),
                "generatorURL": alert.generator_url,
                "labels": dict(alert.labels),
            }
        )
    return out
