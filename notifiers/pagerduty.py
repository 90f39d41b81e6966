"""PagerDuty: Events API v2 ``trigger`` and ``resolve`` events, one incident per alert group.

Follows Alertmanager's PagerDuty integration (``notify/pagerduty/pagerduty.go``, v2 path;
defaults from ``config/notifiers.go`` and ``template/default.tmpl``, ported to Jinja2):

- ``event_action`` is ``trigger`` while any alert of the group fires, ``resolve`` once all
  are resolved; ``dedup_key`` is the SHA-256 hex of the group key (Alertmanager's
  ``notify.Key.Hash``), so every event of one group, across restarts, is one incident;
- ``payload.summary`` is ``description`` (default Alertmanager's ``__subject``) cut to
  1,024 characters, the last being "…" (``notify.Truncate``);
- ``payload.severity`` is the rendered ``severity`` (default ``error``, as Alertmanager's);
  written as a template such as ``{{ common_labels.severity }}`` it maps a label, and a
  value that is not one of PagerDuty's ``critical``, ``error``, ``warning``, ``info``
  (compared in lower case; an empty one too) becomes ``severity_default``;
- ``payload.source`` is ``source``, else ``client`` (default ``monitord``, where
  Alertmanager says ``AlertManager``); ``client_url`` defaults to the external URL;
- ``payload.custom_details`` is ``details`` rendered, with Alertmanager's defaults for the
  keys not given: ``firing`` and ``resolved`` (each alert's labels, annotations and source
  as ``pagerduty.default.instances`` lists them), ``num_firing`` and ``num_resolved``; an
  event over PagerDuty's 512 kB loses its details for a note saying so, as in Alertmanager;
- ``links`` and ``images`` are templates too; one whose ``href``/``src`` renders empty is
  left out.

Unlike Alertmanager, a ``resolve`` event carries only ``routing_key``, ``event_action`` and
``dedup_key``: PagerDuty documents ``payload`` for ``trigger`` only and ignores the rest.
PagerDuty answers ``202``; other statuses are classified by
:func:`notifiers.base.check_response` (a 429's ``Retry-After`` goes to the outbox; a 400,
a malformed event, is not retried). The routing key is a secret: it never appears in
errors, logs or the config dump.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Final, Literal, Self

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from monitor.log import get_logger
from monitor.schema import ConfigModel, Duration, SecretFile, resolve_secret
from notifiers.base import (
    Delivery,
    DeliveryError,
    Notification,
    Notifier,
    NotifierConfig,
    NotifierContext,
    check_response,
    redact_url,
)
from notifiers.httpconfig import HttpClientConfig
from notifiers.templates import SUBJECT, check_template

__all__ = [
    "DEFAULT_DETAILS",
    "DEFAULT_URL",
    "MAX_EVENT_BYTES",
    "SEVERITIES",
    "SUMMARY_MAX_CHARS",
    "PagerDutyConfig",
    "PagerDutyImage",
    "PagerDutyLink",
    "PagerDutyNotifier",
    "dedup_key",
]

log = get_logger("notifiers.pagerduty")

DEFAULT_URL: Final = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX_CHARS: Final = 1024
MAX_EVENT_BYTES: Final = 512_000
"""PagerDuty's limit on one event (Alertmanager's ``maxEventSize``)."""
SEVERITIES: Final = ("critical", "error", "warning", "info")

Severity = Literal["critical", "error", "warning", "info"]


def _alert_list(alerts: str) -> str:
    """Alertmanager's ``__text_alert_list`` over the template variable ``alerts``."""
    return (
        f"{{% for a in {alerts} %}}Labels:\n"
        "{% for k, v in a.labels | dictsort(true) %} - {{ k }} = {{ v }}\n"
        "{% endfor %}Annotations:\n"
        "{% for k, v in a.annotations | dictsort(true) %} - {{ k }} = {{ v }}\n"
        "{% endfor %}Source: {{ a.generator_url }}\n"
        "{% endfor %}"
    )


DEFAULT_DETAILS: Final = {
    "firing": _alert_list("firing"),
    "resolved": _alert_list("resolved"),
    "num_firing": "{{ firing | length }}",
    "num_resolved": "{{ resolved | length }}",
}
"""Alertmanager's ``DefaultPagerdutyDetails``, added for every key ``details`` lacks."""


def _template(value: str) -> str:
    error = check_template(value)
    if error is not None:
        raise ValueError(f"bad template: {error}")
    return value


class PagerDutyLink(ConfigModel):
    """A link shown on the incident."""

    href: str
    text: str = ""

    @field_validator("href", "text")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _template(value)


class PagerDutyImage(ConfigModel):
    """An image shown on the incident."""

    src: str
    alt: str = ""
    href: str = ""

    @field_validator("src", "alt", "href")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _template(value)


