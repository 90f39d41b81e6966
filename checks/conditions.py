"""Gatus's condition language, so that Gatus users can paste their ``conditions``.

A condition is ``<left> <operator> <right>`` with one of ``== != <= >= > <`` between
spaces (looked for in that order, as Gatus does). Each side is a placeholder
(``[STATUS]``, ``[RESPONSE_TIME]`` in ms, ``[BODY]`` or ``[BODY].data[0].status``,
``[HEADERS].content-type``, ``[CERTIFICATE_EXPIRATION]`` in ms, ``[CONNECTED]``, ``[IP]``,
``[DNS_RCODE]``), ``len(...)`` or ``has(...)`` of a placeholder, ``pat(glob)`` or
``any(a, b, ...)`` (only with ``==`` and ``!=``), or a literal.

Evaluation follows Gatus's ``condition.go``, ``placeholder.go`` and ``jsonpath.go``:
values are compared as strings, as integers when both sides parse as integers (``0x``
prefixes too); the ordering operators compare int64 values, where a Go duration (``48h``)
counts in milliseconds, a float is truncated and anything else is 0; a JSON path that
leads nowhere resolves to ``<text> (INVALID)``. ``[HEADERS]`` is monitord's own: Gatus has
no header placeholder. Unlike Gatus, mistakes are caught when the config is loaded: a
missing operator, an unknown placeholder, a function on the wrong side or operator.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "PLACEHOLDERS",
    "Condition",
    "ConditionContext",
    "ConditionResult",
    "parse_condition",
]

PLACEHOLDERS: Final = (
    "[STATUS]",
    "[RESPONSE_TIME]",
    "[BODY]",
    "[HEADERS]",
    "[CERTIFICATE_EXPIRATION]",
    "[CONNECTED]",
    "[IP]",
    "[DNS_RCODE]",
)
"""Every placeholder the language knows; each check kind says which it supplies."""

_OPERATORS: Final = ("==", "!=", "<=", ">=", ">", "<")
_INVALID: Final = "(INVALID)"
_PLACEHOLDER_RE: Final = re.compile(r"^\[([A-Za-z_]+)\](.*)$", re.DOTALL)
# Go's time.ParseDuration: a sequence of decimal numbers with units, optionally signed.
_GO_DURATION_RE: Final = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_GO_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS_MS: Final = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,
    "μs": 1e-3,
    "ms": 1.0,
    "s": 1e3,
    "m": 6e4,
    "h": 3.6e6,
}
_INT64: Final = 2**63


@dataclass(frozen=True, slots=True)
class ConditionContext:
    """What a probe found, for conditions to read; a check fills in what it knows."""

    status: int = 0
    response_time_ms: int = 0
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    certificate_expiration_ms: int = 0
    connected: bool = False
    ip: str = ""
    dns_rcode: str = ""


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One condition's outcome, with its sides resolved as Gatus displays them."""

    success: bool
    display: str


