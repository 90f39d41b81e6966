"""Go (RE2) regular expressions, as PromQL writes them, translated for Python's ``re``.

Prometheus compiles a matcher's pattern as ``^(?s:<pattern>)$`` with Go's
``regexp`` package. Most of that syntax means the same in Python; these parts
do not, and are rewritten:

- a flag group in the middle of a pattern, ``((?i)x)``: Go scopes it to the end
  of the enclosing group, Python refuses it; it becomes ``((?i:x))``;
- ``\\z`` (end of text) is ``\\Z`` in Python, and ``$`` outside multi-line mode
  matches only at the end of text in Go, so it becomes ``\\Z`` too;
- ``\\Q...\\E`` quotes literally; ``\\x{10FFFF}`` is a code point;
  ``(?<name>...)`` names a group; ``[[:alpha:]]`` is a POSIX class;
- ``\\d``, ``\\s``, ``\\w`` and ``\\b`` are ASCII-only in Go;
- inside a character class, ``[``, ``&``, ``~`` and ``|`` are plain characters
  in Go, where Python warns about future set operations.

Syntax Python cannot express (Unicode classes ``\\pL``, the ``U`` flag) raises
:class:`ValueError`, so a pattern never silently changes meaning.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["compile_go_regex", "translate_go_regex"]

_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_CLASS_ESCAPES: Final = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}
_PERL_OUTSIDE: Final = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "s": "[\\t\\n\\f\\r ]",
    "S": "[^\\t\\n\\f\\r ]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
    "b": "(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))",
    "B": "(?:(?<=[0-9A-Za-z_])(?=[0-9A-Za-z_])|(?<![0-9A-Za-z_])(?![0-9A-Za-z_]))",
}
_FLAG_GROUP: Final = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?\)")
_SCOPED_FLAGS: Final = re.compile(r"\(\?[imsU]*(?:-[imsU]*)?:")


@lru_cache(maxsize=1024)
def compile_go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go regular expression with Prometheus's anchoring (use ``fullmatch``)."""
    try:
        return re.compile(translate_go_regex(pattern))
    except re.error as exc:
        raise ValueError(f"error parsing regexp {pattern!r}: {exc}") from exc


def translate_go_regex(pattern: str) -> str:
    """Translate a Go regular expression into Python's syntax, with dot matching newline.

    The result is meant for ``fullmatch``; like Prometheus it wraps the pattern
    in ``(?s:...)``.
    """
    multiline = "m" in "".join(
        m.group(1) + (m.group(2) or "") for m in _FLAG_GROUP.finditer(pattern)
    )
    return "(?s:" + _Translator(pattern, multiline).run() + ")"


