"""The silences part of Alertmanager's HTTP API v2, so that ``amtool`` and other Alertmanager
clients manage monitord's silences (``api/v2/api.go``, ``api/v2/openapi.yaml``).

- ``GET /api/v2/silences``: every silence as a ``gettableSilence``, in Alertmanager's order
  (active by soonest end, pending by soonest start, expired by latest end). Repeated
  ``filter`` parameters (``?filter=alertname="X"``, as ``amtool silence query`` sends)
  keep the silences that have a matcher equal to each filter (same name, operator and
  value: ``CheckSilenceMatchesFilterLabels``).
- ``POST /api/v2/silences``: a ``postableSilence`` (``id`` optional; ``matchers`` of
  ``{name, value, isRegex, isEqual}``, ``isEqual`` defaulting to true; ``startsAt``,
  ``endsAt``, ``createdBy``, ``comment``) creates a silence or updates the one with ``id``
  under :meth:`notifiers.silences.SilenceStore.add`'s rules; answers ``{"silenceID": ...}``,
  400 with the reason for an invalid silence, 404 for an unknown ``id``.
- ``GET /api/v2/silence/{id}``: one ``gettableSilence``, or 404.
- ``DELETE /api/v2/silence/{id}``: expires it; 404 when unknown, and 500 with the reason
  for an already expired one, as Alertmanager answers (its spec lists only 200 and 500).

Errors are answered as Alertmanager's go-swagger server does: a JSON string body, which its
clients print. Times are written as Go marshals them in UTC (RFC 3339, milliseconds) and
read as RFC 3339 with any offset. The mutating endpoints require ``server.auth_token``
when it is set (:func:`monitor.web.auth.unauthorized`); reading needs no token, like every
GET of monitord.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from aiohttp import web
from pydantic import SecretStr

from monitor.log import get_logger
from monitor.web.api import format_go_time
from monitor.web.auth import unauthorized
from notifiers.matchers import Matcher, MatcherError, Matchers, MatchType, parse_matchers
from notifiers.silences import (
    InvalidSilence,
    Silence,
    SilenceAlreadyExpired,
    SilenceError,
    SilenceNotFound,
    SilenceStore,
)

__all__ = ["SilencesAPI", "parse_rfc3339", "silence_json"]

log = get_logger("notifiers.api")

_RFC3339: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time such as ``2024-05-01T10:00:00.123+02:00``; raises
    ValueError for anything else (a missing offset included)."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2024-05-01T10:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, off_h, off_m = match.group(7, 8, 9, 10, 11)
    if zulu:
        zone = UTC
    else:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def _matcher_json(matcher: Matcher) -> dict[str, Any]:
    return {
        "isEqual": matcher.is_equal,
        "isRegex": matcher.is_regex,
        "name": matcher.name,
        "value": matcher.value,
    }


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    """A ``gettableSilence`` for ``silence``, its state as of ``now``."""
    return {
        "id": silence.id,
        "status": {"state": silence.state(now)},
        "updatedAt": format_go_time(silence.updated_at),
        "comment": silence.comment,
        "createdBy": silence.created_by,
        "endsAt": format_go_time(silence.ends_at),
        "matchers": [_matcher_json(m) for m in silence.matchers],
        "startsAt": format_go_time(silence.starts_at),
    }


class _BadRequest(ValueError):
    """A request body that is not a valid ``postableSilence``."""


def _field(body: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
    if name not in body or body[name] is None:
        raise _BadRequest(f"{where}{name} in body is required")
    value = body[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _BadRequest(f"{where}{name} in body must be of type {kind.__name__}")
    return value


def _matcher_from_json(item: Any, index: int) -> Matcher:
    where = f"matchers.{index}."
    if not isinstance(item, Mapping):
        raise _BadRequest(f"matchers.{index} in body must be an object")
    name = _field(item, "name", str, where)
    value = _field(item, "value", str, where)
    is_regex = _field(item, "isRegex", bool, where)
    is_equal = item.get("isEqual", True)
    if is_equal is None:
        is_equal = True
    if not isinstance(is_equal, bool):
        raise _BadRequest(f"{where}isEqual in body must be of type bool")
    if is_regex:
        kind = MatchType.REGEX if is_equal else MatchType.NOT_REGEX
    else:
        kind = MatchType.EQUAL if is_equal else MatchType.NOT_EQUAL
    try:
        return Matcher.create(name, kind, value)
    except MatcherError as exc:
        raise _BadRequest(f"failed to convert API silence to internal silence: {exc}") from None


def _time(body: Mapping[str, Any], name: str) -> float:
    text = _field(body, name, str)
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise _BadRequest(f"{name} in body must be of type date-time: {exc}") from None


def _postable_silence(body: Any) -> Silence:
    """The silence a ``postableSilence`` body describes; raises :class:`_BadRequest`."""
    if not isinstance(body, Mapping):
        raise _BadRequest("the body must be a JSON object (a postableSilence)")
    items = _field(body, "matchers", list)
    silence_id = body.get("id") or ""
    if not isinstance(silence_id, str):
        raise _BadRequest("id in body must be of type string")
    return Silence(
        id=silence_id,
        matchers=Matchers(tuple(_matcher_from_json(item, i) for i, item in enumerate(items))),
        starts_at=_time(body, "startsAt"),
        ends_at=_time(body, "endsAt"),
        created_by=_field(body, "createdBy", str),
        comment=_field(body, "comment", str),
    )


def _error(status: int, message: str) -> web.Response:
    """An error as Alertmanager's go-swagger server writes it: a JSON string."""
    return web.json_response(message, status=status)


