"""The HTTP side of monitord: /metrics, health, readiness and reload."""

from __future__ import annotations

from monitor.web.server import WebApp, WebServer

__all__ = ["WebApp", "WebServer"]
