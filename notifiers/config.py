"""The ``alerting:`` section: Alertmanager's ``alertmanager.yml`` shape, so a user can paste
theirs, plus monitord's delivery settings.

``route``, ``receivers``, ``inhibit_rules``, ``templates``, ``time_intervals`` and
``mute_time_intervals`` mean what they mean in Alertmanager. A receiver has a
``<kind>_configs`` list for every installed receiver kind (entry-point group
``monitord.notifiers``), so the model is built at run time by :func:`build_alerting_model`
from the kinds' config models, as the checks' union is. Alertmanager's ``global:`` section is
not taken: each integration carries its own settings.

monitord's own keys: ``delivery`` (how the outbox retries and when it gives up) and
``silences`` (how long expired silences are kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Self

from pydantic import Field, ValidationError, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from monitor.schema import ConfigModel, Duration
from notifiers.base import NotifierConfig
from notifiers.inhibit import InhibitRuleConfig
from notifiers.route import RootRouteConfig
from notifiers.timeintervals import NamedTimeInterval

__all__ = [
    "AlertingConfig",
    "DeliveryConfig",
    "ReceiverConfig",
    "SilencesConfig",
    "build_alerting_model",
]

CONFIGS_SUFFIX = "_configs"


class DeliveryConfig(ConfigModel):
    """How the outbox delivers: exponential backoff with full jitter, capped, and a deadline."""

    initial_backoff: Duration = Field(
        default=1.0, gt=0, description="the first retry waits up to this long"
    )
    max_backoff: Duration = Field(
        default=60.0, gt=0, description="no retry waits longer than this (Retry-After aside)"
    )
    max_age: Duration = Field(
        default=3600.0,
        gt=0,
        description="give a notification up, with an error log, when still undelivered after this",
    )
    concurrency: int = Field(default=16, ge=1, description="deliveries in flight at once")


class SilencesConfig(ConfigModel):
    """How long silences are kept after they expire (Alertmanager's ``--data.retention``)."""

    retention: Duration = Field(default=120 * 3600.0, gt=0)


class ReceiverConfig(ConfigModel):
    """A named receiver; :func:`build_alerting_model` adds a ``<kind>_configs`` list per kind."""

    name: str = Field(min_length=1)

    def integrations(self) -> Iterator[tuple[str, int, NotifierConfig]]:
        """Every integration configured: (kind, index within its list, config)."""
        for field_name in sorted(type(self).model_fields):
            if field_name.endswith(CONFIGS_SUFFIX):
                for index, config in enumerate(getattr(self, field_name)):
                    yield field_name.removesuffix(CONFIGS_SUFFIX), index, config


class AlertingConfig(ConfigModel):
    """Routing, receivers, inhibition, templates and time intervals, as Alertmanager's."""

    route: RootRouteConfig
    receivers: tuple[ReceiverConfig, ...] = ()
    inhibit_rules: tuple[InhibitRuleConfig, ...] = ()
    templates: tuple[str, ...] = Field(
        default=(), description="Jinja2 template files; globs, relative to this file"
    )
    time_intervals: tuple[NamedTimeInterval, ...] = ()
    mute_time_intervals: tuple[NamedTimeInterval, ...] = Field(
        default=(), description="the older name of time_intervals; both may be used"
    )
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    silences: SilencesConfig = Field(default_factory=SilencesConfig)

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        # Each problem is located where it is (the config error names that key's line).
        problems: list[tuple[tuple[str | int, ...], str, str]] = []
        names = [r.name for r in self.receivers]
        for index, name in enumerate(names):
            if name in names[:index]:
                message = f"receiver names must be unique: {name}"
                problems.append((("receivers", index, "name"), name, message))
        intervals: list[str] = []
        for key in ("time_intervals", "mute_time_intervals"):
            for index, interval in enumerate(getattr(self, key)):
                if interval.name in intervals:
                    message = f"time interval names must be unique: {interval.name}"
                    problems.append(((key, index, "name"), interval.name, message))
                intervals.append(interval.name)
        if not problems:
            for path, message in self.route.reference_errors(set(names), set(intervals), "route"):
                loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
                problems.append((loc, path, message))
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", "{message}", {"message": m}),
                        loc=loc,
                        input=value,
                    )
                    for loc, value, m in problems
                ],
            )
        return self

    def time_interval_map(self) -> dict[str, NamedTimeInterval]:
        """Every time interval by name, from both lists."""
        return {t.name: t for t in (*self.time_intervals, *self.mute_time_intervals)}

    def receiver(self, name: str) -> ReceiverConfig | None:
        """The receiver called ``name``."""
        return next((r for r in self.receivers if r.name == name), None)


def build_alerting_model(notifier_models: Mapping[str, type[NotifierConfig]]) -> type[Any]:
    """The AlertingConfig model whose receivers take a ``<kind>_configs`` list per kind."""
    fields: dict[str, Any] = {
        f"{kind}{CONFIGS_SUFFIX}": (
            tuple[model, ...],  # type: ignore[valid-type]
            Field(default=(), description=f"{kind} integrations"),
        )
        for kind, model in sorted(notifier_models.items())
    }
    receiver = create_model("ReceiverConfig", __base__=ReceiverConfig, **fields)
    model: type[AlertingConfig] = create_model(
        "AlertingConfig",
        __base__=AlertingConfig,
        receivers=(tuple[receiver, ...], Field(default=())),
    )
    return model
