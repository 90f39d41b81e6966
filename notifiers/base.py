"""What every receiver integration builds on: the notification it is handed, the base class
a kind extends, how it reports a failed delivery, and the HTTP and fingerprint helpers the
integrations share.

A *receiver* (``receivers[].name``) has *integrations* (``webhook_configs[0]``,
``slack_configs[1]``...), each an instance of one :class:`Notifier` kind. The dispatcher
hands each integration one :class:`Notification` per aggregation group flush; the outbox
calls :meth:`Notifier.notify` until it returns (delivered) or raises a
:class:`DeliveryError` that is not retryable.
"""

from __future__ import annotations

import abc
import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Literal, Self, TypeVar

import aiohttp
from pydantic import Field
from yarl import URL

from monitor.model import Labels
from monitor.schema import ConfigModel

__all__ = [
    "PERMANENT_HTTP_STATUSES",
    "Delivery",
    "DeliveryError",
    "LogEntry",
    "Notification",
    "NotifiedAlert",
    "Notifier",
    "NotifierConfig",
    "NotifierContext",
    "check_response",
    "fingerprint",
    "parse_retry_after",
    "redact_url",
]

AlertStatus = Literal["firing", "resolved"]

PERMANENT_HTTP_STATUSES: Final = frozenset({400, 401, 403, 404, 410})
"""Answers that retrying cannot change: the notification is given up at once."""

_FNV_OFFSET: Final = 14695981039346656037
_FNV_PRIME: Final = 1099511628211
_SEPARATOR: Final = b"\xff"


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label names and values,
    each followed by a 0xff byte (``model.LabelSet.Fingerprint``), as 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), _SEPARATOR, labels[name].encode(), _SEPARATOR):
            for byte in part:
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass(frozen=True, slots=True)
class NotifiedAlert:
    """One alert as a notification carries it (Alertmanager's ``template.Alert``).

    Times are epoch seconds; ``ends_at`` is None for Go's zero time. ``status`` was
    decided when the group was flushed: resolved when ``ends_at`` had passed.
    """

    status: AlertStatus
    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""
    fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, for the outbox."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotifiedAlert:
        """The inverse of :meth:`to_json`."""
        return cls(
            status=data["status"],
            labels=Labels(data["labels"]),
            annotations=Labels(data["annotations"]),
            starts_at=data["startsAt"],
            ends_at=data["endsAt"],
            generator_url=data["generatorURL"],
            fingerprint=data["fingerprint"],
        )


def _common(maps: Iterable[Mapping[str, str]]) -> Labels:
    """The pairs every mapping has, with the same value (Alertmanager's ``Common*``)."""
    it = iter(maps)
    first = next(it, None)
    if first is None:
        return Labels()
    common = dict(first)
    for other in it:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return Labels(common)


