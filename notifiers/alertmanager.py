"""The ``alertmanager`` receiver: hands alerts on to one or more Alertmanagers, as
Prometheus' notifier does (``notifier/notifier.go``) — the path for running monitord under
an existing Alertmanager cluster.

The kind is not grouped (:attr:`AlertmanagerNotifier.grouped` is false): at each hand-off
from the rules manager (every ``resend_delay`` while an alert fires, and once when it
resolves) it is given every alert routed to its receiver, and it POSTs them to
``<url>/api/v2/alerts`` of every configured Alertmanager at once, as Prometheus' alert
JSON: a list of ``{labels, annotations, startsAt, endsAt, generatorURL}``, at most 256
alerts per request (Prometheus' ``maxBatchSize``). A firing alert's ``endsAt`` is its
``ends_at`` (the rule's ``valid_until``, so Alertmanager resolves it by itself if monitord
stops re-sending); a resolved alert's is its resolution time, which is what resolves it
in Alertmanager. External labels (``context.external_labels``) are added to an alert
that lacks them, as Prometheus adds its ``external_labels``.

Every configured Alertmanager must receive every alert, so ``send_resolved`` is always
true for this kind: ``send_resolved: false`` is refused at load time (Alertmanager would
otherwise keep a resolved alert firing until its ``endsAt``). When some Alertmanagers do
not accept a delivery, the notifier remembers (in memory, per delivery id) which ones
did; the retry posts only to the others, and the error names the failed ones by
``scheme://host:port/<redacted>``. After a restart a retry posts to all of them again,
which Alertmanager takes as a harmless repeat (alerts are merged by fingerprint).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp
from pydantic import ConfigDict, Field, field_validator
from yarl import URL

import monitor
from monitor.log import get_logger
from monitor.schema import Duration
from notifiers.base import (
    Delivery,
    DeliveryError,
    Notification,
    NotifiedAlert,
    Notifier,
    NotifierConfig,
    NotifierContext,
    check_response,
    redact_url,
)
from notifiers.httpconfig import HttpClientConfig

__all__ = [
    "ALERTS_PATH",
    "MAX_BATCH_SIZE",
    "AlertmanagerConfig",
    "AlertmanagerNotifier",
    "prometheus_alert",
]

ALERTS_PATH: Final = "/api/v2/alerts"
"""Where under an Alertmanager's base URL alerts are posted."""

MAX_BATCH_SIZE: Final = 256
"""Alerts per request, as Prometheus' notifier batches them."""

_REMEMBERED: Final = 4096
"""Deliveries whose partial success is remembered; the oldest are forgotten first."""

log = get_logger("notifiers.alertmanager")


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def prometheus_alert(alert: NotifiedAlert, external_labels: Mapping[str, str]) -> dict[str, Any]:
    """``alert`` as Prometheus' notifier posts it, with the external labels it lacks."""
    labels = {**external_labels, **alert.labels}
    body: dict[str, Any] = {
        "labels": {name: labels[name] for name in sorted(labels)},
        "annotations": dict(alert.annotations),
        "startsAt": _rfc3339(alert.starts_at),
    }
    if alert.ends_at is not None:
        body["endsAt"] = _rfc3339(alert.ends_at)
    if alert.generator_url:
        body["generatorURL"] = alert.generator_url
    return body


class AlertmanagerConfig(NotifierConfig):
    """One ``alertmanager_configs`` entry: the Alertmanagers that all receive every alert."""

    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["alertmanager"] = "alertmanager"
    send_resolved: bool = Field(
        default=True, description="always true: Alertmanager must hear of every resolution"
    )
    urls: list[str] = Field(
        min_length=1, description="base URLs, e.g. http://127.0.0.1:9093 or with a path prefix"
    )
    timeout: Duration = Field(default=10.0, gt=0, description="for each request")
    http_config: HttpClientConfig = Field(default_factory=HttpClientConfig)

    @field_validator("send_resolved")
    @classmethod
    def _always_resolved(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "the alertmanager kind always sends resolved alerts (Alertmanager would keep "
                "them firing until their endsAt); remove send_resolved: false"
            )
        return value

    @field_validator("urls")
    @classmethod
    def _base_urls(cls, urls: list[str]) -> list[str]:
        for index, url in enumerate(urls):
            try:
                parsed = URL(url)
            except (TypeError, ValueError):
                raise ValueError(f"urls[{index}] is not a valid URL") from None
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"urls[{index}] must be an http:// or https:// URL with a host")
            if parsed.user is not None or parsed.password is not None:
                raise ValueError(
                    f"urls[{index}] holds credentials; give them in http_config.basic_auth"
                )
            if parsed.query_string or parsed.fragment:
                raise ValueError(f"urls[{index}] is a base URL: no query or fragment")
        normalized = [url.rstrip("/") for url in urls]
        if len(set(normalized)) != len(normalized):
            raise ValueError("urls lists the same Alertmanager twice")
        return urls


