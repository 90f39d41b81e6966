"""Slack: a Block Kit message posted to an incoming webhook, coloured by status.

Follows Alertmanager's Slack integration (``notify/slack/slack.go``; defaults from
``config/notifiers.go`` and ``template/default.tmpl``, ported to Jinja2), with the legacy
attachment's fields carried as Block Kit blocks:

- ``title`` (default Alertmanager's ``__subject``: ``[FIRING:2] <group label values>
  (<other common label values>)``) becomes a ``header`` block, cut to Slack's 150 characters;
- ``text`` (default empty, as Alertmanager's) becomes ``section`` blocks of at most 3,000
  characters each, split at line ends; beyond Slack's 50 blocks the last one ends in "…";
- ``title_link`` (default the external URL) becomes a ``context`` block linking to it;
- ``color`` (default ``danger`` while firing, ``good`` once resolved) colours the message.
  Block Kit has no colour, so the blocks go in one attachment with ``color`` and
  ``blocks``, as Slack documents for coloured messages;
- ``fallback`` (default ``<title> | <title_link>``) is the message's top-level ``text``,
  which Slack shows in notifications and where blocks cannot be shown.

``channel``, ``username``, ``icon_emoji`` and ``icon_url`` are sent when they render non-empty
(legacy webhooks honour them; a Slack app's webhook posts to its own channel). Every field
is a template over the notification (see :mod:`notifiers.templates`).

Slack asks for at most one message per second per webhook: messages to one URL are spaced
at least a second apart, process-wide (every integration shares :data:`RATE_LIMITER`); a
message that finds the slot taken waits for the next one. Slack answers ``200 ok``; other
statuses are classified by :func:`notifiers.base.check_response` (a 429's ``Retry-After``
goes to the outbox), a 200 with another body is an error that retrying cannot fix, as in
Alertmanager. The webhook URL is a secret: errors and logs show it as
``https://hooks.slack.com/<redacted>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, Literal, Self

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from monitor.log import get_logger
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
from notifiers.templates import SUBJECT, check_template

__all__ = [
    "HEADER_MAX_CHARS",
    "MAX_BLOCKS",
    "RATE_LIMITER",
    "SECTION_MAX_CHARS",
    "RateLimiter",
    "SlackConfig",
    "SlackNotifier",
    "build_message",
]

log = get_logger("notifiers.slack")

HEADER_MAX_CHARS: Final = 150
"""Slack's limit on a header block's ``plain_text``."""
SECTION_MAX_CHARS: Final = 3000
"""Slack's limit on a section block's ``text``."""
MAX_BLOCKS: Final = 50
"""Slack's limit on the blocks of one message."""
ELLIPSIS: Final = "…"


_TEMPLATE_FIELDS: Final = (
    "channel",
    "username",
    "icon_emoji",
    "icon_url",
    "title",
    "title_link",
    "text",
    "color",
    "fallback",
)


class SlackConfig(NotifierConfig):
    """One ``slack_configs`` entry (Alertmanager's ``SlackConfig``, Block Kit subset)."""

    type: Literal["slack"] = "slack"
    send_resolved: bool = Field(default=False, description="notify when the alerts resolve")
    api_url: SecretStr | None = Field(default=None, description="the incoming webhook URL")
    api_url_file: SecretFile | None = Field(
        default=None, description="a file holding the incoming webhook URL"
    )
    channel: str = Field(default="", description="#channel or @user (legacy webhooks only)")
    username: str = "monitord"
    icon_emoji: str = ""
    icon_url: str = ""
    title: str = Field(default=SUBJECT, description="the header, at most 150 characters")
    title_link: str = Field(default="{{ external_url }}", description="where the title links")
    text: str = Field(default="", description="the body, Slack mrkdwn")
    color: str = Field(
        default='{% if status == "firing" %}danger{% else %}good{% endif %}',
        description="good, warning, danger or #rrggbb",
    )
    fallback: str = Field(
        default="{{ title }}{% if title_link %} | {{ title_link }}{% endif %}",
        description="the plain-text summary (top-level text); sees title and title_link",
    )
    http_config: HttpClientConfig = Field(default_factory=HttpClientConfig)
    timeout: Duration = Field(default=10.0, description="for the whole request")

    @field_validator(*_TEMPLATE_FIELDS)
    @classmethod
    def _compiles(cls, value: str) -> str:
        error = check_template(value)
        if error is not None:
            raise ValueError(f"bad template: {error}")
        return value

    @model_validator(mode="after")
    def _one_url(self) -> Self:
        self._check_secret_pair("api_url")
        url = self.url()
        if url is None:
            raise ValueError("set api_url or api_url_file")
        parsed = URL(url.get_secret_value())
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the webhook URL must be an http or https URL")
        return self

    def url(self) -> SecretStr | None:
        """The webhook URL, from ``api_url`` or ``api_url_file``."""
        return resolve_secret(self.api_url, self.api_url_file)


class RateLimiter:
    """At most one event per ``interval`` seconds per key, shared by every caller.

    A caller reserves the next free slot for its key at once (no await in between, so
    concurrent callers get distinct slots in call order) and then sleeps until it. Holds no
    asyncio primitive, so one instance serves every event loop of the process.
    """

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    def reserve(self, key: str) -> float:
        """Take the next slot for ``key``; the seconds to wait until it."""
        now = self._clock()
        if len(self._next) > 256:
            self._next = {k: t for k, t in self._next.items() if t > now}
        slot = max(now, self._next.get(key, now))
        self._next[key] = slot + self.interval
        return slot - now

    async def wait(self, key: str) -> None:
        """Return when ``key`` may be used."""
        delay = self.reserve(key)
        if delay > 0:
            await self._sleep(delay)


