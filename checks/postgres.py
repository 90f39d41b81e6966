"""The ``postgres`` check: PostgreSQL's health and statistics through a small asyncpg pool,
under postgres_exporter's metric names.

The families, types, help texts and labels are those of postgres_exporter 0.11.1 (Debian's
prometheus-postgres-exporter), and the queries are its queries, so its dashboards and rules
keep working:

- ``pg_up`` (no labels), 1 when the server accepted the login;
- ``pg_stat_database_<column>{datid,datname,server}`` for numbackends (gauge), xact_commit,
  xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched, tup_inserted, tup_updated,
  tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, blk_read_time and
  blk_write_time (counters), one series per row of ``pg_stat_database`` including its
  shared-objects row (datid 0, datname "");
- ``pg_stat_activity_count{datname,state,server}`` and
  ``pg_stat_activity_max_tx_duration{datname,state,server}``: every database crossed with
  the six states 0.11.1 enumerates (active, idle, idle in transaction, idle in transaction
  (aborted), fastpath function call, disabled), zero where none;
- ``pg_database_size_bytes{datname,server}``;
- ``pg_locks_count{datname,mode,server}``: every database crossed with the nine lock modes
  0.11.1 enumerates (lower-cased), zero where none;
- ``pg_settings_max_connections{server}``;
- ``pg_postmaster_start_time_seconds{server}``: 0.11.1 has it only through the example
  ``queries.yaml`` Debian ships (namespace ``pg_postmaster``), which is what is copied,
  in whole seconds as 0.11.1 converts a timestamp;
- ``pg_replication_is_replica{server}`` and ``pg_replication_lag_seconds{server}``: these
  are the names of postgres_exporter 0.13 and later (``collector/pg_replication.go``, its
  query and help texts, with the later versions' rule that a replica which has replayed all
  the WAL it received lags 0, so an idle replica does not seem to fall behind). 0.11.1 has
  neither built in: its example ``queries.yaml`` gives ``pg_replication_lag{server}``
  instead, which a ``queries:`` entry copied from that file still yields here.

0.11.1 puts ``server="<host>:<port>"`` on every family but ``pg_up``; so does this check.
Series also get the scheduler's ``check`` label (``identify_series`` stays on): ``pg_up``
has no ``server`` label, so two postgres checks would otherwise write the same series.

Health: CRITICAL when the login fails (asyncpg's reason, the password redacted) or the
collection is cut at the timeout; WARNING/CRITICAL on the optional ``connections``
(client backends as a percentage of ``max_connections``) and ``replication_lag``
(seconds) thresholds; OK with a one-line summary otherwise.

Every query is read-only: the session has ``default_transaction_read_only`` on, the
statistics are read in one statement (its results as JSON: one round trip, one snapshot),
and each custom query runs in its own read-only transaction.
The session's ``statement_timeout`` is the query timeout, so the server itself cancels a
statement that outlives it; asyncpg also sends a cancel request when a query is cut on
this side. The pool never holds more than ``pool_size`` connections.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import unquote, urlsplit

import asyncpg
from pydantic import Field, SecretStr, field_validator, model_validator

from checks.base import Check, CheckConfig
from checks.certs import client_context
from checks.dbcommon import CustomQuery, custom_query_samples, redact_password
from checks.probe import probe_deadline
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import Duration, SecretFile, resolve_secret

__all__ = [
    "POSTGRES_FAMILIES",
    "PostgresCheck",
    "PostgresConfig",
    "SslMode",
]

SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]

_NAMESPACE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_GAUGE: Final = MetricType.GAUGE
_COUNTER: Final = MetricType.COUNTER

_STAT_DATABASE: Final[Mapping[str, tuple[MetricType, str]]] = {
    "numbackends": (
        _GAUGE,
        "Number of backends currently connected to this database. This is the only column in "
        "this view that returns a value reflecting current state; all other columns return the "
        "accumulated values since the last reset.",
    ),
    "xact_commit": (
        _COUNTER,
        "Number of transactions in this database that have been committed",
    ),
    "xact_rollback": (
        _COUNTER,
        "Number of transactions in this database that have been rolled back",
    ),
    "blks_read": (_COUNTER, "Number of disk blocks read in this database"),
    "blks_hit": (
        _COUNTER,
        "Number of times disk blocks were found already in the buffer cache, so that a read "
        "was not necessary (this only includes hits in the PostgreSQL buffer cache, not the "
        "operating system's file system cache)",
    ),
    "tup_returned": (_COUNTER, "Number of rows returned by queries in this database"),
    "tup_fetched": (_COUNTER, "Number of rows fetched by queries in this database"),
    "tup_inserted": (_COUNTER, "Number of rows inserted by queries in this database"),
    "tup_updated": (_COUNTER, "Number of rows updated by queries in this database"),
    "tup_deleted": (_COUNTER, "Number of rows deleted by queries in this database"),
    "conflicts": (
        _COUNTER,
        "Number of queries canceled due to conflicts with recovery in this database. "
        "(Conflicts occur only on standby servers; see pg_stat_database_conflicts for "
        "details.)",
    ),
    "temp_files": (
        _COUNTER,
        "Number of temporary files created by queries in this database. All temporary files "
        "are counted, regardless of why the temporary file was created (e.g., sorting or "
        "hashing), and regardless of the log_temp_files setting.",
    ),
    "temp_bytes": (
        _COUNTER,
        "Total amount of data written to temporary files by queries in this database. All "
        "temporary files are counted, regardless of why the temporary file was created, and "
        "regardless of the log_temp_files setting.",
    ),
    "deadlocks": (_COUNTER, "Number of deadlocks detected in this database"),
    "blk_read_time": (
        _COUNTER,
        "Time spent reading data file blocks by backends in this database, in milliseconds",
    ),
    "blk_write_time": (
        _COUNTER,
        "Time spent writing data file blocks by backends in this database, in milliseconds",
    ),
}

POSTGRES_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "pg_up": MetricMetadata(
        _GAUGE,
        "Whether the last scrape of metrics from PostgreSQL was able to connect to the server "
        "(1 for yes, 0 for no).",
    ),
    "pg_postmaster_start_time_seconds": MetricMetadata(_GAUGE, "Time at which postmaster started"),
    **{f"pg_stat_database_{c}": MetricMetadata(t, h) for c, (t, h) in _STAT_DATABASE.items()},
    "pg_stat_activity_count": MetricMetadata(_GAUGE, "number of connections in this state"),
    "pg_stat_activity_max_tx_duration": MetricMetadata(
        _GAUGE, "max duration in seconds any active transaction has been running"
    ),
    "pg_database_size_bytes": MetricMetadata(_GAUGE, "Disk space used by the database"),
    "pg_locks_count": MetricMetadata(_GAUGE, "Number of locks"),
    "pg_replication_is_replica": MetricMetadata(_GAUGE, "Indicates if the server is a replica"),
    "pg_replication_lag_seconds": MetricMetadata(
        _GAUGE, "Replication lag behind master in seconds"
    ),
    "pg_settings_max_connections": MetricMetadata(
        _GAUGE, "Sets the maximum number of concurrent connections."
    ),
}
"""Every built-in family with postgres_exporter's type and help text."""

