"""The email integration against a real aiosmtpd server on 127.0.0.1: STARTTLS and implicit
TLS with certificates made by the test, authentication, and the message as it arrives."""

from __future__ import annotations

import email
import email.policy
import email.utils
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from monitor.model import Labels
from notifiers.base import Delivery, DeliveryError, Notification, NotifiedAlert, NotifierContext
from notifiers.email import EmailConfig, EmailNotifier
from notifiers.templates import Templates
from tests.certs import PKI, make_pki
from tests.support import free_port

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Mailbox:
    """What the SMTP server accepted, and who logged in."""

    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse_rcpt: bool = False

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((mechanism, data.login.decode()))
        ok = data.login == b"alice" and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    def only(self) -> EmailMessage:
        assert len(self.envelopes) == 1, self.envelopes
        content = self.envelopes[0].content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Server:
    mailbox: Mailbox
    port: int

    @property
    def smarthost(self) -> str:
        return f"127.0.0.1:{self.port}"


StartServer = Callable[..., Server]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Start aiosmtpd on 127.0.0.1 with the given options; stop it after the test."""
    controllers: list[Controller] = []

    def start(**options: Any) -> Server:
        mailbox = Mailbox()
        port = free_port()
        if options.pop("with_auth", False):
            options["authenticator"] = mailbox.authenticate
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return Server(mailbox, port)

    yield start
    for controller in reversed(controllers):
        controller.stop()


def starttls_server(start: StartServer, pki: PKI, leaf: str = "valid", **options: Any) -> Server:
    context = getattr(pki, leaf).server_context()
    return start(tls_context=context, require_starttls=True, **options)


def alert(status: str = "firing", **annotations: str) -> NotifiedAlert:
    return NotifiedAlert(
        status=status,  # type: ignore[arg-type]
        labels=Labels({"alertname": "DiskFull", "instance": "db1"}),
        annotations=Labels({"summary": "db1 is full", **annotations}),
        starts_at=1_700_000_000.0,
        ends_at=None if status == "firing" else 1_700_000_600.0,
        generator_url="http://monitord.example:9090/graph?db1",
    )


def notification(*alerts: NotifiedAlert) -> Notification:
    return Notification(
        receiver="dba",
        group_key='{}:{alertname="DiskFull"}',
        group_labels=Labels({"alertname": "DiskFull"}),
        alerts=alerts or (alert(),),
        external_url="http://monitord.example:9090",
    )


async def send(
    server: Server,
    notice: Notification | None = None,
    templates: Templates | None = None,
    **options: Any,
) -> None:
    options.setdefault("to", "dba@example.org, Ops <ops@example.org>")
    options.setdefault("from", "monitord <alerts@monitord.example>")
    options.setdefault("timeout", "10s")
    config = EmailConfig(smarthost=server.smarthost, **options)
    async with aiohttp.ClientSession() as session:
        context = NotifierContext(session=session, templates=templates or Templates())
        async with EmailNotifier(config, context) as notifier:
            await notifier.notify(notice or notification(), Delivery("d1"))


def parts(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        found[part.get_content_type()] = part.get_content().replace("\r\n", "\n")  # wire CRLF
    return found


# --- STARTTLS ------------------------------------------------------------------------


async def test_starttls_trusted_through_ca_file_delivers_a_multipart_message(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = starttls_server(smtp_server, pki)
    before = time.time()
    await send(
        server,
        notification(alert(description="<script>alert(1)</script> & more")),
        tls_config={"ca_file": str(pki.ca_file)},
    )
    message = server.mailbox.only()
    envelope = server.mailbox.envelopes[0]
    assert envelope.mail_from == "alerts@monitord.example"
    assert envelope.rcpt_tos == ["dba@example.org", "ops@example.org"]
    assert message["Subject"] == "[FIRING:1] DiskFull (db1)"
    assert message["From"] == "monitord <alerts@monitord.example>"
    assert message["To"] == "dba@example.org, Ops <ops@example.org>"
    sent_at = email.utils.parsedate_to_datetime(message["Date"]).timestamp()
    assert before - 2 <= sent_at <= time.time() + 2
    assert message["Date"] == email.utils.format_datetime(
        email.utils.parsedate_to_datetime(message["Date"])
    )
    assert message["Message-ID"].startswith("<")
    assert message["Message-ID"].endswith("@monitord.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    content = parts(message)
    text, html = content["text/plain"], content["text/html"]
    assert text.startswith("[FIRING:1] DiskFull (db1)\n\nAlerts Firing:\nLabels:\n")
    assert " - alertname = DiskFull\n - instance = db1\n" in text
    assert " - description = <script>alert(1)</script> & more\n" in text
    assert "Source: http://monitord.example:9090/graph?db1\n" in text
    assert "View in monitord: http://monitord.example:9090" in text
    assert "description = &lt;script&gt;alert(1)&lt;/script&gt; &amp; more<br />" in html
    assert "<script>" not in html
    assert "1 alert for alertname=DiskFull" in html
    assert "<strong>[1] Firing</strong>" in html and "Resolved" not in html
    assert '<a href="http://monitord.example:9090/graph?db1"' in html
    assert "<title>[FIRING:1] DiskFull (db1)</title>" in html


async def test_a_resolved_group_lists_both_sections(smtp_server: StartServer, pki: PKI) -> None:
    server = starttls_server(smtp_server, pki)
    await send(
        server,
        notification(alert(), alert("resolved")),
        tls_config={"ca_file": str(pki.ca_file)},
        send_resolved=True,
    )
    content = parts(server.mailbox.only())
    assert "Alerts Firing:\n" in content["text/plain"]
    assert "Alerts Resolved:\n" in content["text/plain"]
    assert "<strong>[1] Resolved</strong>" in content["text/html"]
    assert "<hr />" in content["text/html"]


@pytest.mark.parametrize(
    ("leaf", "ca", "reason"),
    [
        pytest.param("valid", None, "certificate verify failed", id="no ca_file: system CAs"),
        pytest.param("valid", "other", "certificate verify failed", id="an unrelated CA"),
        pytest.param("expired", "ca", "certificate has expired", id="an expired certificate"),
        pytest.param("wrong_host", "ca", "mismatch", id="a certificate for another name"),
    ],
)
async def test_an_untrusted_certificate_fails_and_nothing_is_sent_in_clear(
    smtp_server: StartServer, pki: PKI, leaf: str, ca: str | None, reason: str
) -> None:
    server = starttls_server(smtp_server, pki, leaf)
    options: dict[str, Any] = {}
    if ca is not None:
        ca_file = pki.ca_file if ca == "ca" else pki.other_ca_file
        options["tls_config"] = {"ca_file": str(ca_file)}
    with pytest.raises(DeliveryError) as caught:
        await send(server, **options)
    error = caught.value
    assert error.retryable is True
    assert str(error).startswith(f"email {server.smarthost}: TLS failed: certificate verify failed")
    assert reason in str(error)
    assert server.mailbox.envelopes == []


async def test_server_name_verifies_a_certificate_for_another_name(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = starttls_server(smtp_server, pki, "wrong_host")
    tls = {"ca_file": str(pki.ca_file), "server_name": "wrong.example.org"}
    await send(server, tls_config=tls)
    assert len(server.mailbox.envelopes) == 1


async def test_insecure_skip_verify_is_an_explicit_opt_in(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = starttls_server(smtp_server, pki, "expired")
    await send(server, tls_config={"insecure_skip_verify": True})
    assert len(server.mailbox.envelopes) == 1


async def test_a_server_without_starttls_gets_nothing_when_tls_is_required(
    smtp_server: StartServer,
) -> None:
    server = smtp_server()
    with pytest.raises(DeliveryError, match="does not offer STARTTLS") as caught:
        await send(server)
    assert caught.value.retryable is True
    assert server.mailbox.envelopes == []


async def test_require_tls_false_sends_in_clear_as_alertmanager_does(
    smtp_server: StartServer,
) -> None:
    server = smtp_server()
    await send(server, require_tls=False)
    assert len(server.mailbox.envelopes) == 1


# --- implicit TLS --------------------------------------------------------------------


async def test_implicit_tls_delivers(smtp_server: StartServer, pki: PKI) -> None:
    server = smtp_server(ssl_context=pki.valid.server_context())
    await send(server, tls="implicit", tls_config={"ca_file": str(pki.ca_file)})
    assert parts(server.mailbox.only())["text/plain"].startswith("[FIRING:1]")


async def test_implicit_tls_with_server_name_verifies_that_name(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = smtp_server(ssl_context=pki.wrong_host.server_context())
    tls = {"ca_file": str(pki.ca_file), "server_name": "wrong.example.org"}
    await send(server, tls="implicit", tls_config=tls)
    assert len(server.mailbox.envelopes) == 1


async def test_implicit_tls_with_an_untrusted_certificate_fails(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = smtp_server(ssl_context=pki.valid.server_context())
    with pytest.raises(DeliveryError, match="certificate verify failed") as caught:
        await send(server, tls="implicit", tls_config={"ca_file": str(pki.other_ca_file)})
    assert caught.value.retryable is True
    assert server.mailbox.envelopes == []


def test_port_465_means_implicit_tls_as_in_alertmanager() -> None:
    base = {"to": "a@example.org", "from": "b@example.org"}
    assert EmailConfig(smarthost="smtp.example.org:465", **base).implicit_tls() is True
    submission = EmailConfig(smarthost="smtp.example.org:587", **base)
    assert (submission.implicit_tls(), submission.starttls()) == (False, True)
    forced = EmailConfig(smarthost="smtp.example.org:2465", tls="implicit", **base)
    assert (forced.implicit_tls(), forced.starttls()) == (True, False)
    clear = EmailConfig(smarthost="[::1]:25", require_tls=False, **base)
    assert (clear.implicit_tls(), clear.starttls()) == (False, False)


# --- authentication ------------------------------------------------------------------


async def test_auth_with_a_password_file(
    smtp_server: StartServer, pki: PKI, tmp_path: Path
) -> None:
    server = starttls_server(smtp_server, pki, with_auth=True, auth_required=True)
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    await send(
        server,
        tls_config={"ca_file": str(pki.ca_file)},
        auth_username="alice",
        auth_password_file=str(password_file),
    )
    assert len(server.mailbox.envelopes) == 1
    assert [login for _, login in server.mailbox.logins] == ["alice"]


async def test_auth_identity_uses_plain(smtp_server: StartServer, pki: PKI) -> None:
    server = starttls_server(smtp_server, pki, with_auth=True, auth_required=True)
    await send(
        server,
        tls_config={"ca_file": str(pki.ca_file)},
        auth_username="alice",
        auth_password=PASSWORD,
        auth_identity="alerts",
    )
    assert server.mailbox.logins == [("PLAIN", "alice")]
    assert len(server.mailbox.envelopes) == 1


@pytest.mark.parametrize("identity", ["", "alerts"], ids=["aiosmtplib's login", "PLAIN"])
async def test_a_refused_login_is_not_retried_and_hides_the_password(
    smtp_server: StartServer, pki: PKI, identity: str
) -> None:
    server = starttls_server(smtp_server, pki, with_auth=True, auth_required=True)
    with pytest.raises(DeliveryError) as caught:
        await send(
            server,
            tls_config={"ca_file": str(pki.ca_file)},
            auth_username="alice",
            auth_password=PASSWORD + "-wrong",
            auth_identity=identity,
        )
    error = caught.value
    assert (error.retryable, error.status) == (False, 535)
    assert "login as 'alice' refused: 535" in str(error)
    assert PASSWORD not in str(error)
    assert server.mailbox.envelopes == []


async def test_every_recipient_refused_is_not_retried(smtp_server: StartServer, pki: PKI) -> None:
    server = starttls_server(smtp_server, pki)
    server.mailbox.refuse_rcpt = True
    with pytest.raises(DeliveryError, match="every recipient refused") as caught:
        await send(server, tls_config={"ca_file": str(pki.ca_file)})
    assert caught.value.retryable is False


async def test_a_refused_connection_is_retried() -> None:
    server = Server(Mailbox(), free_port())
    with pytest.raises(DeliveryError) as caught:
        await send(server, auth_username="alice", auth_password=PASSWORD)
    assert caught.value.retryable is True
    assert str(caught.value).startswith(f"email {server.smarthost}: ")
    assert PASSWORD not in str(caught.value)


# --- templates and headers -----------------------------------------------------------


async def test_user_headers_and_templates(smtp_server: StartServer, pki: PKI) -> None:
    templates = Templates({"mail.j2": "{% macro sig() %}-- the {{ 'dba' }} team{% endmacro %}"})
    server = starttls_server(smtp_server, pki)
    await send(
        server,
        templates=templates,
        tls_config={"ca_file": str(pki.ca_file)},
        to="{{ receiver }}@example.org",
        headers={"subject": "Plein: {{ common_labels.instance }} — ça déborde", "x-team": "dba"},
        text='{{ firing | length }} firing\n{% import "mail.j2" as m %}{{ m.sig() }}',
        html="",
    )
    message = server.mailbox.only()
    assert server.mailbox.envelopes[0].rcpt_tos == ["dba@example.org"]
    assert message["Subject"] == "Plein: db1 — ça déborde"
    assert message["X-Team"] == "dba"
    assert message["To"] == "dba@example.org"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == "1 firing\n-- the dba team\n"


async def test_a_header_template_with_a_newline_cannot_inject_headers(
    smtp_server: StartServer, pki: PKI
) -> None:
    server = starttls_server(smtp_server, pki)
    await send(
        server,
        notification(alert(summary="full\r\nBcc: victim@example.org")),
        tls_config={"ca_file": str(pki.ca_file)},
        headers={"Subject": "{{ common_annotations.summary }}"},
    )
    message = server.mailbox.only()
    assert message["Subject"] == "full Bcc: victim@example.org"
    assert message["Bcc"] is None
    assert server.mailbox.envelopes[0].rcpt_tos == ["dba@example.org", "ops@example.org"]


async def test_a_broken_template_sends_nothing_and_is_not_retried(
    smtp_server: StartServer,
) -> None:
    server = smtp_server()
    with pytest.raises(DeliveryError, match="template html") as caught:
        await send(server, html="{{ 1 / 0 }}")
    assert caught.value.retryable is False
    assert server.mailbox.envelopes == []


# --- configuration -------------------------------------------------------------------


def test_the_password_is_redacted_in_the_config_dump(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD)
    base = {"to": "a@example.org", "from": "b@example.org", "smarthost": "smtp.example.org:587"}
    configs = [
        EmailConfig(auth_username="alice", auth_password=PASSWORD, **base),
        EmailConfig(auth_username="alice", auth_password_file=str(password_file), **base),
    ]
    assert configs[1].password().get_secret_value() == PASSWORD  # type: ignore[union-attr]
    for config in configs:
        for text in (config.model_dump_json(), repr(config), str(config.model_dump())):
            assert PASSWORD not in text


def test_defaults_are_alertmanagers() -> None:
    config = EmailConfig(to="a@example.org", **{"from": "b@example.org"}, smarthost="h:25")
    assert (config.type, config.send_resolved, config.require_tls, config.tls) == (
        "email",
        False,
        True,
        "auto",
    )
    assert config.tls_config.insecure_skip_verify is False
    assert set(config.all_headers()) == {"Subject", "To", "From"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"smarthost": "smtp.example.org"}, "is not host:port", id="no port"),
        pytest.param(
            {"headers": {"X-A": "1", "x-a": "2"}}, "duplicate header 'X-A'", id="duplicate header"
        ),
        pytest.param({"headers": {"date": "x"}}, "'Date' is set by monitord", id="Date is ours"),
        pytest.param(
            {"tls": "starttls", "require_tls": False},
            "tls: starttls requires TLS",
            id="starttls without require_tls is a contradiction",
        ),
        pytest.param(
            {"auth_password": PASSWORD}, "auth_password needs auth_username", id="password alone"
        ),
        pytest.param({"html": "{% for %}"}, "bad template", id="a template that does not compile"),
        pytest.param({"tls": "ssl"}, "'auto', 'starttls' or 'implicit'", id="an unknown tls mode"),
    ],
)
def test_bad_configs_are_refused(options: dict[str, Any], message: str) -> None:
    values = {"to": "a@example.org", "from": "b@example.org", "smarthost": "h:25", **options}
    with pytest.raises(ValidationError, match=message) as caught:
        EmailConfig(**values)
    assert all(PASSWORD not in str(error["msg"]) for error in caught.value.errors())
