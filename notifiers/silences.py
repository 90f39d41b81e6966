"""Silences: matchers that mute alerts for a time, kept in SQLite so they survive restarts,
with Alertmanager's rules (``silence/silence.go`` and the checks of ``api/v2/api.go``).

A :class:`Silence` is *pending* before ``starts_at``, *expired* after ``ends_at``, and
*active* from ``starts_at`` to ``ends_at`` inclusive (``getState``). Only an active silence
mutes an alert, when every one of its matchers matches the alert's labels (regular
expressions anchored, a missing label is the empty string; :mod:`notifiers.matchers`).

:meth:`SilenceStore.add` is Alertmanager's ``Set`` behind the API's checks:

- at least one matcher; label names as Prometheus spells them; not every matcher may
  match the empty string (``matchesEmpty``: an ``=`` with an empty value or an ``=~`` that
  matches ""; ``!=`` and ``!~`` never count as matching it);
- ``ends_at`` after ``starts_at`` (an unset ``starts_at`` is now) and not in the past;
- with an ``id`` that does not exist: :class:`SilenceNotFound`;
- with an existing ``id``, the silence is updated in place when ``canUpdate`` allows it:
  same matchers in the same order, and if it is active the same ``starts_at`` (whole
  seconds) and an ``ends_at`` not in the past, if it is pending a ``starts_at`` not in the
  past; an expired one never. Otherwise the old silence is expired (unless it already is)
  and a new one with a new id is created, so the history of what was silenced stays;
- a new silence starting in the past starts now.

:meth:`SilenceStore.expire` ends an active silence now, and a pending one too (``starts_at``
and ``ends_at`` both set to now, as Alertmanager does); an already expired one is an error
(:class:`SilenceAlreadyExpired`, Alertmanager 0.25's "silence ... already expired").
:meth:`SilenceStore.gc` drops silences that ended ``retention`` or longer ago (120 h by
default, Alertmanager's ``--data.retention``).

Storage: table ``notify_silences`` in the state directory's ``monitord.db`` (WAL), a file
other parts use with their own tables and connections. The store holds one connection and
a decoded copy of the table, read again whenever another connection has changed the file
(``PRAGMA data_version``), so a silence written by another process is seen on the next call.

Errors::

    MonitordError
    └── SilenceError
        ├── InvalidSilence          the silence breaks one of the rules above (``reason``)
        ├── SilenceNotFound         no silence has this ``id``
        ├── SilenceAlreadyExpired   expire() on an expired silence (``id``)
        └── SilenceStoreError       SQLite failed (``path``, ``action``, ``reason``)
"""

from __future__ import annotations

import builtins
import json
import math
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from monitor.errors import MonitordError
from notifiers.matchers import Matcher, MatcherError, Matchers, MatchType, parse_matchers

__all__ = [
    "DEFAULT_RETENTION",
    "InvalidSilence",
    "Silence",
    "SilenceAlreadyExpired",
    "SilenceError",
    "SilenceNotFound",
    "SilenceState",
    "SilenceStore",
    "SilenceStoreError",
    "filter_matches",
]

SilenceState = Literal["pending", "active", "expired"]

DEFAULT_RETENTION: Final = 120 * 3600.0
"""How long an ended silence is kept: Alertmanager's ``--data.retention`` default, 120 h."""

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_STATE_ORDER: Final = {"active": 0, "pending": 1, "expired": 2}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_silences (
    id TEXT PRIMARY KEY,      -- a random UUID
    matchers TEXT NOT NULL,   -- JSON list of {"name", "type" ("=", "!=", "=~", "!~"), "value"}
    starts_at REAL NOT NULL,  -- epoch seconds
    ends_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL
)
"""

T = TypeVar("T")


class SilenceError(MonitordError):
    """Base of the errors of silences."""


class InvalidSilence(SilenceError, ValueError):
    """A silence that Alertmanager's rules reject; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid silence: {reason}")


class SilenceNotFound(SilenceError, LookupError):
    """No silence has ``id``."""

    def __init__(self, id: str) -> None:
        self.id = id
        super().__init__(f"silence {id} not found")


class SilenceAlreadyExpired(SilenceError):
    """``expire`` was asked for a silence that has already expired."""

    def __init__(self, id: str) -> None:
        self.id = id
        super().__init__(f"silence {id} already expired")


