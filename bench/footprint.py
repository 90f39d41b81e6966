"""Measure monitord's resident memory and CPU beside node_exporter's, in the same run.

Run: ``.venv/bin/python bench/footprint.py`` (``--warmup`` and ``--window`` in seconds).

Both run at once as real processes: ``monitord run -c config.example.yaml`` with
``MONITORD_LISTEN`` on a free port of 127.0.0.1 and ``STATE_DIRECTORY`` in a
temporary folder, and ``prometheus-node-exporter`` with its default collectors. Each
is scraped every 15 s from the start, as Prometheus would (new connection per scrape
is not assumed: one keep-alive connection each, ``Accept: text/plain;version=0.0.4``).
After the warm-up, the window opens: VmRSS is read from /proc/PID/status every
second, and the CPU is utime+stime from /proc/PID/stat (every thread) at the window's
start and end, as a percentage of one core over the window's wall time. Reported:
RSS at the end and the maximum in the window, the end's RssAnon/RssFile split, and
the CPU. Targets for monitord: RSS at most 45 MiB, CPU at most 0.3 % of one core.
Exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from support import cpu_ticks, free_port, running, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.example.yaml"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
ACCEPT = "text/plain;version=0.0.4"
SCRAPE_INTERVAL = 15.0
RSS_TARGET_MIB = 45.0
CPU_TARGET_PERCENT = 0.3
TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/PID/status (VmRSS, RssAnon, RssFile, ...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0])
    return fields


@dataclass
class Watched:
    """One process under measurement, its scrape connection and what was seen."""

    label: str
    proc: subprocess.Popen[bytes]
    port: int
    rss_kib: list[int] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    ticks_start: int = 0
    ticks_end: int = 0
    scrapes: int = 0
    _conn: http.client.HTTPConnection | None = None

    def scrape(self) -> None:
        """GET /metrics as Prometheus does, over one kept-alive connection."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._conn.request("GET", "/metrics", headers={"Accept": ACCEPT})
        response = self._conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.label} /metrics answered {response.status}")
        self.scrapes += 1

    def close(self) -> None:
        """Close the scrape connection."""
        if self._conn is not None:
            self._conn.close()

    def cpu_percent(self, seconds: float) -> float:
        """CPU used over the window, as a percentage of one core."""
        return 100.0 * (self.ticks_end - self.ticks_start) / TICKS / seconds


def measure(procs: list[Watched], warmup: float, window: float) -> float:
    """Scrape every 15 s from now on; sample RSS each second in the window; its length."""
    start = time.monotonic()
    next_scrape = start
    window_start = start + warmup
    window_end = window_start + window
    opened = False
    next_sample = window_start
    while True:
        now = time.monotonic()
        if not opened and now >= window_start:
            for p in procs:
                p.ticks_start = cpu_ticks(p.proc.pid)
            opened_at = now
            opened = True
        if opened and now >= window_end:
            for p in procs:
                p.ticks_end = cpu_ticks(p.proc.pid)
                p.status = status_kib(p.proc.pid)
                p.rss_kib.append(p.status["VmRSS"])
            return now - opened_at
        if now >= next_scrape:
            for p in procs:
                p.scrape()
            next_scrape += SCRAPE_INTERVAL
        if opened and now >= next_sample:
            for p in procs:
                p.rss_kib.append(status_kib(p.proc.pid)["VmRSS"])
            next_sample += 1.0
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.label} exited with {p.proc.returncode}")
        wake = min(next_scrape, window_end, next_sample if opened else window_start)
        time.sleep(max(0.0, min(wake - time.monotonic(), 1.0)))


