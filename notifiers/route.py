"""The routing tree: the ``route:`` section as configured (:class:`RouteConfig`) and as run
(:class:`Route`), with Alertmanager's semantics (``dispatch/route.go``, ``config/config.go``).

Matching is a depth-first, left-to-right search: a route matches when all of its matchers
do (regular expressions anchored at both ends, a missing label counting as empty); its
children are tried in order and the search stops at the first one that matched unless that
child has ``continue: true``; a route none of whose children matched is itself the match.

A route inherits from its parent what it does not set: ``receiver``, ``group_by``,
``group_wait``, ``group_interval`` and ``repeat_interval`` (the root's defaults are 30s,
5m and 4h). ``mute_time_intervals`` and ``active_time_intervals`` are not inherited: as in
Alertmanager's ``NewRoute``, each route has exactly the ones it names. An absent or empty
``group_by`` inherits the parent's; ``['...']`` groups by every label.

Route keys and group keys are spelt as Alertmanager spells them, so that notification
logs, webhook ``groupKey`` values and PagerDuty dedup keys are those Alertmanager would
produce for the same tree: a route's key is its parent's key, ``/`` and its sorted
matchers (``{}/{severity="page"}``); ``match_re`` values appear anchored
(``{service=~"^(?:db)$"}``), as Alertmanager stores them; a group's key is the route's key,
``:`` and its group labels (``{}/{severity="page"}:{alertname="Down"}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from monitor.model import Labels
from monitor.schema import ConfigModel, Duration
from notifiers.matchers import Matcher, MatcherError, Matchers, MatchType, parse_matchers

__all__ = [
    "DEFAULT_GROUP_INTERVAL",
    "DEFAULT_GROUP_WAIT",
    "DEFAULT_REPEAT_INTERVAL",
    "RootRouteConfig",
    "Route",
    "RouteConfig",
    "group_key",
    "labels_string",
]

DEFAULT_GROUP_WAIT: Final = 30.0
DEFAULT_GROUP_INTERVAL: Final = 300.0
DEFAULT_REPEAT_INTERVAL: Final = 4 * 3600.0

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPE_ORDER: Final = {
    MatchType.EQUAL: 0,
    MatchType.NOT_EQUAL: 1,
    MatchType.REGEX: 2,
    MatchType.NOT_REGEX: 3,
}
_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _go_quote(text: str) -> str:
    """Go's ``strconv.Quote``."""
    out = ['"']
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def labels_string(labels: Mapping[str, str]) -> str:
    """Prometheus' ``model.LabelSet.String()``: ``{a="1", b="2"}``, sorted by name."""
    return "{" + ", ".join(f"{k}={_go_quote(labels[k])}" for k in sorted(labels)) + "}"


def _sorted(matchers: list[Matcher]) -> Matchers:
    """Alertmanager's ``labels.Matchers`` order: by name, then value, then operator."""
    return Matchers(tuple(sorted(matchers, key=lambda m: (m.name, m.value, _TYPE_ORDER[m.type]))))


