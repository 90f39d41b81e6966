"""The ``redis`` check: a Redis collector with redis_exporter's metric names, and a health verdict.

It reads ``INFO ALL`` and ``CONFIG GET maxmemory|maxclients|databases`` in one round trip
through redis-py's asyncio client and exports what it reads as redis_exporter 1.45.0 (the
Debian ``prometheus-redis-exporter``) names, types, help texts and labels it:

* ``redis_up`` (0 and nothing else when the server cannot be reached or refuses the login);
* INFO fields as plain families (:data:`INFO_GAUGES`, :data:`INFO_COUNTERS`), e.g.
  ``redis_memory_used_bytes`` from ``used_memory``, ``redis_commands_processed_total``
  from ``total_commands_processed``, with the exporter's ``"<name> metric"`` help text;
* ``redis_start_time_seconds``, ``redis_instance_info{role,redis_version,redis_build_id,
  redis_mode,os,maxmemory_policy,tcp_port,run_id,process_id}``;
* ``redis_db_keys{db}`` and ``redis_db_keys_expiring{db}`` for every database ``db0`` ..
  ``db<databases-1>``, the empty ones too (the exporter's default; 16 databases when the user
  may not read ``databases``, as the exporter assumes), and
  ``redis_db_avg_ttl_seconds{db}`` for the databases INFO lists;
* ``redis_config_maxmemory`` and ``redis_config_maxclients`` (from CONFIG GET, left out when
  the user may not run it, as the exporter does);
* on a replica ``redis_master_link_up``, ``redis_master_last_io_seconds_ago``,
  ``redis_master_sync_in_progress``, ``redis_slave_repl_offset`` (all
  ``{master_host,master_port}``) and ``redis_slave_info{master_host,master_port,read_only}``;
  on a primary ``redis_connected_slave_offset_bytes`` and ``redis_connected_slave_lag_seconds``
  ``{slave_ip,slave_port,slave_state}``.

redis_exporter 1.45 puts no ``instance`` label on these, so the check keeps the default
``identify_series`` (the scheduler adds ``check="<name>"``): two Redis checks would otherwise
write the same series.

Health: CRITICAL when it cannot connect or log in (redis-py's reason, the password
redacted) or when the server does not answer within the deadline (a little inside the
check's timeout; the connection is then dropped, so nothing is left waiting on the server).
Optional thresholds (:class:`~checks.thresholds.Limits`): ``memory`` is ``used_memory`` as a
percentage of ``maxmemory`` (only when maxmemory is set), ``connections`` is
``connected_clients`` as a percentage of ``maxclients``, and ``replication_lag`` on a
replica is ``master_last_io_seconds_ago`` (redis_exporter's
``redis_master_last_io_seconds_ago``: seconds since the replica last heard from its
primary, which pings every ``repl-ping-replica-period``); a replica whose link to its
primary is down is CRITICAL when ``replication_lag`` is set. Connections come from one
small blocking pool of ``pool_size`` (default 1), named ``client_name`` on the server.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from pydantic import Field, SecretStr, field_validator, model_validator
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from checks.base import Check, CheckConfig
from checks.dbcommon import redact_password
from checks.probe import probe_deadline
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel, Duration, SecretFile, resolve_secret

__all__ = [
    "INFO_COUNTERS",
    "INFO_GAUGES",
    "REDIS_FAMILIES",
    "RedisCheck",
    "RedisConfig",
    "RedisTLSConfig",
    "parse_info",
]

INFO_GAUGES: Final[Mapping[str, str]] = {
    "uptime_in_seconds": "uptime_in_seconds",
    "process_id": "process_id",
    "connected_clients": "connected_clients",
    "blocked_clients": "blocked_clients",
    "used_memory": "memory_used_bytes",
    "used_memory_rss": "memory_used_rss_bytes",
    "used_memory_peak": "memory_used_peak_bytes",
    "maxmemory": "memory_max_bytes",
    "mem_fragmentation_ratio": "mem_fragmentation_ratio",
    "mem_fragmentation_bytes": "mem_fragmentation_bytes",
    "loading": "loading_dump_file",
    "rdb_changes_since_last_save": "rdb_changes_since_last_save",
    "rdb_last_save_time": "rdb_last_save_timestamp_seconds",
    "aof_enabled": "aof_enabled",
    "pubsub_channels": "pubsub_channels",
    "pubsub_patterns": "pubsub_patterns",
    "connected_slaves": "connected_slaves",
    "master_repl_offset": "master_repl_offset",
}
"""INFO fields exported as gauges, by redis_exporter's name (without ``redis_``)."""