@dataclass(frozen=True, slots=True)
class _Operand:
    text: str
    function: str = ""  # "", "len", "has", "pat", "any"
    placeholder: str = ""  # e.g. "[BODY]", empty for a literal
    path: str = ""  # what follows the placeholder: ".data[0].status", "[0]", ".x-id"

    def resolve(self, ctx: ConditionContext) -> str:
        if self.function in ("pat", "any") or not self.placeholder:
            return self.text
        if self.placeholder == "[BODY]":
            return _resolve_body(self, ctx.body)
        if self.placeholder == "[HEADERS]":
            name = self.path.removeprefix(".").lower()
            lowered = {k.lower(): v for k, v in ctx.headers.items()}
            if self.function == "has":
                return _go_bool(name in lowered)
            if name not in lowered:
                return f"{self.text} {_INVALID}"
            return _with_function(lowered[name], self.function)
        value = {
            "[STATUS]": str(ctx.status),
            "[RESPONSE_TIME]": str(ctx.response_time_ms),
            "[CERTIFICATE_EXPIRATION]": str(ctx.certificate_expiration_ms),
            "[CONNECTED]": _go_bool(ctx.connected),
            "[IP]": ctx.ip,
            "[DNS_RCODE]": ctx.dns_rcode,
        }[self.placeholder]
        return _with_function(value, self.function)


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; compare and hash by its text, evaluate with :meth:`evaluate`."""

    text: str
    operator: str = field(compare=False)
    left: _Operand = field(compare=False, repr=False)
    right: _Operand = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.text

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholders the condition reads."""
        return frozenset(o.placeholder for o in (self.left, self.right) if o.placeholder)

    def evaluate(self, ctx: ConditionContext) -> ConditionResult:
        """Resolve both sides against ``ctx`` and compare them, as Gatus does."""
        left, right = self.left.resolve(ctx), self.right.resolve(ctx)
        if self.operator in ("==", "!="):
            equal = _is_equal(self.left, left, self.right, right)
            success = equal if self.operator == "==" else not equal
            return ConditionResult(success, self._display(left, right))
        a, b = _numeric(left), _numeric(right)
        success = {"<=": a <= b, ">=": a >= b, ">": a > b, "<": a < b}[self.operator]
        shown = [self._numeric_display(o, n) for o, n in ((self.left, a), (self.right, b))]
        return ConditionResult(success, self._display(*shown))

    def _numeric_display(self, operand: _Operand, number: int) -> str:
        if operand.placeholder == "[CERTIFICATE_EXPIRATION]" or _GO_DURATION_RE.match(operand.text):
            return _format_duration_ms(number)
        return str(number)

    def _display(self, left: str, right: str) -> str:
        # Gatus's prettify: "[STATUS] (404) == 200", long values beside a pattern truncated.
        if self.left.function == "pat" and len(right) > 25:
            right = f"{right[:25]}...(truncated)"
        if self.right.function == "pat" and len(left) > 25:
            left = f"{left[:25]}...(truncated)"
        sides = []
        for operand, value in ((self.left, left), (self.right, right)):
            if value == operand.text or value == f"{operand.text} {_INVALID}":
                sides.append(value)
            else:
                sides.append(f"{operand.text} ({value})")
        return f"{sides[0]} {self.operator} {sides[1]}"


def parse_condition(text: str, placeholders: Sequence[str] = PLACEHOLDERS) -> Condition:
    """Parse one condition; raise ``ValueError`` saying what is wrong.

    ``placeholders`` are those the check kind supplies; any other is an error.
    """
    if not isinstance(text, str):
        raise ValueError(f"a condition is a string, not {type(text).__name__}")
    for operator in _OPERATORS:
        parts = text.split(f" {operator} ")
        if len(parts) == 1:
            continue
        if len(parts) > 2:
            raise ValueError(f"{text!r} has more than one {operator!r}")
        left, right = (_parse_operand(p.strip(), text, placeholders) for p in parts)
        for operand in (left, right):
            if not operand.text:
                raise ValueError(f"{text!r}: a side of {operator!r} is empty")
            if operand.function in ("pat", "any") and operator not in ("==", "!="):
                raise ValueError(
                    f"{text!r}: {operand.function}() compares with == or !=, not {operator}"
                )
        return Condition(text, operator, left, right)
    raise ValueError(
        f"{text!r} has no comparison; write <left> <operator> <right> with one of "
        f"{' '.join(_OPERATORS)} between spaces, e.g. '[STATUS] == 200'"
    )


