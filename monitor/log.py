"""Loggers and their output: the one module that creates loggers and configures logging.

Loggers are named ``monitord.<part>``; :func:`setup_logging` sends them, and the
warnings of the libraries the daemon is built on, to stderr as text lines (with
``sd-daemon(3)`` priority prefixes when stderr is connected to journald) or as
JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

__all__ = ["LEVELS", "LogFormat", "get_logger", "setup_logging"]

LogFormat = Literal["text", "json"]
"""The choices of ``--log-format``."""

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
"""The choices of ``--log-level``, each with its :mod:`logging` level."""

ROOT = "monitord"

# Libraries whose warnings and errors belong in the daemon's log; their chatter does not.
_LIBRARIES = ("aiohttp", "apscheduler", "asyncio")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"]
)

# The core fields of a JSON line; an extra with one of these names gets an ``extra_`` prefix.
_JSON_FIELDS = frozenset(["ts", "level", "logger", "msg", "exc", "stack"])


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of the daemon, ``monitord.<part>``."""
    return logging.getLogger(f"{ROOT}.{part}")


def setup_logging(
    level: str = "info",
    fmt: LogFormat = "text",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Send the daemon's log records at ``level`` and above to ``stream`` (default stderr).

    Configures the ``monitord`` logger, not the root logger, and routes the
    warnings of aiohttp, APScheduler and asyncio to the same handler. Calling it
    again replaces the previous configuration.
    """
    try:
        threshold = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}"
        ) from None
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected text or json")
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    journald = _is_journal_stream(out, env.get("JOURNAL_STREAM"))
    formatter: logging.Formatter
    if fmt == "json":
        formatter = _JsonFormatter(journald=journald)
    else:
        formatter = _TextFormatter(journald=journald)
    handler = _Handler(out)
    handler.setFormatter(formatter)
    _install(logging.getLogger(ROOT), handler, threshold)
    for name in _LIBRARIES:
        _install(logging.getLogger(name), handler, max(threshold, logging.WARNING))


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs, told apart so that it can be replaced."""


def _install(logger: logging.Logger, handler: logging.Handler, level: int) -> None:
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    # Whatever else configures the root logger must not print these records twice.
    logger.propagate = False


def _is_journal_stream(stream: TextIO, journal_stream: str | None) -> bool:
    """Whether ``stream`` is the journald connection that ``$JOURNAL_STREAM`` names.

    systemd sets the variable to the device and inode of the stderr it hands the
    service; comparing them tells a redirected stderr (and a child process that
    inherited the variable) from the real journal stream, as systemd.exec(5) advises.
    """
    if not journal_stream:
        return False
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False  # malformed, or a stream without a file descriptor
    return (stat.st_dev, stat.st_ino) == (device, inode)


def _priority(levelno: int) -> int:
    """The syslog priority of a logging level, for sd-daemon ``<N>`` prefixes."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC time of the record, to the millisecond."""
    # From ``created`` rounded, not ``msecs``, which float error can make one too low.
    seconds, millis = divmod(round(record.created * 1000), 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields passed through ``extra=``, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


def _logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare if it can be, else double-quoted with escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """``TIME level logger: message key=value``, or ``<N>level logger: ...`` for journald.

    Continuation lines (of a multi-line message or a traceback) are indented, and
    under journald carry the same priority prefix, because journald makes one
    entry of each line.
    """

    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one line, plus indented continuation lines."""
        first, *rest = record.getMessage().split("\n")
        fields = "".join(f" {k}={_logfmt_value(v)}" for k, v in _extras(record).items())
        head = f"{record.levelname.lower()} {record.name}: {first}{fields}"
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            rest.extend(record.exc_text.splitlines())
        if record.stack_info:
            rest.extend(self.formatStack(record.stack_info).splitlines())
        if self.journald:
            prefix = f"<{_priority(record.levelno)}>"
            lines = [prefix + head, *(f"{prefix}  {line}" for line in rest)]
        else:
            lines = [f"{_timestamp(record)} {head}", *(f"  {line}" for line in rest)]
        return "\n".join(lines)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, extras, ``exc``."""

    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single-line JSON object."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry[f"extra_{key}" if key in _JSON_FIELDS else key] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return f"<{_priority(record.levelno)}>{line}" if self.journald else line
