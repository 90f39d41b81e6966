"""The ``cluster`` check: peer monitord nodes watch each other.

Each run polls every peer in ``peers`` at once, each with two requests in turn:
``GET <peer>/-/ready`` (must answer 200), then ``GET <peer>/api/v1/health`` (must answer
its JSON, with 200 or 503; see :mod:`monitor.web.health`). A peer that does both within
the run's deadline (the check's timeout less a tenth, at most 0.5 s, as the probes keep)
is *up* and *seen*. With ``token``/``token_file`` both requests carry ``Authorization:
Bearer <token>``; credentials in a peer's URL are sent as basic auth.

The peer's health is the overall state its ``/api/v1/health`` would give
(:func:`monitor.web.health.overall_state`: ``healthy``, ``degraded``, ``unhealthy``)
computed over its checks **other than its own cluster checks**. Otherwise one dead node
would make every survivor's cluster check CRITICAL, so every survivor would report every
other survivor degraded (or unhealthy, where the cluster check is its only check), and a
one-node outage would read as a cluster-wide one.

Families (all gauges; the scheduler adds ``check="<name>"``, as to every check's series):

- ``monitord_cluster_peer_up{peer}``: 1 when the peer answered ready and its health at
  the last poll, else 0.
- ``monitord_cluster_peer_last_seen_timestamp_seconds{peer}``: when it was last up
  (epoch seconds); 0 while it has not been seen since this check started.
- ``monitord_cluster_peer_health{peer,status}``: one-hot over ``healthy``, ``degraded``
  and ``unhealthy`` (as kube-state-metrics writes a phase); all three 0 while the peer
  is down, its health being unknown.
- ``monitord_cluster_peers``: peers configured; ``monitord_cluster_peers_up``: those up.

``peer`` is the URL as configured, without credentials.

Status: CRITICAL when a peer has been unseen for longer than ``down_after`` (default
twice the interval), naming it, since when, and why; WARNING when a peer is down for
less than that, or up but ``degraded`` or ``unhealthy``; OK otherwise. A peer never seen
counts as unseen since this check's first run, so a peer that never comes up turns
CRITICAL ``down_after`` after monitord starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

import aiohttp
from pydantic import AfterValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from checks.base import Check, CheckConfig
from checks.probe import probe_deadline
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import Duration, SecretFile, format_duration, resolve_secret
from monitor.web.health import PENDING, overall_state

__all__ = [
    "CLUSTER_FAMILIES",
    "CLUSTER_LABELS",
    "DEFAULT_INTERVAL",
    "HEALTH_STATES",
    "ClusterCheck",
    "ClusterConfig",
    "PeerReport",
    "peer_label",
]

HEALTH_STATES: Final = ("healthy", "degraded", "unhealthy")
"""The values of ``monitord_cluster_peer_health``'s ``status`` label."""

DEFAULT_INTERVAL: Final = 15.0
"""The interval assumed for ``down_after``'s default when the check has none (the
config loader always sets one: ``global.scrape_interval`` by default)."""

_GAUGE = MetricType.GAUGE
CLUSTER_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "monitord_cluster_peer_up": MetricMetadata(
        _GAUGE, "1 when the peer monitord answered /-/ready with 200 and /api/v1/health"
    ),
    "monitord_cluster_peer_last_seen_timestamp_seconds": MetricMetadata(
        _GAUGE, "When the peer monitord was last up, in seconds since the epoch; 0 if never"
    ),
    "monitord_cluster_peer_health": MetricMetadata(
        _GAUGE,
        "The peer monitord's overall health without its cluster checks, one-hot by status; "
        "all 0 while it is down",
    ),
    "monitord_cluster_peers": MetricMetadata(_GAUGE, "Peer monitord nodes configured"),
    "monitord_cluster_peers_up": MetricMetadata(_GAUGE, "Peer monitord nodes up"),
}
"""The families of the cluster check, with their help texts."""

CLUSTER_LABELS: Final[Mapping[str, frozenset[str]]] = {
    "monitord_cluster_peer_up": frozenset({"peer"}),
    "monitord_cluster_peer_last_seen_timestamp_seconds": frozenset({"peer"}),
    "monitord_cluster_peer_health": frozenset({"peer", "status"}),
    "monitord_cluster_peers": frozenset(),
    "monitord_cluster_peers_up": frozenset(),
}
"""The label names of each family (before the scheduler adds ``check``)."""


