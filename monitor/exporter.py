"""Expose the store and monitord's own figures in the Prometheus formats.

Everything lives in monitord's own ``CollectorRegistry`` (never the global one):
a collector over the store that yields the latest value of every live series
with the type its producer declared, and a collector of self metrics (process,
build, config reloads, scheduler and store figures). The text format 0.0.4 is
the default; OpenMetrics is served when the scraper asks for it. The daemon also
scrapes the self metrics into the store (:mod:`monitor.selfscrape`); the store's
collector leaves those names out so that each family is exported once.

prometheus_client's encoders spend 6-8 us a sample validating and escaping names
and formatting values. :func:`render` writes the store's families itself from
label text escaped once per series, and hands every other family to the encoder;
the bytes are the same as the encoder's alone (tests/test_exporter_rendering.py).
"""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.exposition import (
    ALLOWUTF8,
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

import monitor
from monitor.model import MetricMetadata, MetricType, is_stale_nan
from monitor.scheduler import DELAY_BUCKETS, CheckStats
from monitor.selfscrape import SelfScrape
from monitor.store import Series, Store

__all__ = ["ReloadStatus", "SelfCollector", "StoreCollector", "build_registry", "render"]


# A store series as the exporter shows it: the series, and its labels as exposition text
# (``name="value",...``, escaped), or None when a label name is not a legacy name, whose
# escaping depends on what the scraper asked for.
_Row = tuple[Series, str | None]
# Per metric name: its series in store order, and the same series' rows in label order.
_Layout = tuple[list[Series], list[_Row]]


@dataclass(slots=True)
class ReloadStatus:
    """Whether the last config (re)load worked, and when one last did."""

    successful: bool = True
    last_success: float = 0.0


class _StoreFamily(Metric):
    """One metric name's live store series, as a family whose samples are built when read.

    ``rows`` and ``values`` are aligned; ``values`` holds each series' latest value when
    the family was collected, or None for a series that is not exported (stale or empty).
    :func:`render` writes the rows' pre-escaped label text and the values directly, so
    a scrape builds no sample tuples; every other reader of the registry gets ``samples``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        sample_name: str,
        rows: list[_Row],
        values: list[float | None],
    ) -> None:
        super().__init__(name, documentation, typ)
        self.sample_name = sample_name
        self.rows = rows
        self.values = values
        self._samples: list[Sample] | None = None  # after Metric's `self.samples = []`

    @property
    def samples(self) -> list[Sample]:
        """The family's samples, built on first read."""
        if self._samples is None:
            name = self.sample_name
            self._samples = [
                Sample(name, dict(series.labels.items_tuple()), value)
                for (series, _), value in zip(self.rows, self.values, strict=True)
                if value is not None
            ]
        return self._samples

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        self._samples = samples


class StoreCollector(Collector):
    """Yields the latest value of every series in the store, grouped into families.

    A series whose latest sample is a staleness marker is left out, so a series
    that disappeared from its check disappears from /metrics. A counter whose
    name does not end in ``_total`` is exported as untyped, since the exposition
    formats require the suffix.

    Names in ``exclude`` (read on every collect) are left out: those of monitord's
    self-scrape, whose collectors export them already.
    """

    def __init__(self, store: Store, exclude: Container[str] = frozenset()) -> None:
        self._store = store
        self._exclude = exclude
        # Per name, from the last collect: its series in store order and their rows in
        # label order. Reused while the name's series are the same objects, so a scrape
        # neither sorts nor escapes labels; a row outlives changes to its name's series.
        self._layout: dict[str, _Layout] = {}

    def collect(self) -> Iterable[Metric]:
        """One family per metric name, in name order; series in label order."""
        store = self._store
        # One pass over a snapshot of the store rather than a select() per name, which
        # copies and sorts a posting set each time, and the layout reused.
        by_name: dict[str, list[Series]] = {}
        for series in store:
            by_name.setdefault(series.name, []).append(series)
        previous, layout = self._layout, {}
        exclude = self._exclude
        for name in sorted(by_name):
            if name in exclude:
                continue
            current = by_name[name]
            cached = previous.get(name)
            if cached is None or cached[0] != current:  # Series compare by identity
                cached = (current, _rows(current, cached[1] if cached is not None else []))
            layout[name] = cached
            rows = cached[1]
            values: list[float | None] = []
            live = 0
            for series, _ in rows:
                value = series.last_value
                # A NaN is checked for the staleness marker's bits; other values are live.
                if value is not None and (value == value or not is_stale_nan(value)):
                    live += 1
                    values.append(value)
                else:
                    values.append(None)
            if live:
                yield _family(name, store.metadata(name), rows, values)
        self._layout = layout


def _rows(series: list[Series], old: list[_Row]) -> list[_Row]:
    """Rows for a name's series in label order, reusing the rows it had before."""
    known = dict(old)
    return [
        (s, known[s] if s in known else _cached_label_text(s.labels.items_tuple()))
        for s in sorted(series, key=_label_pairs)
    ]


def _family(
    name: str, meta: MetricMetadata | None, rows: list[_Row], values: list[float | None]
) -> _StoreFamily:
    """The family for a stored metric name, typed as its producer declared."""
    typ = meta.type if meta is not None else MetricType.GAUGE
    doc = meta.help if meta is not None and meta.help else name
    if typ is MetricType.COUNTER and name.endswith("_total"):
        return _StoreFamily(name[: -len("_total")], doc, "counter", name, rows, values)
    if typ is MetricType.UNKNOWN or typ is MetricType.COUNTER:
        return _StoreFamily(name, doc, "unknown", name, rows, values)
    return _StoreFamily(name, doc, "gauge", name, rows, values)


def _label_pairs(series: Series) -> tuple[tuple[str, str], ...]:
    return series.labels.items_tuple()


class SelfCollector(Collector):
    """monitord's own figures: build, config reloads, scheduler and store."""

    def __init__(
        self,
        store: Store,
        check_stats: Callable[[], Mapping[str, tuple[str, CheckStats]]],
        reload_status: ReloadStatus,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self._store = store
        self._check_stats = check_stats
        self._reload = reload_status
        self._in_flight = in_flight

    def collect(self) -> Iterable[Metric]:
        """The self metrics, freshly read."""
        build = InfoMetricFamily("monitord_build", "monitord's version and the Python it runs on.")
        build.add_metric(
            [], {"version": monitor.__version__, "pythonversion": platform.python_version()}
        )
        yield build
        yield GaugeMetricFamily(
            "monitord_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
            value=1.0 if self._reload.successful else 0.0,
        )
        yield GaugeMetricFamily(
            "monitord_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            value=self._reload.last_success,
        )
        yield from self._scheduler_metrics()
        yield from self._store_metrics()

    def _scheduler_metrics(self) -> Iterable[Metric]:
        stats = self._check_stats()
        yield GaugeMetricFamily(
            "monitord_scheduler_checks", "Number of checks scheduled.", value=len(stats)
        )
        yield GaugeMetricFamily(
            "monitord_scheduler_checks_in_flight",
            "Number of check runs going on now.",
            value=self._in_flight(),
        )
        runs = CounterMetricFamily(
            "monitord_check_runs", "Check runs since start.", labels=["check", "kind"]
        )
        timeouts = CounterMetricFamily(
            "monitord_check_timeouts", "Check runs cut at their timeout.", labels=["check", "kind"]
        )
        errors = CounterMetricFamily(
            "monitord_check_errors",
            "Check runs that raised instead of returning a result.",
            labels=["check", "kind"],
        )
        counts = [0] * (len(DELAY_BUCKETS) + 1)
        delay_sum = 0.0
        for name, (kind, stat) in sorted(stats.items()):
            runs.add_metric([name, kind], stat.runs)
            timeouts.add_metric([name, kind], stat.timeouts)
            errors.add_metric([name, kind], stat.errors)
            counts = [a + b for a, b in zip(counts, stat.delay_counts, strict=True)]
            delay_sum += stat.delay_seconds_total
        yield from (runs, timeouts, errors)
        yield _delay_histogram(counts, delay_sum)

    def _store_metrics(self) -> Iterable[Metric]:
        s = self._store.stats()
        gauges = {
            "monitord_store_series": ("Series held in the store.", s.series),
            "monitord_store_samples": ("Samples held in the store.", s.samples),
            "monitord_store_max_series": ("Configured limit of series.", s.max_series),
            "monitord_store_samples_per_series": ("Ring capacity of each series.", s.capacity),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "monitord_store_samples_appended": ("Samples accepted.", s.appended_total),
            "monitord_store_series_refused": (
                "New series refused because max_series was reached.",
                s.series_refused_total,
            ),
            "monitord_store_samples_out_of_order": (
                "Samples refused for being older than, or a different value at the same time "
                "as, the series' last sample.",
                s.samples_out_of_order_total,
            ),
            "monitord_store_series_removed": (
                "Series dropped after not being written for the retention period.",
                s.series_removed_total,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


def _delay_histogram(counts: list[int], total: float) -> HistogramMetricFamily:
    """All checks' scheduling delays (one family, no per-check series) as a histogram."""
    cumulative, buckets = 0, []
    for bound, count in zip([*DELAY_BUCKETS, math.inf], counts, strict=True):
        cumulative += count
        buckets.append((_go_float(bound), cumulative))
    return HistogramMetricFamily(
        "monitord_check_schedule_delay_seconds",
        "How late scheduled check runs got their slot, from their due time "
        "(APScheduler's lateness plus the wait for a free slot), over all checks.",
        buckets=buckets,
        sum_value=total,
    )


def build_registry(
    store: Store,
    check_stats: Callable[[], Mapping[str, tuple[str, CheckStats]]],
    reload_status: ReloadStatus,
    in_flight: Callable[[], int] = lambda: 0,
    *,
    self_scrape: SelfScrape | None = None,
) -> CollectorRegistry:
    """monitord's registry: process and platform metrics, self metrics and the store.

    With ``self_scrape``, the self metrics are scraped into the store too, and the
    store's collector leaves out the names the self-scrape writes.
    """
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    own = SelfCollector(store, check_stats, reload_status, in_flight)
    registry.register(own if self_scrape is None else self_scrape.add(own))
    exclude: Container[str] = frozenset() if self_scrape is None else self_scrape.names
    registry.register(StoreCollector(store, exclude))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format ``accept`` asks for: (body, content type).

    The bytes are those of prometheus_client's encoder for that format. For the text
    format, and OpenMetrics 1.0.0, with underscores or allow-utf-8 escaping (what
    Prometheus 2 and 3 ask for), the store's families are written here and the other
    families by the encoder; any other format is left to the encoder altogether.
    """
    encoder, content_type = choose_encoder(accept or "")
    fmt = _Format.of(encoder)
    if fmt is None:
        return encoder(registry), content_type
    return fmt.render(registry, encoder), content_type


class _Families:
    """A collector that yields the given families, for handing them to an encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        """The families as given."""
        return self._families


@dataclass(frozen=True, slots=True)
class _Format:
    """A negotiated format in which :class:`_StoreFamily` lines can be written directly."""

    openmetrics: bool
    escaping: str

    @classmethod
    def of(cls, encoder: Callable[[Collector], bytes]) -> _Format | None:
        """The encoding ``choose_encoder`` picked, or None for one written only by the library."""
        func, args, kwargs = encoder, (), {}
        if isinstance(encoder, partial):
            func, args, kwargs = encoder.func, encoder.args, dict(encoder.keywords)
        escaping = kwargs.pop("escaping", UNDERSCORES)
        if args or escaping not in (UNDERSCORES, ALLOWUTF8):
            return None
        if func is generate_latest and not kwargs:
            return cls(False, escaping)
        if func is openmetrics.generate_latest and kwargs == {"version": "1.0.0"}:
            return cls(True, escaping)
        return None

    def render(self, registry: Collector, encoder: Callable[[Collector], bytes]) -> bytes:
        """The registry's exposition: store families written here, the rest by ``encoder``."""
        chunks: list[bytes] = []
        others: list[Metric] = []
        for family in registry.collect():
            if not isinstance(family, _StoreFamily):
                others.append(family)
                continue
            if others:
                chunks.append(self._encode(encoder, others))
                others = []
            chunks.append(self._family_text(family).encode())
        if others:
            chunks.append(self._encode(encoder, others))
        if self.openmetrics:
            chunks.append(_EOF)
        return b"".join(chunks)

    def _encode(self, encoder: Callable[[Collector], bytes], families: list[Metric]) -> bytes:
        # The OpenMetrics encoder ends what it writes with "# EOF"; here it writes a part.
        return encoder(_Families(families)).removesuffix(_EOF)

    def _family_text(self, family: _StoreFamily) -> str:
        """HELP, TYPE and sample lines, as prometheus_client's encoder writes them."""
        escaping = self.escaping
        name, typ, doc = family.name, family.type, family.documentation
        if self.openmetrics:
            doc = _escape_value(doc)
        else:  # the text format: "_total" and "untyped", and quotes left as they are
            doc = doc.replace("\\", r"\\").replace("\n", r"\n")
            if typ == "counter":
                name += "_total"
            elif typ == "unknown":
                typ = "untyped"
        head = escape_metric_name(name, escaping)
        lines = [f"# HELP {head} {doc}\n# TYPE {head} {typ}\n"]
        # How the sample name goes with the labels: "name{labels}", or, for a name that
        # is not a legacy one under allow-utf-8, '{"name",labels}'.
        sample_name = family.sample_name
        if escaping == ALLOWUTF8 and not _LEGACY_METRIC_NAME.fullmatch(sample_name):
            bare = "{" + escape_metric_name(sample_name, escaping) + "}"
            opening = bare[:-1] + ","
        else:
            if not self.openmetrics:
                bare = escape_metric_name(sample_name, escaping)
            elif escaping == UNDERSCORES:  # every rune not valid in a label name
                bare = _NOT_LABEL_RUNE.sub("_", sample_name)
            else:
                bare = _escape_value(sample_name)
            opening = bare + "{"
        append = lines.append
        for (series, text), value in zip(family.rows, family.values, strict=True):
            if value is None:
                continue
            if text is None:
                text = _label_text(series.labels.items_tuple(), escaping)
            if text:
                append(f"{opening}{text}}} {_go_float(value)}\n")
            else:
                append(f"{bare} {_go_float(value)}\n")
        return "".join(lines)


_EOF = b"# EOF\n"
_LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NOT_LABEL_RUNE = re.compile(r"^[0-9]|[^a-zA-Z0-9_]")
_GO_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}
# By where repr() puts the point: it writes every value from 1e6 up to 1e16 with one.
_GO_EXPONENTS = {dot: f"e+{dot - 1:02d}" for dot in range(7, 18)}


def _cached_label_text(pairs: tuple[tuple[str, str], ...]) -> str | None:
    """The labels' text if it is the same under both escapings written here, else None.

    Legacy label names are left as they are under underscores and allow-utf-8 alike,
    which covers every label the store's producers write.
    """
    if all(_LEGACY_LABEL_NAME.fullmatch(name) for name, _ in pairs):
        return _label_text(pairs, UNDERSCORES)
    return None


def _label_text(pairs: tuple[tuple[str, str], ...], escaping: str) -> str:
    """``name="value",...`` with names escaped per ``escaping`` and values escaped."""
    return ",".join(f'{escape_label_name(k, escaping)}="{_escape_value(v)}"' for k, v in pairs)


def _escape_value(text: str) -> str:
    """Backslash, newline and double quote escaped, as in label values."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go_float(value: float) -> str:
    """``value`` as prometheus_client's ``floatToGoString`` writes it."""
    text = repr(value)
    if value >= 1e6:  # 7 or more digits before the point: the exponent form, as there
        dot = text.find(".")
        if dot > 6:
            mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
            return mantissa + _GO_EXPONENTS[dot]
    return _GO_SPECIAL.get(text, text)
