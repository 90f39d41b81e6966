"""Prometheus's template functions and the Go formatting they rely on, in Python.

Each function takes its arguments in Go's order (the piped value last) and gives
exactly the output of Prometheus's ``template/template.go`` (and the humanize
helpers of ``prometheus/common``): ``humanize(1234567)`` is ``1.235M``,
``humanizeDuration(90000)`` is ``1d 1h 0m 0s``, ``humanizePercentage(0.1234567)``
is ``12.35%``. :func:`go_str` prints a value as Go's ``fmt.Sprint`` does, so
``{{ $value }}`` reads ``1``, ``0.5`` or ``1e+06`` as in Prometheus.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from monitor.schema import parse_duration

__all__ = [
    "PROMETHEUS_FUNCTIONS",
    "GoMap",
    "TemplateFunctionError",
    "go_builtins",
    "go_sprint",
    "go_sprintf",
    "go_str",
    "humanize",
    "humanize1024",
    "humanize_duration",
    "humanize_percentage",
    "humanize_timestamp",
    "re_replace_all",
    "strip_port",
    "title",
]


class TemplateFunctionError(Exception):
    """A template function was called with a value it cannot handle."""


class GoMap(dict[str, str]):
    """A label map as Go templates see it: missing keys read as "", printed ``map[k:v]``."""

    def __missing__(self, key: str) -> str:
        return ""

    def __str__(self) -> str:
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(self.items())) + "]"


# --- Go's fmt -----------------------------------------------------------------------------


def _digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits of abs(value) that round-trip, and the decimal point."""
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    del sign
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    return text, len(text) + exponent


def format_float(value: float, verb: str = "g", precision: int | None = None) -> str:
    """``value`` formatted as Go's fmt does for ``%v``/``%g`` (shortest), ``%e``, ``%f``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if precision is not None:
        return f"{value:.{precision}{verb}}"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        digits, point = "0", 1
    else:
        digits, point = _digits(value)
    exponent = point - 1
    # Go's shortest %v/%g switches to an exponent below 1e-4 and from 1e+06 on.
    if verb == "e" or (verb == "g" and (exponent < -4 or exponent >= 6)):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_str(value: Any) -> str:
    """``value`` as Go's ``fmt.Sprint`` prints it (``%v``)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, GoMap):
        return str(value)
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v)}" for k, v in items) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "<nil>"
    if isinstance(value, Mapping):
        return "map[string]string"
    return type(value).__name__


def go_sprint(*args: Any) -> str:
    """Go's ``fmt.Sprint``: a space between operands when neither is a string."""
    out = ""
    for index, arg in enumerate(args):
        if index > 0 and not isinstance(arg, str) and not isinstance(args[index - 1], str):
            out += " "
        out += go_str(arg)
    return out


_VERB_RE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: v d s q f F e E g G x X o b c t %."""
    out: list[str] = []
    pos = 0
    used = 0
    for match in _VERB_RE.finditer(fmt):
        out.append(fmt[pos : match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if width == "*" or precision == "*":
            out.append(f"%!{verb}(BADWIDTH)")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        prec = None if precision is None else int(precision or 0)
        out.append(_pad(_format_one(verb, arg, prec, flags), flags, width))
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_str(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _pad(text: str, flags: str, width: str | None) -> str:
    if width is None or len(text) >= int(width):
        return text
    size = int(width)
    if "-" in flags:
        return text.ljust(size)
    if "0" in flags and text[:1] in "+-" and text[1:2].isdigit():
        return text[0] + text[1:].rjust(size - 1, "0")
    if "0" in flags and text[:1].isdigit():
        return text.rjust(size, "0")
    return text.rjust(size)


def _format_one(verb: str, arg: Any, prec: int | None, flags: str) -> str:
    bad = f"%!{verb}({_go_type(arg)}={go_str(arg)})"
    plus = "+" in flags
    if verb == "v":
        return go_str(arg)
    if verb == "t":
        return go_str(arg) if isinstance(arg, bool) else bad
    if isinstance(arg, bool):
        return bad
    if verb in "sq":
        if not isinstance(arg, str):
            return bad
        text = arg if prec is None else arg[:prec]
        return json.dumps(text, ensure_ascii=False) if verb == "q" else text
    if isinstance(arg, int):
        if verb == "d":
            return f"{arg:+d}" if plus else str(arg)
        if verb in "xXob":
            return format(arg, verb)
        if verb == "c":
            return chr(arg)
        return bad
    if isinstance(arg, float):
        if verb in "eEfFgG":
            if verb in "fF":
                text = format_float(arg, "f", 6 if prec is None else prec)
            elif verb in "eE":
                text = format_float(arg, "e", 6 if prec is None else prec)
            else:
                text = format_float(arg, "g", prec)
            if verb in "EG":
                text = text.upper().replace("INF", "Inf").replace("NAN", "NaN")
            if plus and not text.startswith(("-", "+")):
                text = "+" + text
            return text
        return bad
    if isinstance(arg, str) and verb in "xX":
        return arg.encode().hex() if verb == "x" else arg.encode().hex().upper()
    return bad


# --- Prometheus' functions ----------------------------------------------------------------


def to_float(value: Any) -> float:
    """Prometheus' ``convertToFloat``: floats, ints and numeric strings."""
    if isinstance(value, bool):
        raise TemplateFunctionError("can't convert bool to float")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value
        if text != text.strip() or "_" in text or not text:
            raise TemplateFunctionError(f'strconv.ParseFloat: parsing "{value}": invalid syntax')
        try:
            return float(text)
        except ValueError:
            raise TemplateFunctionError(
                f'strconv.ParseFloat: parsing "{value}": invalid syntax'
            ) from None
    raise TemplateFunctionError(f"can't convert {_go_type(value)} to float")


