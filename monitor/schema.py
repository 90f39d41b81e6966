"""Building blocks for configuration models, shared by the core and by plugins.

Plugins (check kinds, receiver kinds) declare their options as subclasses of
:class:`ConfigModel`, using :data:`Duration` for time spans and
:data:`SecretFile` for the ``*_file`` twin of a secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
)

__all__ = [
    "ConfigModel",
    "Duration",
    "SecretFile",
    "format_duration",
    "parse_duration",
    "resolve_secret",
]

_DURATION_UNITS: dict[str, float] = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_DURATION_RE = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
DURATION_PATTERN = r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$"


def parse_duration(text: str) -> float:
    """Parse a Prometheus duration (``15s``, ``5m``, ``1h30m``, ``100ms``) into seconds."""
    text = text.strip()
    if text == "0":
        return 0.0
    match = _DURATION_RE.match(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration; use units ms, s, m, h, d, w, y as in 1h30m")
    return sum(int(n) * _DURATION_UNITS[u] for u, n in match.groupdict().items() if n)


def format_duration(seconds: float) -> str:
    """Format seconds the way Prometheus prints durations (``1h30m``, ``500ms``)."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    out = []
    for unit, size in (
        ("y", 31536000000),
        ("w", 604800000),
        ("d", 86400000),
        ("h", 3600000),
        ("m", 60000),
        ("s", 1000),
        ("ms", 1),
    ):
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _coerce_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, got a boolean")
    if isinstance(value, int | float) and value == 0:
        return 0.0  # "0" is the one duration Prometheus accepts without a unit
    if isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a duration; write it with a unit, e.g. {value}s")
    if isinstance(value, str):
        return parse_duration(value)
    return value


Duration = Annotated[
    float,
    BeforeValidator(_coerce_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["15s", "1h30m"]}),
]
"""A time span written as a Prometheus duration, held as seconds."""


def _read_secret_file(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str):
        return value
    path = Path(value)
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
    return SecretStr(content.strip())


SecretFile = Annotated[
    SecretStr,
    BeforeValidator(_read_secret_file),
    PlainSerializer(lambda _: "<secret>", return_type=str),
    WithJsonSchema({"type": "string", "description": "path of a file holding the secret"}),
]
"""The ``*_file`` twin of a secret: the path is read at load time, relative to the config file."""


def resolve_secret(inline: SecretStr | None, from_file: SecretStr | None) -> SecretStr | None:
    """The effective secret of a ``name`` / ``name_file`` pair."""
    return inline if inline is not None else from_file


class ConfigModel(BaseModel):
    """Base of every configuration section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def _check_secret_pair(self, name: str) -> None:
        if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
            raise ValueError(f"set {name} or {name}_file, not both")
