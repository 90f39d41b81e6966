"""The ``webhook`` receiver: Alertmanager's generic webhook, its version-4 JSON payload
byte for byte, optionally signed as Standard Webhooks.

What it copies from Alertmanager (``notify/webhook/webhook.go``, ``template/template.go``,
``notify/notify.go``):

- The body is ``webhook.Message``: ``template.Data`` (``receiver``, ``status``, ``alerts``,
  ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``) followed by
  ``version`` ``"4"``, ``groupKey`` and ``truncatedAlerts``, in that key order, label maps
  sorted by name, encoded as Go's ``json.Encoder`` does (``<``, ``>`` and ``&`` escaped as
  ``\\u003c``..., a trailing newline). ``receiver`` is ``regexp.QuoteMeta`` of the name, as
  ``Template.Data`` writes it.
- Each alert has ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
  ``generatorURL`` and ``fingerprint``. Times are Go's ``time.Time`` JSON in UTC (RFC 3339,
  fraction trimmed of zeros, here to the microsecond a float holds); a firing alert's
  ``endsAt`` is Go's zero time ``0001-01-01T00:00:00Z`` (``types.Alerts`` hides an end
  that has not been reached), as is a missing end.
- ``max_alerts`` (0: all) keeps the first alerts and counts the others in
  ``truncatedAlerts``; status and the common labels are those of the alerts kept
  (``truncateAlerts`` runs before ``GetTemplateData``).
- ``send_resolved: false`` (the default is true) does what ``RetryStage`` does: with no
  firing alert nothing is sent, otherwise only the firing alerts are.
- 2xx is delivered; the rest is classified by :func:`notifiers.base.check_response`;
  connection errors and timeouts are retried.

Beyond Alertmanager: custom ``headers``, a ``timeout``, and Standard Webhooks signatures
(https://www.standardwebhooks.com/): with ``signing_secret`` (``whsec_<base64 key>``) every
request carries ``webhook-id`` (the delivery's id, the same on every retry),
``webhook-timestamp`` (the attempt's Unix time) and ``webhook-signature: v1,<base64
HMAC-SHA256 of "<id>.<timestamp>.<body>">``.

The URL is a secret (many webhook URLs hold a token): it appears in errors and logs only
as ``scheme://host:port/<redacted>``, and in the config dump as ``**********``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, Self

import aiohttp
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

import monitor
from monitor.schema import Duration, SecretFile, resolve_secret
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
    "GO_ZERO_TIME",
    "RESERVED_HEADERS",
    "WebhookConfig",
    "WebhookNotifier",
    "encode_go_json",
    "format_go_time",
    "sign",
    "webhook_message",
]

GO_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""Go's zero ``time.Time`` in JSON: Alertmanager's "no end"."""

RESERVED_HEADERS: Final = frozenset(
    {"content-type", "authorization", "webhook-id", "webhook-timestamp", "webhook-signature"}
)
"""Headers the receiver sets itself, which ``headers`` may not override (compared
case-insensitively)."""

_SECRET_PREFIX: Final = "whsec_"
_GO_REGEXP_META: Final = frozenset("\\.+*?()|[]{}^$")


