"""E-mail: one multipart text-and-HTML message per notification, sent with aiosmtplib.

Follows Alertmanager's e-mail integration (``notify/email/email.go``; defaults from
``config/notifiers.go`` and ``template/default.tmpl``, ported to Jinja2):

- headers: ``Subject`` (default Alertmanager's ``email.default.subject``), ``To`` and
  ``From`` (default the ``to`` and ``from`` fields) and any in ``headers``, each a template;
  ``Date`` (``email.utils.formatdate``) and ``Message-ID`` (``email.utils.make_msgid`` on the
  sender's domain) are set here and cannot be configured;
- body: ``multipart/alternative`` with the ``text`` part first and the ``html`` part last
  (RFC 2046's order of preference); a template that renders empty leaves its part out. The
  HTML template is rendered with autoescaping, so a label or annotation cannot inject
  markup. The defaults are Alertmanager's ``email.default.html`` (simplified: the alert
  list with labels, annotations and source links, without the Mailgun styling) and, for
  text, the same content as plain text (Alertmanager sends no text part by default);
- envelope: ``from`` must hold exactly one address; ``to`` may hold several.

TLS, as Alertmanager: ``tls: auto`` (the default) speaks TLS from the first byte when the
smarthost's port is 465, else requires STARTTLS unless ``require_tls: false`` (then the
session stays in clear, as Alertmanager's does); ``tls: implicit`` forces TLS from the first
byte on any port and ``tls: starttls`` forces STARTTLS. The server's certificate is always
verified (against ``tls_config.ca_file`` or the system's CAs, for ``tls_config.server_name``
or the smarthost's host) unless ``tls_config.insecure_skip_verify`` is set. When TLS is
required and fails, nothing is sent in clear: the delivery fails with the reason
(``certificate verify failed: ...``) and is retried.

Authentication (``auth_username`` with ``auth_password``/``auth_password_file``) runs when
the server offers ``AUTH``, with aiosmtplib's choice of CRAM-MD5, PLAIN or LOGIN, or PLAIN
with ``auth_identity`` as the authorization identity when that is set. A refused login
(535) and other permanent (5xx) answers are not retried; 4xx answers, timeouts and
connection errors are. The password never appears in errors, logs or the config dump.
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import email.utils
import socket
import ssl
from email.message import EmailMessage
from typing import Any, ClassVar, Final, Literal, Self

import aiosmtplib
from pydantic import Field, SecretStr, field_validator, model_validator

from monitor.log import get_logger
from monitor.schema import Duration, SecretFile, resolve_secret
from notifiers.base import (
    Delivery,
    DeliveryError,
    Notification,
    Notifier,
    NotifierConfig,
    NotifierContext,
)
from notifiers.httpconfig import TlsConfig
from notifiers.templates import SUBJECT, check_template

__all__ = ["DEFAULT_HTML", "DEFAULT_SUBJECT", "DEFAULT_TEXT", "EmailConfig", "EmailNotifier"]

log = get_logger("notifiers.email")

DEFAULT_SUBJECT: Final = SUBJECT
"""Alertmanager's ``email.default.subject`` (its ``__subject``)."""

_TEXT_ALERT: Final = (
    "Labels:\n"
    "{% for k, v in a.labels | dictsort(true) %} - {{ k }} = {{ v }}\n{% endfor %}"
    "Annotations:\n"
    "{% for k, v in a.annotations | dictsort(true) %} - {{ k }} = {{ v }}\n{% endfor %}"
    "Source: {{ a.generator_url }}\n"
)

DEFAULT_TEXT: Final = (
    "{% set subject %}" + DEFAULT_SUBJECT + "{% endset %}{{ subject | trim }}\n\n"
    "{% if firing %}Alerts Firing:\n{% for a in firing %}" + _TEXT_ALERT + "{% endfor %}\n"
    "{% endif %}"
    "{% if resolved %}Alerts Resolved:\n{% for a in resolved %}" + _TEXT_ALERT + "{% endfor %}\n"
    "{% endif %}"
    "{% if external_url %}View in monitord: {{ external_url }}\n{% endif %}"
)
"""The plain-text part: the subject, then Alertmanager's ``__text_alert_list`` of the
firing and the resolved alerts (as its ``opsgenie.default.description`` lays them out)."""

