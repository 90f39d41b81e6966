"""Find plugin kinds (checks, receivers) through entry points, loading each on first use."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, get_args

from monitor.errors import PluginError

__all__ = ["PluginRegistry"]

T = TypeVar("T")


class PluginRegistry(Generic[T]):
    """The kinds registered under one entry-point group, each a subclass of ``base``.

    Built-in kinds are registered in pyproject.toml exactly like third-party ones.
    A kind's class must have a ``config_model`` whose ``type`` field is
    ``Literal[<entry point name>]``.
    """

    def __init__(self, group: str, base: type[Any], eps: list[EntryPoint] | None = None) -> None:
        self.group = group
        self.base = base
        found = eps if eps is not None else list(entry_points(group=group))
        self._entry_points = {ep.name: ep for ep in found}
        self._loaded: dict[str, type[T]] = {}

    def names(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._entry_points)

    def get(self, name: str) -> type[T]:
        """The class of kind ``name``, loaded now if it was not yet."""
        if name in self._loaded:
            return self._loaded[name]
        ep = self._entry_points.get(name)
        if ep is None:
            raise PluginError(self.group, name, "no such kind", self.names())
        try:
            cls = ep.load()
        except Exception as exc:  # an import error in a plugin is the plugin's fault
            raise PluginError(self.group, name, f"cannot load {ep.value}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(self.group, name, f"{ep.value} is not a {self.base.__name__}")
        model = getattr(cls, "config_model", None)
        type_field = getattr(model, "model_fields", {}).get("type")
        if type_field is None or get_args(type_field.annotation) != (name,):
            raise PluginError(
                self.group, name, f"{ep.value}.config_model must declare type: Literal[{name!r}]"
            )
        self._loaded[name] = cls
        return cls

    def config_models(self) -> dict[str, Any]:
        """Every kind's config model, by kind name (this loads every kind)."""
        return {name: self.get(name).config_model for name in self.names()}  # type: ignore[attr-defined]
