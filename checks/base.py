"""The one abstract class every check kind extends, and the options every check has."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Annotated, ClassVar, Generic, Self, TypeVar

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from monitor.model import CheckResult
from monitor.schema import ConfigModel, Duration

__all__ = ["Check", "CheckConfig", "LabelName"]

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
"""A Prometheus label name."""


class CheckConfig(ConfigModel):
    """Options common to every check; a kind subclasses this and narrows ``type``."""

    name: Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9_.:/-]+$")]
    type: str
    interval: Duration | None = Field(
        default=None, gt=0, description="run every this long; default global.scrape_interval"
    )
    timeout: Duration | None = Field(
        default=None, gt=0, description="cut a run after this long; default global.scrape_timeout"
    )
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="added to every sample of this check"
    )
    enabled: bool = True

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("interval")
        if value is not None and interval is not None and value > interval:
            raise ValueError(f"timeout {value:g}s is longer than the interval {interval:g}s")
        return value


C = TypeVar("C", bound=CheckConfig)


class Check(abc.ABC, Generic[C]):
    """A scheduled producer of samples: a probe or a metric collector.

    The scheduler calls :meth:`run` at the check's interval under its timeout;
    anything ``run`` raises becomes an UNKNOWN result, so a kind need not catch
    its own failures unless it wants a better message. Blocking work must be
    moved off the event loop (``asyncio.to_thread``).
    """

    config_model: ClassVar[type[CheckConfig]]
    identify_series: ClassVar[bool] = True
    """The scheduler adds ``check="<name>"`` to every sample without a ``check`` label, so
    two checks of one kind (two HTTP probes, say) never write the same series. A kind
    whose series must stay exactly another exporter's (the system collector's
    node_* series) sets it to False."""

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        """The check's configured name."""
        return self.config.name

    @property
    def kind(self) -> str:
        """The check's kind (its ``type`` in the config)."""
        return self.config.type

    @abc.abstractmethod
    async def run(self) -> CheckResult:
        """Probe or collect once and say how it went."""

    async def aclose(self) -> None:
        """Release what the check holds (connections, sessions); called once on removal."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