_LINK: Final = 'href.startswith("http://") or href.startswith("https://")'
_HTML_ALERT: Final = (
    "{% macro alert_block(a) %}"
    '<tr><td style="padding: 0 0 20px; vertical-align: top;">'
    "<strong>Labels</strong><br />"
    "{% for k, v in a.labels | dictsort(true) %}{{ k }} = {{ v }}<br />{% endfor %}"
    "{% if a.annotations %}<strong>Annotations</strong><br />{% endif %}"
    "{% for k, v in a.annotations | dictsort(true) %}{{ k }} = {{ v }}<br />{% endfor %}"
    "{% set href = a.generator_url %}{% if " + _LINK + " %}"
    '<a href="{{ href }}" style="color: #348eda; text-decoration: underline;">Source</a><br />'
    "{% endif %}</td></tr>\n"
    "{% endmacro %}"
)

DEFAULT_HTML: Final = (
    _HTML_ALERT
    + "{% set subject %}"
    + DEFAULT_SUBJECT
    + "{% endset %}{% set href = external_url %}"
    + """<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta name="viewport" content="width=device-width" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>{{ subject | trim }}</title>
</head>
<body style="font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif; font-size: 14px; \
line-height: 1.6em; background-color: #f6f6f6; margin: 0; padding: 0;">
<table width="100%" style="background-color: #f6f6f6;"><tr><td></td>
<td width="600" style="max-width: 600px; margin: 0 auto; display: block;">
<table width="100%" cellpadding="0" cellspacing="0" style="background-color: #fff; \
border: 1px solid #e9e9e9; border-radius: 3px;">
<tr><td style="font-size: 16px; color: #fff; font-weight: 500; text-align: center; \
background-color: #E6522C; padding: 20px;">
{{ alerts | length }} alert{% if alerts | length > 1 %}s{% endif %} for \
{% for k, v in group_labels | dictsort(true) %}{{ k }}={{ v }} {% endfor %}
</td></tr>
<tr><td style="padding: 10px;">
<table width="100%" cellpadding="0" cellspacing="0">
{% if """
    + _LINK
    + """ %}<tr><td style="padding: 0 0 20px;">\
<a href="{{ href }}" style="color: #fff; text-decoration: none; font-weight: bold; \
display: inline-block; border-radius: 5px; background-color: #348eda; \
border: solid #348eda; border-width: 10px 20px;">View in monitord</a></td></tr>
{% endif %}\
{% if firing %}<tr><td style="padding: 0 0 20px;"><strong>[{{ firing | length }}] Firing\
</strong></td></tr>
{% for a in firing %}{{ alert_block(a) }}{% endfor %}{% endif %}\
{% if resolved %}{% if firing %}<tr><td style="padding: 0 0 20px;"><br /><hr /><br />\
</td></tr>
{% endif %}<tr><td style="padding: 0 0 20px;"><strong>[{{ resolved | length }}] Resolved\
</strong></td></tr>
{% for a in resolved %}{{ alert_block(a) }}{% endfor %}{% endif %}\
</table>
</td></tr>
</table>
<div style="color: #999; font-size: 12px; text-align: center; padding: 20px;">Sent by monitord\
</div>
</td><td></td></tr></table>
</body>
</html>
"""
)
"""The HTML part: Alertmanager's ``email.default.html``, simplified."""

_RESERVED_HEADERS: Final = frozenset(
    {"Date", "Message-Id", "Mime-Version", "Content-Type", "Content-Transfer-Encoding"}
)