class PagerDutyConfig(NotifierConfig):
    """One ``pagerduty_configs`` entry (Alertmanager's ``PagerdutyConfig``, Events API v2)."""

    type: Literal["pagerduty"] = "pagerduty"
    send_resolved: bool = Field(default=True, description="notify when the alerts resolve")
    routing_key: SecretStr | None = Field(
        default=None, description="the integration key of an Events API v2 integration"
    )
    routing_key_file: SecretFile | None = None
    url: str = Field(default=DEFAULT_URL, description="the Events API v2 endpoint")
    client: str = Field(default="monitord", description="the monitoring client's name")
    client_url: str = Field(default="{{ external_url }}", description="a link to the client")
    description: str = Field(default=SUBJECT, description="the summary, cut to 1,024 chars")
    severity: str = Field(
        default="error", description="critical, error, warning or info; may be a template"
    )
    severity_default: Severity = Field(
        default="error", description="used when severity renders to something else"
    )
    source: str | None = Field(default=None, description="the affected system; default client")
    component: str = ""
    group: str = ""
    class_: str = Field(default="", alias="class")
    details: dict[str, str] = Field(
        default_factory=dict, description="custom_details; Alertmanager's keys are added"
    )
    links: tuple[PagerDutyLink, ...] = ()
    images: tuple[PagerDutyImage, ...] = ()
    http_config: HttpClientConfig = Field(default_factory=HttpClientConfig)
    timeout: Duration = Field(default=10.0, description="for the whole request")

    @field_validator(
        "client", "client_url", "description", "severity", "source", "component", "group", "class_"
    )
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _template(value)

    @field_validator("details")
    @classmethod
    def _details_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for key, source in value.items():
            error = check_template(source)
            if error is not None:
                raise ValueError(f"details.{key}: bad template: {error}")
        return value

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self._check_secret_pair("routing_key")
        if self.key() is None:
            raise ValueError("set routing_key or routing_key_file")
        parsed = URL(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be an http or https URL")
        return self

    def key(self) -> SecretStr | None:
        """The routing key, from ``routing_key`` or ``routing_key_file``."""
        return resolve_secret(self.routing_key, self.routing_key_file)

    def all_details(self) -> dict[str, str]:
        """``details`` with Alertmanager's default keys added where missing."""
        return {**DEFAULT_DETAILS, **self.details}


def dedup_key(group_key: str) -> str:
    """The incident key of an alert group: SHA-256 hex of its key (``notify.Key.Hash``)."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PagerDutyNotifier(Notifier[PagerDutyConfig]):
    """Sends each notification to PagerDuty's Events API v2."""

    config_model: ClassVar[type[NotifierConfig]] = PagerDutyConfig

    def __init__(self, config: PagerDutyConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        secret = config.key()
        assert secret is not None  # the model requires one
        self._key = secret.get_secret_value()
        self._where = f"pagerduty {redact_url(config.url)}"

    def event(self, notification: Notification) -> dict[str, Any]:
        """The Events API v2 body for ``notification``."""
        config = self.config
        key = dedup_key(notification.group_key)
        if notification.status == "resolved":
            return {"routing_key": self._key, "event_action": "resolve", "dedup_key": key}

        def render(field: str, source: str) -> str:
            try:
                rendered: str = self.context.templates.render(source, notification)
            except Exception as exc:  # a template may raise anything (a filter on bad input)
                raise DeliveryError(
                    f"{self._where}: template {field}: {exc}", retryable=False
                ) from exc
            return rendered.strip()

        severity = render("severity", config.severity).lower()
        payload: dict[str, Any] = {
            "summary": _truncate(render("description", config.description), SUMMARY_MAX_CHARS),
            "source": render("source", config.source if config.source else config.client),
            "severity": severity if severity in SEVERITIES else config.severity_default,
        }
        for name, source in (
            ("component", config.component),
            ("group", config.group),
            ("class", config.class_),
        ):
            value = render(name, source)
            if value:
                payload[name] = value
        payload["custom_details"] = {
            k: render(f"details.{k}", v) for k, v in config.all_details().items()
        }
        event: dict[str, Any] = {
            "routing_key": self._key,
            "event_action": "trigger",
            "dedup_key": key,
            "payload": payload,
        }
        for name, source in (("client", config.client), ("client_url", config.client_url)):
            value = render(name, source)
            if value:
                event[name] = value
        links = [
            {"href": render("links.href", link.href), "text": render("links.text", link.text)}
            for link in config.links
        ]
        if links := [link for link in links if link["href"]]:
            event["links"] = links
        images = []
        for image in config.images:
            rendered = {
                "src": render("images.src", image.src),
                "alt": render("images.alt", image.alt),
                "href": render("images.href", image.href),
            }
            if rendered["src"]:
                images.append({k: v for k, v in rendered.items() if v})
        if images:
            event["images"] = images
        return event

    def encode(self, event: dict[str, Any]) -> bytes:
        """``event`` as JSON; over PagerDuty's size limit, without its custom details."""
        body = json.dumps(event, ensure_ascii=False).encode()
        if len(body) > MAX_EVENT_BYTES and "payload" in event:
            log.warning(
                "%s: event of %d bytes over the limit of %d: custom details removed",
                self._where,
                len(body),
                MAX_EVENT_BYTES,
            )
            event["payload"]["custom_details"] = {
                "error": "Custom details have been removed because the original event "
                f"exceeds the maximum size of {MAX_EVENT_BYTES // 1000}kB"
            }
            body = json.dumps(event, ensure_ascii=False).encode()
        return body

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """Send the trigger or resolve event."""
        body = self.encode(self.event(notification))
        http = self.config.http_config
        headers = {"Content-Type": "application/json", **http.headers()}
        try:
            async with self.context.session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                **http.request_options(),
            ) as response:
                await check_response(response, self._where)
        except DeliveryError as exc:
            raise self._scrubbed(exc) from None
        except TimeoutError as exc:
            raise DeliveryError(
                f"{self._where}: no answer within {self.config.timeout:g}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._scrubbed(DeliveryError(f"{self._where}: {exc}")) from exc

    def _scrubbed(self, error: DeliveryError) -> DeliveryError:
        """``error`` with the routing key and the URL's path blotted out of its message."""
        message = str(error).replace(self._key, "<redacted>")
        parsed = URL(self.config.url)
        for secret in (self.config.url, parsed.raw_path_qs, parsed.path_qs):
            if secret and secret != "/":
                message = message.replace(secret, "/<redacted>")
        if message == str(error):
            return error
        return DeliveryError(
            message, retryable=error.retryable, retry_after=error.retry_after, status=error.status
        )
