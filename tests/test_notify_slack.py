"""The slack integration against a local aiohttp server that checks each body strictly
against Slack's documented incoming-webhook and Block Kit shapes, as Slack would refuse it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.base import Delivery, DeliveryError, Notification, NotifiedAlert, NotifierContext
from notifiers.slack import (
    HEADER_MAX_CHARS,
    MAX_BLOCKS,
    RATE_LIMITER,
    SECTION_MAX_CHARS,
    RateLimiter,
    SlackConfig,
    SlackNotifier,
)
from notifiers.templates import Templates
from tests.support import free_port

TOKEN_PATH = "/services/T0001/B0002/s3cr3tT0k3nXYZ"

# --- what Slack accepts (api.slack.com/messaging/webhooks, /reference/block-kit) --------

MESSAGE_KEYS = {
    "text",
    "blocks",
    "attachments",
    "channel",
    "username",
    "icon_emoji",
    "icon_url",
    "mrkdwn",
    "link_names",
    "thread_ts",
    "unfurl_links",
    "unfurl_media",
}
ATTACHMENT_KEYS = {
    "fallback",
    "color",
    "pretext",
    "author_name",
    "author_link",
    "author_icon",
    "title",
    "title_link",
    "text",
    "fields",
    "image_url",
    "thumb_url",
    "footer",
    "footer_icon",
    "ts",
    "mrkdwn_in",
    "blocks",
}
COLOR = re.compile(r"^(good|warning|danger|#[0-9a-fA-F]{6})$")


def text_object_problems(obj: Any, where: str, *, plain_only: bool, limit: int) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: a text object must be an object"]
    kind = obj.get("type")
    allowed = {"plain_text": {"type", "text", "emoji"}, "mrkdwn": {"type", "text", "verbatim"}}
    if kind not in allowed or (plain_only and kind != "plain_text"):
        return [f"{where}: text object type {kind!r} not allowed here"]
    problems = [f"{where}: unknown key {k!r}" for k in obj if k not in allowed[kind]]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        problems.append(f"{where}: text must be a non-empty string")
    elif len(text) > limit:
        problems.append(f"{where}: text longer than {limit} characters")
    if "emoji" in obj and not isinstance(obj["emoji"], bool):
        problems.append(f"{where}: emoji must be a boolean")
    return problems


def block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: a block must be an object"]
    kind = block.get("type")
    keys = {
        "header": {"type", "text", "block_id"},
        "section": {"type", "text", "fields", "accessory", "block_id"},
        "context": {"type", "elements", "block_id"},
        "divider": {"type", "block_id"},
    }
    if kind not in keys:
        return [f"{where}: unknown block type {kind!r}"]
    problems = [f"{where}: unknown key {k!r} in {kind}" for k in block if k not in keys[kind]]
    if "block_id" in block and (
        not isinstance(block["block_id"], str) or len(block["block_id"]) > 255
    ):
        problems.append(f"{where}: bad block_id")
    if kind == "header":
        problems += text_object_problems(
            block.get("text"), f"{where}.text", plain_only=True, limit=150
        )
    elif kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(f"{where}: a section needs text or fields")
        if "text" in block:
            problems += text_object_problems(
                block["text"], f"{where}.text", plain_only=False, limit=3000
            )
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            problems.append(f"{where}: context needs 1 to 10 elements")
        else:
            for i, element in enumerate(elements):
                problems += text_object_problems(
                    element, f"{where}.elements[{i}]", plain_only=False, limit=3000
                )
    return problems


def slack_problems(body: Any) -> list[str]:
    """Why Slack would refuse ``body`` (empty when it would accept it)."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = [f"unknown message key {k!r}" for k in body if k not in MESSAGE_KEYS]
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("no_text: a top-level text fallback is required with blocks")
    for key in ("channel", "username", "icon_emoji", "icon_url"):
        if key in body and (not isinstance(body[key], str) or not body[key]):
            problems.append(f"{key} must be a non-empty string")
    if "icon_emoji" in body and not re.fullmatch(r":[a-z0-9_+\-]+:", str(body["icon_emoji"])):
        problems.append("icon_emoji must look like :name:")
    total = 0
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list):
        problems.append("blocks must be a list")
        blocks = []
    total += len(blocks)
    for i, block in enumerate(blocks):
        problems += block_problems(block, f"blocks[{i}]")
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        return [*problems, "attachments must be a list"]
    for a, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            problems.append(f"attachments[{a}] must be an object")
            continue
        problems += [
            f"attachments[{a}]: unknown key {k!r}" for k in attachment if k not in ATTACHMENT_KEYS
        ]
        if "color" in attachment and not COLOR.match(str(attachment["color"])):
            problems.append(f"attachments[{a}]: bad color {attachment['color']!r}")
        if "fallback" in attachment and not isinstance(attachment["fallback"], str):
            problems.append(f"attachments[{a}]: fallback must be a string")
        inner = attachment.get("blocks", [])
        if not isinstance(inner, list) or ("blocks" in attachment and not inner):
            problems.append(f"attachments[{a}]: blocks must be a non-empty list")
            continue
        total += len(inner)
        for i, block in enumerate(inner):
            problems += block_problems(block, f"attachments[{a}].blocks[{i}]")
    if total > 50:
        problems.append(f"too many blocks: {total} > 50")
    return problems


