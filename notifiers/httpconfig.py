"""Alertmanager's ``http_config`` for the HTTP receivers: authentication, TLS and a proxy.

The keys are Prometheus common's ``HTTPClientConfig`` (the subset a receiver needs):
``basic_auth`` (``username``, ``password``/``password_file``), ``authorization``
(``type``, default ``Bearer``, and ``credentials``/``credentials_file``), the older
``bearer_token``/``bearer_token_file``, ``tls_config`` (``ca_file``, ``cert_file``,
``key_file``, ``server_name``, ``insecure_skip_verify``) and ``proxy_url``. At most one
kind of authentication may be set.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator

from monitor.schema import ConfigModel, SecretFile, resolve_secret

__all__ = ["Authorization", "BasicAuth", "HttpClientConfig", "TlsConfig"]


class BasicAuth(ConfigModel):
    """HTTP basic authentication."""

    username: str
    password: SecretStr | None = None
    password_file: SecretFile | None = None

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        self._check_secret_pair("password")
        return self


class Authorization(ConfigModel):
    """An ``Authorization: <type> <credentials>`` header."""

    type: str = Field(default="Bearer", description="the scheme; Basic is refused")
    credentials: SecretStr | None = None
    credentials_file: SecretFile | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self._check_secret_pair("credentials")
        if self.type.strip().lower() == "basic":
            raise ValueError("authorization type cannot be set to 'basic', use basic_auth")
        return self


class TlsConfig(ConfigModel):
    """How the receiver's certificate is verified, and the client certificate to present."""

    ca_file: Path | None = Field(default=None, description="trust these CAs, not the system's")
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = Field(default=None, description="the name to verify, and SNI")
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if (self.key_file is None) != (self.cert_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def context(self) -> ssl.SSLContext:
        """A client context for these options; a bad file raises ``OSError``/``SSLError``."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class HttpClientConfig(ConfigModel):
    """Authentication, TLS and proxy of a receiver's HTTP requests."""

    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: SecretFile | None = None
    tls_config: TlsConfig = Field(default_factory=TlsConfig)
    proxy_url: str | None = None

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        self._check_secret_pair("bearer_token")
        ways = [
            self.basic_auth is not None,
            self.authorization is not None,
            self.bearer_token is not None or self.bearer_token_file is not None,
        ]
        if sum(ways) > 1:
            raise ValueError("at most one of basic_auth, authorization and bearer_token")
        return self

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, if any."""
        if self.basic_auth is not None:
            password = resolve_secret(self.basic_auth.password, self.basic_auth.password_file)
            secret = password.get_secret_value() if password is not None else ""
            pair = f"{self.basic_auth.username}:{secret}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
        if self.authorization is not None:
            auth = self.authorization
            credentials = resolve_secret(auth.credentials, auth.credentials_file)
            value = credentials.get_secret_value() if credentials is not None else ""
            return {"Authorization": f"{auth.type} {value}".strip()}
        token = resolve_secret(self.bearer_token, self.bearer_token_file)
        if token is not None:
            return {"Authorization": f"Bearer {token.get_secret_value()}"}
        return {}

    def request_options(self) -> dict[str, Any]:
        """Keyword arguments for ``aiohttp.ClientSession.request``: ``ssl`` (a context only
        when the TLS options differ from the defaults), ``proxy`` and ``server_hostname``."""
        options: dict[str, Any] = {}
        if self.tls_config != TlsConfig():
            options["ssl"] = self.tls_config.context()
        if self.tls_config.server_name is not None:
            options["server_hostname"] = self.tls_config.server_name
        if self.proxy_url is not None:
            options["proxy"] = self.proxy_url
        return options