def _g4(value: float) -> str:
    return format_float(value, "g", 4)


def humanize(value: Any) -> str:
    """A number with SI prefixes and four significant digits (``1.235M``, ``120m``)."""
    v = to_float(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _g4(v) + prefix


def humanize1024(value: Any) -> str:
    """A number with binary prefixes (``1Mi``)."""
    v = to_float(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return _g4(v) + prefix


def humanize_duration(value: Any) -> str:
    """Seconds as ``1d 1h 0m 0s``, ``1.234s`` or ``100ms``."""
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        whole = int(v)
        seconds, minutes = whole % 60, (whole // 60) % 60
        hours, days = (whole // 3600) % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{_g4(v)}{prefix}s"


def humanize_percentage(value: Any) -> str:
    """A ratio as a percentage with four significant digits (``12.35%``)."""
    return _g4(to_float(value) * 100) + "%"


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def humanize_timestamp(value: Any) -> str:
    """Unix seconds as Go prints a UTC time (``2015-06-23 13:19:44.128 +0000 UTC``)."""
    v = to_float(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    nanos = v * 1e9
    if nanos >= 2.0**63 or nanos < -(2.0**63):
        raise TemplateFunctionError(
            f"{format_float(v)} cannot be represented as a nanoseconds timestamp "
            "since it overflows int64"
        )
    whole = int(nanos)  # truncated toward zero, as Go converts
    millis = abs(whole) // 1_000_000 * (1 if whole >= 0 else -1)
    moment = _EPOCH + datetime.timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + " +0000 UTC"


def _is_separator(char: str) -> bool:
    """Go's ``strings.Title`` word boundaries."""
    if char.isascii():
        return not (char.isalnum() or char == "_")
    if char.isalpha() or char.isdigit():
        return False
    return char.isspace()


def title(text: str) -> str:
    """Go's ``strings.Title``: the first letter of each word upper-cased, the rest kept."""
    out = []
    previous = " "
    for char in text:
        out.append(char.upper() if _is_separator(previous) else char)
        previous = char
    return "".join(out)


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``; None where Go returns an error."""
    colon = hostport.rfind(":")
    if colon < 0:
        return None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != colon:
            return None
        host, low, high = hostport[1:end], 1, end + 1
    else:
        host, low, high = hostport[:colon], 0, 0
        if ":" in host:
            return None
    if "[" in hostport[low:] or "]" in hostport[high:]:
        return None
    return host, hostport[colon + 1 :]


def strip_port(hostport: str) -> str:
    """The host of ``host:port`` (``[::1]:9090`` -> ``::1``); anything else unchanged."""
    split = _split_host_port(hostport)
    return hostport if split is None else split[0]


_GO_GROUP_RE = re.compile(r"\$(?:\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]+)|\$)")


def _expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""

    def group(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name = found.group(1) if found.group(1) is not None else found.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group
            return ""
        return value or ""

    return _GO_GROUP_RE.sub(group, template)


def compile_go_regexp(pattern: str) -> re.Pattern[str]:
    """A Go (RE2) pattern compiled by Python's ``re``."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TemplateFunctionError(f"regexp: Compile({pattern!r}): {exc}") from None


def re_replace_all(pattern: str, replacement: str, text: str) -> str:
    """Go's ``Regexp.ReplaceAllString``: every match replaced, ``$1`` expanded."""
    regex = compile_go_regexp(pattern)
    out: list[str] = []
    copied = 0
    search = 0
    last_end = -1
    while search <= len(text):
        match = regex.search(text, search)
        if match is None:
            break
        start, end = match.span()
        if start == end and start == last_end:
            search = start + 1  # Go ignores an empty match right after a match
            continue
        out.append(text[copied:start])
        out.append(_expand(replacement, match))
        copied = last_end = end
        search = end if end > start else end + 1
    out.append(text[copied:])
    return "".join(out)


def match(pattern: str, text: str) -> bool:
    """Go's ``regexp.MatchString``."""
    return compile_go_regexp(pattern).search(text) is not None


def _link(expr: str, tab: int) -> str:
    escaped = urllib.parse.quote_plus(expr, safe="")
    return f"/graph?g0.expr={escaped}&g0.tab={tab}"


def parse_duration_seconds(text: str) -> float:
    """Prometheus' ``parseDuration``: a duration string as seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise TemplateFunctionError(str(exc)) from None


def _first(samples: Sequence[Any]) -> Any:
    if not samples:
        raise TemplateFunctionError("first() called on vector with no elements")
    return samples[0]


def _label(name: str, sample: Mapping[str, Any]) -> str:
    labels = sample["Labels"]
    return str(labels.get(name, ""))


def _sort_by_label(name: str, samples: Sequence[Mapping[str, Any]]) -> list[Any]:
    return sorted(samples, key=lambda s: str(s["Labels"].get(name, "")))


def _args(*values: Any) -> dict[str, Any]:
    return {f"arg{i}": v for i, v in enumerate(values)}


PROMETHEUS_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "humanizeTimestamp": humanize_timestamp,
    "title": title,
    "toUpper": str.upper,
    "toLower": str.lower,
    "stripPort": strip_port,
    "reReplaceAll": re_replace_all,
    "match": match,
    "safeHtml": str,
    "graphLink": lambda expr: _link(expr, 0),
    "tableLink": lambda expr: _link(expr, 1),
    "parseDuration": parse_duration_seconds,
    "args": _args,
    "first": _first,
    "label": _label,
    "value": lambda sample: sample["Value"],
    "strvalue": lambda sample: sample["Labels"].get("__value__", ""),
    "sortByLabel": _sort_by_label,
}
"""The functions Prometheus adds to Go templates, by name, arguments in Go's order."""


# --- Go's template builtins ---------------------------------------------------------------


def _and(*values: Any) -> Any:
    for value in values:
        if not value:
            return value
    return values[-1]


def _or(*values: Any) -> Any:
    for value in values:
        if value:
            return value
    return values[-1]


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            item = item[key]
        except KeyError:
            return ""
        except (IndexError, TypeError) as exc:
            raise TemplateFunctionError(f"error calling index: {exc}") from None
    return item


def _compare(name: str, check: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        try:
            return check(left, right)
        except TypeError:
            raise TemplateFunctionError(
                f"error calling {name}: incompatible types for comparison"
            ) from None

    return compare


def _eq(left: Any, *rights: Any) -> bool:
    return any(left == right for right in rights)


def range_values(value: Any) -> Iterable[Any]:
    """What Go's ``{{ range x }}`` iterates: map values by sorted key, or list elements."""
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value)]
    return list(value) if value else []


def range_items(value: Any) -> Iterator[tuple[Any, Any]]:
    """``{{ range $k, $v := x }}``: (key, value) by sorted key, or (index, element)."""
    if isinstance(value, Mapping):
        return iter([(k, value[k]) for k in sorted(value)])
    return enumerate(list(value) if value else [])


def go_builtins() -> dict[str, Callable[..., Any]]:
    """Go's ``text/template`` predefined functions that alert templates use."""
    return {
        "and": _and,
        "or": _or,
        "not": lambda value: not value,
        "len": len,
        "index": _index,
        "print": go_sprint,
        "printf": go_sprintf,
        "println": lambda *args: " ".join(go_str(a) for a in args) + "\n",
        "eq": _eq,
        "ne": _compare("ne", lambda a, b: a != b),
        "lt": _compare("lt", lambda a, b: a < b),
        "le": _compare("le", lambda a, b: a <= b),
        "gt": _compare("gt", lambda a, b: a > b),
        "ge": _compare("ge", lambda a, b: a >= b),
        "html": lambda *args: html.escape(go_sprint(*args)),
        "urlquery": lambda *args: urllib.parse.quote_plus(go_sprint(*args)),
        "js": lambda *args: json.dumps(go_sprint(*args))[1:-1],
    }
