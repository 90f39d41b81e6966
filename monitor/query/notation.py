"""The expanding series notation of promqltest's ``load`` and promtool's ``input_series``.

A line is a series description followed by values::

    http_requests_total{job="api", instance="0"}  0+10x3 _ stale 5 _x2 -1-1x2

The description is ``name``, ``name{label="value", ...}`` or ``{__name__="name", ...}``
(label values are Go string literals: ``"..."``, ``'...'`` or raw ``\\`...\\```).
Each value item is one of

- a number, ``Inf``, ``-Inf``, ``NaN``: one value;
- ``stale``: Prometheus's staleness marker;
- ``_``: one step with no value; ``_xN``: N such steps;
- ``a+bxN`` / ``a-bxN``: N+1 values ``a, a±b, ..., a±N·b``; ``axN``: ``a`` N+1 times.

Values are ``float`` (the stale marker is :data:`~monitor.model.STALE_NAN`) or
``None`` for a step without a value. Native histogram samples (``{{...}}``) are
recognised and refused with :class:`NativeHistogramNotation`.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from monitor.model import STALE_NAN, Labels

__all__ = [
    "NativeHistogramNotation",
    "SeriesSpec",
    "expand_values",
    "parse_go_string",
    "parse_series_description",
    "parse_series_line",
]

NAME_LABEL: Final = "__name__"

_NUMBER: Final = r"(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.|[iI][nN][fF]|[nN][aA][nN])"
_EXPANDING: Final = re.compile(rf"([+-]?{_NUMBER})(?:([+-])({_NUMBER}))?x([0-9]+)")
_SINGLE: Final = re.compile(rf"[+-]?{_NUMBER}|0[xX][0-9a-fA-F]+")
_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
}


class NativeHistogramNotation(ValueError):
    """A value uses the native histogram notation ``{{...}}``, which monitord cannot store."""


class SeriesSpec(NamedTuple):
    """A parsed series line: metric name (``""`` if none), labels without ``__name__``, values."""

    name: str
    labels: Labels
    values: list[float | None]


def parse_series_line(line: str) -> SeriesSpec:
    """Parse ``<series description> <values...>``; raise ValueError naming the problem."""
    name, labels, end = _parse_description(line.strip(), 0)
    return SeriesSpec(name, labels, expand_values(line.strip()[end:]))


def parse_series_description(text: str) -> tuple[str, Labels]:
    """Parse ``name{label="value", ...}`` alone (nothing may follow it).

    An empty text is the empty label set, as for Prometheus's ``parser.ParseMetric``
    (promtool's ``exp_samples`` without ``labels``).
    """
    text = text.strip()
    if not text:
        return "", Labels()
    name, labels, end = _parse_description(text, 0)
    if text[end:].strip():
        raise ValueError(f"unexpected {text[end:].strip()!r} after series description {text!r}")
    return name, labels


def expand_values(text: str) -> list[float | None]:
    """Expand the value items of a series line into one entry per step (None: no value)."""
    if "{{" in text:
        raise NativeHistogramNotation(
            f"native histogram samples are not supported: {text.strip()!r}"
        )
    out: list[float | None] = []
    for item in text.split():
        out.extend(_expand_item(item))
    return out


def _expand_item(item: str) -> list[float | None]:
    lowered = item.lower()
    if lowered == "stale":
        return [STALE_NAN]
    if item == "_":
        return [None]
    if item.startswith("_x"):
        count = item[2:]
        if not count.isdigit():
            raise ValueError(f"bad repetition {item!r}")
        return [None] * int(count)
    match = _EXPANDING.fullmatch(item)
    if match is not None:
        start, sign, step_text, times_text = match.groups()
        value = _number(start)
        step = 0.0 if step_text is None else _number(step_text)
        if sign == "-":
            step = -step
        values: list[float | None] = []
        for _ in range(int(times_text) + 1):
            values.append(value)
            value += step
        return values
    if _SINGLE.fullmatch(item):
        return [_number(item)]
    raise ValueError(f"bad value {item!r}")


def _number(text: str) -> float:
    lowered = text.lower()
    if lowered.lstrip("+-").startswith("0x"):
        return float(int(lowered, 16))
    return float(lowered)  # also reads inf, -inf, +inf and nan


def _parse_description(text: str, pos: int) -> tuple[str, Labels, int]:
    """Parse a series description at ``pos``; return name, labels and the end offset."""
    name = ""
    match = _NAME.match(text, pos)
    if match is not None:
        name = match.group(0)
        pos = match.end()
    if pos < len(text) and text[pos] == "{":
        pairs, pos = _parse_labels(text, pos + 1)
        if NAME_LABEL in pairs:
            if name:
                raise ValueError(f"metric name given twice in {text!r}")
            name = pairs.pop(NAME_LABEL)
        labels = Labels(pairs)
    elif not name:
        raise ValueError(f"expected a series description at the start of {text!r}")
    else:
        labels = Labels()
    return name, labels, pos


def _parse_labels(text: str, pos: int) -> tuple[dict[str, str], int]:
    """Parse ``label="value", ...}`` (after the ``{``); a lone quoted string is the name."""
    pairs: dict[str, str] = {}
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise ValueError(f"unterminated label set in {text!r}")
        if text[pos] == "}":
            return pairs, pos + 1
        if text[pos] in "\"'`":
            label, pos = parse_go_string(text, pos)
        else:
            match = _LABEL_NAME.match(text, pos)
            if match is None:
                raise ValueError(f"expected a label name at offset {pos} of {text!r}")
            label, pos = match.group(0), match.end()
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] in ",}":
            # {"metric.name"}: a quoted string on its own is the metric name.
            pairs[NAME_LABEL] = label
        else:
            if not text.startswith("=", pos):
                raise ValueError(f"expected '=' after label {label!r} in {text!r}")
            pos = _skip_space(text, pos + 1)
            if pos >= len(text) or text[pos] not in "\"'`":
                raise ValueError(f"expected a quoted value for label {label!r} in {text!r}")
            value, pos = parse_go_string(text, pos)
            if label in pairs:
                raise ValueError(f"label {label!r} given twice in {text!r}")
            pairs[label] = value
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def parse_go_string(text: str, pos: int) -> tuple[str, int]:
    """Read a Go string literal (``"..."``, ``'...'`` or raw) at ``pos``; return it and the end."""
    quote = text[pos]
    end = pos + 1
    if quote == "`":
        close = text.find("`", end)
        if close < 0:
            raise ValueError(f"unterminated raw string in {text!r}")
        return text[end:close], close + 1
    buf = bytearray()
    while end < len(text):
        c = text[end]
        if c == quote:
            return buf.decode("utf-8", errors="surrogateescape"), end + 1
        if c != "\\":
            buf += c.encode("utf-8", errors="surrogateescape")
            end += 1
            continue
        if end + 1 >= len(text):
            break
        esc = text[end + 1]
        end += 2
        if esc in _SIMPLE_ESCAPES:
            buf += _SIMPLE_ESCAPES[esc].encode()
        elif esc == "x":
            buf.append(int(text[end : end + 2], 16))
            end += 2
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            buf += chr(int(text[end : end + width], 16)).encode("utf-8", errors="surrogatepass")
            end += width
        elif esc in "01234567":
            buf.append(int(text[end - 1 : end + 2], 8))
            end += 2
        else:
            raise ValueError(f"unknown escape \\{esc} in {text!r}")
    raise ValueError(f"unterminated string in {text!r}")
