"""The ``mysql`` check: MySQL and MariaDB health and metrics under mysqld_exporter's names.

It copies prometheus-mysqld-exporter 0.14.0 with its default collectors (Debian's
``prometheus-mysqld-exporter``) for what it measures, names, types, help texts and labels:

- ``mysql_up``: whether a connection could be made and pinged (0 with every other family
  absent when not, as the exporter does);
- ``SHOW GLOBAL STATUS`` (collector/global_status.go): every numeric value as an untyped
  ``mysql_global_status_<name>`` (lower-cased, characters outside ``[a-zA-Z0-9_]`` made
  ``_``), except the grouped ones: ``Com_*`` → ``mysql_global_status_commands_total{command}``,
  ``Handler_*`` → ``handlers_total{handler}``, ``Connection_errors_*`` →
  ``connection_errors_total{error}``, ``Innodb_buffer_pool_pages_{data,free,misc,old}`` →
  ``buffer_pool_pages{state}``, ``_dirty`` → ``buffer_pool_dirty_pages``, ``_total`` dropped,
  other ``Innodb_buffer_pool_pages_*`` → ``buffer_pool_page_changes_total{operation}``,
  ``Innodb_rows_*`` → ``innodb_row_ops_total{operation}``, ``Performance_schema_*`` →
  ``performance_schema_lost_total{instrumentation}``; plus the Galera families
  ``mysql_galera_status_info`` and ``mysql_galera_evs_repl_latency_*`` when present;
- ``SHOW GLOBAL VARIABLES`` (collector/global_variables.go): every numeric value as a gauge
  ``mysql_global_variables_<name>`` (``max_connections`` among them), ``mysql_version_info``,
  ``mysql_transaction_isolation{level}``, ``mysql_galera_variables_info`` and
  ``mysql_galera_gcache_size_bytes`` as the exporter derives them;
- ``SHOW ALL SLAVES STATUS`` / ``SHOW SLAVE STATUS`` (collector/slave_status.go), only on a
  replica: every numeric column as an untyped ``mysql_slave_status_<column>`` labelled
  ``master_host``, ``master_uuid``, ``channel_name``, ``connection_name``.

A value is numeric as the exporter's ``parseStatus`` decides: in any case, ``yes``/``on``/
``primary`` are 1, ``no``/``off``/``disabled``/``connecting``/``disconnected``/``non-primary``
are 0, anything Go's ``strconv.ParseFloat`` reads is itself, and the rest is skipped.

Health: CRITICAL when the server cannot be reached or logged into (the driver's reason, the
password redacted), when a query times out, or on the optional thresholds ``connections``
(``Threads_connected`` as a percentage of ``max_connections``) and ``replication_lag``
(``Seconds_Behind_Master``/``Seconds_Behind_Source``, and a replica whose SQL thread
stopped has no lag to compare: CRITICAL). A custom query that fails is WARNING. Custom
queries (``queries:``) have postgres_exporter's ``queries.yaml`` shape (:mod:`checks.dbcommon`).

Driver: aiomysql rather than asyncmy. aiomysql is pure Python over PyMySQL, so there is no
binary wheel to match the interpreter, and its connection, error and ``KILL QUERY``/timeout
behaviour is PyMySQL's, which is well known; a collector runs a handful of queries per
interval, so asyncmy's Cython speed buys nothing here.

Connections: one small pool per check (``pool_size``, default 1; aiomysql's pool never opens
more), autocommit, and every session is ``SET SESSION TRANSACTION READ ONLY``, so every
statement the collector sends, custom queries included, runs in a read-only transaction
(the server refuses writes with error 1792) without a ``START TRANSACTION READ ONLY`` round
trip per query. A query is cut at its timeout on the client; its connection is then dropped
from the pool and the statement killed on the server with ``KILL QUERY <id>`` from a pool
connection, and as a backstop each session's server-side statement limit
(``max_statement_time`` on MariaDB, ``max_execution_time`` on MySQL) is one second longer.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
from pydantic import AfterValidator, Field, SecretStr, model_validator

from checks.base import Check, CheckConfig
from checks.dbcommon import CustomQuery, custom_query_samples, redact_password
from checks.probe import probe_deadline
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import Duration, SecretFile, resolve_secret

__all__ = [
    "MYSQL_FAMILIES",
    "MySQLCheck",
    "MySQLConfig",
    "global_status_samples",
    "global_variables_samples",
    "parse_dsn",
    "parse_status",
    "slave_status_samples",
]

_G: Final = MetricType.GAUGE
_C: Final = MetricType.COUNTER
_U: Final = MetricType.UNKNOWN

MYSQL_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "mysql_up": MetricMetadata(_G, "Whether the MySQL server is up."),
    "mysql_global_status_commands_total": MetricMetadata(
        _C, "Total number of executed MySQL commands."
    ),
    "mysql_global_status_handlers_total": MetricMetadata(
        _C, "Total number of executed MySQL handlers."
    ),
    "mysql_global_status_connection_errors_total": MetricMetadata(
        _C, "Total number of MySQL connection errors."
    ),
    "mysql_global_status_buffer_pool_pages": MetricMetadata(
        _G, "Innodb buffer pool pages by state."
    ),
    "mysql_global_status_buffer_pool_dirty_pages": MetricMetadata(
        _G, "Innodb buffer pool dirty pages."
    ),
    "mysql_global_status_buffer_pool_page_changes_total": MetricMetadata(
        _C, "Innodb buffer pool page state changes."
    ),
    "mysql_global_status_innodb_row_ops_total": MetricMetadata(
        _C, "Total number of MySQL InnoDB row operations."
    ),
    "mysql_global_status_performance_schema_lost_total": MetricMetadata(
        _C,
        "Total number of MySQL instrumentations that could not be loaded or created due to "
        "memory constraints.",
    ),
    "mysql_galera_status_info": MetricMetadata(_G, "PXC/Galera status information."),
    "mysql_galera_evs_repl_latency_min_seconds": MetricMetadata(
        _G, "PXC/Galera group communication latency. Min value."
    ),
    "mysql_galera_evs_repl_latency_avg_seconds": MetricMetadata(
        _G, "PXC/Galera group communication latency. Avg value."
    ),
    "mysql_galera_evs_repl_latency_max_seconds": MetricMetadata(
        _G, "PXC/Galera group communication latency. Max value."
    ),
    "mysql_galera_evs_repl_latency_stdev": MetricMetadata(
        _G, "PXC/Galera group communication latency. Standard Deviation."
    ),
    "mysql_galera_evs_repl_latency_sample_size": MetricMetadata(
        _G, "PXC/Galera group communication latency. Sample Size."
    ),
    "mysql_version_info": MetricMetadata(_G, "MySQL version and distribution."),
    "mysql_transaction_isolation": MetricMetadata(_G, "MySQL transaction isolation."),
    "mysql_galera_variables_info": MetricMetadata(_G, "PXC/Galera variables information."),
    "mysql_galera_gcache_size_bytes": MetricMetadata(_G, "PXC/Galera gcache size."),
}
"""mysqld_exporter's fixed families with their types and help texts; the generic ones
(``mysql_global_status_*``, ``mysql_global_variables_*``, ``mysql_slave_status_*``) take
their names from the server and the metadata below."""

_STATUS_GENERIC: Final = MetricMetadata(_U, "Generic metric from SHOW GLOBAL STATUS.")
_VARIABLES_GENERIC: Final = MetricMetadata(_G, "Generic gauge metric from SHOW GLOBAL VARIABLES.")
_SLAVE_GENERIC: Final = MetricMetadata(_U, "Generic metric from SHOW SLAVE STATUS.")

_SLAVE_LABELS: Final = ("master_host", "master_uuid", "channel_name", "connection_name")

# --- parsing, as mysqld_exporter's collector/exporter.go parseStatus ------------------------

_GO_FLOAT: Final = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE
)
_WORDS: Final = {  # compared in lower case
    "yes": 1.0,
    "on": 1.0,
    "no": 0.0,
    "off": 0.0,
    "disabled": 0.0,  # have_ssl
    "connecting": 0.0,  # Slave_IO_Running while it is not yet connected
    "primary": 1.0,  # wsrep_cluster_status
    "non-primary": 0.0,
    "disconnected": 0.0,
}


def _text(value: object) -> str | None:
    """A column value as the text the server sent (None for NULL)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def parse_status(value: object) -> float | None:
    """The number mysqld_exporter's ``parseStatus`` makes of a value, or None to skip it."""
    text = _text(value)
    if text is None:
        return None
    word = _WORDS.get(text.lower())
    if word is not None:
        return word
    if not _GO_FLOAT.fullmatch(text):
        return None
    number = float(text)
    if math.isinf(number) and "inf" not in text.lower():
        return None  # out of range: ParseFloat returns an error
    return number