# postgres_exporter 0.11.1's queries (cmd/postgres_exporter/queries.go and
# postgres_exporter.go), with the columns of pg_stat_database named instead of ``*``.
_STAT_DATABASE_QUERY: Final = (
    "SELECT datid::int8, COALESCE(datname, ''), "
    + ", ".join(f"{c}::float8" for c in _STAT_DATABASE)
    + " FROM pg_stat_database"
)
_ACTIVITY_QUERY: Final = """
SELECT pg_database.datname, tmp.state, COALESCE(count, 0) AS count,
       COALESCE(max_tx_duration, 0) AS max_tx_duration
FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
             ('fastpath function call'), ('disabled')) AS tmp(state)
CROSS JOIN pg_database
LEFT JOIN (
    SELECT datname, state, count(*) AS count,
           MAX(EXTRACT(EPOCH FROM now() - xact_start))::float AS max_tx_duration
    FROM pg_stat_activity GROUP BY datname, state
) AS tmp2 ON tmp.state = tmp2.state AND pg_database.datname = tmp2.datname
"""
_LOCKS_QUERY: Final = """
SELECT pg_database.datname, tmp.mode, COALESCE(count, 0) AS count
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
             ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
             ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS tmp(mode)
CROSS JOIN pg_database
LEFT JOIN (
    SELECT database, lower(mode) AS mode, count(*) AS count
    FROM pg_locks WHERE database IS NOT NULL GROUP BY database, lower(mode)
) AS tmp2 ON tmp.mode = tmp2.mode AND pg_database.oid = tmp2.database
ORDER BY 1
"""
_DATABASE_SIZE_QUERY: Final = (
    "SELECT pg_database.datname, pg_database_size(pg_database.datname)::float8 FROM pg_database"
)
# One row: max_connections (pg_settings), the postmaster's start (the example queries.yaml's
# pg_postmaster), replica and lag (collector/pg_replication.go of later versions, with their
# fix that an idle replica that has replayed all it received lags 0), and the client
# backends that count against max_connections.
_SERVER_QUERY: Final = """
SELECT split_part(current_setting('server_version'), ' ', 1) AS version,
       current_setting('max_connections')::float8 AS max_connections,
       floor(EXTRACT(EPOCH FROM pg_postmaster_start_time()))::float8 AS start_time_seconds,
       CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica,
       (CASE WHEN NOT pg_is_in_recovery() THEN 0
             WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
             ELSE GREATEST(0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())))
        END)::float8 AS lag,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::float8
           AS client_backends
"""


