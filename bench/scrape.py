"""Benchmark /metrics latency beside node_exporter's, measured in the same run.

Run: ``.venv/bin/python bench/scrape.py`` (``--scrapes N``, ``--series N`` to vary).

Two cases, each scraped ``--scrapes`` times over one keep-alive connection, as
Prometheus scrapes; the time is from sending the request to reading the last byte
of the body, so it includes HTTP:

(a) ``monitord run -c config.example.yaml`` as a real subprocess, scraped once the
    first run of its system check has landed, interleaved scrape by scrape with
    node_exporter (``prometheus-node-exporter``, default collectors), the reference.
    Target: monitord's median no slower than node_exporter's.
(b) the same config with ``--series`` synthetic series added (10 metric names, 5
    counters and 5 gauges with type and help, x 1,000 label sets of 3 labels). The
    daemon runs in a child process (this script with ``--serve``): it builds
    :class:`monitor.daemon.Daemon`, waits for the first system-check run, appends the
    series to ``daemon.store`` on the daemon's own loop, then serves until SIGTERM.
    Target: median at most 100 ms.

Both are asked for the text format 0.0.4 without compression
(``Accept: text/plain;version=0.0.4``), so both render the same format and neither
spends time in gzip. One unmeasured scrape per connection opens it first. The host's
CPU steal during each case's scrapes is printed too: on a shared virtual machine the
latencies move with the neighbours. Only 127.0.0.1 and free ports picked at run time
are used; every process started is stopped. Exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from support import free_port, running, wait_for_port

from monitor.daemon import Daemon
from monitor.model import Labels, MetricMetadata, MetricType, Sample
from monitor.store import Store

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.example.yaml"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
ACCEPT = "text/plain;version=0.0.4"
SERIES_TARGET_MS = 100.0
NAMES = 10
LABEL_SETS = 1_000


# --- the synthetic series ------------------------------------------------------------------


def add_synthetic_series(store: Store, count: int, now_ms: int) -> int:
    """Append ``count`` series (NAMES names x label sets of 3 labels) with metadata.

    Label sets look like a fleet's: 20 instances x 50 routes, each instance in one of
    four jobs. Returns how many samples the store accepted.
    """
    rng = random.Random(9753)
    per_name = -(-count // NAMES)
    names = [
        *(
            f"app_{what}_total"
            for what in ("requests", "errors", "sent_bytes", "cache_hits", "retries")
        ),
        *(
            f"app_{what}"
            for what in (
                "in_flight",
                "queue_length",
                "pool_size",
                "latency_p99_seconds",
                "last_success_timestamp_seconds",
            )
        ),
    ]
    jobs = ("api", "web", "worker", "batch")
    label_sets = [
        Labels(
            {
                "instance": f"app-{i // 50:02d}.example.net:8080",
                "job": jobs[(i // 50) % len(jobs)],
                "route": f"/api/v1/resource{i % 50:02d}/{{id}}",
            }
        )
        for i in range(per_name)
    ]
    samples: list[Sample] = []
    for name in names:
        counter = name.endswith("_total")
        kind = MetricType.COUNTER if counter else MetricType.GAUGE
        store.set_metadata(
            name, MetricMetadata(kind, f"Synthetic {kind} {name} for the benchmark.")
        )
        for labels in label_sets:
            value = float(rng.randrange(10**9)) if counter else rng.random() * 1000
            samples.append(Sample(name, labels, value))
    return store.append(samples[:count], now_ms)


# --- the child: a daemon with synthetic series ------------------------------------------


async def serve(config: Path, series: int) -> int:
    """Run a Daemon, add ``series`` once the system check has run, print READY, serve."""
    daemon = Daemon(config)
    task = asyncio.get_running_loop().create_task(daemon.run())
    while True:
        if task.done():
            return task.result()
        scheduler = daemon.scheduler
        if daemon.store is not None and scheduler is not None:
            if any(stats.runs >= 1 for _kind, stats in scheduler.stats().values()):
                break
        await asyncio.sleep(0.1)
    # Runs on the daemon's loop: the store is single-threaded by design.
    added = add_synthetic_series(daemon.store, series, round(time.time() * 1000))
    print(f"READY {added} {len(daemon.store)}", flush=True)
    return await task


# --- the parent: processes and scrapes --------------------------------------------------


class Scraper:
    """GET /metrics over one keep-alive connection, as Prometheus does."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.samples = 0
        self.size = 0
        self.get()  # open the connection outside the measurements

    def get(self) -> bytes:
        """One scrape's body; raises unless the answer is 200."""
        self._conn.request("GET", "/metrics", headers={"Accept": ACCEPT})
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        return body

    def timed(self) -> float:
        """One scrape's latency in milliseconds."""
        start = time.perf_counter()
        body = self.get()
        elapsed = (time.perf_counter() - start) * 1000
        self.size = len(body)
        self.samples = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
        return elapsed

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


@dataclass(frozen=True)
class Figures:
    """One case's latencies, in milliseconds, and what a scrape returned."""

    label: str
    times: list[float]
    samples: int
    size: int
    steal: float  # the share of the host's CPU time taken back by the hypervisor meanwhile

    @property
    def median(self) -> float:
        """The median latency."""
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        """The 90th percentile latency (inclusive method)."""
        return statistics.quantiles(self.times, n=10, method="inclusive")[-1]