class SilencesAPI:
    """Handlers of ``/api/v2/silences`` and ``/api/v2/silence/{id}`` over a store."""

    def __init__(self, store: SilenceStore, token: Callable[[], SecretStr | None]) -> None:
        self.store = store
        self._token = token

    def register(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_get("/api/v2/silences", self.list_silences)
        app.router.add_post("/api/v2/silences", self.post_silence)
        app.router.add_get("/api/v2/silence/{id}", self.get_silence)
        app.router.add_delete("/api/v2/silence/{id}", self.delete_silence)

    async def list_silences(self, request: web.Request) -> web.Response:
        """``GET /api/v2/silences``."""
        filters: list[Matcher] = []
        for text in request.query.getall("filter", []):
            try:
                filters.extend(parse_matchers(text))
            except MatcherError as exc:
                return _error(400, str(exc))
        try:
            silences = await asyncio.to_thread(self.store.list, None, filters)
        except SilenceError as exc:
            return _error(500, str(exc))
        now = self.store.now()
        return web.json_response([silence_json(s, now) for s in silences])

    async def get_silence(self, request: web.Request) -> web.Response:
        """``GET /api/v2/silence/{id}``."""
        silence_id = request.match_info["id"]
        try:
            silence = await asyncio.to_thread(self.store.get, silence_id)
        except SilenceError as exc:
            return _error(500, str(exc))
        if silence is None:
            return _error(404, f"silence {silence_id} not found")
        return web.json_response(silence_json(silence, self.store.now()))

    async def post_silence(self, request: web.Request) -> web.Response:
        """``POST /api/v2/silences``."""
        denied = unauthorized(request, self._token())
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        try:
            silence = _postable_silence(body)
            silence_id = await asyncio.to_thread(self.store.add, silence)
        except _BadRequest as exc:
            return _error(400, str(exc))
        except InvalidSilence as exc:
            return _error(400, str(exc))
        except SilenceNotFound as exc:
            return _error(404, str(exc))
        except SilenceError as exc:
            log.error("cannot save a silence: %s", exc)
            return _error(500, str(exc))
        log.info(
            "silence %s set by %r: %s until %s",
            silence_id,
            silence.created_by,
            silence.matchers,
            format_go_time(silence.ends_at),
        )
        return web.json_response({"silenceID": silence_id})

    async def delete_silence(self, request: web.Request) -> web.Response:
        """``DELETE /api/v2/silence/{id}``: expire the silence."""
        denied = unauthorized(request, self._token())
        if denied is not None:
            return denied
        silence_id = request.match_info["id"]
        try:
            await asyncio.to_thread(self.store.expire, silence_id)
        except SilenceNotFound as exc:
            return _error(404, str(exc))
        except SilenceAlreadyExpired as exc:
            return _error(500, str(exc))
        except SilenceError as exc:
            log.error("cannot expire silence %s: %s", silence_id, exc)
            return _error(500, str(exc))
        log.info("silence %s expired", silence_id)
        return web.Response(status=200)
