"""Alertmanager's label matchers: ``name="value"``, ``!=``, ``=~`` and ``!~``.

Semantics are Alertmanager's (``pkg/labels``): a regular expression is Go's RE2, anchored
at both ends (``^(?:value)$``); a label an alert does not have counts as the empty
string, so ``team=""`` matches alerts without ``team`` and ``team!="db"`` matches them too.

:func:`parse_matchers` reads what ``matchers:`` lines, ``amtool`` and the silence CLI
take: one or more comma-separated matchers, optionally inside braces, values quoted
(with Go escapes ``\\"``, ``\\\\``, ``\\n``) or bare, as in ``{alertname="Down",
severity=~"crit|page"}`` or ``alertname=Down``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from monitor.query.regex import translate_go_regex

__all__ = [
    "MatchType",
    "Matcher",
    "MatcherError",
    "Matchers",
    "matchers_from_config",
    "parse_matchers",
]


class MatcherError(ValueError):
    """A matcher that cannot be parsed or whose regular expression does not compile."""


class MatchType(enum.Enum):
    """The four operators, by their spelling."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    """One matcher; compare with :meth:`matches`."""

    name: str
    type: MatchType
    value: str
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, type: MatchType | str, value: str) -> Matcher:
        """A matcher, its regular expression compiled; raises :class:`MatcherError`."""
        kind = type if isinstance(type, MatchType) else MatchType(type)
        pattern = None
        if kind in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                # Go's "^(?:v)$" without the s flag: translate_go_regex adds (?s:...).
                translated = translate_go_regex(value)
                pattern = re.compile(translated.replace("(?s:", "(?:", 1))
            except (re.error, ValueError) as exc:
                raise MatcherError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, kind, value, pattern)

    def matches(self, value: str) -> bool:
        """Tell whether a label value (empty when the label is missing) matches."""
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        assert self._pattern is not None
        found = self._pattern.fullmatch(value) is not None
        return found if self.type is MatchType.REGEX else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type.value}"{escaped}"'

    @property
    def is_regex(self) -> bool:
        """Whether the operator is ``=~`` or ``!~``."""
        return self.type in (MatchType.REGEX, MatchType.NOT_REGEX)

    @property
    def is_equal(self) -> bool:
        """Whether the operator is ``=`` or ``=~`` (Alertmanager's ``isEqual``)."""
        return self.type in (MatchType.EQUAL, MatchType.REGEX)


@dataclass(frozen=True, slots=True)
class Matchers:
    """A conjunction of matchers: every one must match."""

    items: tuple[Matcher, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether ``labels`` satisfy every matcher (a missing label is empty)."""
        return all(m.matches(labels.get(m.name, "")) for m in self.items)

    def __iter__(self) -> Iterator[Matcher]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "{" + ",".join(str(m) for m in self.items) + "}"

    @classmethod
    def of(cls, *groups: Iterable[Matcher]) -> Matchers:
        """Matchers from several lists, in order."""
        return cls(tuple(m for group in groups for m in group))


_NAME: Final = re.compile(r"\s*([^\s{}!=~,\\\"'`]+)\s*(=~|!~|!=|=)\s*")
_ESCAPES: Final = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The Go-quoted string starting at ``text[i] == '"'``, and the index after it."""
    out: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise MatcherError(f"{text!r}: unterminated quoted string")


def parse_matchers(text: str) -> list[Matcher]:
    """Every matcher in ``text`` (see the module's docstring); raises :class:`MatcherError`."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherError(f"{text!r}: missing closing '}}'")
        body = body[1:-1]
    matchers: list[Matcher] = []
    i = 0
    while i < len(body):
        if not body[i:].strip():
            break
        m = _NAME.match(body, i)
        if m is None:
            raise MatcherError(f'{text!r}: expected a matcher like name="value" at {i + 1}')
        name, op = m.group(1), m.group(2)
        i = m.end()
        if i < len(body) and body[i] == '"':
            value, i = _quoted(body, i)
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            value = body[i:end].strip()
            if '"' in value:
                raise MatcherError(f"{text!r}: stray quote in the value of {name}")
            i = end
        matchers.append(Matcher.create(name, op, value))
        rest = body[i:].lstrip()
        if rest.startswith(","):
            i = len(body) - len(rest) + 1
        elif rest:
            raise MatcherError(f"{text!r}: expected ',' after {name}{op}...")
        else:
            break
    if not matchers and body.strip():
        raise MatcherError(f"{text!r}: no matcher")
    return matchers


def matchers_from_config(
    lines: Sequence[str] = (),
    match: Mapping[str, str] | None = None,
    match_re: Mapping[str, str] | None = None,
) -> Matchers:
    """The matchers of a route, inhibit rule or silence as the config spells them: the
    ``matchers:`` lines and the older ``match``/``match_re`` maps, all ANDed."""
    found: list[Matcher] = []
    for name, value in sorted((match or {}).items()):
        found.append(Matcher.create(name, MatchType.EQUAL, value))
    for name, value in sorted((match_re or {}).items()):
        found.append(Matcher.create(name, MatchType.REGEX, value))
    for line in lines:
        found.extend(parse_matchers(line))
    return Matchers(tuple(found))
