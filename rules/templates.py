"""Alert label and annotation templates: Jinja2 in a sandbox, with Prometheus' spellings.

A template sees ``labels``, ``value``, ``externalLabels`` and ``externalURL``
(``$labels``, ``$value``, ... in Go spelling, and ``.Labels``, ``.Value``,
``.ExternalLabels``, ``.ExternalURL`` through dot), and Prometheus' functions both
as Jinja2 filters (``{{ value | humanize }}``) and in Go's call and pipe styles
(``{{ humanize $value }}``, ``{{ $value | printf "%.2f" }}``); see
:mod:`rules.gotemplate` for the translation. Printed values look as Go prints them
(``{{ $value }}`` gives ``1``, ``0.5`` or ``1e+06``; ``{{ $labels }}`` gives
``map[job:api]``). A template that fails while expanding does not fail its rule: the
field reads ``<error expanding template: ...>`` and a warning is logged.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from monitor.errors import MonitordError
from monitor.log import get_logger
from rules.gotemplate import GoTemplateError, Translation, translate
from rules.template_functions import (
    PROMETHEUS_FUNCTIONS,
    GoMap,
    go_builtins,
    go_str,
    range_items,
    range_values,
)

__all__ = ["TemplateError", "TemplateExpander", "TemplateQuery"]

log = get_logger("rules.templates")

TemplateQuery = Callable[[str], list[Mapping[str, Any]]]
"""Runs a PromQL query for ``{{ query "..." }}``: samples as ``{"Labels": ..., "Value": ...}``."""

_VARIABLES = ("labels", "value", "externalLabels", "externalURL", "pathPrefix", "_dot", "_root")
# Functions that read the alert's data, bound at each expansion.
_BOUND = ("_go_externalURL", "_go_pathPrefix")
# Names that are also template variables are not offered as Jinja2 globals.
_NOT_GLOBALS = frozenset(["value", "externalURL"])


class TemplateError(MonitordError):
    """A template cannot be parsed; ``reason`` says what is wrong, in Go's words where it can."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(reason)


def _finalize(value: Any) -> Any:
    """Print what a template outputs the way Go's text/template prints it."""
    if isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, str):
        return value
    return go_str(value)


class TemplateExpander:
    """Checks and expands alert templates; compiled templates are cached by their text."""

    def __init__(self, *, query: TemplateQuery | None = None, cache_size: int = 1024) -> None:
        self._query = query
        env = SandboxedEnvironment(
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_finalize,
            extensions=["jinja2.ext.loopcontrols"],
        )
        go_functions: dict[str, Callable[..., Any]] = {
            **go_builtins(),
            **PROMETHEUS_FUNCTIONS,
            "query": self._run_query,
        }
        for name, function in go_functions.items():
            env.globals[f"_go_{name}"] = function
        for name, function in PROMETHEUS_FUNCTIONS.items():
            env.filters[name] = _as_filter(function)
            if name not in _NOT_GLOBALS:
                env.globals[name] = function
        env.globals["query"] = self._run_query
        env.filters["printf"] = _as_filter(go_builtins()["printf"])
        env.globals["_go_range_values"] = range_values
        env.globals["_go_range_items"] = range_items
        self._env = env
        # Undeclared names are found on an environment without our globals (Jinja2 counts
        # a global as declared, and a Go ``$label`` must not pass for the ``label`` function).
        self._bare = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
        self._bare.filters.update(env.filters)
        self._known = frozenset(env.globals) | frozenset(_VARIABLES) | frozenset(_BOUND)
        self._compile = functools.lru_cache(maxsize=cache_size)(self._compile_uncached)

    def _run_query(self, expr: str) -> list[Mapping[str, Any]]:
        if self._query is None:
            raise RuntimeError("query is not available in this template")
        return self._query(expr)

    def _compile_uncached(self, text: str) -> jinja2.Template | TemplateError:
        try:
            translation = translate(text)
        except GoTemplateError as exc:
            return TemplateError(text, exc.reason)
        try:
            tree = self._bare.parse(translation.source)
            problem = self._undeclared(tree, translation)
            if problem is not None:
                return TemplateError(text, problem)
            template = self._env.from_string(translation.source)
        except jinja2.TemplateSyntaxError as exc:
            return TemplateError(text, f"{exc.message} (line {exc.lineno})")
        # Jinja2 copies a template's globals into every render's context; as a ChainMap
        # over the environment's globals, that copy costs more than the expansion. The
        # globals are all set in __init__, so one flat dict holds the same.
        template.globals = dict(template.globals)
        return template

    def _undeclared(self, tree: Any, translation: Translation) -> str | None:
        for name in sorted(jinja2.meta.find_undeclared_variables(tree)):
            if name in translation.names and name not in _VARIABLES:  # a Go $variable
                return f'undefined variable "{translation.names[name]}"'
            if name in self._known:
                continue
            if name.startswith("_go_"):
                return f'function "{name[4:]}" not defined'
            return f'undefined variable "{translation.names.get(name, name)}"'
        return None

    def check(self, text: str) -> None:
        """Raise :class:`TemplateError` if ``text`` cannot be parsed; templates are checked
        at load time with this, as Prometheus does."""
        compiled = self._compile(text)
        if isinstance(compiled, TemplateError):
            raise compiled

    def expand(
        self,
        text: str,
        labels: Mapping[str, str],
        value: float,
        external_labels: Mapping[str, str] | None = None,
        external_url: str = "",
        *,
        name: str = "",
    ) -> str:
        """``text`` expanded for one alert; on error ``<error expanding template: ...>``."""
        if "{" not in text:
            return text
        compiled = self._compile(text)
        try:
            if isinstance(compiled, TemplateError):
                raise compiled
            data = {
                "Labels": GoMap(labels),
                "ExternalLabels": GoMap(external_labels or {}),
                "ExternalURL": external_url,
                "Value": float(value),
            }
            path_prefix = urllib.parse.urlsplit(external_url).path
            return compiled.render(
                labels=data["Labels"],
                value=data["Value"],
                externalLabels=data["ExternalLabels"],
                externalURL=external_url,
                pathPrefix=path_prefix,
                _dot=data,
                _root=data,
                _go_externalURL=lambda: external_url,
                _go_pathPrefix=lambda: path_prefix,
            )
        except Exception as exc:  # a template must never fail its rule
            reason = str(getattr(exc, "reason", None) or exc)
            where = f"__alert_{name}" if name else "template"
            log.warning(
                "expanding alert template failed",
                extra={"template": where, "error": reason, "labels": dict(labels)},
            )
            return f"<error expanding template: error executing template {where}: {reason}>"


def _as_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja2 filter of a Go-order function: ``x | f(a, b)`` calls ``f(a, b, x)``."""

    @functools.wraps(function)
    def apply(piped: Any, *args: Any) -> Any:
        return function(*args, piped)

    return apply