def _parse_operand(text: str, condition: str, placeholders: Sequence[str]) -> _Operand:
    function, inner = "", text
    for name in ("len", "has", "pat", "any"):
        if text.startswith(f"{name}(") and text.endswith(")"):
            function, inner = name, text[len(name) + 1 : -1]
            break
    else:
        if re.match(r"^(len|has|pat|any)\(", text):
            raise ValueError(f"{condition!r}: {text!r} lacks its closing parenthesis")
    if function in ("pat", "any"):
        return _Operand(text, function)
    match = _PLACEHOLDER_RE.match(inner)
    if match is None:
        if function:
            raise ValueError(f"{condition!r}: {function}() takes a placeholder such as [BODY]")
        return _Operand(text)
    placeholder, path = f"[{match[1].upper()}]", match[2]
    if placeholder not in placeholders:
        if placeholder in PLACEHOLDERS:
            raise ValueError(f"{condition!r}: {placeholder} is not available in this check")
        close = difflib.get_close_matches(placeholder, placeholders, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(placeholders)}"
        raise ValueError(f"{condition!r}: unknown placeholder {placeholder}{hint}")
    if placeholder == "[BODY]":
        if path and not path.startswith((".", "[")):
            raise ValueError(f"{condition!r}: a JSON path follows [BODY] with . or [")
    elif placeholder == "[HEADERS]":
        if not path.startswith(".") or len(path) < 2:
            raise ValueError(f"{condition!r}: name the header, as in [HEADERS].content-type")
    elif path:
        raise ValueError(f"{condition!r}: {placeholder} takes no path ({path!r})")
    return _Operand(text, function, placeholder, path)


# --- resolving --------------------------------------------------------------------------------


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _with_function(value: str, function: str) -> str:
    if function == "has":
        return _go_bool(value != "")
    if function == "len":
        return str(len(value.encode()))
    return value


def _resolve_body(operand: _Operand, body: bytes) -> str:
    if not operand.path:
        text = body.decode("utf-8", "replace").strip()
        if operand.function == "has":
            return _go_bool(text != "")
        if operand.function == "len":
            try:
                return str(_walk("", body)[1])
            except _PathError:
                return str(len(text.encode()))
        return text
    path = operand.path.removeprefix(".")
    try:
        value, length = _walk(path, body)
    except _PathError:
        return _go_bool(False) if operand.function == "has" else f"{operand.text} {_INVALID}"
    if operand.function == "has":
        return _go_bool(True)
    return str(length) if operand.function == "len" else value


class _PathError(Exception):
    pass


def _walk(path: str, body: bytes) -> tuple[str, int]:
    """Gatus's ``jsonpath.Eval``: the value at ``path`` as a string, and its length."""
    stripped = body.strip()
    if not path and not (stripped.startswith(b"[") and stripped.endswith(b"]")):
        return body.decode("utf-8", "replace"), len(body)
    try:
        # Go decodes every JSON number as a float64.
        value: Any = json.loads(body, parse_int=float)
    except ValueError as exc:
        raise _PathError(str(exc)) from None
    keys = _split_path(path)
    for position, key in enumerate(keys):
        value = _extract(key, value)
        last = position == len(keys) - 1
        if isinstance(value, dict):
            if last:
                text = _go_json(value)
                return text, len(text.encode())
            continue
        if isinstance(value, str):
            if not last:
                raise _PathError(f"{keys[position + 1]!r} is inside a string")
            return value, len(value.encode())
        if isinstance(value, list):
            return _go_format(value), len(value)
        if value is None:
            raise _PathError(f"nothing at {key!r}")
        text = _go_format(value)
        return text, len(text.encode())
    raise _PathError("empty path")  # pragma: no cover - _split_path yields at least one key


def _split_path(path: str) -> list[str]:
    keys, start, depth = [], 0, 0
    for i, char in enumerate(path):
        depth += (char == "[") - (char == "]")
        if char == "." and depth == 0:
            keys.append(path[start:i])
            start = i + 1
    keys.append(path[start:])
    return keys


_INDEXED: Final = re.compile(r"^(.*?)((?:\[[^\[\]]*\])+)$")


def _extract(key: str, value: Any) -> Any:
    match = _INDEXED.match(key)
    if match is None:
        if isinstance(value, list):
            return value  # Gatus: a key on an array is the array itself
        if isinstance(value, dict):
            return value.get(key)
        return value
    name, indexes = match[1], re.findall(r"\[([^\[\]]*)\]", match[2])
    if name:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    for index in indexes:
        if not re.fullmatch(r"[+-]?\d+", index):
            return None
        position = int(index)
        if not isinstance(value, list) or not 0 <= position < len(value):
            return None
        value = value[position]
    return value