_INVALID_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")


@functools.lru_cache(maxsize=4096)
def _metric_name(key: str) -> str:
    """The exporter's ``validPrometheusName``: lower case, anything else ``_`` (cached: the
    same few hundred status and variable names come back at every collection)."""
    return _INVALID_NAME_CHARS.sub("_", key).lower()


# --- the three collectors, as pure functions of the rows -------------------------------------

_STATUS_GROUP: Final = re.compile(
    r"^(com|handler|connection_errors|innodb_buffer_pool_pages|innodb_rows|performance_schema)_(.*)$"
)
_GROUP_FAMILY: Final = {
    "com": ("mysql_global_status_commands_total", "command"),
    "handler": ("mysql_global_status_handlers_total", "handler"),
    "connection_errors": ("mysql_global_status_connection_errors_total", "error"),
    "innodb_rows": ("mysql_global_status_innodb_row_ops_total", "operation"),
    "performance_schema": ("mysql_global_status_performance_schema_lost_total", "instrumentation"),
}
_EVS_PARTS: Final = ("min_seconds", "avg_seconds", "max_seconds", "stdev", "sample_size")

Metadata = dict[str, MetricMetadata]


def global_status_samples(rows: Sequence[Sequence[Any]]) -> tuple[list[Sample], Metadata]:
    """The samples of ``SHOW GLOBAL STATUS`` rows, named and grouped as the exporter does."""
    samples: list[Sample] = []
    metadata: Metadata = {}
    text_items = dict.fromkeys(
        (
            "wsrep_local_state_uuid",
            "wsrep_cluster_state_uuid",
            "wsrep_provider_version",
            "wsrep_evs_repl_latency",
        ),
        "",
    )

    def add(name: str, value: float, meta: MetricMetadata, **labels: str) -> None:
        samples.append(Sample(name, Labels(labels), value))
        metadata[name] = meta

    for key_value, raw in rows:
        key = str(key_value)
        value = parse_status(raw)
        if value is None:
            if key in text_items:
                text_items[key] = _text(raw) or ""
            continue
        name = _metric_name(key)
        match = _STATUS_GROUP.match(name)
        if match is None:
            add(f"mysql_global_status_{name}", value, _STATUS_GENERIC)
            continue
        group, rest = match.groups()
        if group == "innodb_buffer_pool_pages":
            if rest in ("data", "free", "misc", "old"):
                family = "mysql_global_status_buffer_pool_pages"
                add(family, value, MYSQL_FAMILIES[family], state=rest)
            elif rest == "dirty":
                family = "mysql_global_status_buffer_pool_dirty_pages"
                add(family, value, MYSQL_FAMILIES[family])
            elif rest != "total":
                family = "mysql_global_status_buffer_pool_page_changes_total"
                add(family, value, MYSQL_FAMILIES[family], operation=rest)
            continue
        family, label = _GROUP_FAMILY[group]
        add(family, value, MYSQL_FAMILIES[family], **{label: rest})

    if text_items["wsrep_local_state_uuid"]:
        add(
            "mysql_galera_status_info",
            1.0,
            MYSQL_FAMILIES["mysql_galera_status_info"],
            wsrep_local_state_uuid=text_items["wsrep_local_state_uuid"],
            wsrep_cluster_state_uuid=text_items["wsrep_cluster_state_uuid"],
            wsrep_provider_version=text_items["wsrep_provider_version"],
        )
    latency = text_items["wsrep_evs_repl_latency"]
    if latency:
        parts = latency.split("/")
        numbers = [parse_status(p) if _GO_FLOAT.fullmatch(p) else None for p in parts]
        if len(parts) == len(_EVS_PARTS) and all(n is not None for n in numbers):
            for part, number in zip(_EVS_PARTS, numbers, strict=True):
                family = f"mysql_galera_evs_repl_latency_{part}"
                add(family, float(number or 0.0), MYSQL_FAMILIES[family])
    return samples, metadata


