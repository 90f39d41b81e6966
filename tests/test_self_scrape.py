"""monitord scrapes itself: self metrics in the store, once on /metrics, seen by rules."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.daemon import Daemon
from monitor.errors import ConfigError
from monitor.exporter import ReloadStatus, build_registry, render
from monitor.model import AlertState, Labels, MetricType, Sample, is_stale_nan
from monitor.query import Engine, Vector
from monitor.scheduler import CheckStats
from monitor.selfscrape import SelfScrape
from monitor.store import Store
from monitor.systemd import SystemdNotifier
from tests.support import free_port

NOW = 1_700_000_000.0


class Figures(Collector):
    """A self collector whose series the test changes."""

    def __init__(self) -> None:
        self.groups = ["a", "b"]
        self.fail = False

    def collect(self) -> Iterable[Metric]:
        if self.fail:
            raise RuntimeError("broken")
        failures = CounterMetricFamily("x_failures", "Failures.", labels=["group"])
        for group in self.groups:
            failures.add_metric([group], 2)
        yield failures
        yield GaugeMetricFamily("x_ok", "Whether it is fine.", value=1)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def self_scrape(store: Store, clock: Clock) -> tuple[SelfScrape, list[tuple[int, list[Sample]]]]:
    writes: list[tuple[int, list[Sample]]] = []

    def write(samples: Sequence[Sample], ts: int) -> None:
        store.append(samples, ts)
        writes.append((ts, list(samples)))

    return SelfScrape(write, store.set_metadata, clock=clock), writes


def test_samples_are_written_typed_at_the_clock_time_and_vanished_series_go_stale() -> None:
    store, clock = Store(), Clock(NOW)
    scrape, writes = self_scrape(store, clock)
    figures = scrape.add(Figures())
    assert scrape.scrape() == 3
    ts = round(NOW * 1000)
    failures_a = store.get("x_failures_total", Labels.of(group="a"))
    assert failures_a is not None and failures_a.points() == [(ts, 2.0)]
    assert store.get("x_ok", Labels()) is not None
    meta = store.metadata("x_failures_total")
    assert meta is not None and (meta.type, meta.help) == (MetricType.COUNTER, "Failures.")
    ok_meta = store.metadata("x_ok")
    assert ok_meta is not None and ok_meta.type is MetricType.GAUGE
    assert scrape.names == {"x_failures_total", "x_ok"}

    figures.groups = ["a"]
    scrape.scrape()  # same clock reading: the timestamp still moves on
    assert writes[1][0] == ts + 1
    failures_b = store.get("x_failures_total", Labels.of(group="b"))
    assert failures_b is not None and failures_b.last_timestamp == ts + 1
    assert failures_b.last_value is not None and is_stale_nan(failures_b.last_value)
    assert failures_a.last_value == 2.0

    figures.fail = True
    clock.now += 15
    assert scrape.scrape() == 0
    assert failures_a.last_value is not None and is_stale_nan(failures_a.last_value)


def test_metrics_show_each_self_family_once_after_a_self_scrape() -> None:
    store = Store()
    scrape = SelfScrape(store.append, store.set_metadata, clock=Clock(NOW))
    stats = {"host": ("system", CheckStats(runs=3))}
    registry = build_registry(store, lambda: stats, ReloadStatus(False), self_scrape=scrape)
    store.append([Sample("node_load1", Labels(), 0.5)], round(NOW * 1000))
    assert scrape.scrape() > 0
    assert store.get("monitord_config_last_reload_successful", Labels()) is not None
    assert store.get("monitord_check_runs_total", Labels.of(check="host", kind="system"))
    assert store.get("process_resident_memory_bytes", Labels()) is None  # not scraped

    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body = render(registry, accept)[0].decode()
        types = collections.Counter(
            line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")
        )
        assert [name for name, n in types.items() if n > 1] == []
        assert "monitord_config_last_reload_successful" in types
        assert "node_load1" in types  # the store's own series still come from the store
        assert body.count("monitord_config_last_reload_successful 0.0") == 1
        assert body.count('monitord_check_runs_total{check="host",kind="system"} 3.0') == 1


CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {state}
global:
  scrape_interval: 1h
  evaluation_interval: 1h
rule_files: [rules.yml]
"""

RULES = """
groups:
  - name: self
    rules:
      - alert: ReloadFailed
        expr: monitord_config_last_reload_successful == 0
"""


async def wait_until(predicate: Callable[[], object]) -> None:
    """Poll ``predicate`` on the running loop for up to 10 s."""
    deadline = time.monotonic() + 10.0
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within 10s: {predicate}")
        await asyncio.sleep(0.01)


async def test_a_failed_reload_is_in_the_store_at_once_and_a_rule_on_it_fires(
    tmp_path: Path,
) -> None:
    # Scrape and evaluation intervals of an hour: only the scrape right after the reload
    # and the on-arrival evaluation it triggers can make the alert active within the test.
    config = tmp_path / "config.yaml"
    text = CONFIG.format(port=free_port(), state=tmp_path / "state")
    config.write_text(text)
    (tmp_path / "rules.yml").write_text(RULES)
    daemon = Daemon(config, environ={}, notifier=SystemdNotifier({}))
    running = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: daemon.store is not None and "ReloadFailed" in rule_states(daemon))
        assert daemon.store is not None
        engine = Engine(daemon.store)
        query = "monitord_config_last_reload_successful"
        await wait_until(lambda: values(engine, query) == [1.0])
        assert values(engine, "monitord_rule_group_rules") == [1.0]
        assert rule_states(daemon)["ReloadFailed"] == []
        # A subquery without a step steps by the global evaluation interval.
        assert daemon.engine is not None
        assert daemon.engine.default_subquery_step == 3600.0

        config.write_text(text + "checks:\n  - name: x\n    type: sytem\n")
        with pytest.raises(ConfigError):
            await daemon.reload()
        assert values(engine, query) == [0.0]
        assert values(engine, f"{query} == 0") == [0.0]
        await wait_until(lambda: rule_states(daemon)["ReloadFailed"] == [AlertState.FIRING])

        config.write_text(text)
        await daemon.reload()
        assert values(engine, query) == [1.0]
        await wait_until(lambda: rule_states(daemon)["ReloadFailed"] == [])

        assert daemon.scheduler is not None
        assert daemon.scheduler.max_concurrent == 64
        config.write_text(
            text.replace(
                "evaluation_interval: 1h",
                "evaluation_interval: 30s\n  max_concurrent_checks: 5",
            )
        )
        await daemon.reload()
        assert daemon.engine.default_subquery_step == 30.0
        assert daemon.scheduler.max_concurrent == 5
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, 20) == 0


def values(engine: Engine, expr: str) -> list[float]:
    result = engine.instant(expr, round(time.time() * 1000))
    assert isinstance(result, Vector)
    return [s.value for s in result]


def rule_states(daemon: Daemon) -> dict[str, list[AlertState]]:
    if daemon.rules is None:
        return {}
    return {
        rule.name: [a.state for a in rule.active_alerts()]
        for group in daemon.rules.groups()
        for rule in group.alerting_rules()
        if rule.evaluation_timestamp is not None
    }
