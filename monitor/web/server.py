"""The aiohttp application and its server: /metrics, /-/healthy, /-/ready, /-/reload, /api/v1
(rules, alerts, health)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr

from monitor.config import split_host_port
from monitor.errors import ConfigError, LifecycleError
from monitor.exporter import render
from monitor.log import get_logger
from monitor.web.api import RuleGroupView, RulesAPI
from monitor.web.auth import unauthorized
from monitor.web.health import CheckState, HealthAPI

__all__ = ["WebApp", "WebServer"]

log = get_logger("web")


@dataclass(slots=True)
class WebApp:
    """What the HTTP handlers serve: the registry, readiness, reload, the auth token, rules,
    the checks' states."""

    registry: CollectorRegistry
    reload: Callable[[], Awaitable[None]]
    is_ready: Callable[[], bool]
    token: Callable[[], SecretStr | None] = lambda: None
    rule_groups: Callable[[], Sequence[RuleGroupView]] = lambda: ()
    checks: Callable[[], Sequence[CheckState]] = lambda: ()
    config: Callable[[], BaseModel | None] = lambda: None
    """The running config, for ``/api/v1/status/config`` (secrets shown as asterisks)."""
    extra_routes: Sequence[Callable[[web.Application], None]] = ()
    """More routes to add (the notifications API registers itself through this)."""

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        app.router.add_post("/-/reload", self._reload)
        app.router.add_put("/-/reload", self._reload)
        app.router.add_get("/api/v1/status/config", self._status_config)
        RulesAPI(self.rule_groups).register(app)
        HealthAPI(self.checks, self.is_ready).register(app)
        for register in self.extra_routes:
            register(app)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = render(self.registry, request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="monitord is Healthy.\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.is_ready():
            return web.Response(text="monitord is Ready.\n")
        return web.Response(status=503, text="Service Unavailable\n")

    async def _status_config(self, request: web.Request) -> web.Response:
        """Prometheus' ``/api/v1/status/config``: the running config as YAML, with every
        secret (SecretStr) dumped as ``**********``."""
        config = self.config()
        data = config.model_dump(mode="json", by_alias=True) if config is not None else {}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return web.json_response({"status": "success", "data": {"yaml": text}})

    async def _reload(self, request: web.Request) -> web.Response:
        denied = unauthorized(request, self.token())
        if denied is not None:
            return denied
        try:
            await self.reload()
        except ConfigError as exc:
            return web.Response(status=500, text=f"failed to reload config: {exc}\n")
        return web.Response(text="config reloaded\n")


class WebServer:
    """Serves a :class:`WebApp` on one address until stopped."""

    def __init__(self, app: WebApp, listen: str) -> None:
        self._app = app
        self._host, self._port = split_host_port(listen)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Bind and start serving; raises OSError if the address is taken."""
        if self._runner is not None:
            raise LifecycleError("web server already started")
        runner = web.AppRunner(
            self._app.application(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        host = self._host or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self._port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        self.port = sock.getsockname()[1]
        log.info("listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop serving and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
