"""/api/v1/rules and /api/v1/alerts: Prometheus' JSON shapes, filters and spellings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from monitor.model import Labels, Sample
from monitor.query import Engine
from monitor.store import Store
from monitor.web import WebApp
from monitor.web.api import format_go_e, format_go_time
from rules.alerting import AlertingRule
from rules.group import EvalContext, Group
from rules.metrics import RuleCollector
from rules.query import engine_query_func
from rules.recording import RecordingRule

T0 = 1_700_000_000_000
S = 1000


def plain(text: str, labels: Mapping[str, str], value: float) -> str:
    return text.replace("$value", format(value, "g"))


def build_groups() -> list[Group]:
    store = Store()
    store.append([Sample("up", Labels.of(instance="a"), 0.0)], T0 - S)
    firing = AlertingRule(
        "Down",
        "up == 0",
        expander=plain,
        keep_firing_for=60 * S,
        labels={"severity": "page"},
        annotations={"summary": "value $value"},
        restored=True,
    )
    pending = AlertingRule("SlowDown", "up == 0", expander=plain, hold=300 * S, restored=True)
    broken = AlertingRule(
        "Twins", '{__name__=~"up|copy"}', expander=plain, query='{__name__=~"up|copy"}'
    )
    hosts = Group(
        "hosts",
        "a.yml",
        15 * S,
        [RecordingRule("copy", "up"), firing, pending, broken],
        limit=5,
    )
    idle = Group("idle", "b.yml", 60 * S, [RecordingRule("never", "vector(1)", labels={"x": "y"})])
    ctx = EvalContext(
        query=engine_query_func(Engine(store)), store=store, clock=lambda: T0 / 1000 + 0.25
    )
    hosts.run_iteration(T0, ctx)
    store.append([Sample("up", Labels.of(instance="a"), 1.0)], T0 + S)
    hosts.run_iteration(T0 + 15 * S, ctx)  # Down is kept firing; SlowDown is gone
    return [hosts, idle]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    groups = build_groups()
    app = WebApp(
        registry=CollectorRegistry(),
        reload=_no_reload,
        is_ready=lambda: True,
        rule_groups=lambda: groups,
    )
    async with TestClient(TestServer(app.application())) as test_client:
        yield test_client


async def _no_reload() -> None:
    return None


async def get(client: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    return await response.json()


async def test_alerts_lists_pending_and_firing_alerts(client: TestClient[Any, Any]) -> None:
    body = await get(client, "/api/v1/alerts")
    assert body == {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": {"alertname": "Down", "instance": "a", "severity": "page"},
                    "annotations": {"summary": "value 0"},
                    "state": "firing",
                    "activeAt": "2023-11-14T22:13:20Z",
                    "keepFiringSince": "2023-11-14T22:13:35Z",
                    "value": "0e+00",
                }
            ]
        },
    }


async def test_rules_lists_groups_and_rules_in_prometheus_shapes(
    client: TestClient[Any, Any],
) -> None:
    body = await get(client, "/api/v1/rules")
    assert body["status"] == "success"
    hosts, idle = body["data"]["groups"]
    assert {k: v for k, v in hosts.items() if k != "rules"} == {
        "name": "hosts",
        "file": "a.yml",
        "interval": 15,
        "limit": 5,
        "evaluationTime": hosts["evaluationTime"],
        "lastEvaluation": "2023-11-14T22:13:20.25Z",
    }
    record, down, slow, twins = hosts["rules"]
    assert record == {
        "name": "copy",
        "query": "up",
        "health": "ok",
        "evaluationTime": record["evaluationTime"],
        "lastEvaluation": "2023-11-14T22:13:20.25Z",
        "type": "recording",
    }
    assert down == {
        "state": "firing",
        "name": "Down",
        "query": "up == 0",
        "duration": 0,
        "keepFiringFor": 60,
        "labels": {"severity": "page"},
        "annotations": {"summary": "value $value"},
        "alerts": [
            {
                "labels": {"alertname": "Down", "instance": "a", "severity": "page"},
                "annotations": {"summary": "value 0"},
                "state": "firing",
                "activeAt": "2023-11-14T22:13:20Z",
                "keepFiringSince": "2023-11-14T22:13:35Z",
                "value": "0e+00",
            }
        ],
        "health": "ok",
        "evaluationTime": down["evaluationTime"],
        "lastEvaluation": "2023-11-14T22:13:20.25Z",
        "type": "alerting",
    }
    assert (slow["state"], slow["duration"], slow["alerts"]) == ("inactive", 300, [])
    assert twins["health"] == "err"
    assert twins["lastError"] == (
        "vector contains metrics with the same labelset after applying alert labels"
    )
    assert twins["state"] == "inactive"
    assert idle["rules"][0]["labels"] == {"x": "y"}
    assert idle["rules"][0]["health"] == "unknown"
    assert idle["lastEvaluation"] == "0001-01-01T00:00:00Z"
    assert idle["rules"][0]["lastEvaluation"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("query", "want"),
    [
        pytest.param("type=record", {"hosts": ["copy"], "idle": ["never"]}, id="recording only"),
        pytest.param("type=alert", {"hosts": ["Down", "SlowDown", "Twins"]}, id="alerting only"),
        pytest.param(
            "rule_name[]=Down&rule_name[]=never",
            {"hosts": ["Down"], "idle": ["never"]},
            id="by rule name",
        ),
        pytest.param("rule_group[]=idle", {"idle": ["never"]}, id="by group name"),
        pytest.param("file[]=a.yml&type=record", {"hosts": ["copy"]}, id="by file and type"),
    ],
)
async def test_rules_filters(client: TestClient[Any, Any], query: str, want: Any) -> None:
    body = await get(client, f"/api/v1/rules?{query}")
    got = {g["name"]: [r["name"] for r in g["rules"]] for g in body["data"]["groups"]}
    assert got == want


async def test_exclude_alerts_leaves_alert_lists_empty(client: TestClient[Any, Any]) -> None:
    body = await get(client, "/api/v1/rules?exclude_alerts=true&rule_name[]=Down")
    (group,) = body["data"]["groups"]
    assert group["rules"][0]["alerts"] == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        pytest.param(
            "type=alerts",
            'invalid parameter "type": not supported value "alerts"',
            id="an unknown type",
        ),
        pytest.param(
            "exclude_alerts=maybe",
            'invalid parameter "exclude_alerts": strconv.ParseBool: parsing "maybe": '
            "invalid syntax",
            id="a non-boolean exclude_alerts",
        ),
    ],
)
async def test_bad_parameters_are_bad_data(
    client: TestClient[Any, Any], query: str, error: str
) -> None:
    body = await get(client, f"/api/v1/rules?{query}", status=400)
    assert body == {"status": "error", "errorType": "bad_data", "error": error}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1.0, "1e+00", id="one"),
        pytest.param(0.5, "5e-01", id="a half"),
        pytest.param(123.45, "1.2345e+02", id="several digits"),
        pytest.param(1e21, "1e+21", id="a large exponent"),
        pytest.param(-2.5e-7, "-2.5e-07", id="a small negative"),
        pytest.param(0.0, "0e+00", id="zero"),
        pytest.param(float("nan"), "NaN", id="NaN"),
        pytest.param(float("-inf"), "-Inf", id="minus infinity"),
    ],
)
def test_values_are_spelt_as_go_formats_them(value: float, text: str) -> None:
    assert format_go_e(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(1_700_000_000.0, "2023-11-14T22:13:20Z", id="whole seconds"),
        pytest.param(1_700_000_000.12, "2023-11-14T22:13:20.12Z", id="trailing zeros trimmed"),
        pytest.param(None, "0001-01-01T00:00:00Z", id="never is Go's zero time"),
    ],
)
def test_times_are_spelt_as_go_marshals_them(seconds: float | None, text: str) -> None:
    assert format_go_time(seconds) == text


def test_rule_metrics_are_labelled_by_file_and_group() -> None:
    hosts, idle = build_groups()
    families = {f.name: f for f in RuleCollector(lambda: [hosts, idle]).collect()}

    def values(name: str) -> dict[str, float]:
        return {s.labels["rule_group"]: s.value for s in families[name].samples}

    assert values("monitord_rule_evaluation_failures") == {"a.yml;hosts": 2, "b.yml;idle": 0}
    assert values("monitord_rule_evaluations") == {"a.yml;hosts": 8, "b.yml;idle": 0}
    assert values("monitord_rule_group_iterations_missed") == {"a.yml;hosts": 0, "b.yml;idle": 0}
    assert values("monitord_rule_group_last_evaluation_timestamp_seconds") == {
        "a.yml;hosts": T0 / 1000 + 0.25,
        "b.yml;idle": 0.0,
    }
    assert values("monitord_rule_group_interval_seconds") == {"a.yml;hosts": 15, "b.yml;idle": 60}
    assert values("monitord_rule_group_rules") == {"a.yml;hosts": 4, "b.yml;idle": 1}
    assert set(values("monitord_rule_group_last_duration_seconds")) == {"a.yml;hosts", "b.yml;idle"}