_GCACHE: Final = re.compile(r"gcache.size = (\d+)([MG]?);")


def global_variables_samples(rows: Sequence[Sequence[Any]]) -> tuple[list[Sample], Metadata]:
    """The samples of ``SHOW GLOBAL VARIABLES`` rows, as the exporter makes them."""
    samples: list[Sample] = []
    metadata: Metadata = {}
    text_items = dict.fromkeys(
        (
            "innodb_version",
            "version",
            "version_comment",
            "wsrep_cluster_name",
            "wsrep_provider_options",
            "transaction_isolation",
            "tx_isolation",
        ),
        "",
    )
    for key_value, raw in rows:
        key = _metric_name(str(key_value))
        value = parse_status(raw)
        if value is not None:
            name = f"mysql_global_variables_{key}"
            samples.append(Sample(name, Labels(), value))
            metadata[name] = _VARIABLES_GENERIC
        elif key in text_items:
            text_items[key] = _text(raw) or ""

    def info(name: str, **labels: str) -> None:
        samples.append(Sample(name, Labels(labels), 1.0))
        metadata[name] = MYSQL_FAMILIES[name]

    info(
        "mysql_version_info",
        innodb_version=text_items["innodb_version"],
        version=text_items["version"],
        version_comment=text_items["version_comment"],
    )
    level = text_items["transaction_isolation"] or text_items["tx_isolation"]
    if level:
        info("mysql_transaction_isolation", level=level)
    if text_items["wsrep_cluster_name"]:
        info("mysql_galera_variables_info", wsrep_cluster_name=text_items["wsrep_cluster_name"])
    if text_items["wsrep_provider_options"]:
        size = 0.0
        match = _GCACHE.search(text_items["wsrep_provider_options"])
        if match is not None:
            size = float(match.group(1)) * {"": 1, "M": 2**20, "G": 2**30}[match.group(2)]
        name = "mysql_galera_gcache_size_bytes"
        samples.append(Sample(name, Labels(), size))
        metadata[name] = MYSQL_FAMILIES[name]
    return samples, metadata