def scrape_interleaved(scrapers: dict[str, Scraper], count: int) -> dict[str, Figures]:
    """``count`` timed scrapes of each, taking turns, so drift hits both alike."""
    times: dict[str, list[float]] = {label: [] for label in scrapers}
    start, stolen = time.perf_counter(), steal_ticks()
    for _ in range(count):
        for label, scraper in scrapers.items():
            times[label].append(scraper.timed())
    ticks = (time.perf_counter() - start) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    steal = (steal_ticks() - stolen) / ticks
    return {
        label: Figures(label, times[label], scraper.samples, scraper.size, steal)
        for label, scraper in scrapers.items()
    }


def steal_ticks() -> int:
    """Clock ticks stolen by the hypervisor from all CPUs so far (0 where unknown)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0
    return int(fields[8]) if len(fields) > 8 else 0


def host_check_ran(port: int) -> bool:
    """Whether monitord's /metrics shows a finished run of the ``host`` check."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics", headers={"Accept": ACCEPT})
        body = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return False
    for line in body.splitlines():
        if line.startswith('monitord_check_runs_total{check="host"'):
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def daemon_env(port: int, state_dir: str) -> dict[str, str]:
    """The environment of a daemon listening on ``port`` with its state in ``state_dir``."""
    return {**os.environ, "MONITORD_LISTEN": f"127.0.0.1:{port}", "STATE_DIRECTORY": state_dir}


def monitord_command() -> list[str]:
    """The installed ``monitord`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("monitord")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


def case_default(scrapes: int, stack: ExitStack) -> tuple[Figures, Figures]:
    """(a): monitord with the example config and node_exporter, interleaved."""
    ne_port, md_port = free_port(), free_port()
    ne = stack.enter_context(running([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}"]))
    state = stack.enter_context(tempfile.TemporaryDirectory(prefix="monitord-bench-"))
    md = stack.enter_context(
        running(
            [*monitord_command(), "run", "-c", str(CONFIG)],
            daemon_env(md_port, state),
            Path(state, "monitord.log"),
        )
    )
    wait_for_port(ne_port, ne)
    wait_for_port(md_port, md)
    deadline = time.monotonic() + 60
    while not host_check_ran(md_port):
        if time.monotonic() > deadline:
            raise TimeoutError("the host check did not run within 60 s")
        time.sleep(0.5)
    scrapers = {"monitord": Scraper(md_port), "node_exporter": Scraper(ne_port)}
    try:
        figures = scrape_interleaved(scrapers, scrapes)
    finally:
        for scraper in scrapers.values():
            scraper.close()
    return figures["monitord"], figures["node_exporter"]


def case_series(scrapes: int, series: int, stack: ExitStack) -> Figures:
    """(b): monitord with the example config plus ``series`` synthetic series."""
    port = free_port()
    state = stack.enter_context(tempfile.TemporaryDirectory(prefix="monitord-bench-"))
    argv = [sys.executable, __file__, "--serve", "--series", str(series)]
    env = daemon_env(port, state)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = Path(state, "monitord.log")
    child = stack.enter_context(running(argv, env, log, stdout="pipe"))
    assert child.stdout is not None
    line = child.stdout.readline().decode().split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"the serving child did not get ready:\n{log.read_text()}")
    if int(line[1]) != series:
        raise RuntimeError(f"the store accepted {line[1]} of {series} synthetic series")
    wait_for_port(port, child)
    scraper = Scraper(port)
    try:
        figures = scrape_interleaved({"monitord": scraper}, scrapes)["monitord"]
    finally:
        scraper.close()
    return figures


def verdict(met: bool) -> str:
    """How a target's outcome is printed."""
    return "met" if met else "NOT MET"


def report(default: Figures, peer: Figures, synthetic: Figures, series: int, scrapes: int) -> None:
    """Print the table of figures, targets and verdicts."""
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"{when}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"/metrics latency over {scrapes} keep-alive scrapes each, Accept: {ACCEPT}")
    print(
        f"{'':34} {'samples':>8} {'bytes':>9} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}"
        f" {'steal':>6}"
    )
    rows = [
        ("node_exporter 1.5 (reference)", peer),
        ("(a) monitord, config.example.yaml", default),
        (f"(b) monitord, +{series:,} series", synthetic),
    ]
    for label, f in rows:
        print(
            f"{label:34} {f.samples:>8} {f.size:>9} {f.median:>6.2f}ms {f.p90:>6.2f}ms"
            f" {min(f.times):>6.2f}ms {max(f.times):>6.2f}ms {f.steal:>6.1%}"
        )
    print()
    a_met = default.median <= peer.median
    b_met = synthetic.median <= SERIES_TARGET_MS
    print(
        f"(a) median {default.median:.2f} ms, target <= node_exporter's {peer.median:.2f} ms:"
        f" {verdict(a_met)}"
    )
    print(
        f"(b) median {synthetic.median:.2f} ms, target <= {SERIES_TARGET_MS:.0f} ms:"
        f" {verdict(b_met)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run both cases and print the figures; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=50, help="timed scrapes per case")
    parser.add_argument("--series", type=int, default=NAMES * LABEL_SETS, help="for case (b)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return asyncio.run(serve(CONFIG, args.series))
    if args.scrapes < 2:
        parser.error("--scrapes must be at least 2")
    if not Path(NODE_EXPORTER).exists() and shutil.which("prometheus-node-exporter") is None:
        parser.error(f"{NODE_EXPORTER} is missing (Debian package prometheus-node-exporter)")
    with ExitStack() as stack:
        default, peer = case_default(args.scrapes, stack)
    with ExitStack() as stack:
        synthetic = case_series(args.scrapes, args.series, stack)
    report(default, peer, synthetic, args.series, args.scrapes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
