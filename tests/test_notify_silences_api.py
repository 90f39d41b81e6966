"""The silences HTTP API in Alertmanager's v2 shape: through aiohttp's TestClient, and through
the real ``amtool`` (Debian's prometheus-alertmanager) against a loopback server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from notifiers.api import SilencesAPI, parse_rfc3339
from notifiers.silences import SilenceStore
from tests.support import free_port, require_program

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[SilenceStore]:
    with SilenceStore(None, clock=clock) as s:
        yield s


@pytest.fixture
async def make_client(store: SilenceStore) -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(token: str | None = None) -> TestClient[web.Request, web.Application]:
        app = web.Application()
        secret = None if token is None else SecretStr(token)
        SilencesAPI(store, lambda: secret).register(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def postable(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "matchers": [{"name": "alertname", "value": "X", "isRegex": False, "isEqual": True}],
        "startsAt": "2023-11-14T22:13:20Z",
        "endsAt": "2023-11-15T00:13:20.500Z",
        "createdBy": "ops",
        "comment": "deploy",
    }
    body.update(overrides)
    return body


async def post(client: TestClient[web.Request, web.Application], body: Any) -> Any:
    response = await client.post("/api/v2/silences", json=body)
    return response.status, await response.json()


async def test_create_then_read_in_alertmanagers_shape(make_client: MakeClient) -> None:
    client = await make_client()
    status, answer = await post(client, postable())
    assert status == 200
    sid = answer["silenceID"]
    expected = {
        "id": sid,
        "status": {"state": "active"},
        "updatedAt": "2023-11-14T22:13:20Z",
        "comment": "deploy",
        "createdBy": "ops",
        "endsAt": "2023-11-15T00:13:20.5Z",
        "matchers": [{"isEqual": True, "isRegex": False, "name": "alertname", "value": "X"}],
        "startsAt": "2023-11-14T22:13:20Z",
    }
    response = await client.get(f"/api/v2/silence/{sid}")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == expected
    response = await client.get("/api/v2/silences")
    assert await response.json() == [expected]


@pytest.mark.parametrize(
    ("matcher", "spelled"),
    [
        pytest.param({"isRegex": False, "isEqual": True}, 'job="v"', id="isEqual true is ="),
        pytest.param({"isRegex": False}, 'job="v"', id="isEqual defaults to true"),
        pytest.param({"isRegex": False, "isEqual": None}, 'job="v"', id="isEqual null is true"),
        pytest.param({"isRegex": False, "isEqual": False}, 'job!="v"', id="isEqual false is !="),
        pytest.param({"isRegex": True, "isEqual": True}, 'job=~"v"', id="isRegex is =~"),
        pytest.param({"isRegex": True, "isEqual": False}, 'job!~"v"', id="negated regex is !~"),
    ],
)
async def test_matcher_operators(
    make_client: MakeClient, store: SilenceStore, matcher: dict[str, Any], spelled: str
) -> None:
    client = await make_client()
    matchers = [
        {"name": "alertname", "value": "X", "isRegex": False},
        {"name": "job", "value": "v", **matcher},
    ]
    status, answer = await post(client, postable(matchers=matchers))
    assert status == 200, answer
    got = await (await client.get(f"/api/v2/silence/{answer['silenceID']}")).json()
    assert got["matchers"][1] == {
        "name": "job",
        "value": "v",
        "isRegex": matcher["isRegex"],
        "isEqual": matcher.get("isEqual") is not False,
    }
    silence = store.get(answer["silenceID"])
    assert silence is not None
    assert [str(m) for m in silence.matchers] == ['alertname="X"', spelled]


BAD_BODIES = [
    pytest.param([1, 2], "JSON object", id="a body that is not an object"),
    pytest.param(postable(matchers=None), "matchers in body is required", id="no matchers key"),
    pytest.param(postable(matchers=[]), "at least one matcher required", id="empty matchers"),
    pytest.param(
        postable(matchers=[{"name": "a", "value": "b"}]),
        "matchers.0.isRegex in body is required",
        id="a matcher without isRegex",
    ),
    pytest.param(
        postable(matchers=[{"name": "a", "value": 1, "isRegex": False}]),
        "matchers.0.value in body must be of type str",
        id="a matcher value that is not a string",
    ),
    pytest.param(
        postable(matchers=[{"name": "a", "value": "(", "isRegex": True}]),
        "invalid regular expression",
        id="a regex that does not compile",
    ),
    pytest.param(
        postable(matchers=[{"name": "a-b", "value": "x", "isRegex": False}]),
        "invalid label name",
        id="an invalid label name",
    ),
    pytest.param(
        postable(matchers=[{"name": "a", "value": "", "isRegex": False}]),
        "at least one matcher must not match the empty string",
        id="matchers that all match the empty string",
    ),
    pytest.param(
        postable(startsAt="2023-11-15T00:13:20.500Z"),
        "start time must be before end time",
        id="ends when it starts",
    ),
    pytest.param(
        postable(startsAt="2023-11-14T20:00:00Z", endsAt="2023-11-14T21:00:00Z"),
        "end time can't be in the past",
        id="ended already",
    ),
    pytest.param(
        postable(endsAt="tomorrow"), "endsAt in body must be of type date-time", id="bad time"
    ),
    pytest.param(
        postable(endsAt="2023-11-15T00:13:20"), "RFC 3339", id="a time without its offset"
    ),
    pytest.param(postable(comment=None), "comment in body is required", id="no comment"),
    pytest.param(postable(createdBy=7), "createdBy in body must be of type str", id="bad author"),
    pytest.param(postable(id=5), "id in body must be of type string", id="an id that is a number"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_invalid_posts_are_400_with_the_reason(
    make_client: MakeClient, body: Any, message: str
) -> None:
    client = await make_client()
    status, answer = await post(client, body)
    assert status == 400
    assert isinstance(answer, str)
    assert message in answer
    assert await (await client.get("/api/v2/silences")).json() == []


async def test_a_body_that_is_not_json(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post("/api/v2/silences", data=b"{nope")
    assert response.status == 400
    assert "not JSON" in await response.json()


async def test_times_with_offsets(make_client: MakeClient) -> None:
    client = await make_client()
    status, answer = await post(
        client,
        postable(startsAt="2023-11-14T23:13:20+01:00", endsAt="2023-11-14T19:13:20.25-05:00"),
    )
    assert status == 200, answer
    got = await (await client.get(f"/api/v2/silence/{answer['silenceID']}")).json()
    assert (got["startsAt"], got["endsAt"]) == ("2023-11-14T22:13:20Z", "2023-11-15T00:13:20.25Z")


async def test_update_in_place_and_replacement(make_client: MakeClient, clock: Clock) -> None:
    client = await make_client()
    _, first = await post(client, postable())
    sid = first["silenceID"]
    clock.now += 60
    status, again = await post(client, postable(id=sid, endsAt="2023-11-15T02:00:00Z"))
    assert (status, again["silenceID"]) == (200, sid), "extending an active silence keeps its id"
    matchers = [{"name": "alertname", "value": "Y", "isRegex": False}]
    _, replaced = await post(client, postable(id=sid, matchers=matchers))
    assert replaced["silenceID"] != sid, "new matchers make a new silence"
    clock.now += 1
    listed = await (await client.get("/api/v2/silences")).json()
    assert [(s["id"], s["status"]["state"]) for s in listed] == [
        (replaced["silenceID"], "active"),
        (sid, "expired"),
    ]
    assert listed[1]["endsAt"] == "2023-11-14T22:14:20Z"


async def test_posting_an_unknown_id_is_404(make_client: MakeClient) -> None:
    client = await make_client()
    status, answer = await post(client, postable(id="5f1b0c0e-0000-0000-0000-000000000000"))
    assert status == 404
    assert "not found" in answer


async def test_get_and_delete(make_client: MakeClient, clock: Clock) -> None:
    client = await make_client()
    _, answer = await post(client, postable())
    sid = answer["silenceID"]
    clock.now += 10
    response = await client.delete(f"/api/v2/silence/{sid}")
    assert response.status == 200
    clock.now += 1
    got = await (await client.get(f"/api/v2/silence/{sid}")).json()
    assert (got["status"]["state"], got["endsAt"]) == ("expired", "2023-11-14T22:13:30Z")
    response = await client.delete(f"/api/v2/silence/{sid}")
    assert response.status == 500
    assert await response.json() == f"silence {sid} already expired"
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await client.get(f"/api/v2/silence/{missing}")).status == 404
    assert (await client.delete(f"/api/v2/silence/{missing}")).status == 404


async def test_filters(make_client: MakeClient) -> None:
    client = await make_client()
    regex = [{"name": "env", "value": "p.*", "isRegex": True}]
    _, x = await post(client, postable())
    _, xp = await post(client, postable(matchers=postable()["matchers"] + regex))

    async def ids(*filters: str) -> list[str]:
        response = await client.get("/api/v2/silences", params=[("filter", f) for f in filters])
        assert response.status == 200
        return sorted(s["id"] for s in await response.json())

    assert await ids() == sorted([x["silenceID"], xp["silenceID"]])
    assert await ids('alertname="X"') == sorted([x["silenceID"], xp["silenceID"]])
    assert await ids("alertname=X", 'env=~"p.*"') == [xp["silenceID"]]
    assert await ids('env=~"p.+"') == []
    assert await ids('alertname!="X"') == []
    response = await client.get("/api/v2/silences", params={"filter": 'a=~"("'})
    assert response.status == 400
    assert "regular expression" in await response.json()


async def test_mutating_endpoints_need_the_token(make_client: MakeClient) -> None:
    client = await make_client(token="s3cret")
    response = await client.post("/api/v2/silences", json=postable())
    assert response.status == 401
    wrong = {"Authorization": "Bearer nope"}
    response = await client.post("/api/v2/silences", json=postable(), headers=wrong)
    assert response.status == 401
    right = {"Authorization": "Bearer s3cret"}
    response = await client.post("/api/v2/silences", json=postable(), headers=right)
    assert response.status == 200
    sid = (await response.json())["silenceID"]
    assert (await client.get("/api/v2/silences")).status == 200, "reading needs no token"
    assert (await client.get(f"/api/v2/silence/{sid}")).status == 200
    assert (await client.delete(f"/api/v2/silence/{sid}")).status == 401
    assert (await client.delete(f"/api/v2/silence/{sid}", headers=wrong)).status == 401
    assert (await client.delete(f"/api/v2/silence/{sid}", headers=right)).status == 200


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("2023-11-14T22:13:20Z", T0, id="UTC with Z"),
        pytest.param("2023-11-14t22:13:20z", T0, id="lower-case t and z"),
        pytest.param("2023-11-14T22:13:20.123Z", T0 + 0.123, id="milliseconds"),
        pytest.param("2023-11-14T22:13:20.123456789Z", T0 + 0.123456789, id="nanoseconds as Go"),
        pytest.param("2023-11-15T03:43:20+05:30", T0, id="a positive offset"),
        pytest.param("2023-11-14T17:13:20-05:00", T0, id="a negative offset"),
    ],
)
def test_parse_rfc3339(text: str, seconds: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2023-11-14T22:13:20", id="no offset"),
        pytest.param("2023-11-14", id="a date alone"),
        pytest.param("2023-11-14 22:13:20Z", id="a space for T"),
        pytest.param("2023-02-30T00:00:00Z", id="a day that does not exist"),
        pytest.param("1700000000", id="epoch seconds"),
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


# -- the real amtool ----------------------------------------------------------------------


class Served:
    """The API over a real-clock store on a loopback port, and amtool run against it."""

    def __init__(self, amtool: str, store: SilenceStore, port: int, tmp: Path) -> None:
        self.amtool = amtool
        self.store = store
        self.url = f"http://127.0.0.1:{port}"
        self.tmp = tmp
        self.paths: list[str] = []

    async def run(self, *args: str, expect: int = 0) -> str:
        process = await asyncio.create_subprocess_exec(
            self.amtool,
            f"--alertmanager.url={self.url}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(self.tmp), "PATH": "/usr/bin:/bin"},
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == expect, (args, out, err)
        return (out + err).decode()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    amtool = require_program("amtool", "prometheus-alertmanager")
    runners: list[web.AppRunner] = []
    stores: list[SilenceStore] = []

    async def start(token: str | None = None) -> Served:
        store = SilenceStore(tmp_path / "monitord.db")
        stores.append(store)
        served = Served(amtool, store, free_port(), tmp_path)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            served.paths.append(f"{request.method} {request.path}")
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[record])
        secret = None if token is None else SecretStr(token)
        SilencesAPI(store, lambda: secret).register(app)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", int(served.url.rsplit(":", 1)[1])).start()
        return served

    yield start
    for runner in runners:
        await runner.cleanup()
    for store in stores:
        store.close()


@pytest.mark.integration
async def test_amtool_add_query_expire(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    before = time.time()
    out = await served.run(
        "silence", "add", "alertname=X", "--duration", "2h", "--comment", "c", "--author", "a"
    )
    sid = out.strip()
    silence = served.store.get(sid)
    assert silence is not None, out
    assert [str(m) for m in silence.matchers] == ['alertname="X"']
    assert (silence.created_by, silence.comment) == ("a", "c")
    assert silence.ends_at - before == pytest.approx(2 * HOUR, abs=30)
    assert silence.state(time.time()) == "active"
    assert served.store.mutes({"alertname": "X", "job": "j"}) == [sid]

    listed = json.loads(await served.run("silence", "query", "-o", "json"))
    assert [(s["id"], s["status"]["state"], s["matchers"]) for s in listed] == [
        (sid, "active", [{"isEqual": True, "isRegex": False, "name": "alertname", "value": "X"}])
    ]
    assert (await served.run("silence", "query", "-q", "alertname=X")).split() == [sid]
    assert (await served.run("silence", "query", "-q", "alertname=Y")).split() == []

    await served.run("silence", "expire", sid)
    await asyncio.sleep(0.01)
    expired = served.store.get(sid)
    assert expired is not None
    assert expired.state(time.time()) == "expired"
    assert served.store.mutes({"alertname": "X"}) == []
    assert (await served.run("silence", "query", "-q")).split() == []
    assert (await served.run("silence", "query", "-q", "--expired")).split() == [sid]
    again = await served.run("silence", "expire", sid, expect=1)
    assert "already expired" in again
    assert "POST /api/v2/silences" in served.paths
    assert f"DELETE /api/v2/silence/{sid}" in served.paths


@pytest.mark.integration
async def test_amtool_regex_and_negative_matchers(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    out = await served.run(
        "silence",
        "add",
        'alertname=~"Disk.*"',
        'env!="dev"',
        "--duration",
        "1h",
        "--comment",
        "c",
        "--author",
        "a",
    )
    sid = out.strip()
    assert served.store.mutes({"alertname": "DiskFull", "env": "prod"}) == [sid]
    assert served.store.mutes({"alertname": "DiskFull"}) == [sid]
    assert served.store.mutes({"alertname": "DiskFull", "env": "dev"}) == []
    assert served.store.mutes({"alertname": "NoDiskFull"}) == []
    listed = json.loads(await served.run("silence", "query", "-o", "json"))
    assert listed[0]["matchers"] == [
        {"isEqual": True, "isRegex": True, "name": "alertname", "value": "Disk.*"},
        {"isEqual": False, "isRegex": False, "name": "env", "value": "dev"},
    ]


@pytest.mark.integration
async def test_amtool_with_the_bearer_token(
    serve: Callable[..., Awaitable[Served]], tmp_path: Path
) -> None:
    served = await serve(token="s3cret")
    add = ("silence", "add", "alertname=X", "--duration", "1h", "--comment", "c", "--author", "a")
    refused = await served.run(*add, expect=1)
    assert "401" in refused
    assert served.store.list() == []
    config = tmp_path / "http.yml"
    config.write_text("authorization:\n  credentials: s3cret\n")
    sid = (await served.run(f"--http.config.file={config}", *add)).strip()
    assert served.store.get(sid) is not None
    await served.run("silence", "expire", sid, expect=1)
    await served.run(f"--http.config.file={config}", "silence", "expire", sid)