# --- the fake Slack ------------------------------------------------------------------


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class FakeSlack:
    """Incoming webhooks on 127.0.0.1: validates, records, answers as Slack does."""

    received: list[Received] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    refused: list[list[str]] = field(default_factory=list)
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        problems = slack_problems(body)
        if problems:
            self.refused.append(problems)
            return web.Response(status=400, text="invalid_blocks")
        self.received.append(Received(request.path, body, dict(request.headers), time.monotonic()))
        status, headers, text = self.answers.get(request.path, (200, {}, "ok"))
        return web.Response(status=status, headers=headers, text=text, content_type="text/html")

    def url(self, path: str = TOKEN_PATH) -> str:
        return self.base + path

    def only(self) -> dict[str, Any]:
        assert not self.refused, self.refused
        assert len(self.received) == 1, self.received
        return self.received[0].body


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/services/{team}/{bot}/{token}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def alert(status: str = "firing", **labels: str) -> NotifiedAlert:
    labels = {"alertname": "HighLatency", "service": "api", **labels}
    return NotifiedAlert(
        status=status,  # type: ignore[arg-type]
        labels=Labels(labels),
        annotations=Labels({"summary": f"latency of {labels['service']} is high"}),
        starts_at=1_700_000_000.0,
        ends_at=None if status == "firing" else 1_700_000_600.0,
        generator_url="http://monitord.example:9090/graph",
    )


def notification(*alerts: NotifiedAlert) -> Notification:
    return Notification(
        receiver="team",
        group_key='{}:{alertname="HighLatency"}',
        group_labels=Labels({"alertname": "HighLatency"}),
        alerts=alerts or (alert(),),
        external_url="http://monitord.example:9090",
    )


def notifier(
    session: aiohttp.ClientSession,
    url: str,
    templates: Templates | None = None,
    limiter: RateLimiter | None = None,
    **options: Any,
) -> SlackNotifier:
    config = SlackConfig(api_url=url, **options)
    context = NotifierContext(session=session, templates=templates or Templates())
    return SlackNotifier(config, context, rate_limiter=limiter or RateLimiter(0.0))


def attachment(body: dict[str, Any]) -> dict[str, Any]:
    [only] = body["attachments"]
    return only  # type: ignore[no-any-return]


# --- messages ------------------------------------------------------------------------


async def test_a_firing_group_is_a_red_block_kit_message_with_a_text_fallback(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    await notifier(session, slack.url()).notify(
        notification(alert(), alert(service="web")), Delivery("d1")
    )
    body = slack.only()
    assert body["text"] == "[FIRING:2] HighLatency | http://monitord.example:9090"
    assert body["username"] == "monitord"
    assert "channel" not in body and "icon_emoji" not in body
    att = attachment(body)
    assert att["color"] == "danger"
    assert att["blocks"] == [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "[FIRING:2] HighLatency", "emoji": True},
        },
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": "<http://monitord.example:9090|View in monitord>"}
            ],
        },
    ]


