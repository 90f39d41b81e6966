"""``/api/v1/health``: every check's last status and one overall state, for balancers and peers.

The overall state answers "is this monitord working, and is what it watches
fine?", from the checks that have run at least once:

- ``unhealthy`` (HTTP 503): monitord is not ready (starting, stopping), or at
  least one check has run and every check that has run is CRITICAL or UNKNOWN.
  A monitord that sees nothing but failures is most likely cut off itself, so
  a load balancer or a peer should prefer another one.
- ``degraded`` (HTTP 200): some checks are WARNING, or some but not all of those
  that have run are CRITICAL or UNKNOWN.
- ``healthy`` (HTTP 200): every check that has run is OK; also when no check is
  configured.

A check that has not run yet (just started, or just added by a reload) is
``PENDING`` and does not count towards the overall state, so a monitord that was
just started is ``healthy`` once it is ready, and its first failing runs move it
from there. Disabled checks are not scheduled and not listed. ``?check=NAME``
(repeatable) limits the list and the overall state to those checks; a name that
is not scheduled is a 404, so a typo in a probe's URL does not read as healthy.
Like ``/metrics`` and ``/api/v1/rules``, the endpoint needs no token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from monitor.model import CheckResult, Status
from monitor.web.api import format_go_time

__all__ = ["PENDING", "CheckState", "HealthAPI", "overall_state"]

PENDING = "PENDING"
"""The status shown for a check that has not run yet."""


@dataclass(frozen=True, slots=True)
class CheckState:
    """What the health endpoint shows of one scheduled check."""

    name: str
    kind: str
    interval: float | None
    """Seconds between runs; None while a reload is replacing the check."""
    result: CheckResult | None = None
    last_run: float | None = None
    next_run: float | None = None
    """When the next run is due (epoch seconds); None while not scheduled."""


def overall_state(ready: bool, statuses: Sequence[Status | None]) -> str:
    """``healthy``, ``degraded`` or ``unhealthy`` by the rule in this module's docstring;
    ``None`` in ``statuses`` is a check that has not run yet."""
    if not ready:
        return "unhealthy"
    ran = [status for status in statuses if status is not None]
    down = sum(1 for status in ran if not status.is_up)
    if ran and down == len(ran):
        return "unhealthy"
    if down or Status.WARNING in ran:
        return "degraded"
    return "healthy"


class HealthAPI:
    """The health endpoint over whatever ``checks`` returns at each request."""

    def __init__(
        self, checks: Callable[[], Sequence[CheckState]], is_ready: Callable[[], bool]
    ) -> None:
        self._checks = checks
        self._is_ready = is_ready

    def register(self, app: web.Application) -> None:
        """Add the route to ``app``."""
        app.router.add_get("/api/v1/health", self.health)

    async def health(self, request: web.Request) -> web.Response:
        """Every check's status and the overall state; 503 when ``unhealthy``."""
        checks = sorted(self._checks(), key=lambda c: c.name)
        wanted = request.query.getall("check", [])
        if wanted:
            known = {check.name for check in checks}
            missing = sorted(set(wanted) - known)
            if missing:
                return web.json_response(
                    {
                        "status": "error",
                        "errorType": "not_found",
                        "error": f"no scheduled check named {', '.join(map(repr, missing))}",
                    },
                    status=404,
                )
            checks = [check for check in checks if check.name in wanted]
        ready = self._is_ready()
        statuses = [c.result.status if c.result is not None else None for c in checks]
        state = overall_state(ready, statuses)
        counts = Counter(PENDING if s is None else s.name for s in statuses)
        data = {
            "status": state,
            "ready": ready,
            "counts": {name: counts[name] for name in (*Status.__members__, PENDING)},
            "checks": [_check_json(check) for check in checks],
        }
        return web.json_response(
            {"status": "success", "data": data}, status=503 if state == "unhealthy" else 200
        )


def _check_json(check: CheckState) -> dict[str, Any]:
    result = check.result
    return {
        "name": check.name,
        "kind": check.kind,
        "status": PENDING if result is None else result.status.name,
        "message": "" if result is None else result.message,
        "lastRun": format_go_time(check.last_run),
        "nextRun": format_go_time(check.next_run),
        "lastDuration": 0.0 if result is None else result.duration,
        "interval": check.interval,
    }