# Everything above in one statement, each result as JSON, so a collection is one round trip
# (and one snapshot): the built-in families cost the server what the exporter's five
# queries cost it, without five exchanges.
_ALL_QUERY: Final = f"""
SELECT (SELECT row_to_json(s) FROM ({_SERVER_QUERY}) s),
       (SELECT json_agg(s) FROM ({_STAT_DATABASE_QUERY}) s),
       (SELECT json_agg(s) FROM ({_ACTIVITY_QUERY}) s),
       (SELECT json_agg(s) FROM ({_DATABASE_SIZE_QUERY}) s),
       (SELECT json_agg(s) FROM ({_LOCKS_QUERY}) s)
"""


def _json_rows(text: str | None) -> list[tuple[Any, ...]]:
    """The rows of one ``json_agg`` column, each as the tuple of its values in order."""
    return [tuple(row.values()) for row in (json.loads(text) if text else None) or ()]


class PostgresConfig(CheckConfig):
    """Options of the ``postgres`` check: where to log in, TLS, timeouts, pool, thresholds
    and custom queries."""

    type: Literal["postgres"]
    dsn: str | None = Field(
        default=None,
        description="postgresql://user@host:port/database, without a password "
        "(set password or password_file); or set host/port/user/database",
    )
    host: str | None = Field(default=None, description="server host, or a unix socket directory")
    port: int = Field(default=5432, gt=0, lt=65536)
    user: str | None = Field(default=None, description="login role")
    database: str = Field(default="postgres", min_length=1)
    password: SecretStr | None = None
    password_file: SecretFile | None = None
    sslmode: SslMode = Field(
        default="prefer",
        description="libpq's sslmode: disable, prefer, require, verify-ca, verify-full",
    )
    ca_file: Path | None = Field(default=None, description="CA bundle for verify-ca/verify-full")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="its private key; default cert_file")
    connect_timeout: Duration | None = Field(
        default=None, gt=0, description="default: the check's timeout less a margin"
    )
    query_timeout: Duration | None = Field(
        default=None,
        gt=0,
        description="per query, enforced by the server too (statement_timeout); "
        "default: the check's timeout less a margin",
    )
    pool_size: int = Field(default=1, ge=1, le=16, description="connections at most")
    application_name: str = Field(default="monitord", max_length=63)
    connections: Limits | None = Field(
        default=None, description="client backends in use, percent of max_connections"
    )
    replication_lag: Limits | None = Field(default=None, description="seconds behind primary")
    queries: dict[str, CustomQuery] = Field(
        default_factory=dict, description="namespace: query, as postgres_exporter's queries.yaml"
    )

    @field_validator("dsn")
    @classmethod
    def _valid_dsn(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_dsn(value)
        return value

    @field_validator("queries")
    @classmethod
    def _valid_namespaces(cls, value: dict[str, CustomQuery]) -> dict[str, CustomQuery]:
        for namespace in value:
            if not _NAMESPACE.match(namespace):
                raise ValueError(f"query namespace {namespace!r} is not a valid metric name")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        self._check_secret_pair("password")
        if self.dsn is None and self.host is None:
            raise ValueError("set dsn or host")
        if self.dsn is not None and (self.host is not None or self.user is not None):
            raise ValueError("set dsn or host/user, not both")
        if self.sslmode in ("disable", "prefer") and (
            self.ca_file is not None or self.cert_file is not None
        ):
            raise ValueError(
                f"ca_file and cert_file need sslmode require or stricter, not {self.sslmode}"
            )
        return self

    def target(self) -> tuple[str, int, str | None, str]:
        """host, port, user and database, from the DSN or the fields."""
        if self.dsn is not None:
            return _parse_dsn(self.dsn)
        assert self.host is not None
        return self.host, self.port, self.user, self.database

    @property
    def secret(self) -> str | None:
        """The password, None when none is set."""
        password = resolve_secret(self.password, self.password_file)
        return None if password is None else password.get_secret_value()


def _parse_dsn(dsn: str) -> tuple[str, int, str | None, str]:
    """host, port, user and database of ``postgresql://user@host:port/database``."""
    try:
        url = urlsplit(dsn)
        port = url.port or 5432
    except ValueError as exc:
        raise ValueError(f"dsn is not a URL: {exc}") from None
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError("dsn must start with postgresql://")
    if url.password is not None:
        raise ValueError("dsn must not hold a password: set password or password_file")
    if url.query or url.fragment:
        raise ValueError("dsn takes no parameters: set sslmode and the others as check options")
    if not url.hostname:
        raise ValueError("dsn has no host")
    database = unquote(url.path.lstrip("/")) or "postgres"
    user = unquote(url.username) if url.username else None
    return url.hostname, port, user, database


def _ssl(config: PostgresConfig) -> ssl.SSLContext | str | bool:
    """What asyncpg's ``ssl`` argument takes for the configured sslmode."""
    if config.sslmode == "disable":
        return False
    if config.sslmode == "prefer":
        return "prefer"
    verify = config.sslmode in ("verify-ca", "verify-full")
    context = client_context(
        verify=verify, ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file
    )
    if config.sslmode == "verify-ca":
        context.check_hostname = False
    return context


_LOST: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.InvalidAuthorizationSpecificationError,
    ConnectionError,
)
"""Errors that mean no working session: the login failed or the connection is gone."""