async def test_a_resolved_group_is_green_and_names_the_other_common_labels(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    await notifier(session, slack.url(), send_resolved=True).notify(
        notification(alert("resolved")), Delivery("d1")
    )
    att = attachment(slack.only())
    assert att["color"] == "good"
    assert att["blocks"][0]["text"]["text"] == "[RESOLVED] HighLatency (api)"


async def test_user_templates_fill_every_field(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    templates = Templates(
        {
            "slack.j2": (
                "{% macro body(alerts) %}{% for a in alerts %}"
                "*{{ a.labels.service }}*: {{ a.annotations.summary }}\n"
                "{% endfor %}{% endmacro %}"
            )
        }
    )
    await notifier(
        session,
        slack.url(),
        templates,
        channel="#ops",
        username="pager",
        icon_emoji=":fire:",
        title="{{ common_labels.alertname }} on {{ alerts | length }} services",
        title_link="{{ external_url }}/alerts?receiver={{ receiver }}",
        text='{% import "slack.j2" as s %}{{ s.body(firing) }}',
        color='{{ "#ff8800" if status == "firing" else "#00aa00" }}',
        fallback="{{ title }}!",
    ).notify(notification(alert(), alert(service="web")), Delivery("d1"))
    body = slack.only()
    assert body["channel"] == "#ops" and body["username"] == "pager"
    assert body["icon_emoji"] == ":fire:"
    assert body["text"] == "HighLatency on 2 services!"
    att = attachment(body)
    assert att["color"] == "#ff8800"
    header, section, context = att["blocks"]
    assert header["text"]["text"] == "HighLatency on 2 services"
    assert section == {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*api*: latency of api is high\n*web*: latency of web is high",
        },
    }
    assert context["elements"][0]["text"] == (
        "<http://monitord.example:9090/alerts?receiver=team|View in monitord>"
    )


async def test_long_fields_are_cut_to_slacks_limits_with_an_ellipsis(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    await notifier(
        session,
        slack.url(),
        title="T" * 400,
        text="{% for i in range(2000) %}" + "x" * 99 + "\n{% endfor %}",  # 30 lines a section
    ).notify(notification(), Delivery("d1"))
    blocks = attachment(slack.only())["blocks"]
    assert len(blocks) == MAX_BLOCKS
    header = blocks[0]["text"]["text"]
    assert len(header) == HEADER_MAX_CHARS and header.endswith("…")
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == MAX_BLOCKS - 2
    assert all(len(s["text"]["text"]) <= SECTION_MAX_CHARS for s in sections)
    assert all(s["text"]["text"].count("\n") == 29 for s in sections[:-1])  # cut at line ends
    assert sections[-1]["text"]["text"].endswith("…")


async def test_one_long_line_is_cut_inside_the_line(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    await notifier(session, slack.url(), text="{{ 'y' * 7000 }}").notify(
        notification(), Delivery("d1")
    )
    sections = [b for b in attachment(slack.only())["blocks"] if b["type"] == "section"]
    assert [len(s["text"]["text"]) for s in sections] == [3000, 3000, 1000]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            {"text": "x", "blocks": [{"type": "table", "rows": []}]},
            "unknown block type 'table'",
            id="an unknown block type is refused",
        ),
        pytest.param(
            {"blocks": [{"type": "divider"}]},
            "no_text",
            id="blocks without a text fallback are refused",
        ),
        pytest.param(
            {"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]},
            "not allowed here",
            id="a header in mrkdwn is refused",
        ),
        pytest.param(
            {
                "text": "x",
                "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            },
            "longer than 150",
            id="a header over 150 characters is refused",
        ),
        pytest.param(
            {"text": "x", "attachments": [{"color": "red", "blocks": [{"type": "divider"}]}]},
            "bad color",
            id="a colour Slack does not know is refused",
        ),
        pytest.param(
            {"text": "x", "attachments": [{"blocks": [{"type": "divider"}] * 51}]},
            "too many blocks",
            id="more than 50 blocks are refused",
        ),
        pytest.param(
            {"text": 5},
            "no_text",
            id="a text that is not a string is refused",
        ),
        pytest.param(
            {"text": "x", "colour": "good"},
            "unknown message key",
            id="an unknown message key is refused",
        ),
    ],
)
async def test_the_fake_slack_refuses_what_slack_refuses(
    slack: FakeSlack, session: aiohttp.ClientSession, body: dict[str, Any], problem: str
) -> None:
    async with session.post(slack.url(), json=body) as response:
        assert response.status == 400
    [problems] = slack.refused
    assert any(problem in p for p in problems), problems


# --- the rate of one message per second per webhook ------------------------------------


async def test_two_messages_to_one_webhook_are_a_second_apart_across_integrations(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    assert RATE_LIMITER.interval == 1.0  # the default every integration shares
    context = NotifierContext(session=session, templates=Templates())
    first = SlackNotifier(SlackConfig(api_url=slack.url()), context)
    second = SlackNotifier(SlackConfig(api_url=slack.url(), title="second"), context)
    await asyncio.gather(
        first.notify(notification(), Delivery("a")), second.notify(notification(), Delivery("b"))
    )
    assert len(slack.received) == 2
    gap = slack.received[1].at - slack.received[0].at
    assert gap >= 0.9, gap


async def test_other_webhooks_are_not_held_back() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    now = [100.0]
    limiter = RateLimiter(1.0, clock=lambda: now[0], sleep=sleep)
    await limiter.wait("hook A")
    await limiter.wait("hook B")
    await limiter.wait("hook C")
    assert waits == []
    await limiter.wait("hook A")
    await limiter.wait("hook A")
    assert waits == [1.0, 2.0]  # queued behind each other, in call order
    now[0] = 110.0
    await limiter.wait("hook A")
    assert waits == [1.0, 2.0]


async def test_two_webhooks_through_the_notifier_do_not_wait_for_each_other(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    limiter = RateLimiter(1.0, sleep=sleep)
    for path in (TOKEN_PATH, "/services/T0001/B0003/other"):
        await notifier(session, slack.url(path), limiter=limiter).notify(
            notification(), Delivery("d")
        )
    assert waits == []
    assert [r.path for r in slack.received] == [TOKEN_PATH, "/services/T0001/B0003/other"]


# --- failures ------------------------------------------------------------------------


async def test_429_carries_retry_after_for_the_outbox(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    slack.answers[TOKEN_PATH] = (429, {"Retry-After": "2"}, "rate_limited")
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, slack.url()).notify(notification(), Delivery("d1"))
    error = caught.value
    assert (error.retryable, error.retry_after, error.status) == (True, 2.0, 429)
    assert "rate_limited" in str(error)
    assert "s3cr3t" not in str(error)


async def test_400_is_not_retried_and_hides_the_url(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    slack.answers[TOKEN_PATH] = (400, {}, "invalid_payload")
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, slack.url()).notify(notification(), Delivery("d1"))
    assert caught.value.retryable is False
    assert str(caught.value) == (f"slack {slack.base}/<redacted>: HTTP 400: invalid_payload")


async def test_500_is_retried(slack: FakeSlack, session: aiohttp.ClientSession) -> None:
    slack.answers[TOKEN_PATH] = (500, {}, "")
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, slack.url()).notify(notification(), Delivery("d1"))
    assert caught.value.retryable is True and caught.value.retry_after is None


async def test_a_200_without_ok_is_an_error_retrying_cannot_fix(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    slack.answers[TOKEN_PATH] = (200, {}, "channel_is_archived")
    with pytest.raises(DeliveryError, match="channel_is_archived") as caught:
        await notifier(session, slack.url()).notify(notification(), Delivery("d1"))
    assert caught.value.retryable is False


async def test_a_refused_connection_is_retried_without_the_token(
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    with pytest.raises(DeliveryError) as caught:
        await notifier(session, f"http://127.0.0.1:{port}{TOKEN_PATH}").notify(
            notification(), Delivery("d1")
        )
    assert caught.value.retryable is True
    message = str(caught.value)
    assert message.startswith(f"slack http://127.0.0.1:{port}/<redacted>: ")
    assert "s3cr3t" not in message and "T0001" not in message


async def test_a_webhook_that_does_not_answer_times_out(session: aiohttp.ClientSession) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DeliveryError, match=r"no answer within 0\.3s") as caught:
            await notifier(session, f"http://127.0.0.1:{port}{TOKEN_PATH}", timeout="300ms").notify(
                notification(), Delivery("d1")
            )
        assert caught.value.retryable is True
        assert "s3cr3t" not in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_template_error_at_render_time_is_not_retried(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(DeliveryError, match="template text") as caught:
        await notifier(session, slack.url(), text='{% include "missing.j2" %}').notify(
            notification(), Delivery("d1")
        )
    assert caught.value.retryable is False
    assert slack.received == []


async def test_http_config_authorization_is_sent(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    await notifier(
        session, slack.url(), http_config={"authorization": {"credentials": "tok"}}
    ).notify(notification(), Delivery("d1"))
    assert slack.received[0].headers["Authorization"] == "Bearer tok"


# --- configuration -------------------------------------------------------------------


def test_the_url_is_redacted_in_the_config_dump_and_repr(tmp_path: Path) -> None:
    url = f"https://hooks.slack.com{TOKEN_PATH}"
    inline = SlackConfig(api_url=url)
    secret_file = tmp_path / "hook"
    secret_file.write_text(url + "\n")
    from_file = SlackConfig(api_url_file=str(secret_file))
    assert from_file.url() is not None and from_file.url().get_secret_value() == url  # type: ignore[union-attr]
    for config in (inline, from_file):
        for text in (config.model_dump_json(), repr(config), str(config.model_dump())):
            assert "s3cr3t" not in text and "T0001" not in text


def test_defaults_are_alertmanagers() -> None:
    config = SlackConfig(api_url="https://hooks.slack.com/x")
    assert config.type == "slack" and config.send_resolved is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "set api_url or api_url_file", id="a webhook URL is required"),
        pytest.param(
            {"api_url": "https://h/x", "api_url_file": "f"},
            "not both",
            id="api_url and api_url_file are exclusive",
        ),
        pytest.param(
            {"api_url": "ftp://hooks.example/s3cr3t"},
            "must be an http or https URL",
            id="a URL that is not http is refused without showing it",
        ),
        pytest.param(
            {"api_url": "https://h/x", "title": "{% if %}"},
            "bad template",
            id="a template that does not compile is a config error",
        ),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    if "api_url_file" in options:
        (tmp_path / "f").write_text("https://h/y")
        options = {**options, "api_url_file": str(tmp_path / "f")}
    with pytest.raises(ValidationError, match=message) as caught:
        SlackConfig(**options)
    # the config loader reports the message (monitor.config), never pydantic's input echo
    assert all("s3cr3t" not in error["msg"] for error in caught.value.errors())