def monitord_command() -> list[str]:
    """The installed ``monitord`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("monitord")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


# What a running monitord holds, as cumulative imports in a fresh interpreter, in this order.
BREAKDOWN_STEPS = (
    ("python (venv, site)", "pass"),
    ("+ asyncio (brings ssl)", "import asyncio"),
    ("+ PyYAML", "import yaml"),
    ("+ pydantic 2 (one model built)", "import pydantic\nclass M(pydantic.BaseModel): x: int = 0"),
    ("+ psutil", "import psutil"),
    ("+ prometheus_client", "import prometheus_client"),
    ("+ aiohttp.web", "import aiohttp.web"),
    ("+ APScheduler 3 (asyncio)", "import apscheduler.schedulers.asyncio"),
    ("+ Jinja2 (sandbox)", "import jinja2.sandbox"),
    ("+ promql-parser", "import promql_parser"),
    ("+ sqlite3", "import sqlite3"),
    ("+ monitord's own modules", "import monitor.cli, checks.system"),
)
_BREAKDOWN_PROBE = """
import re
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def import_breakdown() -> list[tuple[str, int]]:
    """VmRSS (KiB) after each of :data:`BREAKDOWN_STEPS`, in one fresh interpreter."""
    code = _BREAKDOWN_PROBE + "".join(
        f"{statement}\nprint(rss(), flush=True)\n" for _label, statement in BREAKDOWN_STEPS
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    return [(label, int(kib)) for (label, _), kib in zip(BREAKDOWN_STEPS, out, strict=True)]


def mib(kib: int) -> float:
    """KiB to MiB."""
    return kib / 1024


def verdict(met: bool) -> str:
    """How a target's outcome is printed."""
    return "met" if met else "NOT MET"


def report(procs: list[Watched], warmup: float, seconds: float) -> None:
    """Print the figures, the targets and the verdicts."""
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"{when}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"RSS and CPU over a {seconds:.1f} s window after a {warmup:.0f} s warm-up,"
        f" scraped every {SCRAPE_INTERVAL:.0f} s"
    )
    print(
        f"{'':14} {'RSS end':>9} {'RSS max':>9} {'RssAnon':>9} {'RssFile':>9}"
        f" {'CPU % core':>10} {'scrapes':>7}"
    )
    for p in procs:
        s = p.status
        print(
            f"{p.label:14} {mib(p.rss_kib[-1]):>5.1f} MiB {mib(max(p.rss_kib)):>5.1f} MiB"
            f" {mib(s['RssAnon']):>5.1f} MiB {mib(s['RssFile']):>5.1f} MiB"
            f" {p.cpu_percent(seconds):>9.3f}% {p.scrapes:>7}"
        )
    monitord = procs[0]
    rss = mib(max(monitord.rss_kib))
    cpu = monitord.cpu_percent(seconds)
    print()
    print(
        f"monitord RSS max {rss:.1f} MiB, target <= {RSS_TARGET_MIB:.0f} MiB:"
        f" {verdict(rss <= RSS_TARGET_MIB)}"
    )
    print(
        f"monitord CPU {cpu:.3f} % of one core, target <= {CPU_TARGET_PERCENT} %:"
        f" {verdict(cpu <= CPU_TARGET_PERCENT)}"
    )
    print()
    print("Where the RSS goes: VmRSS after cumulative imports in a fresh interpreter")
    previous = 0
    for label, kib in import_breakdown():
        print(f"  {label:32} {mib(kib):5.1f} MiB  (+{mib(kib - previous):4.1f})")
        previous = kib
    print(
        f"  {'running, first check done':32} {mib(monitord.rss_kib[-1]):5.1f} MiB"
        f"  (+{mib(monitord.rss_kib[-1] - previous):4.1f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run both processes, measure, print; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    args = parser.parse_args(argv)
    if not Path(NODE_EXPORTER).exists():
        parser.error(f"{NODE_EXPORTER} is missing (Debian package prometheus-node-exporter)")
    with ExitStack() as stack:
        state = stack.enter_context(tempfile.TemporaryDirectory(prefix="monitord-footprint-"))
        md_port, ne_port = free_port(), free_port()
        env = {
            **os.environ,
            "MONITORD_LISTEN": f"127.0.0.1:{md_port}",
            "STATE_DIRECTORY": state,
        }
        md = stack.enter_context(
            running(
                [*monitord_command(), "run", "-c", str(CONFIG)],
                env,
                Path(state, "monitord.log"),
                stdout="discard",
            )
        )
        ne = stack.enter_context(
            running([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}"])
        )
        procs = [Watched("monitord", md, md_port), Watched("node_exporter", ne, ne_port)]
        for p in procs:
            stack.callback(p.close)
            wait_for_port(p.port, p.proc)
        seconds = measure(procs, args.warmup, args.window)
    report(procs, args.warmup, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
