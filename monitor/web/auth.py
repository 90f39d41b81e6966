"""The bearer-token check of the mutating endpoints (``server.auth_token``)."""

from __future__ import annotations

import hmac

from aiohttp import web
from pydantic import SecretStr

__all__ = ["unauthorized"]


def unauthorized(request: web.Request, token: SecretStr | None) -> web.Response | None:
    """None when ``request`` may proceed (no token is set, or it sends the right one);
    else the 401 to answer with."""
    if token is None:
        return None
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if hmac.compare_digest(given.encode(), expected.encode()):
        return None
    return web.Response(status=401, text="missing or wrong bearer token\n")