@dataclass(frozen=True, slots=True)
class Notification:
    """One aggregation group's alerts at one flush, for one receiver (Alertmanager's
    ``template.Data`` plus the group key)."""

    receiver: str
    group_key: str
    group_labels: Labels
    alerts: tuple[NotifiedAlert, ...]
    external_url: str = ""

    @property
    def status(self) -> AlertStatus:
        """``firing`` while any alert fires, else ``resolved``."""
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> tuple[NotifiedAlert, ...]:
        """The firing alerts."""
        return tuple(a for a in self.alerts if a.status == "firing")

    @property
    def resolved(self) -> tuple[NotifiedAlert, ...]:
        """The resolved alerts."""
        return tuple(a for a in self.alerts if a.status == "resolved")

    @property
    def common_labels(self) -> Labels:
        """The labels every alert has with the same value."""
        return _common(a.labels for a in self.alerts)

    @property
    def common_annotations(self) -> Labels:
        """The annotations every alert has with the same value."""
        return _common(a.annotations for a in self.alerts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, for the outbox."""
        return {
            "receiver": self.receiver,
            "groupKey": self.group_key,
            "groupLabels": dict(self.group_labels),
            "alerts": [a.to_json() for a in self.alerts],
            "externalURL": self.external_url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        """The inverse of :meth:`to_json`."""
        return cls(
            receiver=data["receiver"],
            group_key=data["groupKey"],
            group_labels=Labels(data["groupLabels"]),
            alerts=tuple(NotifiedAlert.from_json(a) for a in data["alerts"]),
            external_url=data["externalURL"],
        )

    def dumps(self) -> str:
        """:meth:`to_json` as a compact JSON string."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """What the notification log remembers of the last notification of one aggregation group
    to one integration (Alertmanager's ``nflogpb.Entry``): the fingerprints of the alerts
    that were firing and resolved in it, and when it was sent."""

    firing: frozenset[str]
    resolved: frozenset[str]
    timestamp: float


def redact_url(url: str) -> str:
    """A URL fit for logs and errors: scheme, host and port only; the path, query and
    credentials may hold a token (Slack's and many webhooks' do)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "<redacted>"
    if not parsed.scheme or not parsed.host:
        return "<redacted>"
    port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}/<redacted>"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Which attempt this is at delivering one outbox entry.

    ``id`` is the entry's id: stable across retries and restarts, so a receiver can
    deduplicate (the Standard Webhooks ``webhook-id``).
    """

    id: str
    attempt: int = 1
    first_attempt_at: float = field(default_factory=time.time)


class DeliveryError(Exception):
    """The receiver did not accept the notification.

    ``retryable`` false means retrying cannot help (a 400, a bad address): the outbox
    gives the notification up at once, with an error log. ``retry_after`` is the
    receiver's own wish (``Retry-After``), in seconds, which the outbox honours.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, moment.timestamp() - now)


async def check_response(response: aiohttp.ClientResponse, what: str) -> None:
    """Return if ``response`` is 2xx; else raise the :class:`DeliveryError` it means.

    429 and 5xx are retried (``Retry-After`` honoured); 400, 401, 403, 404 and 410 are
    not; other 4xx are retried. The message carries the start of the body, which is where
    receivers say what they disliked.
    """
    if 200 <= response.status < 300:
        return
    try:
        body = (await response.content.read(512)).decode("utf-8", "replace").strip()
    except (aiohttp.ClientError, OSError):
        body = ""
    message = f"{what}: HTTP {response.status}" + (f": {body}" if body else "")
    raise DeliveryError(
        message,
        retryable=response.status not in PERMANENT_HTTP_STATUSES,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        status=response.status,
    )


class NotifierConfig(ConfigModel):
    """Options every integration has; a kind subclasses this, narrows ``type`` to
    ``Literal["<kind>"]`` with that default, and sets ``send_resolved``'s default to
    Alertmanager's for that integration."""

    type: str
    send_resolved: bool = Field(default=True, description="notify when the alerts resolve")


@dataclass(frozen=True, slots=True)
class NotifierContext:
    """What the daemon lends every integration."""

    session: aiohttp.ClientSession
    """The shared HTTP client session; do not close it."""
    templates: Any
    """The :class:`notifiers.templates.Templates` of the config's ``templates:``."""
    external_url: str = ""
    external_labels: Labels = field(default_factory=Labels)
    resend_delay: float = 60.0
    """How often firing alerts are handed over again (``rule_evaluation.resend_delay``)."""


N = TypeVar("N", bound=NotifierConfig)


class Notifier(abc.ABC, Generic[N]):
    """One integration of a receiver: turns a notification into a message and delivers it.

    Registered under the ``monitord.notifiers`` entry point by its kind (``webhook``);
    configured as ``<kind>_configs`` in a receiver.
    """

    config_model: ClassVar[type[NotifierConfig]]
    grouped: ClassVar[bool] = True
    """False for a kind that takes every alert at each hand-off from the rules rather than
    one message per aggregation group flush (the ``alertmanager`` kind)."""

    def __init__(self, config: N, context: NotifierContext) -> None:
        self.config = config
        self.context = context

    @property
    def kind(self) -> str:
        """The integration's kind."""
        return self.config.type

    @abc.abstractmethod
    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """Deliver ``notification``; return once the receiver accepted it, raise
        :class:`DeliveryError` otherwise. Never log secrets or put them in the error."""

    async def aclose(self) -> None:
        """Release what the integration holds; called once when it is replaced."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
