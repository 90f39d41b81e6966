"""The ``heartbeat`` receiver: a dead man's switch, pinged in the style of healthchecks.io.

A heartbeat service (healthchecks.io, Cronitor, Dead Man's Snitch, a PagerDuty or Opsgenie
heartbeat) expects a request to a secret URL at least every so often and raises the alarm
when the requests stop. This receiver makes that request (``GET``, or ``POST`` with a
short text body listing the alerts, which healthchecks.io keeps as the ping's log) for
every notification of a group with a firing alert.

How to use it: route the always-firing ``Watchdog`` alert of the ``monitord`` rule pack
to it, with ``repeat_interval`` shorter than the service's period (and a small
``group_interval``, which is how often ``repeat_interval`` is looked at)::

    rule_packs: [monitord]
    alerting:
      route:
        receiver: team
        routes:
          - matchers: ['alertname="Watchdog"']
            receiver: deadmans-switch
            group_wait: 0s
            group_interval: 30s
            repeat_interval: 1m
      receivers:
        - name: team
          ...
        - name: deadmans-switch
          heartbeat_configs:
            - url_file: /etc/monitord/healthchecks-url

The ping then happens every ``repeat_interval`` only while the whole pipeline works:
the scheduler and the rules evaluate ``Watchdog``, the store and the rule manager hand it
to the dispatcher, the dispatcher flushes its group, the outbox delivers. If any part
stops, or monitord or its host dies, the pings stop and the service raises the alarm.
Silencing or inhibiting ``Watchdog`` stops them too, which is the point.

A notification whose alerts are all resolved pings nothing by default
(``send_resolved: false``): for a dead man's switch silence is the signal. With
``send_resolved: true`` it requests the URL with ``/fail`` appended to its path
(healthchecks.io's failure signal), which raises the alarm at once rather than after the
service's grace time; ``Watchdog`` resolves when a reload removes it. Other services
have no such URL: keep ``send_resolved`` off for them.

The URL is a secret (it is the check's identity): errors and logs show it as
``scheme://host:port/<redacted>``, the config dump as ``**********``. Answers are judged
by :func:`notifiers.base.check_response` (2xx delivered; 400/401/403/404/410 given up;
others, timeouts and connection errors retried by the outbox).
"""

from __future__ import annotations

import urllib.parse
from typing import Final, Literal, Self

import aiohttp
from pydantic import ConfigDict, Field, SecretStr, model_validator

import monitor
from monitor.schema import Duration, SecretFile, resolve_secret
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

__all__ = ["FAIL_SUFFIX", "HeartbeatConfig", "HeartbeatNotifier", "fail_url"]

FAIL_SUFFIX: Final = "/fail"
"""Appended to the URL's path for an all-resolved notification with ``send_resolved``."""


class HeartbeatConfig(NotifierConfig):
    """One ``heartbeat_configs`` entry."""

    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["heartbeat"] = "heartbeat"
    send_resolved: bool = Field(
        default=False, description="when all alerts resolve, request the URL with /fail appended"
    )
    url: SecretStr | None = Field(default=None, description="the ping URL; a secret")
    url_file: SecretFile | None = Field(default=None, description="a file holding the URL")
    method: Literal["GET", "POST"] = Field(
        default="GET", description="POST sends the alerts as a text body"
    )
    timeout: Duration = Field(default=10.0, gt=0, description="for the whole request")
    http_config: HttpClientConfig = Field(default_factory=HttpClientConfig)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url and url_file")
        parts = urllib.parse.urlsplit(self.target().get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        return self

    def target(self) -> SecretStr:
        """The ping URL."""
        url = resolve_secret(self.url, self.url_file)
        assert url is not None  # the validator requires one
        return url


def fail_url(url: str) -> str:
    """``url`` with :data:`FAIL_SUFFIX` appended to its path, query kept
    (``https://hc-ping.com/<uuid>`` → ``https://hc-ping.com/<uuid>/fail``)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + FAIL_SUFFIX))


def _scrub(text: str, url: str) -> str:
    """``text`` without ``url`` or its path and query, in any spelling aiohttp uses."""
    parts = urllib.parse.urlsplit(url)
    path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
    secrets = {url, urllib.parse.unquote(url), path_qs, urllib.parse.unquote(path_qs)}
    for secret in sorted(secrets - {"", "/"}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


class HeartbeatNotifier(Notifier[HeartbeatConfig]):
    """Pings the heartbeat URL for each notification with a firing alert."""

    config_model = HeartbeatConfig

    def __init__(self, config: HeartbeatConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        self._url = config.target().get_secret_value()
        self._what = f"heartbeat {redact_url(self._url)}"

    def __repr__(self) -> str:
        return f"<HeartbeatNotifier {redact_url(self._url)}>"

    def ping_url(self, notification: Notification) -> str | None:
        """The URL to request for ``notification``, or None when nothing is to be sent."""
        if notification.firing:
            return self._url
        if self.config.send_resolved and notification.alerts:
            return fail_url(self._url)
        return None

    @staticmethod
    def body(notification: Notification) -> bytes:
        """The POST body: the group's status, then one line per alert."""
        lines = [f"{notification.status} {notification.group_key}"]
        for alert in notification.alerts:
            labels = ", ".join(f'{k}="{v}"' for k, v in alert.labels.items())
            lines.append(f"{alert.status} {{{labels}}}")
        return ("\n".join(lines) + "\n").encode()

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """Request the ping URL; raise :class:`DeliveryError` unless it answers 2xx."""
        url = self.ping_url(notification)
        if url is None:
            return
        headers = self.config.http_config.headers()
        headers.setdefault("User-Agent", f"monitord/{monitor.__version__}")
        data = None
        if self.config.method == "POST":
            data = self.body(notification)
            headers["Content-Type"] = "text/plain; charset=utf-8"
        try:
            async with self.context.session.request(
                self.config.method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                **self.config.http_config.request_options(),
            ) as response:
                await check_response(response, self._what)
        except TimeoutError as exc:
            message = f"{self._what}: no answer within {self.config.timeout:g}s"
            raise DeliveryError(message) from exc
        except (aiohttp.ClientError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            detail = _scrub(text, url)
            # An error whose text names the URL is not chained: its traceback would show it.
            raise DeliveryError(f"{self._what}: {detail}") from (exc if detail == text else None)