def _canonical(name: str) -> str:
    """A header name as Go's ``textproto.CanonicalMIMEHeaderKey`` spells it."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _template(value: str) -> str:
    error = check_template(value)
    if error is not None:
        raise ValueError(f"bad template: {error}")
    return value


def split_host_port(smarthost: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair; raises ``ValueError``."""
    host, sep, port = smarthost.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"smarthost {smarthost!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class EmailConfig(NotifierConfig):
    """One ``email_configs`` entry (Alertmanager's ``EmailConfig``)."""

    type: Literal["email"] = "email"
    send_resolved: bool = Field(default=False, description="notify when the alerts resolve")
    to: str = Field(description="the recipients, comma-separated; a template")
    from_: str = Field(alias="from", description="the sender; a template")
    smarthost: str = Field(description="the SMTP server as host:port")
    hello: str = Field(default="localhost", description="the name sent in EHLO")
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    auth_password_file: SecretFile | None = None
    auth_identity: str = Field(default="", description="PLAIN's authorization identity")
    require_tls: bool = Field(
        default=True, description="require STARTTLS (tls: auto on a port other than 465)"
    )
    tls: Literal["auto", "starttls", "implicit"] = Field(
        default="auto",
        description="auto: implicit TLS on port 465, else STARTTLS per require_tls; "
        "starttls: always STARTTLS; implicit: TLS from the first byte",
    )
    tls_config: TlsConfig = Field(default_factory=TlsConfig)
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra or overriding headers; templates"
    )
    text: str = Field(default=DEFAULT_TEXT, description="the text/plain part; a template")
    html: str = Field(
        default=DEFAULT_HTML, description="the text/html part; a template with autoescaping"
    )
    timeout: Duration = Field(default=30.0, description="for each SMTP step")

    @field_validator("to", "from_", "text", "html")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _template(value)

    @field_validator("smarthost")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        canonical: dict[str, str] = {}
        for name, source in value.items():
            key = _canonical(name)
            if key in canonical:
                raise ValueError(f"duplicate header {key!r}")
            if key in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by monitord")
            error = check_template(source)
            if error is not None:
                raise ValueError(f"headers.{name}: bad template: {error}")
            canonical[key] = source
        return canonical

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self._check_secret_pair("auth_password")
        if self.password() is not None and not self.auth_username:
            raise ValueError("auth_password needs auth_username")
        if self.tls == "starttls" and not self.require_tls:
            raise ValueError("tls: starttls requires TLS; drop require_tls: false")
        return self

    def password(self) -> SecretStr | None:
        """The password, from ``auth_password`` or ``auth_password_file``."""
        return resolve_secret(self.auth_password, self.auth_password_file)

    def all_headers(self) -> dict[str, str]:
        """The header templates: Subject, To and From defaults under ``headers``."""
        return {"Subject": DEFAULT_SUBJECT, "To": self.to, "From": self.from_, **self.headers}

    def implicit_tls(self) -> bool:
        """Whether TLS starts with the connection (port 465 or ``tls: implicit``)."""
        return self.tls == "implicit" or (
            self.tls == "auto" and split_host_port(self.smarthost)[1] == 465
        )

    def starttls(self) -> bool:
        """Whether STARTTLS is required."""
        return not self.implicit_tls() and (self.tls == "starttls" or self.require_tls)


def _one_line(value: str) -> str:
    return " ".join(value.split())