class _Cut(Exception):
    """A query or the login was cut at its timeout."""


class PostgresCheck(Check[PostgresConfig]):
    """Logs in through a pool of at most ``pool_size`` connections and reads the server's
    statistics; CRITICAL when it cannot, thresholds on connections and replication lag."""

    config_model = PostgresConfig

    def __init__(self, config: PostgresConfig) -> None:
        super().__init__(config)
        self._host, self._port, self._user, self._database = config.target()
        self._server = f"{self._host}:{self._port}"
        self._deadline = probe_deadline(config.timeout)
        self._connect_timeout = config.connect_timeout or self._deadline
        self._query_timeout = config.query_timeout or self._deadline
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._step = ""

    async def aclose(self) -> None:
        """Close the pool and its connections."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                pool.terminate()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise RuntimeError("the check is closed")
        if self._pool is None:
            statement_timeout = max(1, int(self._query_timeout * 1000))
            self._pool = await asyncpg.create_pool(
                host=self._host,
                port=self._port,
                user=self._user,
                password=self.config.secret,
                database=self._database,
                ssl=_ssl(self.config),
                timeout=self._connect_timeout,
                command_timeout=self._query_timeout,
                min_size=0,
                max_size=self.config.pool_size,
                max_inactive_connection_lifetime=max(60.0, 3 * (self.config.interval or 60)),
                statement_cache_size=8,  # the one built-in statement, prepared once
                server_settings={
                    "application_name": self.config.application_name,
                    "default_transaction_read_only": "on",
                    "statement_timeout": str(statement_timeout),
                    "lock_timeout": str(statement_timeout),
                },
            )
        return self._pool

    async def run(self) -> CheckResult:
        """Collect once within the deadline; CRITICAL with pg_up 0 when the login fails."""
        started = time.monotonic()
        samples: list[Sample] = []
        metadata: dict[str, MetricMetadata] = {}
        answered = False
        status, message = Status.OK, ""
        self._step = "connecting"
        try:
            async with asyncio.timeout(self._deadline):
                pool = await self._get_pool()
                server = await self._statistics(pool, samples)
                answered = True
                status, message = self._rate(server)
                if self.config.queries:
                    custom_status, notes = await self._custom(pool, samples, metadata)
                    status = max(status, custom_status)
                    if notes:
                        message += "; " + "; ".join(notes)
        except TimeoutError:
            status = Status.CRITICAL
            message = f"{self._server}: cut at the timeout of {self._deadline:g}s ({self._step})"
            answered = answered or self._step != "connecting"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ssl.SSLError) as exc:
            status = Status.CRITICAL
            # an error the server sent about a query means it is up; anything else means
            # the login failed or the connection is gone
            answered = self._step != "connecting" and not isinstance(exc, _LOST)
            what = f"error {self._step}" if answered else "cannot connect"
            reason = redact_password(str(exc) or type(exc).__name__, self.config.secret)
            message = f"{self._server}: {what}: {reason}"
        samples.append(Sample("pg_up", value=1.0 if answered else 0.0))
        for sample in samples:
            if sample.name in POSTGRES_FAMILIES:
                metadata[sample.name] = POSTGRES_FAMILIES[sample.name]
        return CheckResult(
            status,
            message,
            tuple(samples),
            duration=time.monotonic() - started,
            metadata=metadata,
        )

    async def _statistics(self, pool: asyncpg.Pool, samples: list[Sample]) -> dict[str, Any]:
        """The built-in families; once more on a fresh connection when the pooled one turns
        out to have died with its server (a restart between two runs)."""
        for attempt in (1, 2):
            self._step = "connecting"
            async with pool.acquire(timeout=self._connect_timeout) as con:
                self._step = "reading statistics"
                try:
                    return await self._collect(con, samples)
                except _LOST:
                    if attempt == 2:
                        raise
                    del samples[:]
                    self._step = "connecting"
        raise AssertionError("unreachable")

    def _labels(self, **labels: str) -> Labels:
        return Labels({**labels, "server": self._server})

    async def _collect(self, con: asyncpg.Connection, samples: list[Sample]) -> dict[str, Any]:
        """The built-in families, read in one statement (one snapshot, one round trip on a
        session that is read-only); returns the server row."""
        row = await con.fetchrow(_ALL_QUERY)
        server: dict[str, Any] = json.loads(row[0])
        stat_rows, activity_rows, size_rows, lock_rows = (_json_rows(row[i]) for i in range(1, 5))
        for key in (
            "max_connections",
            "start_time_seconds",
            "is_replica",
            "lag",
            "client_backends",
        ):
            server[key] = float(server[key])
        only_server = self._labels()
        samples.append(
            Sample("pg_settings_max_connections", only_server, server["max_connections"])
        )
        samples.append(
            Sample("pg_postmaster_start_time_seconds", only_server, server["start_time_seconds"])
        )
        samples.append(Sample("pg_replication_is_replica", only_server, server["is_replica"]))
        samples.append(Sample("pg_replication_lag_seconds", only_server, server["lag"]))
        for stat in stat_rows:
            labels = self._labels(datid=str(stat[0]), datname=stat[1])
            for i, column in enumerate(_STAT_DATABASE, 2):
                if stat[i] is not None:
                    samples.append(Sample(f"pg_stat_database_{column}", labels, float(stat[i])))
        for datname, state, count, duration in activity_rows:
            labels = self._labels(datname=datname, state=state)
            samples.append(Sample("pg_stat_activity_count", labels, float(count)))
            samples.append(Sample("pg_stat_activity_max_tx_duration", labels, float(duration)))
        for datname, size in size_rows:
            samples.append(Sample("pg_database_size_bytes", self._labels(datname=datname), size))
        for datname, mode, count in lock_rows:
            samples.append(
                Sample("pg_locks_count", self._labels(datname=datname, mode=mode), float(count))
            )
        server["databases"] = float(len(size_rows))
        return server

    def _rate(self, server: Mapping[str, Any]) -> tuple[Status, str]:
        """The status and message from the connection and replication thresholds."""
        used, limit = server["client_backends"], server["max_connections"]
        percent = 100.0 * used / limit if limit > 0 else 0.0
        role = "replica" if server["is_replica"] else "primary"
        lag = server["lag"]
        summary = (
            f"{self._server}: PostgreSQL {server['version']} {role}, "
            f"{used:g}/{limit:g} connections ({percent:.0f}%), "
            f"{server['databases']:g} databases"
        )
        if server["is_replica"]:
            summary += f", replication lag {lag:.1f}s"
        problems: list[str] = []
        status = Status.OK
        for name, limits, value, shown in (
            ("connections", self.config.connections, percent, f"{percent:.0f}%"),
            ("replication lag", self.config.replication_lag, lag, f"{lag:.1f}s"),
        ):
            if limits is None:
                continue
            rated = limits.status(value)
            if rated is not Status.OK:
                bound = limits.critical if rated is Status.CRITICAL else limits.warning
                problems.append(f"{name} {shown} above {rated.name.lower()} {bound:g}")
                status = max(status, rated)
        if problems:
            summary = f"{summary}: " + ", ".join(problems)
        return status, summary

    async def _custom(
        self,
        pool: asyncpg.Pool,
        samples: list[Sample],
        metadata: dict[str, MetricMetadata],
    ) -> tuple[Status, list[str]]:
        """Run the custom queries, at most ``pool_size`` at once; each failure is a note."""
        self._step = "running custom queries"
        results = await asyncio.gather(
            *(self._one_custom(pool, ns, q) for ns, q in self.config.queries.items()),
            return_exceptions=True,
        )
        status, notes = Status.OK, []
        for namespace, result in zip(self.config.queries, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                if isinstance(result, _Cut):
                    status = Status.CRITICAL
                    notes.append(f"query {namespace}: {result}")
                else:
                    status = max(status, Status.WARNING)
                    reason = redact_password(str(result), self.config.secret)
                    notes.append(f"query {namespace} failed: {reason}")
                continue
            query_samples, query_metadata = result
            samples.extend(query_samples)
            metadata.update(query_metadata)
        return status, notes

    async def _one_custom(
        self, pool: asyncpg.Pool, namespace: str, query: CustomQuery
    ) -> tuple[list[Sample], dict[str, MetricMetadata]]:
        async with pool.acquire(timeout=self._connect_timeout) as con:
            try:
                async with con.transaction(readonly=True):
                    statement = await con.prepare(query.query, timeout=self._query_timeout)
                    rows = await statement.fetch(timeout=self._query_timeout)
                    columns: Sequence[str] = [a.name for a in statement.get_attributes()]
            except (TimeoutError, asyncpg.QueryCanceledError) as exc:
                raise _Cut(f"cut at the query timeout of {self._query_timeout:g}s") from exc
        return custom_query_samples(
            namespace, query, columns, (tuple(r) for r in rows), {"server": self._server}
        )
