"""The ``http`` check: one HTTP(S) request, judged by Gatus conditions, measured as
blackbox_exporter's http prober measures it.

Every run opens a fresh aiohttp session (no pooled connection hides the connect and TLS
phases). A ``TraceConfig`` and the handshakes the shared :class:`checks.certs.RecordingContext`
reports to this run (:func:`checks.certs.recording_handshakes`) give the phase
timings of ``probe_http_duration_seconds{phase}``, summed over redirects as blackbox_exporter
sums them. The check cuts itself off a little before its timeout (a tenth of it, at most
0.5 s, as blackbox_exporter's scrape-timeout offset does) so that a hung target still yields
``probe_success 0`` and the other samples, not the scheduler's bare timeout.

Status: with ``conditions``, CRITICAL when any fails (each failed one is named in the
message, resolved as Gatus shows it), OK otherwise; a failed request is CRITICAL too unless a
condition reads ``[CONNECTED]`` (so ``[CONNECTED] == false`` can watch that something is
down). Without conditions the final response must be 2xx, as blackbox_exporter's default.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from yarl import URL

from checks.base import Check, CheckConfig
from checks.certs import (
    TLS_METADATA,
    HandshakeLog,
    RecordingContext,
    peer_chain,
    recording_handshakes,
    tls_samples,
)
from checks.conditions import PLACEHOLDERS, Condition, ConditionContext, parse_condition
from checks.probe import PROBE_FAMILIES, TlsClientConfig, ip_addr_hash, probe_deadline
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel, SecretFile, resolve_secret

__all__ = [
    "HTTP_METADATA",
    "PHASES",
    "BasicAuth",
    "HttpCheck",
    "HttpConfig",
]

HTTP_PLACEHOLDERS: Final = tuple(p for p in PLACEHOLDERS if p != "[DNS_RCODE]")


def _condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    return parse_condition(value, HTTP_PLACEHOLDERS)


HttpCondition = Annotated[
    Condition,
    PlainValidator(_condition),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["[STATUS] == 200"]}),
]
"""A Gatus condition, parsed when the config is loaded."""


class BasicAuth(ConfigModel):
    """HTTP basic authentication."""

    username: str
    password: SecretStr | None = None
    password_file: SecretFile | None = None

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        self._check_secret_pair("password")
        return self

    @property
    def secret(self) -> str:
        """The password, empty when none is set."""
        password = resolve_secret(self.password, self.password_file)
        return "" if password is None else password.get_secret_value()


class HttpConfig(CheckConfig):
    """Options of the ``http`` check."""

    type: Literal["http"]
    url: str = Field(description="http:// or https:// URL to request")
    method: str = Field(default="GET", pattern=r"^[A-Z]+$")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(default=None, description="request body")
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: SecretFile | None = None
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0, description="more is a failure")
    tls: TlsClientConfig = Field(default_factory=TlsClientConfig)
    proxy_url: str | None = Field(default=None, description="HTTP proxy (https:// via CONNECT)")
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = Field(
        default=True, description="try the other family's addresses after the preferred one's"
    )
    body_size_limit: int = Field(default=10 * 2**20, gt=0, description="bytes; more fails")
    conditions: tuple[HttpCondition, ...] = ()

    @field_validator("url", "proxy_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            url = URL(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        self._check_secret_pair("bearer_token")
        has_token = self.bearer_token is not None or self.bearer_token_file is not None
        if self.basic_auth is not None and has_token:
            raise ValueError("set basic_auth or a bearer token, not both")
        return self


PHASES: Final = ("resolve", "connect", "tls", "processing", "transfer")

_GAUGE = MetricType.GAUGE
HTTP_METADATA: Final[Mapping[str, MetricMetadata]] = {
    **PROBE_FAMILIES,
    "probe_http_status_code": MetricMetadata(_GAUGE, "Response HTTP status code"),
    "probe_http_duration_seconds": MetricMetadata(
        _GAUGE, "Duration of http request by phase, summed over all redirects"
    ),
    "probe_http_content_length": MetricMetadata(_GAUGE, "Length of http content response"),
    "probe_http_uncompressed_body_length": MetricMetadata(
        _GAUGE, "Length of uncompressed response body"
    ),
    "probe_http_version": MetricMetadata(
        _GAUGE, "Returns the version of HTTP of the probe response"
    ),
    "probe_http_ssl": MetricMetadata(_GAUGE, "Indicates if SSL was used for the final redirect"),
    "probe_http_redirects": MetricMetadata(_GAUGE, "The number of redirects"),
    **TLS_METADATA,
}
"""blackbox_exporter's families of the http prober, with its help texts."""