RATE_LIMITER: Final = RateLimiter(1.0)
"""One message per second per webhook URL (Slack's documented rate), process-wide."""


def _ellipsize(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line ends where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    pieces.append(text)
    return [p for p in pieces if p.strip()]


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_message(
    *,
    title: str,
    title_link: str,
    text: str,
    color: str,
    fallback: str,
    channel: str = "",
    username: str = "",
    icon_emoji: str = "",
    icon_url: str = "",
    link_text: str = "View in monitord",
) -> dict[str, Any]:
    """The incoming-webhook body for rendered fields, within Slack's limits."""
    head: list[dict[str, Any]] = []
    tail: list[dict[str, Any]] = []
    if title.strip():
        plain = {"type": "plain_text", "text": _ellipsize(title, HEADER_MAX_CHARS), "emoji": True}
        head.append({"type": "header", "text": plain})
    if title_link.strip():
        link = f"<{title_link.strip()}|{_mrkdwn_escape(link_text)}>"
        tail.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    room = MAX_BLOCKS - len(head) - len(tail)
    pieces = _chunks(text, SECTION_MAX_CHARS)
    if len(pieces) > room:
        pieces = pieces[:room]
        pieces[-1] = _ellipsize(pieces[-1] + ELLIPSIS, SECTION_MAX_CHARS)
    sections = [{"type": "section", "text": {"type": "mrkdwn", "text": p}} for p in pieces]
    message: dict[str, Any] = {"text": fallback}
    for name, value in (
        ("channel", channel),
        ("username", username),
        ("icon_emoji", icon_emoji),
        ("icon_url", icon_url),
    ):
        if value.strip():
            message[name] = value.strip()
    attachment: dict[str, Any] = {"fallback": fallback}
    if color.strip():
        attachment["color"] = color.strip()
    blocks = head + sections + tail
    if blocks:
        attachment["blocks"] = blocks
        message["attachments"] = [attachment]
    return message


class SlackNotifier(Notifier[SlackConfig]):
    """Posts each notification to a Slack incoming webhook."""

    config_model: ClassVar[type[NotifierConfig]] = SlackConfig

    def __init__(
        self,
        config: SlackConfig,
        context: NotifierContext,
        *,
        rate_limiter: RateLimiter = RATE_LIMITER,
    ) -> None:
        super().__init__(config, context)
        self._rate_limiter = rate_limiter
        secret = config.url()
        assert secret is not None  # the model requires one
        self._url = secret.get_secret_value()
        self._where = f"slack {redact_url(self._url)}"
        self._key = hashlib.sha256(self._url.encode()).hexdigest()

    def render(self, notification: Notification) -> dict[str, Any]:
        """The message for ``notification``; a broken template raises ``DeliveryError``."""
        templates = self.context.templates
        fields: dict[str, str] = {}
        for name in _TEMPLATE_FIELDS:
            extra = {}
            if name == "fallback":  # the last field: it may use the rendered title and link
                extra = {"title": fields["title"], "title_link": fields["title_link"]}
            try:
                rendered = templates.render(getattr(self.config, name), notification, **extra)
            except Exception as exc:  # a template may raise anything (a filter on bad input)
                raise DeliveryError(
                    f"{self._where}: template {name}: {exc}", retryable=False
                ) from exc
            fields[name] = rendered.strip()
        if not fields["fallback"]:
            fields["fallback"] = fields["title"] or fields["text"][:SECTION_MAX_CHARS]
        if not fields["fallback"]:
            raise DeliveryError(f"{self._where}: the message renders empty", retryable=False)
        return build_message(**fields)

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """Post the message, waiting for the webhook's one-per-second slot first."""
        message = self.render(notification)
        body = json.dumps(message, ensure_ascii=False).encode()
        http = self.config.http_config
        headers = {"Content-Type": "application/json", **http.headers()}
        await self._rate_limiter.wait(self._key)
        try:
            async with self.context.session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                **http.request_options(),
            ) as response:
                await check_response(response, self._where)
                answer = (await response.content.read(512)).decode("utf-8", "replace")
                content_type = response.headers.get("Content-Type", "")
        except TimeoutError as exc:
            raise DeliveryError(
                f"{self._where}: no answer within {self.config.timeout:g}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{self._where}: {self._scrub(exc)}") from exc
        _check_answer(answer, content_type, self._where)

    def _scrub(self, exc: BaseException) -> str:
        """``exc`` described without the webhook URL's secret parts."""
        text = str(exc) or exc.__class__.__name__
        parsed = URL(self._url)
        for secret in (self._url, str(parsed), parsed.raw_path_qs, parsed.path_qs):
            if secret and secret != "/":
                text = text.replace(secret, "/<redacted>")
        return text


def _check_answer(answer: str, content_type: str, where: str) -> None:
    """Slack's 200 means accepted only with ``ok`` (Alertmanager's
    ``checkTextResponseError``/``checkJSONResponseError``)."""
    if content_type.startswith("application/json"):
        try:
            data = json.loads(answer)
        except ValueError as exc:
            raise DeliveryError(f"{where}: unreadable JSON answer {answer[:200]!r}") from exc
        if not isinstance(data, dict) or data.get("ok") is not True:
            error = data.get("error") if isinstance(data, dict) else data
            raise DeliveryError(f"{where}: Slack refused: {error}", retryable=False)
        return
    if answer.strip() != "ok":
        raise DeliveryError(f"{where}: Slack answered {answer[:200]!r}", retryable=False)
