"""Alert ``for`` state across restarts: each alert's last ``ALERTS_FOR_STATE`` sample, in SQLite.

Prometheus restores the ``for`` state from the ``ALERTS_FOR_STATE`` series in its
TSDB. monitord's store is in memory, so the same samples (one per pending or
firing alert: its labels, the sample's time and ``active_at`` in seconds) are
saved in the state directory's SQLite database, in WAL mode, on shutdown and
periodically, and read back on start. A save replaces the whole table in one
transaction, so what is read back is always one consistent snapshot.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from monitor.errors import MonitordError
from monitor.log import get_logger
from monitor.model import Labels
from rules.alerting import ForState

__all__ = ["AlertStateError", "AlertStateStore"]

log = get_logger("rules.state")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rules_alerts_for_state (
    labels TEXT PRIMARY KEY,      -- the alert's labels, a JSON object with sorted keys
    timestamp_ms INTEGER NOT NULL, -- time of the last ALERTS_FOR_STATE sample
    active_at INTEGER NOT NULL     -- its value: the alert's active_at, whole seconds
)
"""


class AlertStateError(MonitordError):
    """The saved alert state could not be read or written; ``path`` is the database."""

    def __init__(self, path: Path, action: str, reason: str) -> None:
        self.path = path
        self.action = action
        self.reason = reason
        super().__init__(f"cannot {action} alert state in {path}: {reason}")


class AlertStateStore:
    """Reads and writes the saved ``for`` state in one SQLite file (created on first use)."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._timeout = timeout

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        return conn

    def _translated(self, action: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except (sqlite3.Error, OSError) as exc:
            raise AlertStateError(self.path, action, str(exc)) from exc

    def load(self) -> list[ForState]:
        """Every saved for-state; none when the file does not exist yet."""
        if not self.path.exists():
            return []
        return self._translated("read", self._load)

    def _load(self) -> list[ForState]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT labels, timestamp_ms, active_at FROM rules_alerts_for_state"
            ).fetchall()
        states = []
        for text, timestamp, active_at in rows:
            try:
                labels = Labels(json.loads(text))
            except (ValueError, TypeError, AttributeError):
                log.warning("ignoring a saved alert state with unreadable labels: %r", text)
                continue
            states.append(ForState(labels, int(timestamp), int(active_at)))
        return states

    def save(self, states: Iterable[ForState]) -> None:
        """Replace what is saved with ``states``, atomically."""
        self._translated("write", lambda: self._save(states))

    def _save(self, states: Iterable[ForState]) -> None:
        rows = [
            (json.dumps(dict(s.labels.items_tuple()), sort_keys=True), s.timestamp, s.active_at)
            for s in states
        ]
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM rules_alerts_for_state")
                conn.executemany(
                    "INSERT OR REPLACE INTO rules_alerts_for_state VALUES (?, ?, ?)", rows
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
