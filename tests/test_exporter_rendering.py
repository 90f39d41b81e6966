"""render() writes the store's families itself: byte for byte what prometheus_client writes."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, PlatformCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from monitor.exporter import (
    ReloadStatus,
    SelfCollector,
    StoreCollector,
    _Format,
    _go_float,
    render,
)
from monitor.model import STALE_NAN, Labels, MetricMetadata, MetricType, Sample, is_stale_nan
from monitor.scheduler import CheckStats
from monitor.store import Matcher, MatchOp, Store

NOW = 1_700_000_000_000
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

# (Accept header, whether render() writes the store's families itself for it)
ACCEPTS = [
    pytest.param(None, True, id="no Accept header gets the text format, written directly"),
    pytest.param("text/plain;version=0.0.4", True, id="text 0.0.4 is written directly"),
    pytest.param(
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        True,
        id="text 1.0.0 with allow-utf-8 is written directly",
    ),
    pytest.param(
        "text/plain;version=1.0.0;escaping=underscores",
        True,
        id="text 1.0.0 with underscores is written directly",
    ),
    pytest.param(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        True,
        id="OpenMetrics 1.0.0 is written directly",
    ),
    pytest.param(PROMETHEUS_2_ACCEPT, True, id="what Prometheus 2 asks for is written directly"),
    pytest.param(PROMETHEUS_3_ACCEPT, True, id="what Prometheus 3 asks for is written directly"),
    pytest.param(
        "text/plain;version=1.0.0;escaping=dots", False, id="dots escaping is left to the library"
    ),
    pytest.param(
        "application/openmetrics-text;version=1.0.0;escaping=values",
        False,
        id="values escaping is left to the library",
    ),
    pytest.param(
        "application/openmetrics-text;version=2.0.0;escaping=allow-utf-8",
        False,
        id="OpenMetrics 2.0.0 is left to the library",
    ),
]
ACCEPT_HEADERS = [p.values[0] for p in ACCEPTS]


class ReferenceCollector:
    """The store's families built as the exporter built them before it wrote them itself."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterable[Metric]:
        """One family per name with a live series, through add_sample."""
        for name in sorted({s.name for s in self._store}):
            meta = self._store.metadata(name) or MetricMetadata(MetricType.GAUGE)
            doc = meta.help or name
            if meta.type is MetricType.COUNTER and name.endswith("_total"):
                family = Metric(name[: -len("_total")], doc, "counter")
            elif meta.type is MetricType.GAUGE:
                family = Metric(name, doc, "gauge")
            else:
                family = Metric(name, doc, "unknown")
            matching = self._store.select([Matcher("__name__", MatchOp.EQ, name)])
            for series in sorted(matching, key=lambda s: s.labels.items_tuple()):
                value = series.last_value
                if value is not None and not is_stale_nan(value):
                    family.add_sample(name, dict(series.labels.items_tuple()), value)
            if family.samples:
                yield family


class FixedCollector:
    """Families of other kinds, with awkward labels, around the store's."""

    def collect(self) -> Iterable[Metric]:
        """An info, a labelled counter and a gauge."""
        info = InfoMetricFamily("fixed_build", 'Help with "quotes", \\ and\nnewline.')
        info.add_metric([], {"version": 'v"1\\\n', "ü": "ä"})
        yield info
        counter = CounterMetricFamily("fixed_requests", "Requests.", labels=["code"])
        counter.add_metric(['5"00'], 7.0)
        yield counter
        yield GaugeMetricFamily("fixed_big", "A big value.", value=12345678.0)


class TailCollector:
    """One family after the store's, so the library's output is spliced on both sides."""

    def collect(self) -> Iterable[Metric]:
        """A gauge."""
        yield GaugeMetricFamily("tail_gauge", "After the store.", value=-0.5)


def registry_of(collector: object, everything: bool = False) -> CollectorRegistry:
    """Target info, fixed families, ``collector``, a tail; with ``everything``, self metrics."""
    registry = CollectorRegistry(auto_describe=False, target_info={"env": 'te"st'})
    registry.register(FixedCollector())
    registry.register(collector)  # type: ignore[arg-type]
    registry.register(TailCollector())
    if everything:
        stats = {"host": ("system", CheckStats(runs=2, timeouts=0, errors=1))}
        reload = ReloadStatus(True, 1_700_000_000.5)
        registry.register(SelfCollector(Store(), lambda: stats, reload))
        PlatformCollector(registry=registry)
    return registry


def shape(families: Iterable[Metric]) -> list[tuple[object, ...]]:
    """What a reader of the registry sees, with values as bits so that NaN equals NaN."""
    return [
        (
            f.name,
            f.documentation,
            f.type,
            f.unit,
            [(s.name, s.labels, struct.pack("<d", s.value), s.timestamp) for s in f.samples],
        )
        for f in families
    ]


def assert_renders_like_the_library(
    store: Store, collector: StoreCollector, everything: bool = False
) -> None:
    """render() equals prometheus_client's encoder, for the same and the old families."""
    ours = registry_of(collector, everything)
    reference = registry_of(ReferenceCollector(store), everything)
    assert shape(collector.collect()) == shape(ReferenceCollector(store).collect())
    for accept in ACCEPT_HEADERS:
        encoder, content_type = choose_encoder(accept or "")
        expected = encoder(reference)
        assert encoder(ours) == expected, accept
        assert render(ours, accept) == (expected, content_type), accept