def format_go_time(seconds: float | None) -> str:
    """An epoch time as Go's ``time.Time`` marshals to JSON in UTC: RFC 3339, the fraction
    without trailing zeros (to the microsecond), ``None`` as the zero time."""
    if seconds is None:
        return GO_ZERO_TIME
    micros = round(seconds * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += f".{fraction:06d}".rstrip("0")
    return text + "Z"


def _quote_meta(text: str) -> str:
    """Go's ``regexp.QuoteMeta``."""
    return "".join("\\" + c if c in _GO_REGEXP_META else c for c in text)


def encode_go_json(value: Any) -> bytes:
    """``value`` encoded as Go's ``json.NewEncoder(w).Encode`` writes it: compact, UTF-8,
    HTML-safe (``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u`` escapes), newline-ended.
    Key order is the mappings' own."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return (text + "\n").encode("utf-8", "replace")


def _sorted(labels: Mapping[str, str]) -> dict[str, str]:
    return {name: labels[name] for name in sorted(labels)}


def _alert(alert: NotifiedAlert) -> dict[str, Any]:
    return {
        "status": alert.status,
        "labels": _sorted(alert.labels),
        "annotations": _sorted(alert.annotations),
        "startsAt": format_go_time(alert.starts_at),
        "endsAt": format_go_time(None if alert.status == "firing" else alert.ends_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def webhook_message(notification: Notification, max_alerts: int = 0) -> dict[str, Any]:
    """Alertmanager's version-4 webhook message for ``notification``, keys in Go's order;
    at most ``max_alerts`` alerts (0: all), the rest counted in ``truncatedAlerts``."""
    alerts = notification.alerts
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        notification = replace(notification, alerts=alerts[:max_alerts])
    return {
        "receiver": _quote_meta(notification.receiver),
        "status": notification.status,
        "alerts": [_alert(a) for a in notification.alerts],
        "groupLabels": _sorted(notification.group_labels),
        "commonLabels": _sorted(notification.common_labels),
        "commonAnnotations": _sorted(notification.common_annotations),
        "externalURL": notification.external_url,
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": truncated,
    }


def _signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ``ValueError`` (not naming the secret)
    when it has another form."""
    if not secret.startswith(_SECRET_PREFIX):
        raise ValueError("signing secret must have the form whsec_<base64 key>")
    try:
        key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret: the part after whsec_ is not valid base64") from None
    if not key:
        raise ValueError("signing secret: the key after whsec_ is empty")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,`` and the base64
    HMAC-SHA256 of ``<id>.<timestamp>.<body>``."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _check_http_url(url: str, what: str) -> None:
    """Refuse anything but an absolute http(s) URL, without echoing it (it is a secret)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")


class WebhookConfig(NotifierConfig):
    """One ``webhook_configs`` entry."""

    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["webhook"] = "webhook"
    send_resolved: bool = Field(default=True, description="notify when the alerts resolve")
    url: SecretStr | None = Field(default=None, description="where to POST; a secret")
    url_file: SecretFile | None = Field(default=None, description="a file holding the URL")
    max_alerts: int = Field(default=0, ge=0, description="alerts per message; 0 for all")
    http_config: HttpClientConfig = Field(default_factory=HttpClientConfig)
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout: Duration = Field(default=10.0, gt=0, description="for the whole request")
    signing_secret: SecretStr | None = Field(
        default=None, description="Standard Webhooks secret, whsec_<base64 key>"
    )
    signing_secret_file: SecretFile | None = None

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the receiver and cannot be given")
            if not name or any(c in name for c in ":\r\n \t") or any(c in value for c in "\r\n"):
                raise ValueError(f"header {name!r}: invalid name or value")
        return headers

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        _check_http_url(self.target().get_secret_value(), "url")
        self._check_secret_pair("signing_secret")
        secret = resolve_secret(self.signing_secret, self.signing_secret_file)
        if secret is not None:
            _signing_key(secret.get_secret_value())
        return self

    def target(self) -> SecretStr:
        """The URL to POST to."""
        url = resolve_secret(self.url, self.url_file)
        assert url is not None  # the validator requires one
        return url

    def signing_key(self) -> bytes | None:
        """The Standard Webhooks HMAC key, or None when requests are not signed."""
        secret = resolve_secret(self.signing_secret, self.signing_secret_file)
        return None if secret is None else _signing_key(secret.get_secret_value())


def _scrub(text: str, url: str) -> str:
    """``text`` with every spelling of ``url`` and its path and query taken out."""
    parsed = URL(url)
    secrets = {url, str(parsed), parsed.human_repr(), parsed.raw_path_qs, parsed.path_qs}
    for secret in sorted(secrets - {"", "/"}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


class WebhookNotifier(Notifier[WebhookConfig]):
    """POSTs Alertmanager's version-4 webhook message, optionally signed."""

    config_model = WebhookConfig

    def __init__(
        self,
        config: WebhookConfig,
        context: NotifierContext,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, context)
        self._clock = clock
        self._url = config.target().get_secret_value()
        self._what = f"webhook {redact_url(self._url)}"
        self._key = config.signing_key()

    def __repr__(self) -> str:
        return f"<WebhookNotifier {redact_url(self._url)}>"

    def _alerts_to_send(self, alerts: Sequence[NotifiedAlert]) -> tuple[NotifiedAlert, ...]:
        """``RetryStage``'s filter: without ``send_resolved``, only the firing alerts."""
        if self.config.send_resolved:
            return tuple(alerts)
        return tuple(a for a in alerts if a.status == "firing")

    def payload(self, notification: Notification) -> bytes | None:
        """The request body for ``notification``, or None when there is nothing to send."""
        alerts = self._alerts_to_send(notification.alerts)
        if not alerts:
            return None
        message = webhook_message(replace(notification, alerts=alerts), self.config.max_alerts)
        return encode_go_json(message)

    def headers(self, body: bytes, delivery: Delivery) -> dict[str, str]:
        """The request headers: custom ones, authentication, JSON, the signature."""
        headers = {**self.config.headers, **self.config.http_config.headers()}
        headers["Content-Type"] = "application/json"
        headers.setdefault("User-Agent", f"monitord/{monitor.__version__}")
        if self._key is not None:
            timestamp = int(self._clock())
            headers["webhook-id"] = delivery.id
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._key, delivery.id, timestamp, body)
        return headers

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """POST the message; raise :class:`DeliveryError` unless the receiver answers 2xx."""
        body = self.payload(notification)
        if body is None:
            return
        options = self.config.http_config.request_options()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self.context.session.post(
                self._url,
                data=body,
                headers=self.headers(body, delivery),
                timeout=timeout,
                **options,
            ) as response:
                await check_response(response, self._what)
        except TimeoutError as exc:
            message = f"{self._what}: no answer within {self.config.timeout:g}s"
            raise DeliveryError(message) from exc
        except (aiohttp.ClientError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            detail = _scrub(text, self._url)
            # An error whose text names the URL is not chained: its traceback would show it.
            raise DeliveryError(f"{self._what}: {detail}") from (exc if detail == text else None)
