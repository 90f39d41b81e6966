"""The ``cluster`` check against real monitord daemons: peers up, degraded and down, and
three nodes watching each other, one killed with SIGKILL, both survivors firing
``MonitordPeerDown`` from the shipped rule pack."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from checks.cluster import CLUSTER_FAMILIES, HEALTH_STATES, ClusterCheck, ClusterConfig
from monitor.model import Labels, Status
from tests.support import free_port, wait_for
from tests.test_daemon import Running

NODE_CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {{state}}
global:
  evaluation_interval: 1s
rule_packs: [monitord]
checks:
  - name: cluster
    type: cluster
    interval: 1s
    timeout: 900ms
    peers: [{peers}]
"""

# A peer with one OK check (TCP to its own port) and, when degraded, one failing.
PEER_CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {{state}}
checks:
  - name: self
    type: tcp
    address: 127.0.0.1:{port}
    interval: 1s
    timeout: 900ms
"""
FAILING_CHECK = """
  - name: nothing
    type: tcp
    address: 127.0.0.1:{closed}
    interval: 1s
    timeout: 900ms
"""

Start = Callable[[str, int], Running]


@pytest.fixture
def start_monitord(tmp_path: Path) -> Iterator[Start]:
    """Factory: start a monitord on ``port`` with a config (``{state}`` filled in), each in
    its own directory; every process is killed afterwards."""
    started: list[Running] = []

    def start(config_text: str, port: int) -> Running:
        home = tmp_path / f"node-{len(started)}"
        home.mkdir()
        config = home / "config.yaml"
        config.write_text(config_text.replace("{state}", str(home / "state")))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(home / "notify.sock"))
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["NOTIFY_SOCKET"] = str(home / "notify.sock")
        log = home / "monitord.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "run", "-c", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        running = Running(proc, port, config, notify, log)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(timeout=10)
        running.notify.close()


def cluster_config(peers: list[str], **options: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {"name": "cluster", "type": "cluster", "peers": peers, "timeout": "2s", **options}
    )


def values(result: Any, name: str) -> dict[Labels, float]:
    return {s.labels: s.value for s in result.samples if s.name == name}


def peer(url: str, **labels: str) -> Labels:
    return Labels({"peer": url, **labels})


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"peers": []}, "at least 1 item", id="an empty peer list is refused"),
        pytest.param(
            {"peers": ["127.0.0.1:9753"]},
            "is not an http:// or https:// URL",
            id="a peer without a scheme is refused",
        ),
        pytest.param(
            {"peers": ["http://a:1/?x=1"]},
            "give the base URL",
            id="a peer URL with a query is refused",
        ),
        pytest.param(
            {"peers": ["http://a:1", "http://u:p@a:1"]},
            "'http://a:1' is listed twice",
            id="a peer listed twice, once with credentials, is refused",
        ),
        pytest.param(
            {"peers": ["http://u:hunter2@a:1"], "token": "t"},
            "use them or the token, not both",
            id="credentials in the URL and a token are refused together",
        ),
        pytest.param(
            {"peers": ["http://a:1"], "token": "t", "token_file": "/dev/null"},
            "set token or token_file, not both",
            id="token and token_file are refused together",
        ),
    ],
)
def test_bad_configurations_are_refused_without_the_password(
    options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ClusterConfig.model_validate({"name": "c", "type": "cluster", **options})
    assert error in str(info.value)
    assert "hunter2" not in str(info.value)


def test_down_after_defaults_to_two_intervals() -> None:
    assert cluster_config(["http://a:1"]).effective_down_after == 30.0
    assert cluster_config(["http://a:1"], interval="5s").effective_down_after == 10.0
    assert cluster_config(["http://a:1"], down_after="1m").effective_down_after == 60.0


# --- one check against real peers -------------------------------------------------------


async def test_peers_up_healthy_degraded_and_down_with_critical_after_down_after(
    start_monitord: Start,
) -> None:
    healthy_port, degraded_port, closed = free_port(), free_port(), free_port()
    healthy = start_monitord(PEER_CONFIG.format(port=healthy_port), healthy_port)
    degraded_text = PEER_CONFIG + FAILING_CHECK
    degraded = start_monitord(
        degraded_text.format(port=degraded_port, closed=closed), degraded_port
    )
    for node in (healthy, degraded):
        node.notifications(until="READY=1", timeout=30)
    wait_for(lambda: "degraded" in degraded.get("/api/v1/health")[2], timeout=15)
    urls = [f"http://127.0.0.1:{p}" for p in (healthy_port, degraded_port, closed)]
    now = [1_700_000_000.0]
    check = ClusterCheck(cluster_config(urls, down_after="10s"), clock=lambda: now[0])

    result = await check.run()
    assert result.status == Status.WARNING, result.message
    assert result.message == (
        f"{urls[1]} is degraded; {urls[2]} down, never seen; polled since "
        f"2023-11-14T22:13:20Z (0s): cannot connect: Connect call failed "
        f"('127.0.0.1', {closed})"
    )
    assert values(result, "monitord_cluster_peer_up") == {
        peer(urls[0]): 1.0,
        peer(urls[1]): 1.0,
        peer(urls[2]): 0.0,
    }
    assert values(result, "monitord_cluster_peer_last_seen_timestamp_seconds") == {
        peer(urls[0]): now[0],
        peer(urls[1]): now[0],
        peer(urls[2]): 0.0,
    }
    health = values(result, "monitord_cluster_peer_health")
    assert health == {
        **{peer(urls[0], status=s): float(s == "healthy") for s in HEALTH_STATES},
        **{peer(urls[1], status=s): float(s == "degraded") for s in HEALTH_STATES},
        **{peer(urls[2], status=s): 0.0 for s in HEALTH_STATES},
    }
    assert values(result, "monitord_cluster_peers") == {Labels(): 3.0}
    assert values(result, "monitord_cluster_peers_up") == {Labels(): 2.0}
    assert {s.name for s in result.samples} == set(CLUSTER_FAMILIES)
    assert all(m.help for m in result.metadata.values())

    # The healthy peer goes away: WARNING at first, CRITICAL once unseen past down_after,
    # naming it and when it was last seen.
    last_seen = now[0]
    healthy.proc.kill()
    healthy.proc.wait(timeout=10)
    now[0] += 5
    result = await check.run()
    assert result.status == Status.WARNING  # 5 s is less than down_after
    assert f"{urls[0]} down, unseen since 2023-11-14T22:13:20Z (5s): cannot connect" in (
        result.message
    )
    assert values(result, "monitord_cluster_peer_up")[peer(urls[0])] == 0.0
    assert (
        values(result, "monitord_cluster_peer_last_seen_timestamp_seconds")[peer(urls[0])]
        == last_seen
    )
    now[0] += 6
    result = await check.run()
    assert result.status == Status.CRITICAL
    assert result.message.startswith(
        f"{urls[0]} down, unseen since 2023-11-14T22:13:20Z (11s): cannot connect"
    ), result.message
    assert values(result, "monitord_cluster_peers_up") == {Labels(): 1.0}


async def test_the_token_and_url_credentials_are_sent_and_a_non_monitord_peer_is_down(
    aiohttp_recorder: tuple[int, list[tuple[str, str | None]]],
) -> None:
    port, seen = aiohttp_recorder
    with_token = ClusterCheck(cluster_config([f"http://127.0.0.1:{port}/a/"], token="s3cret"))
    result = await with_token.run()
    assert result.status == Status.WARNING  # not past down_after yet
    assert "not ready (/-/ready answered HTTP 404)" in result.message
    assert seen == [("/a/-/ready", "Bearer s3cret")]  # health is not asked when not ready

    seen.clear()
    url = f"http://monitor:hunter2@127.0.0.1:{port}/b"
    result = await ClusterCheck(cluster_config([url])).run()
    assert seen == [("/b/-/ready", "Basic bW9uaXRvcjpodW50ZXIy")]
    assert values(result, "monitord_cluster_peer_up") == {peer(f"http://127.0.0.1:{port}/b"): 0.0}
    assert "hunter2" not in result.message
    assert result.message.startswith(f"http://127.0.0.1:{port}/b down")


@pytest.fixture
async def aiohttp_recorder() -> Any:
    """Not a monitord: an HTTP server that answers 404 and records path and Authorization."""
    seen: list[tuple[str, str | None]] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization")))
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port, seen
    finally:
        await runner.cleanup()


async def test_a_peer_that_hangs_is_cut_at_the_deadline() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        check = ClusterCheck(cluster_config([url], timeout="1s"))
        started = time.monotonic()
        result = await check.run()
        assert time.monotonic() - started < 1.0
        assert "no answer within 0.9s" in result.message
    finally:
        listener.close()


# --- three nodes --------------------------------------------------------------------------


def metric(node: Running, name: str, **labels: str) -> float | None:
    try:
        return node.metric(name, **labels)
    except OSError:
        return None


def peer_down_alerts(node: Running) -> list[dict[str, Any]]:
    status, _, body = node.get("/api/v1/alerts")
    assert status == 200
    return [
        a
        for a in json.loads(body)["data"]["alerts"]
        if a["labels"]["alertname"] == "MonitordPeerDown" and a["state"] == "firing"
    ]


def test_three_nodes_watch_each_other_and_both_survivors_fire_peer_down_for_the_killed_one(
    start_monitord: Start,
) -> None:
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        others = ", ".join(u for j, u in enumerate(urls) if j != i)
        nodes.append(start_monitord(NODE_CONFIG.format(port=port, peers=others), port))
    for node in nodes:
        node.notifications(until="READY=1", timeout=30)
    for node in nodes:
        wait_for(lambda n=node: metric(n, "monitord_cluster_peers_up") == 2.0, timeout=20)
    # The survivors see each other healthy: their own cluster checks are left out of the
    # peer's health, so one dead node does not read as three sick ones.
    *survivors, victim = nodes
    killed = urls[2]

    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    killed_at = time.monotonic()
    for node in survivors:
        # Two intervals, and a generous margin for a loaded machine.
        wait_for(lambda n=node: metric(n, "monitord_cluster_peer_up", peer=killed) == 0.0, 2 + 8)
    for node in survivors:
        wait_for(lambda n=node: metric(n, "monitord_check_status", check="cluster") == 2.0, 3 + 8)
        _, _, body = node.get("/api/v1/health")
        (check,) = json.loads(body)["data"]["checks"]
        assert check["status"] == "CRITICAL"
        assert check["message"].startswith(f"{killed} down, unseen since "), check["message"]
        other = next(u for u in urls[:2] if u != node.url(""))
        assert metric(node, "monitord_cluster_peer_up", peer=other) == 1.0
        assert metric(node, "monitord_cluster_peer_health", peer=other, status="healthy") == 1.0
        assert metric(node, "monitord_cluster_peers_up") == 1.0
    # MonitordPeerDown has `for: 20s`.
    for node in survivors:
        wait_for(
            lambda n=node: peer_down_alerts(n),
            timeout=max(1.0, 20 + 15 - (time.monotonic() - killed_at)),
        )
    for node in survivors:
        (alert,) = peer_down_alerts(node)
        assert alert["labels"] == {
            "alertname": "MonitordPeerDown",
            "check": "cluster",
            "peer": killed,
            "severity": "critical",
        }
        assert alert["annotations"]["summary"] == f"Peer monitord {killed} is down."
    assert time.monotonic() - killed_at >= 20  # not before its `for`