async def _closed(protocol: asyncio.BaseProtocol | None, limit: float = 2.0) -> None:
    """Wait (at most ``limit`` seconds) until a closed connection is gone: a TLS
    connection's socket closes only after the TLS goodbye, a plain one a loop turn after
    ``close``, and a delivery should not leave its socket to whoever runs the loop next."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # aiosmtplib's protocol sets ``transport`` to None on connection_lost and offers no
    # event to wait on, hence the short poll.
    while getattr(protocol, "transport", None) is not None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


class EmailNotifier(Notifier[EmailConfig]):
    """Sends each notification as one e-mail through the smarthost."""

    config_model: ClassVar[type[NotifierConfig]] = EmailConfig

    def __init__(self, config: EmailConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        self._host, self._port = split_host_port(config.smarthost)
        self._where = f"email {config.smarthost}"

    def _render(self, what: str, source: str, notification: Notification, html: bool) -> str:
        try:
            rendered: str = self.context.templates.render(source, notification, html=html)
        except Exception as exc:  # a template may raise anything (a filter on bad input)
            raise DeliveryError(f"{self._where}: template {what}: {exc}", retryable=False) from exc
        return rendered

    def message(self, notification: Notification) -> tuple[EmailMessage, str, list[str]]:
        """The message, the envelope sender and the envelope recipients."""
        config = self.config
        sender = _one_line(self._render("from", config.from_, notification, False))
        senders = [a for _, a in email.utils.getaddresses([sender]) if a]
        if len(senders) != 1:
            raise DeliveryError(
                f"{self._where}: from must be exactly one address, got {sender!r}",
                retryable=False,
            )
        to = _one_line(self._render("to", config.to, notification, False))
        recipients = [a for _, a in email.utils.getaddresses([to]) if a]
        if not recipients:
            raise DeliveryError(f"{self._where}: no recipient in {to!r}", retryable=False)
        message = EmailMessage(policy=email.policy.SMTP)
        try:
            for name, source in config.all_headers().items():
                message[name] = _one_line(self._render(name, source, notification, False))
        except (ValueError, TypeError) as exc:
            raise DeliveryError(f"{self._where}: bad header: {exc}", retryable=False) from exc
        message["Date"] = email.utils.formatdate(localtime=True)
        domain = senders[0].rpartition("@")[2] or config.hello
        message["Message-ID"] = email.utils.make_msgid(domain=domain)
        text = self._render("text", config.text, notification, False)
        html = self._render("html", config.html, notification, True)
        if text.strip() and html.strip():
            message.set_content(text)
            message.add_alternative(html, subtype="html")
        elif html.strip():
            message.set_content(html, subtype="html")
        elif text.strip():
            message.set_content(text)
        else:
            raise DeliveryError(f"{self._where}: text and html render empty", retryable=False)
        return message, senders[0], recipients

    async def notify(self, notification: Notification, delivery: Delivery) -> None:
        """Build the message, then connect, secure, log in and send it."""
        message, sender, recipients = self.message(notification)
        try:
            await self._send(message, sender, recipients)
        except DeliveryError:
            raise
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"{self._where}: login as {self.config.auth_username!r} refused: "
                f"{exc.code} {exc.message}",
                retryable=False,
                status=exc.code,
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            refused = ", ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(
                f"{self._where}: every recipient refused: {refused}",
                retryable=any(code < 500 for code in codes),
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{self._where}: {exc.code} {exc.message}",
                retryable=exc.code < 500,
                status=exc.code,
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{self._where}: {self._describe(exc)}") from exc

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, with the TLS reason first and never the password."""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            text = f"TLS failed: certificate verify failed: {cause.verify_message}"
        elif cause is not None:
            text = f"TLS failed: {cause.reason or cause}"
        else:
            text = str(exc) or exc.__class__.__name__
        password = self.config.password()
        if password is not None and password.get_secret_value():
            text = text.replace(password.get_secret_value(), "<redacted>")
        return text

    def _context(self) -> ssl.SSLContext:
        try:
            return self.config.tls_config.context()
        except (OSError, ValueError) as exc:
            raise DeliveryError(
                f"{self._where}: tls_config cannot be loaded: {exc}", retryable=False
            ) from exc

    async def _connect(self, context: ssl.SSLContext | None) -> aiosmtplib.SMTP:
        config = self.config
        server_name = config.tls_config.server_name
        options: dict[str, Any] = {
            "local_hostname": config.hello,
            "timeout": config.timeout,
            "start_tls": False,
            "use_tls": context is not None and config.implicit_tls(),
            "tls_context": context,
        }
        if options["use_tls"] and server_name and server_name != self._host:
            # aiosmtplib verifies an implicit-TLS peer under the name it dials: dial the
            # socket here and hand it over under the name to verify.
            sock = await self._dial()
            smtp = aiosmtplib.SMTP(hostname=server_name, sock=sock, **options)
        else:
            smtp = aiosmtplib.SMTP(hostname=self._host, port=self._port, **options)
        await smtp.connect()
        return smtp

    async def _dial(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.config.timeout):
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
            error: OSError = OSError(f"cannot resolve {self._host}")
            for family, kind, proto, _, address in infos:
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                return sock
        raise error

    async def _send(self, message: EmailMessage, sender: str, recipients: list[str]) -> None:
        config = self.config
        secure = config.implicit_tls() or config.starttls()
        context = self._context() if secure else None
        smtp = await self._connect(context)
        protocol = smtp.protocol
        try:
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            if config.starttls():
                if not smtp.supports_extension("starttls"):
                    raise DeliveryError(
                        f"{self._where}: TLS is required (require_tls) but the server does "
                        "not offer STARTTLS; nothing sent"
                    )
                await smtp.starttls(
                    server_hostname=config.tls_config.server_name or self._host,
                    tls_context=context,
                )
                await smtp.ehlo()
            if config.auth_username and smtp.supports_extension("auth"):
                await self._login(smtp)
            errors, _ = await smtp.send_message(message, sender=sender, recipients=recipients)
            for recipient, response in errors.items():
                log.warning(
                    "%s: recipient %s refused: %s %s",
                    self._where,
                    recipient,
                    response.code,
                    response.message,
                )
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass  # the message was accepted; the goodbye does not matter
        finally:
            smtp.close()
            await _closed(protocol)

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        config = self.config
        assert config.auth_username is not None
        secret = config.password()
        password = secret.get_secret_value() if secret is not None else ""
        if not config.auth_identity:
            await smtp.login(config.auth_username, password)
            return
        if "plain" not in smtp.server_auth_methods:
            raise DeliveryError(
                f"{self._where}: auth_identity needs AUTH PLAIN, which the server does not offer",
                retryable=False,
            )
        token = "\0".join((config.auth_identity, config.auth_username, password))
        response = await smtp.execute_command(b"AUTH", b"PLAIN", base64.b64encode(token.encode()))
        if response.code != 235:
            raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
