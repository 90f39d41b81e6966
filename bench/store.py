"""Benchmark the ring store: append throughput and resident bytes per stored sample.

Run: ``.venv/bin/python bench/store.py`` (``--quick`` for a smoke run).

The workload is 10,000 series (100 metric names x 100 targets, 3 labels each),
written a round at a time: one point per series per round, in batches of 1,000
samples per ``append()`` call, timestamps left to ``default_timestamp`` as a
check run would. The Labels objects are built once, as a collector's label
sets are stable. Throughput is reported both without building the Sample
objects (a pool of prebuilt rounds is replayed) and with building them inside
the timed region, for the steady state (full rings, each append overwrites the
oldest point) and for the fill from an empty store. Each figure is given by
wall clock (best and median of the runs) and by process CPU time; on a shared
virtual machine they move with the neighbours, so the host's CPU steal during
the timed runs is printed too. Memory is the RSS growth, after
``gc.collect()``, from before the Labels are built to the store holding 720
points in every series, divided by the points held: the store's arrays, series,
index and Labels all-in.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from monitor.model import Labels, Sample
from monitor.store import Store

THROUGHPUT_TARGET = 1_000_000  # samples/s
BYTES_TARGET = 24.0  # resident bytes per stored sample
BATCH = 1_000
START_MS = 1_700_000_000_000
STEP_MS = 15_000

Key = tuple[str, Labels]


def build_keys(names: int, targets: int) -> list[Key]:
    """One (name, Labels) per series, name-major, as a collector would emit them."""
    keys: list[Key] = []
    for n in range(names):
        name = f"bench_metric_{n:03d}_total"
        for t in range(targets):
            labels = Labels(
                {"instance": f"host-{t:03d}.example.net:9100", "job": "node", "zone": f"z{t % 4}"}
            )
            keys.append((name, labels))
    return keys


def batches_of(keys: Sequence[Key], round_no: int) -> list[list[Sample]]:
    """One round's samples (timestamp left to the store), cut into batches."""
    samples = [Sample(name, labels, float(round_no + i)) for i, (name, labels) in enumerate(keys)]
    return [samples[i : i + BATCH] for i in range(0, len(samples), BATCH)]


@dataclass
class Clock:
    """Wall-clock and CPU seconds spent in timed regions, and the host's steal meanwhile."""

    wall: float = 0.0
    cpu: float = 0.0
    steal_ticks: int = 0

    @contextmanager
    def timing(self) -> Iterator[None]:
        wall, cpu, steal = time.perf_counter(), time.process_time(), steal_ticks()
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.steal_ticks += steal_ticks() - steal


def steal_share(clocks: Sequence[Clock]) -> float:
    """The share of the machine's CPU time the hypervisor took back while timing."""
    ticks = sum(c.wall for c in clocks) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return sum(c.steal_ticks for c in clocks) / ticks if ticks else 0.0


def steal_ticks() -> int:
    """Clock ticks stolen by the hypervisor from all CPUs so far (0 where unknown)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0
    return int(fields[8]) if len(fields) > 8 else 0


def run_rounds(
    store: Store, pool: Sequence[list[list[Sample]]], first: int, count: int, clock: Clock
) -> None:
    """Append ``count`` rounds of prebuilt batches."""
    append = store.append
    with clock.timing():
        for r in range(first, first + count):
            ts = START_MS + r * STEP_MS
            for batch in pool[r % len(pool)]:
                append(batch, ts)


def run_rounds_building(
    store: Store, keys: Sequence[Key], first: int, count: int, clock: Clock
) -> None:
    """Append ``count`` rounds, building each batch's Sample objects inside the timing."""
    append = store.append
    with clock.timing():
        for r in range(first, first + count):
            ts = START_MS + r * STEP_MS
            for i in range(0, len(keys), BATCH):
                append([Sample(n, lb, float(r)) for n, lb in keys[i : i + BATCH]], ts)


def rss() -> int:
    """Resident set size now, after a full garbage collection."""
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def verdict(ok: bool) -> str:
    """How a figure stands against its target."""
    return "met" if ok else "NOT met"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the figures beside their targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions")
    args = parser.parse_args(argv)
    names, targets, capacity, timed_rounds = (10, 10, 20, 5) if args.quick else (100, 100, 720, 20)
    n_series = names * targets

    # -- memory at capacity (and the fill, building Samples as it goes) --------------------------
    before = rss()
    keys = build_keys(names, targets)
    after_labels = rss()
    store = Store(samples_per_series=capacity, max_series=n_series)
    fill_building = Clock()
    run_rounds_building(store, keys, 0, capacity, fill_building)
    held = store.stats().samples
    assert held == n_series * capacity, held
    at_capacity = rss()
    per_sample = (at_capacity - before) / held
    labels_share = (after_labels - before) / held

    # -- steady-state throughput on the full store (every append overwrites the oldest point) ---
    pool = [batches_of(keys, r) for r in range(10)]
    first = capacity
    plain: list[Clock] = []
    building: list[Clock] = []
    for _ in range(args.repeat):
        plain.append(Clock())
        run_rounds(store, pool, first, timed_rounds, plain[-1])
        first += timed_rounds
        building.append(Clock())
        run_rounds_building(store, keys, first, timed_rounds, building[-1])
        first += timed_rounds
    stats = store.stats()
    assert stats.samples_out_of_order_total == 0 and stats.series_refused_total == 0, stats
    assert stats.appended_total == first * n_series, stats

    # -- fill throughput on an empty store (series creation, then growing rings) ----------------
    del store
    store = Store(samples_per_series=capacity, max_series=n_series)
    fill_plain = Clock()
    run_rounds(store, pool, 0, capacity, fill_plain)

    timed = timed_rounds * n_series
    filled = capacity * n_series
    batch = min(BATCH, n_series)
    print(f"store benchmark: {n_series:,} series x {capacity} points, batches of {batch:,}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("samples/s by wall clock (best, median of runs) and by process CPU time (median):")
    print()
    best = max(timed / c.wall for c in plain)
    rows = [
        ("append, full rings, Samples prebuilt", plain, timed),
        ("append, full rings, building Samples", building, timed),
        ("fill from empty, Samples prebuilt (1 run)", [fill_plain], filled),
        ("fill from empty, building Samples (1 run)", [fill_building], filled),
    ]
    for label, clocks, count in rows:
        walls = [count / c.wall for c in clocks]
        cpus = [count / c.cpu for c in clocks]
        print(
            f"{label:<42} best {max(walls):>10,.0f}  median {statistics.median(walls):>10,.0f}"
            f"  cpu {statistics.median(cpus):>10,.0f}"
        )
    steal = steal_share([*plain, *building, fill_plain, fill_building])
    print(f"host CPU steal while timing: {steal:.0%}")
    median = statistics.median(timed / c.wall for c in plain)
    print(
        f"target >= {THROUGHPUT_TARGET:,} samples/s (full rings, Samples prebuilt): "
        f"{verdict(best >= THROUGHPUT_TARGET)} by the best run, "
        f"{verdict(median >= THROUGHPUT_TARGET)} by the median"
    )
    print()
    print(
        f"resident bytes per stored sample: {per_sample:.2f}  (Labels objects: "
        f"{labels_share:.2f}; RSS growth {(at_capacity - before) / 2**20:,.1f} MiB "
        f"for {held:,} points)"
    )
    print(f"target <= {BYTES_TARGET:.0f} bytes: {verdict(per_sample <= BYTES_TARGET)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