class SilenceStoreError(SilenceError):
    """The silences could not be read or written; ``path`` is the database."""

    def __init__(self, path: str, action: str, reason: str) -> None:
        self.path = path
        self.action = action
        self.reason = reason
        super().__init__(f"cannot {action} silences in {path}: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Silence:
    """One silence; times are epoch seconds. ``id`` is empty for one not yet added."""

    id: str = ""
    matchers: Matchers
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""
    updated_at: float = 0.0

    def state(self, now: float) -> SilenceState:
        """``pending`` before ``starts_at``, ``expired`` after ``ends_at``, else ``active``."""
        if now < self.starts_at:
            return "pending"
        if now > self.ends_at:
            return "expired"
        return "active"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence is active at ``now`` and matches ``labels``."""
        return self.state(now) == "active" and self.matchers.matches(labels)


def _matches_empty(matcher: Matcher) -> bool:
    """Alertmanager's ``matchesEmpty``: only ``=`` and ``=~`` can count."""
    if matcher.type is MatchType.EQUAL:
        return matcher.value == ""
    if matcher.type is MatchType.REGEX:
        return matcher.matches("")
    return False


def _validate(silence: Silence, now: float) -> None:
    """Alertmanager's ``validateSilence`` and the API's time checks."""
    if not silence.matchers:
        raise InvalidSilence("at least one matcher required")
    for i, matcher in enumerate(silence.matchers):
        if not _LABEL_NAME.match(matcher.name):
            raise InvalidSilence(f"invalid label matcher {i}: invalid label name {matcher.name!r}")
    if all(_matches_empty(m) for m in silence.matchers):
        raise InvalidSilence("at least one matcher must not match the empty string")
    if silence.starts_at >= silence.ends_at:
        raise InvalidSilence("start time must be before end time")
    if silence.ends_at < now:
        raise InvalidSilence("end time can't be in the past")


def _can_update(old: Silence, new: Silence, now: float) -> bool:
    """Alertmanager's ``canUpdate``: whether ``old`` may become ``new`` without changing the
    history of what was silenced."""
    if old.matchers != new.matchers:
        return False
    match old.state(now):
        case "active":
            return math.floor(new.starts_at) == math.floor(old.starts_at) and new.ends_at >= now
        case "pending":
            return new.starts_at >= now
        case _:
            return False


def filter_matches(silence: Silence, filters: Iterable[Matcher]) -> bool:
    """Whether every filter matcher equals (name, operator, value) one of the silence's,
    as Alertmanager's API filters silences (``CheckSilenceMatchesFilterLabels``)."""
    own = set(silence.matchers)
    return all(f in own for f in filters)


def _sort_key(silence: Silence, now: float) -> tuple[int, float]:
    """Alertmanager's ``SortSilences``: active by soonest end, pending by soonest start,
    expired by latest end."""
    state = silence.state(now)
    if state == "active":
        return 0, silence.ends_at
    if state == "pending":
        return 1, silence.starts_at
    return 2, -silence.ends_at


def _matchers_json(matchers: Matchers) -> str:
    return json.dumps([{"name": m.name, "type": m.type.value, "value": m.value} for m in matchers])


def _matchers_from_json(text: str) -> Matchers:
    items = json.loads(text)
    return Matchers(tuple(Matcher.create(i["name"], i["type"], i["value"]) for i in items))


def _as_matchers(value: Matchers | Iterable[Matcher] | str | None) -> Matchers:
    if value is None:
        return Matchers()
    if isinstance(value, Matchers):
        return value
    if isinstance(value, str):
        try:
            return Matchers(tuple(parse_matchers(value)))
        except MatcherError as exc:
            raise InvalidSilence(str(exc)) from None
    return Matchers(tuple(value))


class SilenceStore:
    """The silences, in SQLite at ``path`` (``None``: in memory, for tests and one-shot use).

    ``clock`` gives epoch seconds. Safe to call from several threads (one lock).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        retention: float = DEFAULT_RETENTION,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, Silence] | None = None
        self._data_version = -1
        self._closed = False
        self._conn = self._translated("open", lambda: self._connect(timeout))

    def _where(self) -> str:
        return ":memory:" if self.path is None else str(self.path)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._where(), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _translated(self, action: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            raise SilenceStoreError(self._where(), action, str(exc)) from exc

    def now(self) -> float:
        """The time by the store's clock, in epoch seconds."""
        return self._clock()

    def close(self) -> None:
        """Close the database connection; the store cannot be used afterwards."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------

    def _silences(self) -> dict[str, Silence]:
        """The table, decoded; read again when another connection changed the file."""
        if self._closed:
            raise SilenceStoreError(self._where(), "use", "the store is closed")
        version = self._translated(
            "read", lambda: self._conn.execute("PRAGMA data_version").fetchone()[0]
        )
        if self._cache is None or version != self._data_version:
            rows = self._translated(
                "read",
                lambda: self._conn.execute(
                    "SELECT id, matchers, starts_at, ends_at, updated_at, created_by, comment"
                    " FROM notify_silences"
                ).fetchall(),
            )
            self._cache = {row[0]: self._decode(row) for row in rows}
            self._data_version = version
        return self._cache

    def _decode(self, row: tuple[Any, ...]) -> Silence:
        id, matchers, starts_at, ends_at, updated_at, created_by, comment = row
        try:
            decoded = _matchers_from_json(matchers)
        except (ValueError, KeyError, TypeError, MatcherError) as exc:
            raise SilenceStoreError(self._where(), "read", f"silence {id}: {exc}") from exc
        return Silence(
            id=id,
            matchers=decoded,
            starts_at=float(starts_at),
            ends_at=float(ends_at),
            updated_at=float(updated_at),
            created_by=created_by,
            comment=comment,
        )

    def get(self, id: str) -> Silence | None:
        """The silence with ``id``, or None."""
        with self._lock:
            return self._silences().get(id)

    def list(
        self,
        state: SilenceState | Iterable[SilenceState] | None = None,
        matchers: Iterable[Matcher] | str | None = None,
    ) -> builtins.list[Silence]:
        """Silences in Alertmanager's API order (active by soonest end, pending by soonest
        start, expired by latest end), optionally only those in ``state`` (one or several)
        and those having every matcher of ``matchers`` (see :func:`filter_matches`)."""
        states = {state} if isinstance(state, str) else None if state is None else set(state)
        filters = list(_as_matchers(matchers))
        with self._lock:
            now = self._clock()
            found = [
                s
                for s in self._silences().values()
                if (states is None or s.state(now) in states) and filter_matches(s, filters)
            ]
        return sorted(found, key=lambda s: _sort_key(s, now))

    def mutes(self, labels: Mapping[str, str], now: float | None = None) -> builtins.list[str]:
        """Sorted ids of the silences active at ``now`` (default: the clock) that match
        ``labels``; empty when nothing silences them."""
        with self._lock:
            at = self._clock() if now is None else now
            return sorted(s.id for s in self._silences().values() if s.mutes(labels, at))

    # -- writing -------------------------------------------------------------------------

    def add(
        self,
        silence: Silence | None = None,
        /,
        *,
        id: str = "",
        matchers: Matchers | Iterable[Matcher] | str | None = None,
        starts_at: float | None = None,
        ends_at: float | None = None,
        created_by: str = "",
        comment: str = "",
    ) -> str:
        """Create a silence, or update the one with its ``id``; returns the id it has now
        (a new one when the update had to replace it). Pass a :class:`Silence` or the
        fields; ``matchers`` may be a matcher text such as ``'alertname="X",env=~"p.*"'``
        and an unset ``starts_at`` is now. Raises :class:`InvalidSilence` or
        :class:`SilenceNotFound`."""
        with self._lock:
            now = self._clock()
            if silence is None:
                if ends_at is None:
                    raise InvalidSilence("invalid zero end timestamp")
                silence = Silence(
                    id=id,
                    matchers=_as_matchers(matchers),
                    starts_at=now if starts_at is None else starts_at,
                    ends_at=ends_at,
                    created_by=created_by,
                    comment=comment,
                )
            _validate(silence, now)
            current = self._silences()
            previous = current.get(silence.id) if silence.id else None
            if silence.id and previous is None:
                raise SilenceNotFound(silence.id)
            if previous is not None and _can_update(previous, silence, now):
                self._write([replace(silence, updated_at=now)])
                return silence.id
            new = replace(
                silence,
                id=str(uuid.uuid4()),
                starts_at=max(silence.starts_at, now),
                updated_at=now,
            )
            writes = [new]
            if previous is not None and previous.state(now) != "expired":
                writes.insert(0, _expired(previous, now))
            self._write(writes)
            return new.id

    def expire(self, id: str) -> None:
        """End the silence with ``id`` now; raises :class:`SilenceNotFound` or
        :class:`SilenceAlreadyExpired`."""
        with self._lock:
            now = self._clock()
            silence = self._silences().get(id)
            if silence is None:
                raise SilenceNotFound(id)
            if silence.state(now) == "expired":
                raise SilenceAlreadyExpired(id)
            self._write([_expired(silence, now)])

    def gc(self) -> int:
        """Drop the silences that ended ``retention`` or longer ago; returns how many."""
        with self._lock:
            cutoff = self._clock() - self.retention
            gone = [s.id for s in self._silences().values() if s.ends_at <= cutoff]
            if gone:
                self._transaction(
                    "delete",
                    lambda: self._conn.executemany(
                        "DELETE FROM notify_silences WHERE id = ?", [(i,) for i in gone]
                    ),
                )
                assert self._cache is not None
                for id in gone:
                    del self._cache[id]
            return len(gone)

    def _write(self, silences: builtins.list[Silence]) -> None:
        rows = [
            (
                s.id,
                _matchers_json(s.matchers),
                s.starts_at,
                s.ends_at,
                s.updated_at,
                s.created_by,
                s.comment,
            )
            for s in silences
        ]
        self._transaction(
            "write",
            lambda: self._conn.executemany(
                "INSERT OR REPLACE INTO notify_silences VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            ),
        )
        # Our own commits do not change data_version, so the cache is updated here.
        assert self._cache is not None
        for s in silences:
            self._cache[s.id] = s

    def _transaction(self, action: str, work: Callable[[], object]) -> None:
        def run() -> None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                work()
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

        self._translated(action, run)


def _expired(silence: Silence, now: float) -> Silence:
    """``silence`` ended at ``now`` (a pending one also starts at ``now``)."""
    starts_at = now if silence.state(now) == "pending" else silence.starts_at
    return replace(silence, starts_at=starts_at, ends_at=now, updated_at=now)
