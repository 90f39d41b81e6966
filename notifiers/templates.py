"""Jinja2 templates of notifications: the receivers' defaults and the user's own.

The config's ``templates:`` lists files (globs, relative to the config file); each is
loaded under its file name, so a template field can ``{% include "slack.j2" %}`` or
``{% import "common.j2" as c %}``. Every template sees the notification as Alertmanager's
template data, in snake case:

- ``receiver``, ``status`` (``firing``/``resolved``), ``external_url``;
- ``group_labels``, ``common_labels``, ``common_annotations`` (mappings);
- ``alerts``, ``firing``, ``resolved``: lists of alerts, each with ``status``,
  ``labels``, ``annotations``, ``starts_at`` and ``ends_at`` (datetimes in UTC, ``None``
  for no end), ``generator_url`` and ``fingerprint``;
- ``group_key``.

A missing key renders empty (as Alertmanager's ``<no value>`` does not break a message).
HTML templates (``render(..., html=True)``) autoescape.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2

from notifiers.base import Notification, NotifiedAlert

__all__ = ["SUBJECT", "TemplateLoadError", "Templates", "check_template", "template_data"]

SUBJECT: Final = (
    '[{{ status | upper }}{% if status == "firing" %}:{{ firing | length }}{% endif %}] '
    '{{ group_labels | dictsort(true) | map(attribute="1") | join(" ") }} '
    "{% if common_labels | length > group_labels | length %}("
    '{{ common_labels | dictsort(true) | rejectattr("0", "in", group_labels)'
    ' | map(attribute="1") | join(" ") }}){% endif %}'
)
"""Alertmanager's ``__subject`` template (``[FIRING:2] GroupLabels (other common labels)``),
the default title of the receivers that have one."""


class TemplateLoadError(Exception):
    """A template file could not be read or does not compile; the message says where."""


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _alert_data(alert: NotifiedAlert) -> dict[str, Any]:
    return {
        "status": alert.status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at": _time(alert.starts_at),
        "ends_at": _time(alert.ends_at),
        "generator_url": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def template_data(notification: Notification) -> dict[str, Any]:
    """The variables every template sees (this module's docstring lists them)."""
    alerts = [_alert_data(a) for a in notification.alerts]
    return {
        "receiver": notification.receiver,
        "status": notification.status,
        "external_url": notification.external_url,
        "group_key": notification.group_key,
        "group_labels": dict(notification.group_labels),
        "common_labels": dict(notification.common_labels),
        "common_annotations": dict(notification.common_annotations),
        "alerts": alerts,
        "firing": [a for a in alerts if a["status"] == "firing"],
        "resolved": [a for a in alerts if a["status"] == "resolved"],
    }


class Templates:
    """The user's template files and two environments over them: text and HTML."""

    def __init__(self, sources: Mapping[str, str] | None = None) -> None:
        loader = jinja2.DictLoader(dict(sources or {}))
        options: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.ChainableUndefined,
            "keep_trailing_newline": False,
        }
        self._text = jinja2.Environment(autoescape=False, **options)
        self._html = jinja2.Environment(autoescape=True, **options)
        self._compiled: dict[tuple[bool, str], jinja2.Template] = {}

    @classmethod
    def load(cls, patterns: Sequence[str], base_dir: Path) -> Templates:
        """Read every file the globs match (relative ones from ``base_dir``) and compile each,
        so that a broken template is an error at load time, with its file and line."""
        sources: dict[str, str] = {}
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
            for name in sorted(glob.glob(full)):
                path = Path(name)
                try:
                    sources[path.name] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise TemplateLoadError(f"{path}: cannot read: {exc}") from exc
                origin = str(path)
                try:
                    jinja2.Environment().parse(sources[path.name], path.name, origin)
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateLoadError(f"{path}:{exc.lineno}: {exc.message}") from exc
        return cls(sources)

    def compile(self, source: str, *, html: bool = False) -> jinja2.Template:
        """The compiled template for ``source``; raises ``jinja2.TemplateSyntaxError``."""
        key = (html, source)
        template = self._compiled.get(key)
        if template is None:
            template = (self._html if html else self._text).from_string(source)
            self._compiled[key] = template
        return template

    def render(
        self, source: str, notification: Notification, *, html: bool = False, **extra: Any
    ) -> str:
        """Render ``source`` over the notification's data (and ``extra``); raises
        ``jinja2.TemplateError`` when the template is broken."""
        return self.compile(source, html=html).render(template_data(notification), **extra)


def check_template(source: str) -> str | None:
    """None if ``source`` compiles as a template, else the error (for config validation)."""
    try:
        jinja2.Environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None
