"""The exporter: store series and self metrics in the Prometheus formats."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.exporter import ReloadStatus, build_registry, render
from monitor.model import STALE_NAN, Labels, MetricMetadata, MetricType, Sample
from monitor.scheduler import CheckStats
from monitor.store import Store

NOW = 1_700_000_000_000


def make_store() -> Store:
    store = Store(max_series=4)
    store.set_metadata(
        "node_network_receive_bytes_total",
        MetricMetadata(MetricType.COUNTER, "Network device statistic receive_bytes."),
    )
    store.set_metadata("weird_counter", MetricMetadata(MetricType.COUNTER, "No _total suffix."))
    store.append(
        [
            Sample("node_network_receive_bytes_total", Labels.of(device="lo"), 1234.0),
            Sample("weird_counter", Labels(), 5.0),
            Sample("node_load1", Labels(), 0.5),
            Sample("gone", Labels(), 1.0),
        ],
        NOW,
    )
    store.append([Sample("gone", Labels(), STALE_NAN)], NOW + 1000)
    store.append([Sample("refused_series", Labels(), 1.0)], NOW + 1000)  # beyond max_series
    return store


def make_registry() -> CollectorRegistry:
    stats = {"host": ("system", CheckStats(runs=3, timeouts=1, errors=0))}
    return build_registry(make_store(), lambda: stats, ReloadStatus(False, 1_700_000_000.0))


def scrape(accept: str | None = None) -> tuple[str, str]:
    body, content_type = render(make_registry(), accept)
    return body.decode(), content_type


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counters_keep_their_type_and_gauges_default() -> None:
    text, content_type = scrape()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE node_network_receive_bytes_total counter" in text
    assert 'node_network_receive_bytes_total{device="lo"} 1234.0' in text
    assert "# HELP node_network_receive_bytes_total Network device statistic receive_bytes." in text
    assert "# TYPE node_load1 gauge" in text


def test_a_counter_without_total_is_exported_untyped() -> None:
    text, _ = scrape()
    assert "# TYPE weird_counter untyped" in text
    assert "weird_counter 5.0" in text


def test_a_series_whose_last_sample_is_stale_is_not_exported() -> None:
    text, _ = scrape()
    assert "\ngone " not in text and "# TYPE gone" not in text


def test_self_metrics_report_reloads_scheduler_and_store() -> None:
    text, _ = scrape()
    assert "monitord_config_last_reload_successful 0.0" in text
    assert "monitord_config_last_reload_success_timestamp_seconds 1.7e+09" in text
    assert 'monitord_check_runs_total{check="host",kind="system"} 3.0' in text
    assert 'monitord_check_timeouts_total{check="host",kind="system"} 1.0' in text
    assert "monitord_store_series_refused_total 1.0" in text
    assert "monitord_store_series 4.0" in text
    assert 'monitord_build_info{pythonversion="' in text
    assert "process_resident_memory_bytes" in text


def test_openmetrics_is_served_when_asked_for() -> None:
    text, content_type = scrape("application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert "# TYPE node_network_receive_bytes counter" in text
    assert 'node_network_receive_bytes_total{device="lo"} 1234.0' in text
    assert text.endswith("# EOF\n")


def test_the_text_format_parses_back() -> None:
    text, _ = scrape()
    parsed = families(text)
    assert {"node_network_receive_bytes", "node_load1", "monitord_store_series"} <= set(parsed)


def test_the_registry_still_yields_the_store_samples_to_other_readers() -> None:
    by_name = {f.name: f for f in make_registry().collect()}
    network = by_name["node_network_receive_bytes"]
    assert network.type == "counter"
    assert [(s.name, s.labels, s.value) for s in network.samples] == [
        ("node_network_receive_bytes_total", {"device": "lo"}, 1234.0)
    ]
    assert [(s.name, s.labels, s.value) for s in by_name["weird_counter"].samples] == [
        ("weird_counter", {}, 5.0)
    ]
    assert "gone" not in by_name


def test_the_scheduling_delays_of_all_checks_add_up_to_one_histogram() -> None:
    fast, slow = CheckStats(), CheckStats()
    for delay in (0.0002, 0.003, 0.003):
        fast.observe_delay(delay)
    slow.observe_delay(0.2)
    slow.observe_delay(30.0)
    stats = {"fast": ("http", fast), "slow": ("http", slow)}
    registry = build_registry(Store(), lambda: stats, ReloadStatus())
    text = render(registry, None)[0].decode()
    assert "# TYPE monitord_check_schedule_delay_seconds histogram" in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="0.0025"} 1.0' in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="0.005"} 3.0' in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="0.25"} 4.0' in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="10.0"} 4.0' in text
    assert 'monitord_check_schedule_delay_seconds_bucket{le="+Inf"} 5.0' in text
    assert "monitord_check_schedule_delay_seconds_count 5.0" in text
    assert "monitord_check_schedule_delay_seconds_sum 30.2062" in text
    lines = [x for x in text.splitlines() if x.startswith("monitord_check_schedule_delay_seconds")]
    assert len(lines) == 17  # 15 buckets, count and sum: no per-check series
