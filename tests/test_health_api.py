"""/api/v1/health: the overall state's rule, the HTTP status, the per-check list, ?check=."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.model import CheckResult, Status
from monitor.web import WebApp
from monitor.web.health import CheckState, overall_state

OK, WARNING, CRITICAL, UNKNOWN = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN
T0 = 1_700_000_000.0


def state(name: str, status: Status | None, message: str = "") -> CheckState:
    if status is None:
        return CheckState(name, "system", 15.0, next_run=T0 + 7.5)
    result = CheckResult(status, message, duration=0.25)
    return CheckState(name, "system", 15.0, result, T0, T0 + 15)


@pytest.mark.parametrize(
    ("ready", "statuses", "expected"),
    [
        pytest.param(True, [], "healthy", id="no checks configured is healthy"),
        pytest.param(True, [OK, OK], "healthy", id="every check OK is healthy"),
        pytest.param(True, [None, None], "healthy", id="only pending checks is healthy"),
        pytest.param(True, [OK, None], "healthy", id="pending checks do not count"),
        pytest.param(True, [OK, WARNING], "degraded", id="one WARNING is degraded"),
        pytest.param(True, [WARNING, WARNING], "degraded", id="every check WARNING is degraded"),
        pytest.param(True, [OK, CRITICAL], "degraded", id="some CRITICAL is degraded"),
        pytest.param(True, [OK, UNKNOWN], "degraded", id="some UNKNOWN is degraded"),
        pytest.param(True, [WARNING, CRITICAL], "degraded", id="WARNING and CRITICAL is degraded"),
        pytest.param(True, [CRITICAL], "unhealthy", id="the only check CRITICAL is unhealthy"),
        pytest.param(True, [CRITICAL, UNKNOWN], "unhealthy", id="every check down is unhealthy"),
        pytest.param(
            True,
            [CRITICAL, None],
            "unhealthy",
            id="every check that ran down is unhealthy even with pending ones",
        ),
        pytest.param(False, [], "unhealthy", id="not ready is unhealthy"),
        pytest.param(False, [OK, OK], "unhealthy", id="not ready is unhealthy even if all OK"),
    ],
)
def test_overall_state_rule(ready: bool, statuses: list[Status | None], expected: str) -> None:
    assert overall_state(ready, statuses) == expected


MakeClient = Callable[..., Any]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Factory: a test client over a WebApp with the given check states; all closed after."""
    clients: list[TestClient[Any, Any]] = []

    async def make(
        checks: Sequence[CheckState], ready: bool = True, token: str | None = None
    ) -> TestClient[Any, Any]:
        app = WebApp(
            registry=CollectorRegistry(),
            reload=_no_reload,
            is_ready=lambda: ready,
            token=lambda: SecretStr(token) if token else None,
            checks=lambda: checks,
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app.application()))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _no_reload() -> None:
    return None


async def get(client: TestClient[Any, Any], path: str, status: int) -> Any:
    response = await client.get(path)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    return await response.json()


async def test_lists_every_check_sorted_with_counts(make_client: MakeClient) -> None:
    client = await make_client(
        [state("web", WARNING, "slow: 2.1s"), state("disk", OK, "ok"), state("new", None)]
    )
    body = await get(client, "/api/v1/health", 200)
    assert body == {
        "status": "success",
        "data": {
            "status": "degraded",
            "ready": True,
            "counts": {"OK": 1, "WARNING": 1, "CRITICAL": 0, "UNKNOWN": 0, "PENDING": 1},
            "checks": [
                {
                    "name": "disk",
                    "kind": "system",
                    "status": "OK",
                    "message": "ok",
                    "lastRun": "2023-11-14T22:13:20Z",
                    "nextRun": "2023-11-14T22:13:35Z",
                    "lastDuration": 0.25,
                    "interval": 15.0,
                },
                {
                    "name": "new",
                    "kind": "system",
                    "status": "PENDING",
                    "message": "",
                    "lastRun": "0001-01-01T00:00:00Z",
                    "nextRun": "2023-11-14T22:13:27.5Z",
                    "lastDuration": 0.0,
                    "interval": 15.0,
                },
                {
                    "name": "web",
                    "kind": "system",
                    "status": "WARNING",
                    "message": "slow: 2.1s",
                    "lastRun": "2023-11-14T22:13:20Z",
                    "nextRun": "2023-11-14T22:13:35Z",
                    "lastDuration": 0.25,
                    "interval": 15.0,
                },
            ],
        },
    }


@pytest.mark.parametrize(
    ("checks", "ready", "http_status", "overall"),
    [
        pytest.param([state("a", OK)], True, 200, "healthy", id="healthy answers 200"),
        pytest.param(
            [state("a", OK), state("b", CRITICAL)], True, 200, "degraded", id="degraded answers 200"
        ),
        pytest.param(
            [state("a", UNKNOWN), state("b", CRITICAL)],
            True,
            503,
            "unhealthy",
            id="every check down answers 503",
        ),
        pytest.param([state("a", OK)], False, 503, "unhealthy", id="not ready answers 503"),
    ],
)
async def test_http_status_follows_the_overall_state(
    make_client: MakeClient,
    checks: list[CheckState],
    ready: bool,
    http_status: int,
    overall: str,
) -> None:
    client = await make_client(checks, ready=ready)
    body = await get(client, "/api/v1/health", http_status)
    assert body["status"] == "success"
    assert (body["data"]["status"], body["data"]["ready"]) == (overall, ready)


async def test_check_filter_limits_the_list_and_the_overall_state(make_client: MakeClient) -> None:
    client = await make_client(
        [state("db", CRITICAL, "refused"), state("web", OK), state("dns", WARNING)]
    )
    body = await get(client, "/api/v1/health?check=db", 503)
    assert body["data"]["status"] == "unhealthy"
    assert [c["name"] for c in body["data"]["checks"]] == ["db"]

    body = await get(client, "/api/v1/health?check=web&check=dns", 200)
    assert body["data"]["status"] == "degraded"
    assert [c["name"] for c in body["data"]["checks"]] == ["dns", "web"]
    assert body["data"]["counts"]["CRITICAL"] == 0


async def test_an_unknown_check_name_is_404_naming_it(make_client: MakeClient) -> None:
    client = await make_client([state("web", OK)])
    body = await get(client, "/api/v1/health?check=web&check=wbe&check=db", 404)
    assert body == {
        "status": "error",
        "errorType": "not_found",
        "error": "no scheduled check named 'db', 'wbe'",
    }


async def test_it_needs_no_token_when_one_is_set(make_client: MakeClient) -> None:
    client = await make_client([state("web", OK)], token="s3cret")
    assert (await client.post("/-/reload")).status == 401
    body = await get(client, "/api/v1/health", 200)
    assert body["data"]["status"] == "healthy"


async def test_a_check_replaced_by_a_reload_shows_no_interval(make_client: MakeClient) -> None:
    client = await make_client([CheckState("web", "http", None)])
    body = await get(client, "/api/v1/health", 200)
    assert body["data"]["checks"][0]["interval"] is None