def slave_status_samples(
    columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[Sample], Metadata]:
    """The samples of ``SHOW [ALL] SLAVE STATUS`` rows (none on a server that is no replica)."""
    samples: list[Sample] = []
    metadata: Metadata = {}
    index = {column: i for i, column in enumerate(columns)}

    def column(row: Sequence[Any], name: str) -> str:
        i = index.get(name)
        return "" if i is None else (_text(row[i]) or "")

    for row in rows:
        labels = Labels(
            zip(
                _SLAVE_LABELS,
                (
                    column(row, "Master_Host"),
                    column(row, "Master_UUID"),
                    column(row, "Channel_Name"),  # MySQL and Percona
                    column(row, "Connection_name"),  # MariaDB
                ),
                strict=True,
            )
        )
        for name, raw in zip(columns, row, strict=True):
            value = parse_status(raw)
            if value is not None:
                family = f"mysql_slave_status_{name.lower()}"
                samples.append(Sample(family, labels, value))
                metadata[family] = _SLAVE_GENERIC
    return samples, metadata


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a DSN points: user, host, port and optional database."""

    user: str
    host: str
    port: int
    database: str | None


def parse_dsn(dsn: str) -> Target:
    """``mysql://user@host:port/[db]`` as a :class:`Target`; a password in it is an error."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError("the DSN must start with mysql:// (or mariadb://)")
    if parts.password is not None:
        raise ValueError("put no password in the DSN; use password or password_file")
    if not parts.username:
        raise ValueError("the DSN names no user: mysql://user@host:port/")
    if not parts.hostname:
        raise ValueError("the DSN names no host: mysql://user@host:port/")
    if parts.query or parts.fragment:
        raise ValueError("the DSN takes no ?parameters; use the check's options")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError("the DSN's port is not a number from 1 to 65535") from None
    database = unquote(parts.path.lstrip("/")) or None
    return Target(unquote(parts.username), parts.hostname, port, database)


