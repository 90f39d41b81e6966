"""Inhibition: a firing *source* alert mutes the *target* alerts that agree with it on
the ``equal`` labels, as Alertmanager's ``inhibit/inhibit.go`` decides.

An ``inhibit_rules`` entry is written as in ``alertmanager.yml``: ``source_matchers`` and
``target_matchers`` (matcher lines, see :mod:`notifiers.matchers`) and the older
``source_match``/``source_match_re``/``target_match``/``target_match_re`` maps, all ANDed
per side; ``equal`` lists label names. Every matcher is parsed when the config is
validated, so a bad one is a config error at its line.

:class:`Inhibitor` keeps, per rule, the firing alerts that match the rule's source side
(``update`` replaces them all; Alertmanager's per-rule ``scache``). An alert with labels
``L`` is inhibited by rule ``r`` when

- ``L`` matches ``r``'s target matchers;
- some cached source alert ``S`` agrees with ``L`` on every ``equal`` label, a label missing
  on one side counting as the empty string (Go's ``a.Labels[n] != lset[n]``), so a label
  missing on both sides is equal;
- if ``L`` also matches ``r``'s source matchers, ``S`` must not match the target matchers
  (``excludeTwoSidedMatch``): alerts that are both source and target of one rule cannot
  inhibit each other, nor themselves.

:meth:`Inhibitor.inhibited_by` returns the fingerprints of every such ``S`` over every rule
(Alertmanager's ``marker.SetInhibited(alert, fingerprints...)``); empty means not muted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Final, Protocol

from pydantic import AfterValidator, Field, field_validator

from monitor.schema import ConfigModel
from notifiers.base import fingerprint as labels_fingerprint
from notifiers.matchers import (
    Matcher,
    MatcherError,
    Matchers,
    MatchType,
    matchers_from_config,
    parse_matchers,
)

__all__ = ["FiringAlert", "InhibitRuleConfig", "Inhibitor"]

_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_line(line: str) -> str:
    try:
        parse_matchers(line)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return line


MatcherLine = Annotated[str, AfterValidator(_check_line)]
"""A ``matchers:`` line, parsed at validation so that a bad one is located."""


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}")


class InhibitRuleConfig(ConfigModel):
    """One ``inhibit_rules`` entry, in ``alertmanager.yml``'s shape."""

    source_matchers: list[MatcherLine] = Field(default_factory=list)
    target_matchers: list[MatcherLine] = Field(default_factory=list)
    source_match: dict[str, str] = Field(default_factory=dict)
    source_match_re: dict[str, str] = Field(default_factory=dict)
    target_match: dict[str, str] = Field(default_factory=dict)
    target_match_re: dict[str, str] = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_match", "target_match")
    @classmethod
    def _check_match(cls, match: dict[str, str]) -> dict[str, str]:
        _check_names(match)
        return match

    @field_validator("source_match_re", "target_match_re")
    @classmethod
    def _check_match_re(cls, match_re: dict[str, str]) -> dict[str, str]:
        _check_names(match_re)
        for name, value in match_re.items():
            try:
                Matcher.create(name, MatchType.REGEX, value)
            except MatcherError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return match_re

    @field_validator("equal")
    @classmethod
    def _check_equal(cls, equal: list[str]) -> list[str]:
        _check_names(equal)
        return equal

    def sources(self) -> Matchers:
        """The source side: ``source_match``, ``source_match_re``, then ``source_matchers``."""
        return matchers_from_config(self.source_matchers, self.source_match, self.source_match_re)

    def targets(self) -> Matchers:
        """The target side: ``target_match``, ``target_match_re``, then ``target_matchers``."""
        return matchers_from_config(self.target_matchers, self.target_match, self.target_match_re)


class FiringAlert(Protocol):
    """What :meth:`Inhibitor.update` reads of an alert object."""

    @property
    def labels(self) -> Mapping[str, str]:
        """The alert's labels."""

    @property
    def fingerprint(self) -> str:
        """Alertmanager's fingerprint of the labels (computed when empty)."""


@dataclass(frozen=True, slots=True)
class _Source:
    fingerprint: str
    labels: Mapping[str, str]


class _Rule:
    """A compiled rule and its cache of firing source alerts."""

    __slots__ = ("cache", "equal", "sources", "targets")

    def __init__(self, config: InhibitRuleConfig) -> None:
        self.sources = config.sources()
        self.targets = config.targets()
        self.equal = tuple(dict.fromkeys(config.equal))
        self.cache: list[_Source] = []

    def inhibiting(self, labels: Mapping[str, str], exclude_two_sided: bool) -> list[str]:
        """Fingerprints of the cached sources that inhibit ``labels`` (``r.inhibits``)."""
        found = []
        for source in self.cache:
            if any(source.labels.get(n, "") != labels.get(n, "") for n in self.equal):
                continue
            if exclude_two_sided and self.targets.matches(source.labels):
                continue
            found.append(source.fingerprint)
        return found


class Inhibitor:
    """Tells which firing alerts inhibit a label set under the configured rules."""

    def __init__(self, rules: Iterable[InhibitRuleConfig]) -> None:
        self._rules = [_Rule(config) for config in rules]

    def update(self, alerts: Iterable[FiringAlert | tuple[str, Mapping[str, str]]]) -> None:
        """Replace the firing alerts with ``alerts``.

        Each item is an object with ``labels`` and ``fingerprint`` attributes (an empty
        fingerprint is computed from the labels) or a ``(fingerprint, labels)`` pair. Only
        firing alerts may be passed: every one given counts as a possible source.
        """
        caches: list[list[_Source]] = [[] for _ in self._rules]
        for alert in alerts:
            if isinstance(alert, tuple):
                fp, labels = alert
            else:
                fp, labels = alert.fingerprint, alert.labels
            source = _Source(fp or labels_fingerprint(labels), labels)
            for rule, cache in zip(self._rules, caches, strict=True):
                if rule.sources.matches(labels):
                    cache.append(source)
        for rule, cache in zip(self._rules, caches, strict=True):
            rule.cache = cache

    def inhibited_by(self, labels: Mapping[str, str]) -> list[str]:
        """Fingerprints of the firing alerts that inhibit an alert with ``labels``, over all
        rules in order (a source inhibiting through two rules is listed twice, as in
        Alertmanager); empty when it is not inhibited."""
        found: list[str] = []
        for rule in self._rules:
            if not rule.targets.matches(labels):
                continue
            found.extend(rule.inhibiting(labels, rule.sources.matches(labels)))
        return found

    def mutes(self, labels: Mapping[str, str]) -> bool:
        """Whether some firing alert inhibits ``labels``."""
        return bool(self.inhibited_by(labels))