class AlertmanagerNotifier(Notifier[AlertmanagerConfig]):
    """Posts every alert to every configured Alertmanager."""

    config_model = AlertmanagerConfig
    grouped = False

    def __init__(self, config: AlertmanagerConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        self._accepted: OrderedDict[str, frozenset[str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"<AlertmanagerNotifier {', '.join(map(redact_url, self.config.urls))}>"

    def batches(self, notification: Notification) -> list[bytes]:
        """The request bodies for ``notification``: JSON lists of at most
        :data:`MAX_BATCH_SIZE` alerts."""
        alerts = [prometheus_alert(a, self.context.external_labels) for a in notification.alerts]
        return [
            json.dumps(alerts[i : i + MAX_BATCH_SIZE], separators=(",", ":")).encode()
            for i in range(0, len(alerts), MAX_BATCH_SIZE)
        ]

    def accepted(self, delivery_id: str) -> frozenset[str]:
        """The URLs that already accepted delivery ``delivery_id`` while others failed."""
        return self._accepted.get(delivery_id, frozenset())

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """POST the alerts to every Alertmanager that has not accepted them yet; raise
        :class:`DeliveryError` naming those that did not accept them now."""
        batches = self.batches(notification)
        if not batches:
            return
        done = self.accepted(delivery.id)
        pending = [url for url in self.config.urls if url not in done]
        if done:
            log.debug(
                "delivery %s: %d of %d Alertmanagers already have it",
                delivery.id,
                len(done),
                len(self.config.urls),
            )
        errors = await asyncio.gather(*(self._post_all(url, batches) for url in pending))
        failed = [(url, error) for url, error in zip(pending, errors, strict=True) if error]
        self._accepted.pop(delivery.id, None)
        if not failed:
            return
        failed_urls = {url for url, _ in failed}
        self._accepted[delivery.id] = frozenset(self.config.urls) - failed_urls
        while len(self._accepted) > _REMEMBERED:
            self._accepted.popitem(last=False)
        raise _combined([error for _, error in failed], len(self.config.urls))

    async def _post_all(self, url: str, batches: Sequence[bytes]) -> DeliveryError | None:
        """Post every batch to one Alertmanager; the error that stopped it, if any."""
        try:
            for body in batches:
                await self._post(url, body)
        except DeliveryError as exc:
            return exc
        return None

    async def _post(self, url: str, body: bytes) -> None:
        endpoint = url.rstrip("/") + ALERTS_PATH
        what = f"alertmanager {redact_url(url)}"
        headers = {
            **self.config.http_config.headers(),
            "Content-Type": "application/json",
            "User-Agent": f"monitord/{monitor.__version__}",
        }
        try:
            async with self.context.session.post(
                endpoint,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                **self.config.http_config.request_options(),
            ) as response:
                await check_response(response, what)
        except TimeoutError as exc:
            raise DeliveryError(f"{what}: no answer within {self.config.timeout:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # aiohttp's texts may quote the URL: say only what kind of failure it was.
            raise DeliveryError(f"{what}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    return type(exc).__name__


def _combined(errors: Sequence[DeliveryError], total: int) -> DeliveryError:
    """One error for the Alertmanagers that failed: retried while any failure is retryable,
    after the longest ``Retry-After`` any asked for."""
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    return DeliveryError(
        f"{len(errors)} of {total} Alertmanagers did not accept the alerts: "
        + "; ".join(str(e) for e in errors),
        retryable=any(e.retryable for e in errors),
        retry_after=max(waits) if waits else None,
        status=errors[0].status if len(errors) == 1 else None,
    )