class RouteConfig(ConfigModel):
    """One node of ``route:``, as Alertmanager's ``config.Route`` reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = Field(
        default=None, description="receiver of the alerts this route takes; inherited if unset"
    )
    group_by: list[str] | None = Field(
        default=None,
        description="label names whose values split alerts into groups; ['...'] for all",
    )
    continue_: bool = Field(
        default=False,
        alias="continue",
        description="after matching here, go on trying this route's later siblings",
    )
    matchers: list[str] = Field(
        default_factory=list, description="matcher lines such as 'severity=\"page\"'"
    )
    match: dict[str, str] = Field(default_factory=dict, description="label equalities (older)")
    match_re: dict[str, str] = Field(
        default_factory=dict, description="anchored label regular expressions (older)"
    )
    group_wait: Duration | None = Field(
        default=None, description="wait before a new group's first notification (root: 30s)"
    )
    group_interval: Duration | None = Field(
        default=None, description="wait between a group's notifications (root: 5m)"
    )
    repeat_interval: Duration | None = Field(
        default=None, description="wait before repeating an unchanged notification (root: 4h)"
    )
    mute_time_intervals: list[str] = Field(
        default_factory=list, description="names of time intervals in which the route is muted"
    )
    active_time_intervals: list[str] = Field(
        default_factory=list, description="names of time intervals outside which it is muted"
    )
    routes: list[RouteConfig] = Field(default_factory=list, description="child routes")

    _matchers: Matchers = PrivateAttr(default_factory=Matchers)

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"invalid label name {_go_quote(name)}")
        return value

    @field_validator("match_re")
    @classmethod
    def _check_match_re(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not _LABEL_NAME.match(name):
                raise ValueError(f"invalid label name {_go_quote(name)}")
            try:
                Matcher.create(name, MatchType.REGEX, pattern)
            except MatcherError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("matchers")
    @classmethod
    def _check_matchers(cls, value: list[str]) -> list[str]:
        for line in value:
            try:
                parse_matchers(line)
            except MatcherError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [name for name in value if name != "..."]
        for name in names:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"invalid label name {_go_quote(name)} in group_by list")
        if names and len(names) != len(value):
            raise ValueError(
                "cannot have wildcard group_by (`...`) and other labels at the same time"
            )
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"duplicated label {_go_quote(name)} in group_by")
            seen.add(name)
        return value

    @field_validator("group_interval")
    @classmethod
    def _check_group_interval(cls, value: float | None) -> float | None:
        if value == 0:
            raise ValueError("group_interval cannot be zero")
        return value

    @field_validator("repeat_interval")
    @classmethod
    def _check_repeat_interval(cls, value: float | None) -> float | None:
        if value == 0:
            raise ValueError("repeat_interval cannot be zero")
        return value

    @model_validator(mode="after")
    def _build_matchers(self) -> RouteConfig:
        found = [Matcher.create(k, MatchType.EQUAL, v) for k, v in self.match.items()]
        # Alertmanager keeps match_re as a compiled, anchored regexp and builds the
        # matcher from its String(): the anchors show in route keys.
        found += [
            Matcher.create(k, MatchType.REGEX, f"^(?:{v})$") for k, v in self.match_re.items()
        ]
        for line in self.matchers:
            found += parse_matchers(line)
        self._matchers = _sorted(found)
        return self

    @property
    def all_matchers(self) -> Matchers:
        """``matchers``, ``match`` and ``match_re`` together, sorted as Alertmanager sorts."""
        return self._matchers

    @property
    def group_by_all(self) -> bool:
        """Whether ``group_by`` is ``['...']``."""
        return self.group_by is not None and "..." in self.group_by

    def reference_errors(
        self, receivers: set[str], time_intervals: set[str], path: str = ""
    ) -> list[tuple[str, str]]:
        """``(dotted path, message)`` for each receiver or time interval name used in this
        tree that is not defined, worded as Alertmanager's ``checkReceiver`` and
        ``checkTimeInterval``; ``path`` is this route's own path (``route``)."""
        prefix = f"{path}." if path else ""
        errors: list[tuple[str, str]] = []
        for i, child in enumerate(self.routes):
            errors += child.reference_errors(receivers, time_intervals, f"{prefix}routes.{i}")
        if self.receiver and self.receiver not in receivers:
            errors.append(
                (
                    f"{prefix}receiver",
                    f"undefined receiver {_go_quote(self.receiver)} used in route",
                )
            )
        for key in ("active_time_intervals", "mute_time_intervals"):
            for i, name in enumerate(getattr(self, key)):
                if name not in time_intervals:
                    errors.append(
                        (
                            f"{prefix}{key}.{i}",
                            f"undefined time interval {_go_quote(name)} used in route",
                        )
                    )
        return errors