INFO_COUNTERS: Final[Mapping[str, str]] = {
    "total_connections_received": "connections_received_total",
    "total_commands_processed": "commands_processed_total",
    "rejected_connections": "rejected_connections_total",
    "total_net_input_bytes": "net_input_bytes_total",
    "total_net_output_bytes": "net_output_bytes_total",
    "expired_keys": "expired_keys_total",
    "evicted_keys": "evicted_keys_total",
    "keyspace_hits": "keyspace_hits_total",
    "keyspace_misses": "keyspace_misses_total",
    "used_cpu_sys": "cpu_sys_seconds_total",
    "used_cpu_user": "cpu_user_seconds_total",
}
"""INFO fields exported as counters, by redis_exporter's name (without ``redis_``)."""

_NO_CLIENT_SETINFO: Final[Mapping[str, None]] = (
    {"driver_info": None}  # redis-py 7.1+
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)
"""Connection options that keep redis-py from sending CLIENT SETINFO (Redis 7.2+ only)."""

_CONFIG_GAUGES: Final = {"maxmemory": "config_maxmemory", "maxclients": "config_maxclients"}

_GAUGE, _COUNTER = MetricType.GAUGE, MetricType.COUNTER

REDIS_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "redis_up": MetricMetadata(_GAUGE, "Information about the Redis instance"),
    **{f"redis_{n}": MetricMetadata(_GAUGE, f"{n} metric") for n in INFO_GAUGES.values()},
    **{f"redis_{n}": MetricMetadata(_COUNTER, f"{n} metric") for n in INFO_COUNTERS.values()},
    **{f"redis_{n}": MetricMetadata(_GAUGE, f"{n} metric") for n in _CONFIG_GAUGES.values()},
    "redis_start_time_seconds": MetricMetadata(
        _GAUGE, "Start time of the Redis instance since unix epoch in seconds."
    ),
    "redis_instance_info": MetricMetadata(_GAUGE, "Information about the Redis instance"),
    "redis_db_keys": MetricMetadata(_GAUGE, "Total number of keys by DB"),
    "redis_db_keys_expiring": MetricMetadata(_GAUGE, "Total number of expiring keys by DB"),
    "redis_db_avg_ttl_seconds": MetricMetadata(_GAUGE, "Avg TTL in seconds"),
    "redis_master_link_up": MetricMetadata(_GAUGE, "Master link status on Redis slave"),
    "redis_master_last_io_seconds_ago": MetricMetadata(_GAUGE, "Master last io seconds ago"),
    "redis_master_sync_in_progress": MetricMetadata(_GAUGE, "Master sync in progress"),
    "redis_slave_repl_offset": MetricMetadata(_GAUGE, "Slave replication offset"),
    "redis_slave_info": MetricMetadata(_GAUGE, "Information about the Redis slave"),
    "redis_connected_slave_offset_bytes": MetricMetadata(_GAUGE, "Offset of connected slave"),
    "redis_connected_slave_lag_seconds": MetricMetadata(_GAUGE, "Lag of connected slave"),
}
"""Every family the check writes, with redis_exporter 1.45's types and help texts."""

_INSTANCE_INFO_LABELS: Final = (
    "role",
    "redis_version",
    "redis_build_id",
    "redis_mode",
    "os",
    "maxmemory_policy",
    "tcp_port",
    "run_id",
    "process_id",
)


