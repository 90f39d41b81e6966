"""monitord's exceptions. Third-party exceptions are translated into these at the boundary.

MonitordError
├── ConfigError        the config file (or a reload) is invalid; carries every issue found
├── PluginError        a check or receiver kind is missing or is not a proper plugin
├── LifecycleError     a component was used out of order (started twice, used after close)
└── QueryError         a PromQL expression cannot be parsed or evaluated
    └── UnsupportedQueryError   it uses a PromQL feature monitord does not implement
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LifecycleError",
    "MonitordError",
    "PluginError",
    "QueryError",
    "UnsupportedQueryError",
]


class MonitordError(Exception):
    """Base of every error monitord raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(MonitordError):
    """The configuration is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class PluginError(MonitordError):
    """A plugin kind could not be found or loaded."""

    def __init__(self, group: str, name: str, reason: str, known: Sequence[str] = ()) -> None:
        self.group = group
        self.name = name
        self.reason = reason
        self.known = list(known)
        listing = f"; known kinds: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"{group} plugin {name!r}: {reason}{listing}")


class LifecycleError(MonitordError):
    """A component was used in the wrong state (started twice, used after close)."""


class QueryError(MonitordError):
    """A PromQL expression is invalid, or its evaluation failed; ``expr`` is the text."""

    def __init__(self, expr: str, reason: str) -> None:
        self.expr = expr
        self.reason = reason
        super().__init__(reason)


class UnsupportedQueryError(QueryError):
    """The expression is valid PromQL but needs a feature monitord does not implement."""