def _go_json(value: Any) -> str:
    """Go's ``json.Marshal`` of a decoded JSON value: keys sorted, no spaces."""
    if isinstance(value, dict):
        inner = ",".join(f"{json.dumps(k)}:{_go_json(value[k])}" for k in sorted(value))
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_go_json, value)) + "]"
    if isinstance(value, float):
        return _go_format(value)
    return json.dumps(value)


def _go_format(value: Any) -> str:
    """Go's ``fmt.Sprintf("%v", v)`` of a decoded JSON value."""
    if isinstance(value, bool):
        return _go_bool(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return "[" + " ".join(map(_go_format, value)) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_format(value[k])}" for k in sorted(value)) + "]"
    if value is None:
        return "<nil>"
    return str(value)


# --- comparing --------------------------------------------------------------------------------


def _go_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 0, 64)``: base prefixes, a leading 0 for octal."""
    match = re.fullmatch(
        r"([+-]?)(0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]*|0[bB][01_]+|[1-9][0-9_]*)", text
    )
    if match is None:
        return None
    digits = match[2]
    if "_" in digits and not re.fullmatch(r"0[xXoObB]?(_?[0-9a-fA-F])+|[1-9](_?[0-9])*", digits):
        return None
    digits = digits.replace("_", "")
    if re.fullmatch(r"0[0-7]+", digits):
        number = int(digits, 8)
    else:
        number = int(digits, 0)
    number = -number if match[1] == "-" else number
    return number if -_INT64 <= number < _INT64 else None


def _numeric(text: str) -> int:
    """Gatus's numeric reading of a resolved side: duration in ms, int, truncated float, or 0."""
    if _GO_DURATION_RE.match(text):
        ms = sum(float(n) * _GO_UNITS_MS[u] for n, u in _GO_DURATION_PART.findall(text))
        if ms:
            return -int(ms) if text.startswith("-") else int(ms)
    number = _go_int(text)
    if number is not None:
        return number
    try:
        value = float(text)
    except ValueError:
        return 0
    if math.isnan(value):
        return 0
    return max(-_INT64, min(_INT64 - 1, int(value))) if math.isfinite(value) else 0


def _format_duration_ms(ms: int) -> str:
    """Gatus's ``formatDuration``: Go's duration text in whole seconds, zero tails dropped."""
    sign, seconds = ("-" if ms < 0 else ""), abs(ms) // 1000
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    # Go prints 48h0m0s; Gatus drops the zero tails (48h), and so does this, minus its bug
    # that turns 1h10m0s into 1h1.
    text = f"{hours}h" if hours else ""
    if minutes or (hours and secs):
        text += f"{minutes}m"
    if secs or not text:
        text += f"{secs}s"
    return sign + text


def _glob(pattern: str, text: str) -> bool:
    """Gatus's ``pattern.Match``: Go's ``filepath.Match`` with path separators removed."""
    if pattern == "*":
        return True
    pattern, text = pattern.replace("/", ""), text.replace("/", "")
    regex, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            regex.append(".*")
        elif char == "?":
            regex.append(".")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            regex.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                return False  # Go: ErrBadPattern, which Gatus reads as no match
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            escaped = body.replace("\\", "\\\\")
            regex.append(f"[{'^' if negate else ''}{escaped}]")
            i = end
        else:
            regex.append(re.escape(char))
        i += 1
    return re.fullmatch("".join(regex), text, re.DOTALL) is not None


def _is_equal(left: _Operand, first: str, right: _Operand, second: str) -> bool:
    if left.function == "pat" and right.function != "pat":
        return _glob(first[4:-1], second)
    if right.function == "pat" and left.function != "pat":
        return _glob(second[4:-1], first)
    if left.function == "any" and right.function != "any":
        return any(option.strip() == second for option in first[4:-1].split(","))
    if right.function == "any" and left.function != "any":
        return any(option.strip() == first for option in second[4:-1].split(","))
    a, b = _go_int(first), _go_int(second)
    if a is not None and b is not None:
        return a == b
    return first == second
