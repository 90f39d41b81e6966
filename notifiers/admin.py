"""``monitord silence ...`` and ``monitord alerts``: amtool's commands, against a running
monitord's Alertmanager-shaped API (``/api/v2/silences``, ``/api/v2/alerts``).

The commands speak HTTP to the daemon rather than writing its database, so a silence
takes effect at once and the daemon stays the only writer of its state. Output follows
amtool's: ``silence add`` prints the new silence's ID, ``silence ls`` a table (``-q``: IDs
only), ``alerts`` a table with each alert's state (``active``, or ``suppressed`` and by
which silences or inhibiting alerts). ``--json`` prints the API's JSON instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from notifiers.matchers import MatcherError, parse_matchers

__all__ = ["ApiError", "Client", "alerts_list", "silence_add", "silence_expire", "silence_ls"]


class ApiError(Exception):
    """The daemon could not be reached or refused the request; the message says which."""


class Client:
    """A small JSON client of one monitord's API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: Any = None, query: Sequence[tuple[str, str]] = ()
    ) -> Any:
        """Send a request; the decoded JSON answer (None for an empty one)."""
        url = self.url + path + (f"?{urllib.parse.urlencode(list(query))}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach monitord at {self.url}: {reason}") from None
        return json.loads(raw) if raw.strip() else None


def _go_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _short_time(text: str) -> str:
    """An API time as amtool prints it: ``2024-05-01 10:00:00 UTC``."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _matchers_text(matchers: list[dict[str, Any]]) -> str:
    parts = []
    for m in matchers:
        op = ("=" if m.get("isEqual", True) else "!") + ("~" if m.get("isRegex") else "")
        op = {"=": "=", "!": "!=", "=~": "=~", "!~": "!~"}[op]
        parts.append(f'{m["name"]}{op}"{m["value"]}"')
    return " ".join(parts)


def silence_add(
    client: Client,
    matchers: Sequence[str],
    *,
    duration: float,
    comment: str,
    author: str,
    now: float,
    out: TextIO,
) -> int:
    """Create a silence from matcher strings (``'alertname="X"'`` or ``alertname=X``)."""
    parsed = []
    try:
        for text in matchers:
            parsed.extend(parse_matchers(text))
    except MatcherError as exc:
        raise ApiError(str(exc)) from None
    if not parsed:
        raise ApiError("a silence needs at least one matcher")
    body = {
        "matchers": [
            {
                "name": m.name,
                "value": m.value,
                "isRegex": m.is_regex,
                "isEqual": m.is_equal,
            }
            for m in parsed
        ],
        "startsAt": _go_time(now),
        "endsAt": _go_time(now + duration),
        "createdBy": author,
        "comment": comment,
    }
    answer = client.request("POST", "/api/v2/silences", body)
    out.write(f"{answer['silenceID']}\n")
    return 0


def silence_ls(client: Client, *, quiet: bool, as_json: bool, expired: bool, out: TextIO) -> int:
    """List silences: active and pending ones, or the expired ones with ``expired``."""
    silences = client.request("GET", "/api/v2/silences")
    chosen = [s for s in silences if (s["status"]["state"] == "expired") == expired]
    chosen.sort(key=lambda s: (s["endsAt"], s["id"]))
    if as_json:
        json.dump(chosen, out, indent=2)
        out.write("\n")
        return 0
    if quiet:
        for silence in chosen:
            out.write(f"{silence['id']}\n")
        return 0
    rows = [["ID", "Matchers", "Ends At", "Created By", "Comment"]]
    rows += [
        [
            s["id"],
            _matchers_text(s["matchers"]),
            _short_time(s["endsAt"]),
            s.get("createdBy", ""),
            s.get("comment", ""),
        ]
        for s in chosen
    ]
    _table(rows, out)
    return 0


def silence_expire(client: Client, ids: Sequence[str], out: TextIO) -> int:
    """Expire silences by ID; every one is tried, the first failure raised after."""
    failures = []
    for silence_id in ids:
        try:
            client.request("DELETE", f"/api/v2/silence/{urllib.parse.quote(silence_id)}")
        except ApiError as exc:
            failures.append(str(exc))
    if failures:
        raise ApiError("; ".join(failures))
    return 0


def alerts_list(client: Client, *, as_json: bool, out: TextIO) -> int:
    """List the alerts monitord holds, with whether they are silenced or inhibited."""
    alerts = client.request("GET", "/api/v2/alerts")
    if as_json:
        json.dump(alerts, out, indent=2)
        out.write("\n")
        return 0
    rows = [["Alertname", "Starts At", "Summary", "State"]]
    for alert in alerts:
        status = alert["status"]
        state = status["state"]
        why = []
        if status["silencedBy"]:
            why.append("silenced by " + ", ".join(status["silencedBy"]))
        if status["inhibitedBy"]:
            why.append("inhibited by " + ", ".join(status["inhibitedBy"]))
        rows.append(
            [
                alert["labels"].get("alertname", ""),
                _short_time(alert["startsAt"]),
                alert["annotations"].get("summary", ""),
                state + (f" ({'; '.join(why)})" if why else ""),
            ]
        )
    _table(rows, out)
    return 0
