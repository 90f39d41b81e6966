"""The ``file`` check: a file exists, is fresh, has a sane size and (un)wanted content.

Monit's ``check file``: ``if does not exist``, ``if timestamp > 15 min``, ``if size > 100 MB``
and ``if content = "ERROR"``, each with a WARNING and a CRITICAL threshold here.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, ByteSize, Field

from checks.base import Check, CheckConfig
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel, Duration

__all__ = ["AgeLimits", "FileCheck", "FileConfig", "SizeLimits"]


def _valid_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


Regex = Annotated[str | None, AfterValidator(_valid_regex)]


class AgeLimits(ConfigModel):
    """How old (since its last modification) the file may get."""

    warning: Duration | None = None
    critical: Duration | None = None


class SizeLimits(ConfigModel):
    """How big the file may get (``100MB``, ``1GiB`` or bytes)."""

    warning: ByteSize | None = None
    critical: ByteSize | None = None


class FileConfig(CheckConfig):
    """Options of the ``file`` check."""

    type: Literal["file"]
    path: Path = Field(description="the file to watch")
    max_age: AgeLimits = Field(default_factory=AgeLimits)
    max_size: SizeLimits = Field(default_factory=SizeLimits)
    content_required: Regex = Field(default=None, description="CRITICAL unless a line matches")
    content_forbidden: Regex = Field(default=None, description="CRITICAL if a line matches")
    content_max_bytes: ByteSize = Field(
        default=ByteSize(1 << 20), description="search at most this much, from the file's end"
    )


_FAMILIES: Final = {
    "monitord_file_exists": "1 if the file exists.",
    "monitord_file_modified_timestamp_seconds": "When the file was last modified.",
    "monitord_file_size_bytes": "The file's size.",
    "monitord_file_content_matched": "1 if a line matched the pattern named by `pattern`.",
}
METADATA: Final = {n: MetricMetadata(MetricType.GAUGE, h) for n, h in _FAMILIES.items()}


class FileCheck(Check[FileConfig]):
    """Stats (and, if asked, reads) the file off the event loop and judges it."""

    config_model = FileConfig

    def __init__(self, config: FileConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self._clock = clock

    async def run(self) -> CheckResult:
        """One look at the file."""
        return await asyncio.to_thread(self._look)

    def _look(self) -> CheckResult:
        path = self.config.path
        labels = Labels.of(path=str(path))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            sample = Sample("monitord_file_exists", labels, 0.0)
            return CheckResult(
                Status.CRITICAL, f"{path} does not exist", (sample,), metadata=METADATA
            )
        except OSError as exc:
            return CheckResult(Status.UNKNOWN, f"cannot stat {path}: {exc.strerror}")
        samples = [
            Sample("monitord_file_exists", labels, 1.0),
            Sample("monitord_file_modified_timestamp_seconds", labels, st.st_mtime),
            Sample("monitord_file_size_bytes", labels, float(st.st_size)),
        ]
        findings: list[tuple[Status, str]] = []
        age = max(0.0, self._clock() - st.st_mtime)
        age_status = Limits(
            warning=self.config.max_age.warning, critical=self.config.max_age.critical
        ).status(age)
        findings.append((age_status, f"modified {_ago(age)} ago"))
        size_status = Limits(
            warning=self.config.max_size.warning, critical=self.config.max_size.critical
        ).status(st.st_size)
        findings.append((size_status, f"{st.st_size} bytes"))
        for key, pattern, bad_when in (
            ("required", self.config.content_required, False),
            ("forbidden", self.config.content_forbidden, True),
        ):
            if pattern is None:
                continue
            try:
                line = self._search(re.compile(pattern))
            except OSError as exc:
                findings.append((Status.UNKNOWN, f"cannot read it: {exc.strerror}"))
                continue
            matched = line is not None
            samples.append(
                Sample(
                    "monitord_file_content_matched", labels.merge({"pattern": key}), float(matched)
                )
            )
            if matched is bad_when:
                text = f"has {line!r}" if matched else f"has no line matching /{pattern}/"
                findings.append((Status.CRITICAL, text))
        status = max(s for s, _ in findings)
        shown = [t for s, t in findings if s is status or status is Status.OK]
        return CheckResult(status, f"{path}: {', '.join(shown)}", tuple(samples), metadata=METADATA)

    def _search(self, pattern: re.Pattern[str]) -> str | None:
        """The first matching line in the last ``content_max_bytes`` of the file."""
        with open(self.config.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - self.config.content_max_bytes))
            data = f.read(self.config.content_max_bytes)
        for line in data.decode("utf-8", errors="replace").splitlines():
            if pattern.search(line):
                return line[:200]
        return None


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