class _Translator:
    """One pass over a pattern, keeping the open groups so mid-group flags can be scoped."""

    def __init__(self, pattern: str, multiline: bool) -> None:
        self.src = pattern
        self.i = 0
        self.multiline = multiline
        # For each open group: the scoped-flag groups opened inside it, still open.
        self.pending: list[list[str]] = [[]]

    def run(self) -> str:
        out: list[str] = []
        src = self.src
        while self.i < len(src):
            c = src[self.i]
            if c == "\\":
                out.append(self._escape(in_class=False))
            elif c == "[":
                out.append(self._char_class())
            elif c == "(":
                out.append(self._open_group())
            elif c == ")":
                scoped = self.pending.pop() if len(self.pending) > 1 else []
                out.append(")" * len(scoped) + ")")
                self.i += 1
            elif c == "|":
                # Go keeps the flags across "|": close the scoped groups and reopen them.
                scoped = self.pending[-1]
                out.append(")" * len(scoped) + "|" + "".join(scoped))
                self.i += 1
            elif c == "$":
                out.append("$" if self.multiline else "\\Z")
                self.i += 1
            else:
                out.append(c)
                self.i += 1
        out.append(")" * len(self.pending[0]))
        return "".join(out)

    def _open_group(self) -> str:
        src = self.src
        flags = _FLAG_GROUP.match(src, self.i)
        if flags is not None:
            self.i = flags.end()
            on, off = flags.group(1), flags.group(2) or ""
            if "U" in on + off:
                raise ValueError(f"the ungreedy flag (?U) in {src!r} is not supported")
            spec = on + (f"-{off}" if off else "")
            if not spec:
                return ""
            # Go applies the flags up to the end of the enclosing group.
            self.pending[-1].append(f"(?{spec}:")
            return f"(?{spec}:"
        if src.startswith("(?<", self.i) and not src.startswith(("(?<=", "(?<!"), self.i):
            self.i += 3
            self.pending.append([])
            return "(?P<"
        for opener in ("(?:", "(?P<", "(?P="):
            if src.startswith(opener, self.i):
                if opener == "(?P=":
                    raise ValueError(f"backreferences in {src!r} are not supported by Go regexps")
                self.i += len(opener)
                self.pending.append([])
                return opener
        match = _SCOPED_FLAGS.match(src, self.i)
        if match is not None:
            if "U" in match.group(0):
                raise ValueError(f"the ungreedy flag (?U) in {src!r} is not supported")
            self.i = match.end()
            self.pending.append([])
            return match.group(0)
        if src.startswith("(?", self.i):
            raise ValueError(f"unsupported group syntax at offset {self.i} in {src!r}")
        self.i += 1
        self.pending.append([])
        return "("

    def _escape(self, *, in_class: bool) -> str:
        src = self.src
        if self.i + 1 >= len(src):
            raise ValueError(f"trailing backslash in {src!r}")
        c = src[self.i + 1]
        self.i += 2
        if c == "Q":
            end = src.find("\\E", self.i)
            literal = src[self.i :] if end < 0 else src[self.i : end]
            self.i = len(src) if end < 0 else end + 2
            return "".join(_escape_literal(ch, in_class) for ch in literal)
        if c == "z":
            if in_class:
                raise ValueError(f"\\z inside a character class in {src!r}")
            return "\\Z"
        if c == "x" and self.i < len(src) and src[self.i] == "{":
            end = src.find("}", self.i)
            if end < 0:
                raise ValueError(f"unterminated \\x{{ in {src!r}")
            code = int(src[self.i + 1 : end], 16)
            self.i = end + 1
            return _escape_literal(chr(code), in_class)
        if c in "pP":
            raise ValueError(f"Unicode classes (\\{c}) in {src!r} are not supported")
        if c in "dswDSWbB":
            if in_class:
                if c in _CLASS_ESCAPES:
                    return _CLASS_ESCAPES[c]
                return "\\" + c  # negated class inside a class: Python's (Unicode) meaning
            return _PERL_OUTSIDE[c]
        if c.isdigit() and c != "0":
            raise ValueError(f"backreferences (\\{c}) are not supported by Go regexps: {src!r}")
        return "\\" + c

    def _char_class(self) -> str:
        src = self.src
        out = ["["]
        self.i += 1
        if self.i < len(src) and src[self.i] == "^":
            out.append("^")
            self.i += 1
        first = True
        while self.i < len(src):
            c = src[self.i]
            if c == "]" and not first:
                self.i += 1
                out.append("]")
                return "".join(out)
            first = False
            if c == "[" and src.startswith("[:", self.i):
                end = src.find(":]", self.i + 2)
                if end > 0:
                    name = src[self.i + 2 : end]
                    negated = name.startswith("^")
                    ranges = _POSIX_CLASSES.get(name.lstrip("^"))
                    if ranges is None:
                        raise ValueError(f"invalid character class [:{name}:] in {src!r}")
                    if negated:
                        raise ValueError(
                            f"negated POSIX class [:{name}:] in {src!r} is not supported"
                        )
                    out.append(ranges)
                    self.i = end + 2
                    continue
            if c == "\\":
                out.append(self._escape(in_class=True))
                continue
            out.append(_escape_literal(c, True) if c in "[&~|" else c)
            self.i += 1
        raise ValueError(f"missing closing ] in {src!r}")


def _escape_literal(ch: str, in_class: bool) -> str:
    if in_class:
        return "\\" + ch if ch in "\\]^-[&~|" else ch
    return re.escape(ch)


def expand_go_template(template: str, match: re.Match[str]) -> str:
    """Expand ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` as Go's ``Regexp.Expand`` does.

    ``$name`` takes the longest run of letters, digits and underscores, so
    ``$1x`` means the group named ``1x``; a group that does not exist or did not
    take part in the match expands to nothing, and a malformed ``$`` stays as is.
    """
    out: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        c = template[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        if i + 1 < n and template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        name, end = _template_name(template, i + 1)
        if name is None:
            out.append("$")
            i += 1
            continue
        out.append(_group_text(match, name))
        i = end
    return "".join(out)


def _template_name(template: str, i: int) -> tuple[str | None, int]:
    n = len(template)
    if i < n and template[i] == "{":
        close = template.find("}", i + 1)
        name = template[i + 1 : close] if close > 0 else ""
        if not name or not all(ch.isalnum() or ch == "_" for ch in name):
            return None, i
        return name, close + 1
    j = i
    while j < n and (template[j].isalnum() or template[j] == "_"):
        j += 1
    if j == i:
        return None, i
    return template[i:j], j


def _group_text(match: re.Match[str], name: str) -> str:
    if name.isdigit() and not (name[0] == "0" and len(name) > 1) and len(name) <= 8:
        index = int(name)
        if index > (match.re.groups or 0):
            return ""
        return match.group(index) or ""
    if name in match.re.groupindex:
        return match.group(name) or ""
    return ""