def _valid_dsn(value: str) -> str:
    parse_dsn(value)
    return value


_NAMESPACE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _valid_queries(value: dict[str, CustomQuery]) -> dict[str, CustomQuery]:
    for namespace in value:
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"query namespace {namespace!r} is not a valid metric name prefix")
    return value


class MySQLConfig(CheckConfig):
    """Options of the ``mysql`` check."""

    type: Literal["mysql"]
    dsn: Annotated[str, AfterValidator(_valid_dsn)] = Field(
        description="mysql://user@host:port/ (no password: use password or password_file)"
    )
    password: SecretStr | None = None
    password_file: SecretFile | None = None
    tls: bool = Field(default=False, description="connect over TLS")
    ca_file: Path | None = Field(default=None, description="trust these CAs (PEM) for TLS")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="its key; default cert_file")
    verify: bool = Field(default=True, description="verify the server's certificate and name")
    connect_timeout: Duration | None = Field(
        default=None, gt=0, description="default: the check's timeout"
    )
    query_timeout: Duration | None = Field(
        default=None, gt=0, description="per query; default: the check's timeout"
    )
    pool_size: int = Field(default=1, ge=1, le=16, description="connections at most")
    connections: Limits | None = Field(
        default=None, description="Threads_connected as a percentage of max_connections"
    )
    replication_lag: Limits | None = Field(
        default=None, description="seconds behind the source, on a replica"
    )
    queries: Annotated[dict[str, CustomQuery], AfterValidator(_valid_queries)] = Field(
        default_factory=dict, description="custom queries in postgres_exporter's shape"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self._check_secret_pair("password")
        tls_only = [
            name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name) is not None
        ] + ([] if self.verify else ["verify"])
        if tls_only and not self.tls:
            raise ValueError(f"{', '.join(tls_only)} needs tls: true")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    @property
    def secret(self) -> str:
        """The password, empty when none is set."""
        password = resolve_secret(self.password, self.password_file)
        return "" if password is None else password.get_secret_value()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context these options ask for, or None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


# --- the check ---------------------------------------------------------------------------------


class _Unreachable(Exception):
    """No connection could be made or used; the message is the driver's reason."""


class _QueryTimeout(Exception):
    """A query ran past its timeout and was killed."""


@dataclass
class _Run:
    """What one run gathers."""

    samples: list[Sample] = field(default_factory=list)
    metadata: Metadata = field(default_factory=dict)
    problems: list[tuple[Status, str]] = field(default_factory=list)
    replicas: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: tuple[list[Sample], Metadata]) -> None:
        self.samples.extend(result[0])
        self.metadata.update(result[1])


class _Pool:
    """At most ``size`` connections, open or in use, reused while they last.

    A connection exists only while a slot is held or as an idle one left by a released
    slot, and a new one is opened only when none is idle, so the server never sees more
    than ``size`` from this pool (aiomysql's own pool does not wake its waiters when a
    closed connection is released, which a killed query's connection is)."""

    def __init__(self, size: int, connect: Callable[[], Awaitable[Any]]) -> None:
        self._slots = asyncio.Semaphore(size)
        self._connect = connect
        self._idle: list[Any] = []
        self._open: set[Any] = set()

    async def acquire(self) -> Any:
        """A connection for the caller alone, until :meth:`release`."""
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    return conn
                self._forget(conn)
            conn = await self._connect()
            self._open.add(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Any, *, discard: bool = False) -> None:
        """Give ``conn`` back; closed and forgotten when ``discard`` or no longer usable."""
        if discard or not _usable(conn):
            self._forget(conn)
        else:
            self._idle.append(conn)
        self._slots.release()

    def _forget(self, conn: Any) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        """Close every connection (politely, with COM_QUIT, when it answers at once)."""
        conns, self._open, self._idle = list(self._open), set(), []
        for conn in conns:
            try:
                async with asyncio.timeout(1.0):
                    await conn.ensure_closed()
            except (TimeoutError, OSError, pymysql.err.MySQLError):
                conn.close()