def peer_label(url: str) -> str:
    """The ``peer`` label of a configured URL: the URL as written, credentials taken out."""
    parsed = URL(url)
    if parsed.user is None and parsed.password is None:
        return url
    return str(parsed.with_user(None))


def _valid_peer(value: str) -> str:
    try:
        url = URL(value)
    except (TypeError, ValueError):
        raise ValueError("a peer is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"peer {peer_label(value)!r} is not an http:// or https:// URL")
    if url.query_string or url.fragment:
        raise ValueError(f"peer {peer_label(value)!r}: give the base URL, without ? or #")
    return value


PeerURL = Annotated[str, AfterValidator(_valid_peer)]


class ClusterConfig(CheckConfig):
    """Options of the ``cluster`` check."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a peer URL may hold a password

    type: Literal["cluster"]
    peers: tuple[PeerURL, ...] = Field(
        min_length=1, description="base URLs of the peer monitord nodes, http://host:port"
    )
    token: SecretStr | None = Field(
        default=None, description="bearer token sent to the peers (their server.auth_token)"
    )
    token_file: SecretFile | None = None
    down_after: Duration | None = Field(
        default=None, gt=0, description="a peer unseen this long is CRITICAL; default 2 intervals"
    )

    @field_validator("peers")
    @classmethod
    def _distinct(cls, peers: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for peer in peers:
            label = peer_label(peer)
            if label in seen:
                raise ValueError(f"peer {label!r} is listed twice")
            seen.add(label)
        return peers

    @model_validator(mode="after")
    def _one_token(self) -> Self:
        self._check_secret_pair("token")
        if self.bearer() is not None:
            with_credentials = [p for p in self.peers if URL(p).user or URL(p).password]
            if with_credentials:
                raise ValueError(
                    f"peer {peer_label(with_credentials[0])!r} has credentials in its URL; "
                    "use them or the token, not both"
                )
        return self

    def bearer(self) -> SecretStr | None:
        """The token, from ``token`` or ``token_file``."""
        return resolve_secret(self.token, self.token_file)

    @property
    def effective_down_after(self) -> float:
        """``down_after``, or twice the interval."""
        if self.down_after is not None:
            return self.down_after
        return 2 * (self.interval if self.interval is not None else DEFAULT_INTERVAL)


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What one poll of one peer found: up with a health state, or down with a reason."""

    up: bool
    health: str | None = None
    reason: str = ""


class _Down(Exception):
    """The peer did not answer as a working monitord; the message says how."""


def _health_of(body: Any) -> str:
    """The peer's overall state without its cluster checks, from its health JSON."""
    try:
        data = body["data"]
        ready = bool(data["ready"])
        statuses = [
            None if check["status"] == PENDING else Status[check["status"]]
            for check in data["checks"]
            if check["kind"] != "cluster"
        ]
    except (KeyError, TypeError):
        raise _Down("health: not monitord's /api/v1/health answer") from None
    return overall_state(ready, statuses)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ClusterCheck(Check[ClusterConfig]):
    """Polls the peer monitord nodes; CRITICAL when one has been unseen past ``down_after``."""

    config_model = ClusterConfig

    def __init__(self, config: ClusterConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self._clock = clock
        self._labels = {peer: peer_label(peer) for peer in config.peers}
        token = config.bearer()
        self._headers = (
            {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}
        )
        self._started: float | None = None
        self._last_seen: dict[str, float] = {}

    async def run(self) -> CheckResult:
        """Poll every peer at once and judge them."""
        began = time.monotonic()
        now = self._clock()
        if self._started is None:
            self._started = now
        deadline = probe_deadline(self.config.timeout)
        async with aiohttp.ClientSession(headers=self._headers) as session:
            reports = await asyncio.gather(
                *(self.poll(session, peer, deadline) for peer in self.config.peers)
            )
        now = self._clock()
        for peer, report in zip(self.config.peers, reports, strict=True):
            if report.up:
                self._last_seen[peer] = now
        samples = self._samples(reports)
        status, message = self._judge(reports, now)
        return CheckResult(
            status,
            message,
            tuple(samples),
            duration=time.monotonic() - began,
            metadata=CLUSTER_FAMILIES,
        )

    async def poll(self, session: aiohttp.ClientSession, peer: str, deadline: float) -> PeerReport:
        """Ask one peer whether it is ready, then how healthy it is, within ``deadline`` s."""
        base = peer.rstrip("/")
        try:
            async with asyncio.timeout(deadline):
                await self._ready(session, f"{base}/-/ready")
                health = await self._health(session, f"{base}/api/v1/health")
        except TimeoutError:
            return PeerReport(False, reason=f"no answer within {deadline:g}s")
        except _Down as exc:
            return PeerReport(False, reason=self._scrub(str(exc), peer))
        except Exception as exc:  # anything else aiohttp raises: the peer is not seen
            return PeerReport(False, reason=self._scrub(f"{type(exc).__name__}: {exc}", peer))
        return PeerReport(True, health=health)

    async def _ready(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise _Down(f"not ready (/-/ready answered HTTP {response.status})")
        except aiohttp.ClientConnectorError as exc:
            raise _Down(f"cannot connect: {exc.os_error.strerror or exc.os_error}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Down(f"/-/ready: {str(exc) or type(exc).__name__}") from exc

    async def _health(self, session: aiohttp.ClientSession, url: str) -> str:
        try:
            async with session.get(url) as response:
                text = await response.text()
                if response.status not in (200, 503):
                    raise _Down(f"/api/v1/health answered HTTP {response.status}")
        except aiohttp.ClientConnectorError as exc:
            raise _Down(f"cannot connect: {exc.os_error.strerror or exc.os_error}") from exc
        except (aiohttp.ClientError, OSError, UnicodeDecodeError) as exc:
            raise _Down(f"/api/v1/health: {str(exc) or type(exc).__name__}") from exc
        try:
            body = json.loads(text)
        except ValueError:
            raise _Down("health: not monitord's /api/v1/health answer") from None
        return _health_of(body)

    @staticmethod
    def _scrub(text: str, peer: str) -> str:
        """``text`` without the password of ``peer``'s URL."""
        password = URL(peer).password
        return text.replace(password, "<redacted>") if password else text

    def _samples(self, reports: Sequence[PeerReport]) -> list[Sample]:
        samples: list[Sample] = []
        for peer, report in zip(self.config.peers, reports, strict=True):
            labels = Labels.of(peer=self._labels[peer])
            samples.append(Sample("monitord_cluster_peer_up", labels, float(report.up)))
            samples.append(
                Sample(
                    "monitord_cluster_peer_last_seen_timestamp_seconds",
                    labels,
                    self._last_seen.get(peer, 0.0),
                )
            )
            for state in HEALTH_STATES:
                samples.append(
                    Sample(
                        "monitord_cluster_peer_health",
                        labels.merge({"status": state}),
                        float(report.health == state),
                    )
                )
        samples.append(Sample("monitord_cluster_peers", value=float(len(reports))))
        samples.append(Sample("monitord_cluster_peers_up", value=float(sum(r.up for r in reports))))
        return samples

    def _judge(self, reports: Sequence[PeerReport], now: float) -> tuple[Status, str]:
        down_after = self.config.effective_down_after
        critical: list[str] = []
        warning: list[str] = []
        for peer, report in zip(self.config.peers, reports, strict=True):
            label = self._labels[peer]
            if report.up:
                if report.health != "healthy":
                    warning.append(f"{label} is {report.health}")
                continue
            seen = self._last_seen.get(peer)
            since = seen if seen is not None else self._started
            assert since is not None  # set by the first run
            what = "unseen since" if seen is not None else "never seen; polled since"
            unseen = format_duration(round(max(0.0, now - since), 1))
            line = f"{label} down, {what} {_iso(since)} ({unseen}): {report.reason}"
            (critical if now - since > down_after else warning).append(line)
        up = sum(r.up for r in reports)
        if critical:
            return Status.CRITICAL, "; ".join(critical + warning)
        if warning:
            return Status.WARNING, "; ".join(warning)
        return Status.OK, f"{up} of {len(reports)} peers up and healthy"
