"""WARNING and CRITICAL thresholds, as Monit and the Nagios plugins take them."""

from __future__ import annotations

from pydantic import Field, model_validator

from monitor.model import Status
from monitor.schema import ConfigModel

__all__ = ["Limits"]


class Limits(ConfigModel):
    """A WARNING and a CRITICAL threshold: the status is the worst one the value exceeds."""

    warning: float | None = Field(default=None, description="WARNING above this")
    critical: float | None = Field(default=None, description="CRITICAL above this")

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.warning is not None and self.critical is not None and self.warning > self.critical:
            raise ValueError(f"warning {self.warning:g} is above critical {self.critical:g}")
        return self

    def status(self, value: float) -> Status:
        """OK, WARNING or CRITICAL for ``value``."""
        if self.critical is not None and value > self.critical:
            return Status.CRITICAL
        if self.warning is not None and value > self.warning:
            return Status.WARNING
        return Status.OK