def awkward_store() -> Store:
    store = Store()
    store.set_metadata("app_requests_total", MetricMetadata(MetricType.COUNTER, 'Requests "all"'))
    store.set_metadata("app_weird", MetricMetadata(MetricType.COUNTER, "No _total suffix."))
    store.set_metadata("app_odd", MetricMetadata(MetricType.UNKNOWN, "Help with \\ and\nnewline."))
    store.set_metadata("job:rate5m", MetricMetadata(MetricType.GAUGE, ""))
    labels = [
        Labels.of(path='/a"b\\c\nd', zone="ü"),
        Labels.of(path="", zone="日本"),
        Labels({"dotted.label": "x", "ok": "y"}),
        Labels(),
    ]
    values = [0.0, -0.0, 1234567.0, 1e16, 1e21, 5e-324, math.inf, -math.inf, math.nan, 0.1]
    samples = [
        Sample(name, lab, values[(i * 3 + j) % len(values)])
        for i, name in enumerate(
            ["app_requests_total", "app_weird", "app_odd", "job:rate5m", "café_total", "1st"]
        )
        for j, lab in enumerate(labels)
    ]
    store.append(samples, NOW)
    store.append([Sample("app_odd", Labels(), STALE_NAN)], NOW + 1000)
    return store


def test_awkward_store_renders_byte_for_byte_like_the_library() -> None:
    store = awkward_store()
    collector = StoreCollector(store)
    assert_renders_like_the_library(store, collector, everything=True)
    assert_renders_like_the_library(store, collector, everything=True)  # from the cached rows


def test_awkward_lines_are_escaped_and_formatted() -> None:
    body, _ = render(registry_of(StoreCollector(awkward_store()), everything=True), None)
    text = body.decode()
    assert '\napp_requests_total{path="/a\\"b\\\\c\\nd",zone="ü"} 0.0\n' in text
    assert '\napp_requests_total{dotted_label="x",ok="y"} 1.234567e+06\n' in text
    assert "\napp_weird +Inf\n" in text
    assert '\njob:rate5m{dotted_label="x",ok="y"} -0.0\n' in text
    assert '\n_st{path="",zone="日本"} +Inf\n' in text
    assert "# HELP app_odd Help with \\\\ and\\nnewline.\n# TYPE app_odd untyped\n" in text
    assert "\napp_odd " not in text  # its last value is a staleness marker


@pytest.mark.parametrize(("accept", "direct"), ACCEPTS)
def test_each_format_is_written_directly_or_left_to_the_library(
    accept: str | None, direct: bool
) -> None:
    encoder, _ = choose_encoder(accept or "")
    assert (_Format.of(encoder) is not None) is direct
    store = awkward_store()
    registry = registry_of(StoreCollector(store))
    assert render(registry, accept)[0] == encoder(registry_of(ReferenceCollector(store)))


LEGACY_NAMES = ["up", "node_load1", "app_requests_total", "app_retries", "job:rate5m:total"]
OTHER_NAMES = ["1st_total", "café_total", "dotted.name", "with space", '"quoted"']
METRIC_NAMES = st.sampled_from(LEGACY_NAMES + OTHER_NAMES)
LABEL_NAMES = st.sampled_from(["instance", "job", "le", "_x", "a1", "dotted.label", "ü", "0lead"])
LABEL_VALUES = st.one_of(
    st.sampled_from(["", '"', "\\", "\n", '\\n"', "ü", "日本", 'a\\"b\nc']), st.text(max_size=8)
)
VALUES = st.one_of(
    st.floats(),
    st.sampled_from(
        [
            STALE_NAN,
            0.0,
            -0.0,
            999999.9999999999,
            1e6,
            1234567.0,
            1e15,
            9999999999999998.0,
            1e16,
            1.5e16,
            1e21,
            1e300,
            5e-324,
            1e-7,
            -1234567.0,
        ]
    ),
    st.integers(-(2**60), 2**60).map(float),
)
METADATA = st.one_of(
    st.none(),
    st.builds(
        MetricMetadata,
        st.sampled_from(list(MetricType)),
        st.one_of(st.just(""), st.text(max_size=12), st.sampled_from(['"x"', "a\\b", "a\nb"])),
    ),
)
SAMPLES = st.builds(
    Sample, METRIC_NAMES, st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=3).map(Labels), VALUES
)


@settings(deadline=None)
@given(
    metadata=st.dictionaries(METRIC_NAMES, METADATA),
    rounds=st.lists(
        st.tuples(st.lists(SAMPLES, max_size=12), st.booleans()), min_size=1, max_size=5
    ),
)
def test_any_store_renders_byte_for_byte_like_the_library(
    metadata: dict[str, MetricMetadata | None],
    rounds: list[tuple[list[Sample], bool]],
) -> None:
    store = Store(retention=60.0)
    for name, meta in metadata.items():
        if meta is not None:
            store.set_metadata(name, meta)
    collector = StoreCollector(store)
    now = NOW
    for samples, jump in rounds:
        # A jump past the retention lets gc drop every series not written this round.
        now += 120_000 if jump else 1000
        store.append(samples, now)
        store.gc(now)
        assert_renders_like_the_library(store, collector)


@settings(max_examples=2000)
@given(st.floats() | st.integers(-(10**20), 10**20).map(float))
def test_values_are_formatted_as_float_to_go_string(value: float) -> None:
    assert _go_float(value) == floatToGoString(value)
