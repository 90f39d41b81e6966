"""Performance data of Nagios/Monitoring Plugins: the parser, pure (no I/O, no logging).

The grammar is the Monitoring Plugins developer guidelines' (section "Performance data",
and the "Output" chapter of the newer monitoring-plugin-guidelines)::

    'label'=value[UOM];[warn];[crit];[min];[max]

- items are separated by spaces; a label with spaces, ``=`` or ``'`` is quoted with
  single quotes, and a quote inside a quoted label is written ``''``;
- value, min and max are decimal numbers (class ``[-0-9.]``); the value may be ``U``,
  "could not be determined", which becomes NaN here;
- warn and crit are range expressions ``[@][start:][end]`` (start 0 may be left out, an
  empty end is +infinity, ``~`` is -infinity, ``@`` alerts inside the range instead of
  outside it);
- empty fields are allowed and trailing semicolons may be dropped;
- UOM is one of ``s ms us % B KB MB GB TB c`` or nothing; newer guidelines allow any
  string without digits, semicolons or quotes, which is kept as it is.

Values are converted to base units: ``ms`` and ``us`` to seconds, ``KB MB GB TB`` to
bytes. The guidelines do not say whether ``KB`` means 1000 or 1024 bytes; this parser
takes 1024 (and 1024², ...), as Icinga 2's ``PerfdataValue::Parse`` does and as the
Monitoring Plugins' own ``check_disk`` meant its ``kB``/``MB`` units. Percent values stay
percent (0 to 100) and counters (``c``) stay counts. The multiplier is applied to the
value, min, max and the numbers of the threshold ranges alike.

Where the perfdata is in plugin output (Nagios plugin API, "multiple lines of output"):
after the first ``|`` of the first line, and after the first ``|`` of a later line
through the end of the output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "UNIT_SCALES",
    "PerfData",
    "PerfDataError",
    "PluginOutput",
    "Range",
    "parse_output",
    "parse_perfdata",
    "parse_range",
]

UNIT_SCALES: Final[Mapping[str, tuple[str, float]]] = {
    "s": ("s", 1.0),
    "ms": ("s", 1e-3),
    "us": ("s", 1e-6),
    "%": ("%", 1.0),
    "B": ("B", 1.0),
    "KB": ("B", 1024.0),
    "MB": ("B", 1024.0**2),
    "GB": ("B", 1024.0**3),
    "TB": ("B", 1024.0**4),
    "c": ("c", 1.0),
}
"""Each UOM of the guidelines: the base unit it is reported in and the factor to it."""

_NUMBER: Final = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE: Final = re.compile(_NUMBER)
_VALUE_RE: Final = re.compile(rf"(?P<number>{_NUMBER}|U)(?P<uom>[^\d.;'\"=]*)")
_RANGE_RE: Final = re.compile(rf"(?P<inside>@)?(?:(?P<start>{_NUMBER}|~)?:)?(?P<end>{_NUMBER})?")


class PerfDataError(ValueError):
    """One item of performance data that does not follow the grammar."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"invalid performance data {item!r}: {reason}")
        self.item = item
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Range:
    """A threshold range: alert outside ``[start, end]``, or inside it when ``inside``."""

    start: float = 0.0
    end: float = math.inf
    inside: bool = False

    @property
    def upper_bound(self) -> float | None:
        """The number a value must not exceed, when that is all the range says.

        ``10``, ``0:10`` and ``~:10`` are upper bounds (10); ``10:``, ``10:20`` and any
        ``@`` range are not, and give ``None``.
        """
        if self.inside or not math.isfinite(self.end):
            return None
        return self.end if self.start in (0.0, -math.inf) else None

    def alerts(self, value: float) -> bool:
        """Whether ``value`` is outside the range (inside it, for an ``@`` range)."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def scaled(self, factor: float) -> Range:
        """The same range with its finite numbers multiplied by ``factor``."""
        return Range(self.start * factor, self.end * factor, self.inside)


def parse_range(text: str) -> Range:
    """A range expression ``[@][start:][end]``; ``ValueError`` when it is none."""
    match = _RANGE_RE.fullmatch(text)
    if not text or match is None or (match["start"] is None and match["end"] is None):
        raise ValueError(f"{text!r} is not a range")
    start_text = match["start"]
    if start_text is None:
        start = 0.0
    elif start_text == "~":
        start = -math.inf
    else:
        start = float(start_text)
    end = math.inf if match["end"] is None else float(match["end"])
    if start > end:
        raise ValueError(f"{text!r} starts after it ends")
    return Range(start, end, match["inside"] is not None)


@dataclass(frozen=True, slots=True)
class PerfData:
    """One parsed item, in base units: ``uom`` is ``s``, ``B``, ``%``, ``c``, ``""`` or
    an unknown UOM as the plugin wrote it (value unconverted); ``value`` is NaN for ``U``."""

    label: str
    value: float
    uom: str = ""
    warning: Range | None = None
    critical: Range | None = None
    min: float | None = None
    max: float | None = None


def _number(field: str, what: str, item: str, factor: float) -> float | None:
    if field == "" or field == "U":
        return None
    if _NUMBER_RE.fullmatch(field) is None:
        raise PerfDataError(item, f"{what} {field!r} is not a number")
    return float(field) * factor


def _threshold(field: str, what: str, item: str, factor: float) -> Range | None:
    if field == "" or field == "U":
        return None
    try:
        return parse_range(field).scaled(factor)
    except ValueError as exc:
        raise PerfDataError(item, f"{what} {exc}") from None


def _item(label: str, rest: str, item: str) -> PerfData:
    fields = rest.split(";")
    if len(fields) > 5:
        raise PerfDataError(item, "more than value;warn;crit;min;max")
    fields += [""] * (5 - len(fields))
    match = _VALUE_RE.fullmatch(fields[0])
    if match is None:
        raise PerfDataError(item, f"value {fields[0]!r} is not a number with a unit")
    uom, factor = UNIT_SCALES.get(match["uom"], (match["uom"], 1.0))
    value = math.nan if match["number"] == "U" else float(match["number"]) * factor
    return PerfData(
        label=label,
        value=value,
        uom=uom,
        warning=_threshold(fields[1], "warn", item, factor),
        critical=_threshold(fields[2], "crit", item, factor),
        min=_number(fields[3], "min", item, factor),
        max=_number(fields[4], "max", item, factor),
    )


def parse_perfdata(text: str) -> tuple[list[PerfData], list[PerfDataError]]:
    """Every item of a perfdata string, and the errors of the items that could not be read.

    A malformed item is skipped and reported; the items around it are still read.
    """
    items: list[PerfData] = []
    errors: list[PerfDataError] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return items, errors
        start = pos
        if text[pos] == "'":
            label_chars: list[str] = []
            pos += 1
            while pos < n:
                if text[pos] == "'":
                    if text.startswith("''", pos):
                        label_chars.append("'")
                        pos += 2
                        continue
                    break
                label_chars.append(text[pos])
                pos += 1
            closed = pos < n
            pos += 1
            label = "".join(label_chars)
            if not closed:
                errors.append(PerfDataError(text[start:], "the quoted label is not closed"))
                return items, errors
        else:
            while pos < n and text[pos] != "=" and not text[pos].isspace():
                pos += 1
            label = text[start:pos]
        # The value runs to the next space.
        end = pos
        while end < n and not text[end].isspace():
            end += 1
        item = text[start:end]
        if pos >= n or text[pos] != "=":
            errors.append(PerfDataError(item, "no '=' after the label"))
        elif not label.strip():
            errors.append(PerfDataError(item, "the label is empty"))
        else:
            try:
                items.append(_item(label, text[pos + 1 : end], item))
            except PerfDataError as exc:
                errors.append(exc)
        pos = end


@dataclass(frozen=True, slots=True)
class PluginOutput:
    """A plugin's stdout taken apart: first line, the long text after it, the perfdata."""

    message: str
    long_text: str
    perfdata: str


def parse_output(text: str) -> PluginOutput:
    """Split plugin output as the Nagios plugin API does (see the module docstring)."""
    lines = text.splitlines()
    if not lines:
        return PluginOutput("", "", "")
    message, _, perf = lines[0].partition("|")
    perf_parts = [perf.strip()]
    long_lines: list[str] = []
    for index, line in enumerate(lines[1:], start=1):
        text_part, bar, rest = line.partition("|")
        long_lines.append(text_part)
        if bar:
            perf_parts.append(rest.strip())
            perf_parts.extend(part.strip() for part in lines[index + 1 :])
            break
    return PluginOutput(
        message.strip(),
        "\n".join(long_lines).strip(),
        " ".join(part for part in perf_parts if part),
    )