class RootRouteConfig(RouteConfig):
    """The top ``route:``: a :class:`RouteConfig` with the root's rules (a default receiver;
    no matchers, time intervals or ``continue``), as Alertmanager's ``Config`` checks them."""

    @model_validator(mode="after")
    def _check_root(self) -> RootRouteConfig:
        problems = []
        if not self.receiver:
            problems.append("root route must specify a default receiver")
        if self.match or self.match_re or self.matchers:
            problems.append("root route must not have any matchers")
        if self.mute_time_intervals:
            problems.append("root route must not have any mute time intervals")
        if self.active_time_intervals:
            problems.append("root route must not have any active time intervals")
        if self.continue_:
            problems.append("cannot have continue in root route")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Route:
    """A node of the running routing tree, with the options it inherited resolved
    (Alertmanager's ``dispatch.Route`` and its ``RouteOpts``)."""

    __slots__ = (
        "_id",
        "_key",
        "active_time_intervals",
        "config",
        "continue_",
        "group_by",
        "group_by_all",
        "group_interval",
        "group_wait",
        "matchers",
        "mute_time_intervals",
        "parent",
        "receiver",
        "repeat_interval",
        "routes",
    )

    def __init__(
        self, config: RouteConfig, parent: Route | None = None, position: int | None = None
    ) -> None:
        self.config = config
        self.parent = parent
        self.receiver: str = parent.receiver if parent else ""
        self.group_by: frozenset[str] = parent.group_by if parent else frozenset()
        self.group_by_all: bool = parent.group_by_all if parent else False
        self.group_wait: float = parent.group_wait if parent else DEFAULT_GROUP_WAIT
        self.group_interval: float = parent.group_interval if parent else DEFAULT_GROUP_INTERVAL
        self.repeat_interval: float = parent.repeat_interval if parent else DEFAULT_REPEAT_INTERVAL
        if config.receiver:
            self.receiver = config.receiver
        names = frozenset(n for n in config.group_by or () if n != "...")
        if names:
            self.group_by, self.group_by_all = names, False
        elif config.group_by_all:
            self.group_by_all = True
        if config.group_wait is not None:
            self.group_wait = config.group_wait
        if config.group_interval is not None:
            self.group_interval = config.group_interval
        if config.repeat_interval is not None:
            self.repeat_interval = config.repeat_interval
        self.mute_time_intervals: tuple[str, ...] = tuple(config.mute_time_intervals)
        self.active_time_intervals: tuple[str, ...] = tuple(config.active_time_intervals)
        self.matchers: Matchers = config.all_matchers
        self.continue_: bool = config.continue_
        self._key: str = f"{parent._key}/{self.matchers}" if parent else str(self.matchers)
        self._id: str = f"{parent._id}/{self.matchers}/{position}" if parent else str(self.matchers)
        self.routes: tuple[Route, ...] = tuple(
            Route(child, self, i) for i, child in enumerate(config.routes)
        )

    @classmethod
    def from_config(cls, config: RouteConfig) -> Route:
        """The running tree of a ``route:`` section."""
        return cls(config)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that take an alert with ``labels``, in tree order (``Route.Match``)."""
        if not self.matchers.matches(labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found += matched
            if matched and not child.continue_:
                break
        return found or [self]

    def key(self) -> str:
        """Alertmanager's route key: the matchers of every route from the root down, joined
        by ``/``; not unique when siblings have the same matchers."""
        return self._key

    def id(self) -> str:
        """Alertmanager's route ID: the key with each route's position among its siblings."""
        return self._id

    def walk(self) -> Iterator[Route]:
        """This route and all below it, depth first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def receivers(self) -> set[str]:
        """Every receiver name a route of this tree sends to."""
        return {route.receiver for route in self.walk() if route.receiver}

    def time_interval_names(self) -> set[str]:
        """Every time interval name a route of this tree mutes or activates by."""
        names: set[str] = set()
        for route in self.walk():
            names.update(route.mute_time_intervals, route.active_time_intervals)
        return names

    def group_labels(self, labels: Mapping[str, str]) -> Labels:
        """The labels of an alert that pick its aggregation group on this route: those named
        in ``group_by``, or all for ``['...']`` (``getGroupLabels``)."""
        if self.group_by_all:
            return labels if isinstance(labels, Labels) else Labels(labels)
        return Labels((k, v) for k, v in labels.items() if k in self.group_by)

    def __repr__(self) -> str:
        return f"Route({self._id!r}, receiver={self.receiver!r})"

    def describe(self) -> dict[str, Any]:
        """The resolved options, for views (Alertmanager's ``RouteOpts`` JSON)."""
        return {
            "receiver": self.receiver,
            "groupBy": sorted(self.group_by),
            "groupByAll": self.group_by_all,
            "groupWait": self.group_wait,
            "groupInterval": self.group_interval,
            "repeatInterval": self.repeat_interval,
            "muteTimeIntervals": list(self.mute_time_intervals),
            "activeTimeIntervals": list(self.active_time_intervals),
        }


def group_key(route: Route, group_labels: Mapping[str, str]) -> str:
    """An aggregation group's key, as Alertmanager's ``aggrGroup.GroupKey``:
    ``<route key>:<group labels>``."""
    return f"{route.key()}:{labels_string(group_labels)}"