class _FamilyResolver(AbstractResolver):
    """The system resolver, with the preferred family's addresses first (or only)."""

    def __init__(self, preferred: socket.AddressFamily, fallback: bool) -> None:
        self._inner = DefaultResolver()
        self._preferred = preferred
        self._fallback = fallback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, socket.AF_UNSPEC)
        preferred = [r for r in found if r["family"] == self._preferred]
        if not self._fallback:
            if not preferred:
                version = 6 if self._preferred == socket.AF_INET6 else 4
                raise OSError(f"{host} has no IPv{version} address")
            return preferred
        return preferred + [r for r in found if r["family"] != self._preferred]

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class _Timeline:
    """Phase durations of one run, from aiohttp's trace signals and the TLS context."""

    clock: Callable[[], float]
    tls: HandshakeLog
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    connection_started: float | None = None
    resolved: float | None = None
    ready: float | None = None
    headers_sent: float | None = None
    response_at: float | None = None
    dns_started: float | None = None
    sockets: list[socket.socket] = field(default_factory=list)
    peer: str = ""

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket factory: a socket as aiohappyeyeballs makes one, kept for its peer."""
        family, type_, proto = addr_info[:3]
        sock = socket.socket(family=family, type=type_, proto=proto)
        self.sockets.append(sock)
        return sock

    def trace_config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_start.append(self._connection_start)
        trace.on_dns_resolvehost_start.append(self._dns_start)
        trace.on_dns_resolvehost_end.append(self._dns_end)
        trace.on_connection_create_end.append(self._connection_end)
        trace.on_request_headers_sent.append(self._headers_sent)
        trace.on_request_redirect.append(self._response)
        trace.on_request_end.append(self._response)
        return trace

    async def _connection_start(self, *_: Any) -> None:
        self.connection_started = self.resolved = self.clock()

    async def _dns_start(self, *_: Any) -> None:
        self.dns_started = self.clock()

    async def _dns_end(self, *_: Any) -> None:
        now = self.clock()
        if self.dns_started is not None:
            self.phases["resolve"] += now - self.dns_started
        self.resolved = now

    async def _connection_end(self, *_: Any) -> None:
        now = self.clock()
        began = self.resolved if self.resolved is not None else now
        tls_started = None
        if self.connection_started is not None:
            starts = [h.started for h in self.tls.handshakes]
            tls_started = next((t for t in reversed(starts) if t >= began), None)
        if tls_started is None:
            self.phases["connect"] += now - began
        else:
            self.phases["connect"] += tls_started - began
            self.phases["tls"] += now - tls_started
        self.ready = now
        if self.sockets:
            try:
                self.peer = str(self.sockets[-1].getpeername()[0])
            except OSError:
                self.peer = ""

    async def _headers_sent(self, *_: Any) -> None:
        self.headers_sent = self.clock()

    async def _response(self, *_: Any) -> None:
        now = self.clock()
        since = self.headers_sent or self.ready
        if since is not None:
            self.phases["processing"] += now - since
        self.response_at = now
        self.headers_sent = self.ready = None


@dataclass
class _Outcome:
    status: int = 0
    version: float = 0.0
    redirects: int = 0
    content_length: int = -1
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    ip: str = ""
    ssl: bool = False
    chain_samples: list[Sample] = field(default_factory=list)
    leaf_expiry: float | None = None


class _BodyTooLarge(Exception):
    pass


def _without_credentials(url: URL | str) -> str:
    url = URL(url) if isinstance(url, str) else url
    return str(url.with_user(None)) if url.user or url.password else str(url)


class HttpCheck(Check[HttpConfig]):
    """Requests ``url`` once per run and judges the response by its conditions."""

    config_model = HttpConfig

    def __init__(
        self,
        config: HttpConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config)
        self._clock = clock
        self._wall_clock = wall_clock
        self._reads_connected = any("[CONNECTED]" in c.placeholders for c in config.conditions)

    async def run(self) -> CheckResult:
        """Request, time the phases, evaluate the conditions, report blackbox's families."""
        config = self.config
        started = self._clock()
        deadline = probe_deadline(config.timeout)
        outcome = _Outcome()
        error = ""
        try:
            context = config.tls.context()  # even for http: a redirect may lead to https
        except OSError as exc:  # ssl.SSLError is one
            message = f"cannot load the TLS files: {exc}"
            samples = (Sample("probe_success", value=0.0),)
            metadata = {"probe_success": HTTP_METADATA["probe_success"]}
            return CheckResult(Status.UNKNOWN, message, samples, metadata=metadata)
        with recording_handshakes(self._clock) as handshakes:
            timeline = _Timeline(self._clock, handshakes)
            try:
                async with asyncio.timeout(deadline):
                    await self._request(context, timeline, outcome)
            except TimeoutError:
                error = f"timed out after {deadline:g}s"
            except aiohttp.TooManyRedirects:
                error = f"more than {config.max_redirects} redirects"
            except _BodyTooLarge:
                error = f"body larger than body_size_limit ({config.body_size_limit} bytes)"
            except aiohttp.ClientConnectorCertificateError as exc:
                error = f"certificate rejected: {exc.certificate_error}"
            except aiohttp.ClientSSLError as exc:
                error = f"TLS failed: {exc}"
            except aiohttp.ClientConnectorError as exc:
                error = f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = f"request failed: {exc or type(exc).__name__}"
        duration = self._clock() - started
        if timeline.response_at is not None and outcome.status:
            timeline.phases["transfer"] = max(0.0, (started + duration) - timeline.response_at)
        return self._result(outcome, timeline, error, started, duration)

    async def _request(
        self, context: RecordingContext, timeline: _Timeline, outcome: _Outcome
    ) -> None:
        config = self.config
        family = socket.AF_INET6 if config.preferred_ip_protocol == "ip6" else socket.AF_INET
        resolver = _FamilyResolver(family, config.ip_protocol_fallback)
        connector = aiohttp.TCPConnector(
            resolver=resolver,
            use_dns_cache=False,
            force_close=True,
            ssl=context,
            socket_factory=timeline.socket,
        )
        headers = dict(config.headers)
        if config.basic_auth is not None:
            pair = f"{config.basic_auth.username}:{config.basic_auth.secret}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
        token = resolve_secret(config.bearer_token, config.bearer_token_file)
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        if config.tls.server_name is not None:
            headers.setdefault("Host", config.tls.server_name)
        async with (
            aiohttp.ClientSession(
                connector=connector,
                trace_configs=[timeline.trace_config()],
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as session,
            session.request(
                config.method,
                config.url,
                headers=headers,
                data=config.body.encode() if config.body is not None else None,
                allow_redirects=config.follow_redirects,
                max_redirects=config.max_redirects,
                proxy=config.proxy_url,
                server_hostname=config.tls.server_name,
            ) as response,
        ):
            outcome.status = response.status
            if response.version is not None:
                outcome.version = float(f"{response.version.major}.{response.version.minor}")
            outcome.redirects = len(response.history)
            outcome.headers = {k: v for k, v in response.headers.items()}
            cl = response.content_length
            outcome.content_length = -1 if cl is None else cl
            outcome.ip = timeline.peer
            handshakes = timeline.tls.handshakes
            if response.url.scheme == "https" and handshakes:
                outcome.ssl = True
                chain = peer_chain(handshakes[-1].ssl_object)
                outcome.chain_samples = tls_samples(chain)
                if chain.leaf is not None:
                    outcome.leaf_expiry = chain.leaf.not_valid_after_utc.timestamp()
            outcome.body = await _read_limited(response, config.body_size_limit)

    def _result(
        self, outcome: _Outcome, timeline: _Timeline, error: str, started: float, duration: float
    ) -> CheckResult:
        config = self.config
        connected = outcome.status != 0
        response_ms = 0
        if timeline.response_at is not None:
            response_ms = int((timeline.response_at - started) * 1000)
        failures: list[str] = []
        if config.conditions:
            expiry_ms = 0
            if outcome.leaf_expiry is not None:
                expiry_ms = int((outcome.leaf_expiry - self._wall_clock()) * 1000)
            context = ConditionContext(
                status=outcome.status,
                response_time_ms=response_ms,
                body=outcome.body,
                headers=outcome.headers,
                certificate_expiration_ms=expiry_ms,
                connected=connected and not error,
                ip=outcome.ip,
            )
            failures = [
                r.display for r in (c.evaluate(context) for c in config.conditions) if not r.success
            ]
        elif not error and not 200 <= outcome.status < 300:
            failures = [f"HTTP {outcome.status}, not 2xx"]
        pieces = []
        if error and not self._reads_connected:
            pieces.append(error)
        if failures:
            pieces.append(("condition failed: " if config.conditions else "") + "; ".join(failures))
        success = not pieces
        if success:
            summary = f"HTTP {outcome.status} in {response_ms} ms" if connected else error
            message = summary or "all conditions met"
        else:
            message = "; ".join(pieces)
        samples = [
            Sample("probe_success", value=1.0 if success else 0.0),
            Sample("probe_duration_seconds", value=duration),
            Sample("probe_dns_lookup_time_seconds", value=timeline.phases["resolve"]),
            Sample("probe_http_status_code", value=float(outcome.status)),
            Sample("probe_http_content_length", value=float(outcome.content_length)),
            Sample("probe_http_uncompressed_body_length", value=float(len(outcome.body))),
            Sample("probe_http_version", value=outcome.version),
            Sample("probe_http_ssl", value=1.0 if outcome.ssl else 0.0),
            Sample("probe_http_redirects", value=float(outcome.redirects)),
            *(
                Sample("probe_http_duration_seconds", Labels.of(phase=phase), seconds)
                for phase, seconds in timeline.phases.items()
            ),
            *outcome.chain_samples,
        ]
        if outcome.ip:
            samples.append(Sample("probe_ip_protocol", value=6.0 if ":" in outcome.ip else 4.0))
            samples.append(Sample("probe_ip_addr_hash", value=ip_addr_hash(outcome.ip)))
        metadata = {s.name: HTTP_METADATA[s.name] for s in samples}
        status = Status.OK if success else Status.CRITICAL
        return CheckResult(status, message, tuple(samples), metadata=metadata)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
