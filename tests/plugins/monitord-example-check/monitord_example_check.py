"""An example check kind for monitord, installed as its own package."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import Field

from checks.base import Check, CheckConfig
from monitor.model import CheckResult, Labels, Sample, Status


class ExampleConfig(CheckConfig):
    """Options of a ``type: example`` check."""

    type: Literal["example"]
    path: Path = Field(description="a file holding one number")
    warning_above: float | None = Field(default=None, description="WARNING above this")


class ExampleCheck(Check[ExampleConfig]):
    """Reads the number in ``path`` as the sample ``example_value{path}``."""

    config_model = ExampleConfig

    async def run(self) -> CheckResult:
        # Blocking I/O leaves the event loop; an exception (missing file, not a
        # number) becomes an UNKNOWN result with its message, so it is not caught.
        text = await asyncio.to_thread(self.config.path.read_text)
        value = float(text)
        limit = self.config.warning_above
        status = Status.WARNING if limit is not None and value > limit else Status.OK
        sample = Sample("example_value", Labels.of(path=str(self.config.path)), value)
        return CheckResult(status, f"value is {value:g}", (sample,))
