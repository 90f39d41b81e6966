"""monitord scrapes itself: its own figures go into its store, as Prometheus' own job does.

The self collectors (the exporter's ``SelfCollector``, the rules' ``RuleCollector``,
whatever else monitord computes about itself) are registered here as well as in the
/metrics registry. :meth:`SelfScrape.scrape` collects them, turns every sample into a
store sample stamped with the current time and writes them through ``write`` (the
scheduler's :meth:`~monitor.scheduler.Scheduler.write`, so rules see them on arrival
like check samples). Series that a scrape no longer yields get a staleness marker, and
each sample name gets the type of its family with :meth:`Store.set_metadata`.

Not scraped: the store's own collector (its series are in the store already) and
prometheus_client's process and platform collectors (``process_*`` and
``python_info`` describe the Python process, not monitoring; no rule pack reads them,
they read ``/proc`` on every call, and the Prometheus that scrapes /metrics has them).

:attr:`SelfScrape.names` holds every sample name ever written here; the exporter's
``StoreCollector`` leaves those names out, so /metrics shows each self family once,
from its collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from monitor.log import get_logger
from monitor.model import STALE_NAN, Labels, MetricMetadata, MetricType, Sample

__all__ = ["SelfScrape", "WriteFunc"]

log = get_logger("selfscrape")

WriteFunc = Callable[[Sequence[Sample], int], object]
"""Stores samples at a timestamp (ms): the scheduler's ``write``."""

C = TypeVar("C", bound=Collector)

_SeriesKey = tuple[str, Labels]


class SelfScrape:
    """Writes the samples of monitord's self collectors into the store on each scrape."""

    def __init__(
        self,
        write: WriteFunc,
        set_metadata: Callable[[str, MetricMetadata], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._write = write
        self._set_metadata = set_metadata
        self._clock = clock
        self._collectors: list[Collector] = []
        self._previous: set[_SeriesKey] = set()
        self._last: int | None = None
        self.names: set[str] = set()
        """Every sample name a scrape has written (a live set: the exporter reads it)."""

    def add(self, collector: C) -> C:
        """Scrape ``collector`` from now on; returns it, for registering it elsewhere too."""
        self._collectors.append(collector)
        return collector

    def scrape(self) -> int:
        """Collect every self collector and write the samples; how many samples were written.

        The timestamp is the clock's, but always after the previous scrape's, so a scrape
        right after another (a reload during an interval run) is never out of order. A
        collector that raises is logged and its series are marked stale, like the series
        of a failed check.
        """
        now = round(self._clock() * 1000)
        if self._last is not None and now <= self._last:
            now = self._last + 1
        samples: list[Sample] = []
        for collector in self._collectors:
            try:
                families = list(collector.collect())
            except Exception:
                log.exception("self collector %s failed", type(collector).__name__)
                continue
            samples.extend(self._samples(families))
        current = {(s.name, s.labels) for s in samples}
        stale = [Sample(name, labels, STALE_NAN) for name, labels in self._previous - current]
        self._previous = current
        self._last = now
        self._write(samples + stale, now)
        return len(samples)

    def _samples(self, families: Iterable[Metric]) -> Iterable[Sample]:
        for family in families:
            for sample in family.samples:
                name = sample.name
                self.names.add(name)
                self._set_metadata(name, _metadata(family, name))
                yield Sample(name, Labels(sample.labels), float(sample.value))


def _metadata(family: Metric, sample_name: str) -> MetricMetadata:
    """The store type of one of ``family``'s sample names, as Prometheus would store it."""
    if family.type == "counter":
        typ = MetricType.COUNTER if sample_name.endswith("_total") else MetricType.GAUGE
    elif family.type in ("gauge", "info", "stateset"):
        typ = MetricType.GAUGE
    else:
        typ = MetricType.UNKNOWN
    return MetricMetadata(typ, family.documentation)