class RedisTLSConfig(ConfigModel):
    """TLS options of a ``rediss://`` target."""

    ca_file: Path | None = Field(
        default=None, description="trust these CAs instead of the system's"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="its private key; default cert_file")
    insecure_skip_verify: bool = Field(
        default=False, description="accept any certificate and hostname"
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> RedisTLSConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class RedisConfig(CheckConfig):
    """Options of the ``redis`` check."""

    type: Literal["redis"]
    url: str = Field(description="redis://host:port/db, or rediss:// for TLS; no password here")
    username: str | None = Field(default=None, description="ACL user; default the default user")
    password: SecretStr | None = None
    password_file: SecretFile | None = None
    tls_config: RedisTLSConfig = Field(default_factory=RedisTLSConfig)
    connect_timeout: Duration | None = Field(
        default=None, gt=0, description="give up connecting after this long; default the timeout"
    )
    pool_size: int = Field(default=1, ge=1, le=16, description="connections held at most")
    client_name: str = Field(
        default="monitord", pattern=r"^\S+$", description="CLIENT SETNAME of the connections"
    )
    memory: Limits | None = Field(default=None, description="used_memory as % of maxmemory")
    connections: Limits | None = Field(
        default=None, description="connected_clients as % of maxclients"
    )
    replication_lag: Limits | None = Field(
        default=None, description="on a replica: master_last_io_seconds_ago, in seconds"
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        _split_url(value)
        return value

    @model_validator(mode="after")
    def _one_password(self) -> RedisConfig:
        self._check_secret_pair("password")
        return self

    def target(self) -> tuple[bool, str, int, int]:
        """``(tls, host, port, db)`` of ``url``."""
        return _split_url(self.url)


def _split_url(url: str) -> tuple[bool, str, int, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r}: the scheme must be redis:// or rediss://")
    if "@" in parts.netloc:
        raise ValueError(
            "put no user or password in the url: use username and password or password_file"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment is taken")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{url!r} has no valid port") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the path must be a database number, e.g. /0")
    return parts.scheme == "rediss", parts.hostname, port, int(path or 0)


def parse_info(text: str) -> dict[str, str]:
    """``INFO``'s ``field:value`` lines as a dict (section headers and blank lines skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value
    return fields


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _pairs(text: str) -> dict[str, str]:
    """``keys=1,expires=0,avg_ttl=0`` as a dict."""
    return dict(part.partition("=")[::2] for part in text.split(","))


def _info_samples(info: Mapping[str, str], config: Mapping[str, str]) -> list[Sample]:
    """The samples of one reading, as redis_exporter 1.45 makes them from the same answers."""
    samples = [Sample("redis_up", value=1.0)]
    for table in (INFO_GAUGES, INFO_COUNTERS):
        for field, name in table.items():
            value = _number(info.get(field))
            if value is not None:
                samples.append(Sample(f"redis_{name}", value=value))
    for field, name in _CONFIG_GAUGES.items():
        value = _number(config.get(field))
        if value is not None:
            samples.append(Sample(f"redis_{name}", value=value))
    uptime = _number(info.get("uptime_in_seconds"))
    if uptime is not None:
        samples.append(Sample("redis_start_time_seconds", value=float(int(time.time())) - uptime))
    info_labels = Labels({name: info.get(name, "") for name in _INSTANCE_INFO_LABELS})
    samples.append(Sample("redis_instance_info", info_labels, 1.0))

    listed = set()
    for key, text in info.items():
        if key.startswith("db") and key[2:].isdigit():
            fields = _pairs(text)
            keys, expiring = _number(fields.get("keys")), _number(fields.get("expires"))
            if keys is None or expiring is None:
                continue
            db = Labels({"db": key})
            listed.add(key)
            samples.append(Sample("redis_db_keys", db, keys))
            samples.append(Sample("redis_db_keys_expiring", db, expiring))
            ttl = _number(fields.get("avg_ttl"))
            if ttl is not None:
                samples.append(Sample("redis_db_avg_ttl_seconds", db, ttl / 1000))
    databases = _number(config.get("databases"))  # 16 when unknown, as the exporter assumes
    for index in range(16 if databases is None else int(databases)):
        name = f"db{index}"
        if name not in listed:
            samples.append(Sample("redis_db_keys", Labels({"db": name}), 0.0))
            samples.append(Sample("redis_db_keys_expiring", Labels({"db": name}), 0.0))

    samples.extend(_replication_samples(info))
    return samples


def _replication_samples(info: Mapping[str, str]) -> list[Sample]:
    samples: list[Sample] = []
    if info.get("role") == "slave":
        master = Labels(
            {"master_host": info.get("master_host", ""), "master_port": info.get("master_port", "")}
        )
        link = 1.0 if info.get("master_link_status") == "up" else 0.0
        samples.append(Sample("redis_master_link_up", master, link))
        for field in ("master_last_io_seconds_ago", "master_sync_in_progress", "slave_repl_offset"):
            value = _number(info.get(field))
            if value is not None:
                samples.append(Sample(f"redis_{field}", master, float(int(value))))
        samples.append(
            Sample(
                "redis_slave_info",
                master.merge({"read_only": info.get("slave_read_only", "")}),
                1.0,
            )
        )
    for key, text in info.items():
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        fields = _pairs(text)
        offset = _number(fields.get("offset"))
        if offset is None:
            continue
        replica = Labels(
            {
                "slave_ip": fields.get("ip", ""),
                "slave_port": fields.get("port", ""),
                "slave_state": fields.get("state", ""),
            }
        )
        samples.append(Sample("redis_connected_slave_offset_bytes", replica, offset))
        lag = _number(fields.get("lag"))
        if lag is not None:
            samples.append(Sample("redis_connected_slave_lag_seconds", replica, lag))
    return samples


def _size(value: float) -> str:
    """Bytes as ``512 B``, ``1.2 MiB``, ``3.0 GiB``."""
    units = ("B", "KiB", "MiB", "GiB")
    power = 0
    while value >= 1024 and power < len(units) - 1:
        value /= 1024
        power += 1
    return f"{value:.0f} B" if power == 0 else f"{value:.1f} {units[power]}"


class RedisCheck(Check[RedisConfig]):
    """Reads one Redis server's INFO and settings through a small pool; see the module doc."""

    config_model = RedisConfig

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        tls, self._host, self._port, db = config.target()
        self._where = f"{self._host}:{self._port}"
        secret = resolve_secret(config.password, config.password_file)
        self._password = secret.get_secret_value() if secret is not None else None
        self._deadline = probe_deadline(config.timeout)
        options: dict[str, Any] = {
            "host": self._host,
            "port": self._port,
            "db": db,
            "username": config.username,
            "password": self._password,
            "socket_timeout": self._deadline,
            "socket_connect_timeout": min(config.connect_timeout or self._deadline, self._deadline),
            "client_name": config.client_name,
            **_NO_CLIENT_SETINFO,
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        connection_class: type[Connection] = Connection
        if tls:
            connection_class = SSLConnection
            options.update(_ssl_options(config.tls_config))
        self._pool = aioredis.BlockingConnectionPool(
            max_connections=config.pool_size,
            timeout=self._deadline,
            connection_class=connection_class,
            **options,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._client.set_response_callback("INFO", lambda response, **_: response)
        self._closed = False

    async def run(self) -> CheckResult:
        """Collect once; CRITICAL with ``redis_up 0`` when the server cannot be read."""
        if self._closed:
            raise RuntimeError(f"redis check {self.name!r} is closed")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._deadline):
                try:
                    info, config = await self._read()
                except AuthenticationError:
                    raise
                except RedisConnectionError:
                    # most likely a pooled connection the server closed since the last run
                    # (a restart, its idle timeout): try once more on a new one
                    await self._pool.disconnect(inuse_connections=False)
                    info, config = await self._read()
        except (TimeoutError, RedisTimeoutError):  # asyncio's deadline or redis-py's socket one
            await self._drop()
            return self._down(f"no answer within {self._deadline:g}s", started)
        except (RedisError, OSError) as exc:
            await self._drop()
            return self._down(f"{type(exc).__name__}: {exc}", started)
        samples = _info_samples(info, config)
        status, message = self._health(info, config)
        metadata = {s.name: REDIS_FAMILIES[s.name] for s in samples}
        return CheckResult(
            status, message, tuple(samples), time.monotonic() - started, metadata=metadata
        )

    async def _read(self) -> tuple[dict[str, str], dict[str, str]]:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.execute_command("INFO", "ALL")
            for name in ("maxmemory", "maxclients", "databases"):
                pipe.config_get(name)
            replies: Sequence[Any] = await pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
        raw = replies[0]
        info = parse_info(raw.decode() if isinstance(raw, bytes) else str(raw))
        config: dict[str, str] = {}
        for reply in replies[1:]:
            if isinstance(reply, Mapping):  # an error (e.g. NOPERM for ACL users) is skipped
                for key, value in reply.items():
                    config[_text(key)] = _text(value)
        return info, config

    def _down(self, reason: str, started: float) -> CheckResult:
        message = redact_password(f"{self._where}: cannot read Redis: {reason}", self._password)
        samples = (Sample("redis_up", value=0.0),)
        return CheckResult(
            Status.CRITICAL,
            message,
            samples,
            time.monotonic() - started,
            metadata={"redis_up": REDIS_FAMILIES["redis_up"]},
        )

    def _health(self, info: Mapping[str, str], config: Mapping[str, str]) -> tuple[Status, str]:
        cfg = self.config
        status = Status.OK
        parts = [f"redis {info.get('redis_version', '?')} {info.get('role', '?')}"]
        problems: list[str] = []

        clients = _number(info.get("connected_clients")) or 0.0
        maxclients = _number(info.get("maxclients") or config.get("maxclients"))
        if maxclients:
            percent = 100 * clients / maxclients
            parts.append(f"{clients:.0f}/{maxclients:.0f} clients")
            if cfg.connections is not None:
                verdict = cfg.connections.status(percent)
                if verdict > Status.OK:
                    problems.append(f"connections at {percent:.1f}% of maxclients")
                status = max(status, verdict)

        used = _number(info.get("used_memory")) or 0.0
        maxmemory = _number(info.get("maxmemory")) or 0.0
        if maxmemory > 0:
            percent = 100 * used / maxmemory
            parts.append(f"memory {_size(used)} of {_size(maxmemory)} ({percent:.1f}%)")
            if cfg.memory is not None:
                verdict = cfg.memory.status(percent)
                if verdict > Status.OK:
                    problems.append(f"memory at {percent:.1f}% of maxmemory")
                status = max(status, verdict)
        else:
            parts.append(f"memory {_size(used)}")

        if info.get("role") == "slave" and cfg.replication_lag is not None:
            master = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
            if info.get("master_link_status") != "up":
                down = info.get("master_link_down_since_seconds", "?")
                problems.append(f"link to primary {master} down (for {down}s)")
                status = Status.CRITICAL
            else:
                lag = _number(info.get("master_last_io_seconds_ago")) or 0.0
                verdict = cfg.replication_lag.status(lag)
                if verdict > Status.OK:
                    problems.append(f"last heard from primary {master} {lag:g}s ago")
                status = max(status, verdict)
        return status, f"{self._where}: " + ("; ".join(problems) if problems else ", ".join(parts))

    async def _drop(self) -> None:
        """Close every connection after a failure, so none is left waiting on the server."""
        try:
            await self._pool.disconnect(inuse_connections=True)
        except (RedisError, OSError):
            pass

    async def aclose(self) -> None:
        """Close the pool."""
        if not self._closed:
            self._closed = True
            await self._client.aclose()
            await self._pool.disconnect(inuse_connections=True)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ssl_options(tls: RedisTLSConfig) -> dict[str, Any]:
    return {
        "ssl_ca_certs": str(tls.ca_file) if tls.ca_file else None,
        "ssl_certfile": str(tls.cert_file) if tls.cert_file else None,
        "ssl_keyfile": str(tls.key_file or tls.cert_file) if tls.cert_file else None,
        "ssl_cert_reqs": "none" if tls.insecure_skip_verify else "required",
        "ssl_check_hostname": not tls.insecure_skip_verify,
    }