def _usable(conn: Any) -> bool:
    """Not closed, and the server has not closed its end (as aiomysql's pool checks)."""
    if conn.closed:
        return False
    reader = getattr(conn, "_reader", None)
    if reader is None:
        return True
    return not (reader.at_eof() or reader.exception() or getattr(reader, "eof_received", False))


_SLAVE_STATUS_STATEMENTS: Final = (
    "SHOW ALL SLAVES STATUS",  # MariaDB: every connection, named by Connection_name
    "SHOW SLAVE STATUS",  # MySQL up to 8.3, Percona
    "SHOW REPLICA STATUS",  # MySQL 8.4 and later
)


class MySQLCheck(Check[MySQLConfig]):
    """Collects mysqld_exporter's families from one server and judges its health."""

    config_model = MySQLConfig

    def __init__(
        self,
        config: MySQLConfig,
        *,
        ssl_context_factory: Callable[[MySQLConfig], ssl.SSLContext | None] = (
            MySQLConfig.ssl_context
        ),
    ) -> None:
        super().__init__(config)
        self._target = parse_dsn(config.dsn)
        self._make_ssl = ssl_context_factory
        self._pool = _Pool(config.pool_size, self._connect)
        self._ssl: ssl.SSLContext | None = None
        self._ssl_made = False
        self._slave_statement: str | None = None
        self._kills: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def _deadline(self) -> float:
        return probe_deadline(self.config.timeout)

    @property
    def _query_timeout(self) -> float:
        return self.config.query_timeout or self._deadline

    @property
    def _connect_timeout(self) -> float:
        return self.config.connect_timeout or self._deadline

    @property
    def _where(self) -> str:
        return f"{self._target.host}:{self._target.port}"

    async def run(self) -> CheckResult:
        """Collect once; CRITICAL with ``mysql_up 0`` when the server cannot be used."""
        if self._closed:
            raise RuntimeError(f"mysql check {self.name!r} is closed")
        until = time.monotonic() + self._deadline
        run = _Run()
        try:
            async with asyncio.timeout(self._deadline):
                await self._collect(run, until)
        except _Unreachable as exc:
            return self._down(str(exc))
        except TimeoutError:
            return self._down(f"no answer within {self._deadline:g}s")
        run.samples.insert(0, Sample("mysql_up", Labels(), 1.0))
        run.metadata["mysql_up"] = MYSQL_FAMILIES["mysql_up"]
        status, message = self._judge(run)
        return CheckResult(status, message, tuple(run.samples), metadata=run.metadata)

    def _down(self, reason: str) -> CheckResult:
        return CheckResult(
            Status.CRITICAL,
            redact_password(f"{self._where}: {reason}", self.config.secret),
            (Sample("mysql_up", Labels(), 0.0),),
            metadata={"mysql_up": MYSQL_FAMILIES["mysql_up"]},
        )

    async def aclose(self) -> None:
        """Wait for any kill still on its way to the server, then close the pool."""
        self._closed = True
        if self._kills:
            await asyncio.gather(*self._kills, return_exceptions=True)
        await self._pool.close()

    # -- connections --

    async def _connect(self) -> Any:
        """A new connection with its session read-only and its statement limit set."""
        if not self._ssl_made:
            self._ssl, self._ssl_made = self._make_ssl(self.config), True
        target = self._target
        try:
            conn = await aiomysql.connect(
                host=target.host,
                port=target.port,
                user=target.user,
                password=self.config.secret,
                db=target.database,
                ssl=self._ssl,
                connect_timeout=self._connect_timeout,
                autocommit=True,
                charset="utf8mb4",
                program_name="monitord",
            )
        except (pymysql.err.MySQLError, OSError, ssl.SSLError) as exc:
            raise _Unreachable(_reason(exc)) from exc
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SET SESSION TRANSACTION READ ONLY")
                await cursor.execute(self._statement_limit(conn))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, pymysql.err.MySQLError | OSError):
                raise _Unreachable(_reason(exc)) from exc
            raise
        return conn

    def _statement_limit(self, conn: Any) -> str:
        backstop = self._query_timeout + 1.0
        if "mariadb" in str(conn.get_server_info()).lower():
            return f"SET SESSION max_statement_time = {backstop:.3f}"
        return f"SET SESSION max_execution_time = {math.ceil(backstop * 1000)}"

    async def _acquire(self) -> Any:
        try:
            return await self._pool.acquire()
        except (pymysql.err.MySQLError, OSError) as exc:
            raise _Unreachable(_reason(exc)) from exc

    async def _query(
        self, sql: str, until: float, what: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql`` on a pooled connection within the query timeout and ``until``."""
        conn = await self._acquire()
        timeout = max(0.0, min(self._query_timeout, until - time.monotonic()))
        try:
            async with asyncio.timeout(timeout):
                async with conn.cursor() as cursor:
                    await cursor.execute(sql)
                    rows = list(await cursor.fetchall())
                    columns = [d[0] for d in cursor.description or ()]
        except TimeoutError:
            self._kill(conn)
            raise _QueryTimeout(f"{what} ran past {timeout:g}s and was killed") from None
        except pymysql.err.MySQLError as exc:
            # Server errors (codes below 2000) leave the connection usable; client ones not.
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 2000
            self._pool.release(conn, discard=code >= 2000)
            raise
        except OSError:
            self._pool.release(conn, discard=True)
            raise
        except BaseException:
            self._kill(conn)  # cancelled mid-query: kill it as on a timeout
            raise
        self._pool.release(conn)
        return columns, rows

    def _kill(self, conn: Any) -> None:
        """Drop ``conn`` and kill its statement on the server, in the background."""
        thread_id = conn.thread_id()
        self._pool.release(conn, discard=True)
        task = asyncio.get_running_loop().create_task(self._kill_query(thread_id))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    async def _kill_query(self, thread_id: int) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await self._pool.acquire()
                try:
                    async with conn.cursor() as cursor:
                        await cursor.execute(f"KILL QUERY {int(thread_id)}")
                finally:
                    self._pool.release(conn)
        except (TimeoutError, _Unreachable, pymysql.err.MySQLError, OSError):
            pass  # the session's server-side statement limit ends it a second later

    # -- collection --

    async def _collect(self, run: _Run, until: float) -> None:
        await self._ping()
        jobs = [
            self._guard(run, "SHOW GLOBAL STATUS", self._global_status(run, until)),
            self._guard(run, "SHOW GLOBAL VARIABLES", self._global_variables(run, until)),
            self._guard(run, "replication status", self._slave_status(run, until)),
        ]
        jobs += [
            self._guard(run, f"query {ns}", self._custom(run, ns, q, until), Status.WARNING)
            for ns, q in self.config.queries.items()
        ]
        await asyncio.gather(*jobs)  # the pool bounds how many run at once

    async def _ping(self) -> None:
        """A connection that answers, or :class:`_Unreachable` (``mysql_up 0``, as the
        exporter's ping); an idle one the server dropped is replaced once."""
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                await conn.ping(reconnect=False)
            except (pymysql.err.MySQLError, OSError) as exc:
                self._pool.release(conn, discard=True)
                if attempt == 2:
                    raise _Unreachable(_reason(exc)) from exc
                continue
            except BaseException:
                self._pool.release(conn, discard=True)
                raise
            self._pool.release(conn)
            return

    async def _guard(
        self, run: _Run, what: str, job: Awaitable[None], status: Status = Status.CRITICAL
    ) -> None:
        try:
            await job
        except _QueryTimeout as exc:
            run.problems.append((Status.CRITICAL, str(exc)))
        except _Unreachable as exc:
            run.problems.append((Status.CRITICAL, f"{what}: {exc}"))
        except (pymysql.err.MySQLError, OSError, ValueError) as exc:
            run.problems.append((status, f"{what}: {_reason(exc)}"))

    async def _global_status(self, run: _Run, until: float) -> None:
        _, rows = await self._query("SHOW GLOBAL STATUS", until, "SHOW GLOBAL STATUS")
        run.add(global_status_samples(rows))

    async def _global_variables(self, run: _Run, until: float) -> None:
        _, rows = await self._query("SHOW GLOBAL VARIABLES", until, "SHOW GLOBAL VARIABLES")
        run.add(global_variables_samples(rows))

    async def _slave_status(self, run: _Run, until: float) -> None:
        statements = (self._slave_statement,) if self._slave_statement else _SLAVE_STATUS_STATEMENTS
        error: pymysql.err.MySQLError | None = None
        for statement in statements:
            try:
                columns, rows = await self._query(statement, until, statement)
            except pymysql.err.ProgrammingError as exc:  # a syntax error: not this server's
                error = exc
                continue
            self._slave_statement = statement
            run.add(slave_status_samples(columns, rows))
            run.replicas = [dict(zip(columns, row, strict=True)) for row in rows]
            return
        if error is not None:
            raise error

    async def _custom(self, run: _Run, namespace: str, query: CustomQuery, until: float) -> None:
        columns, rows = await self._query(query.query, until, f"query {namespace}")
        run.add(custom_query_samples(namespace, query, columns, rows))

    # -- health --

    def _judge(self, run: _Run) -> tuple[Status, str]:
        problems = list(run.problems)
        summary: list[str] = []
        values = {s.name: s.value for s in run.samples if not s.labels}
        for sample in run.samples:
            if sample.name == "mysql_version_info" and sample.labels.get("version"):
                summary.append(sample.labels["version"])
        threads = values.get("mysql_global_status_threads_connected")
        limit = values.get("mysql_global_variables_max_connections")
        if threads is not None and limit:
            percent = 100.0 * threads / limit
            usage = f"{threads:g}/{limit:g} connections"
            summary.append(f"{usage} ({percent:.0f}%)")
            if self.config.connections is not None:
                status = self.config.connections.status(percent)
                if status is not Status.OK:
                    problems.append((status, f"{percent:.0f}% of max_connections in use ({usage})"))
        for row in run.replicas:
            name = _text(row.get("Connection_name")) or _text(row.get("Channel_Name")) or ""
            channel = "replication" + (f" {name!r}" if name else "")
            lag = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
            if lag is None:
                io = _text(row.get("Slave_IO_Running", row.get("Replica_IO_Running")))
                sql = _text(row.get("Slave_SQL_Running", row.get("Replica_SQL_Running")))
                problems.append((Status.CRITICAL, f"{channel} is not running (IO {io}, SQL {sql})"))
                continue
            seconds = float(lag)
            summary.append(f"{channel} {seconds:g}s behind")
            if self.config.replication_lag is not None:
                status = self.config.replication_lag.status(seconds)
                if status is not Status.OK:
                    problems.append((status, f"{channel} is {seconds:g}s behind the source"))
        if problems:
            worst = max(status for status, _ in problems)
            text = "; ".join(message for status, message in problems if status == worst)
            return worst, redact_password(f"{self._where}: {text}", self.config.secret)
        return Status.OK, f"{self._where}: " + (", ".join(summary) or "up")


def _reason(exc: BaseException) -> str:
    """The driver's reason: ``(1045, "Access denied ...")`` → ``Access denied ... (1045)``,
    with the cause aiomysql wraps in "Can't connect" (refused, a certificate not trusted)."""
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
        reason = f"{exc.args[1]} ({exc.args[0]})"
        cause = exc.__cause__
        if cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason += f": certificate verify failed: {cause.verify_message}"
            else:
                reason += f": {cause}"
        return reason
    return str(exc) or type(exc).__name__
