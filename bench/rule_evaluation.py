"""Benchmark rule-group evaluation beside Prometheus's, measured in the same run.

Run: ``.venv/bin/python bench/rule_evaluation.py`` (``--quick`` for a smoke run, ``--profile N``
to print the N top functions of one more, profiled, monitord evaluation).

The workload is deterministic. ``--series`` synthetic series (200 per instance: 17
metric names, 10 counters and 7 gauges, with node- and app-like labels such as
``path``, ``code``, ``device``, ``cpu``, ``queue``; the instances spread over 10 jobs)
follow a smooth model of time: counters grow at a per-series rate that swings +-30%
over 20 minutes, gauges swing around a per-series level, a few series run hot.
``--rules`` alerting rules in one group (interval 15s) mix 40% thresholds on gauges
(``x{...} > 0.9``), 40% ``rate(counter{...}[5m]) > y`` and 20%
``sum by (job) (rate(counter{...}[5m])) > z``, each selecting a subset of one metric
(one job, one label value, a few jobs...); the alerts carry a severity label and
templated annotations, some have ``for``. The rule file is written to a temporary
directory and checked with ``promtool check rules``.

Prometheus (``/usr/bin/prometheus``, Debian) runs first. A threaded HTTP server on a
free 127.0.0.1 port serves the series as Prometheus text, with the model's values
at the time of each scrape. The 30 minutes of 15 s history (120 points per series)
go into Prometheus's head by remote write (``--web.enable-remote-write-receiver``; the
protobuf is encoded here) while it scrapes nothing; then a config reload (SIGHUP)
adds the target (scraped every 15 s, ``honor_labels``) and the rule file (evaluated
every 15 s). That is where a Prometheus that has run for a while holds the last 5
minutes. ``--backfill promtool`` writes the history as a block with ``promtool tsdb
create-blocks-from openmetrics`` before the start instead: the rules' 5m windows then
read that block until 5 minutes after the first scrape, which roughly doubles
Prometheus's time (``--settle 330`` measures after that).
``prometheus_rule_group_last_duration_seconds`` is read from its /metrics after each
evaluation, skipping those before the first full scrape and one more.

monitord runs next, in a fresh child process (this script with ``--child``), so that
its peak RSS is its own: the same series, 120 points each at 15 s steps, are loaded
into a :class:`monitor.store.Store`; the rule file is loaded with
:func:`rules.files.load_rule_file` and built with :func:`rules.group.build_group`;
:meth:`rules.group.Group.eval` is timed at Prometheus's evaluation timestamps, one new
round of points appended (untimed) before each, as a daemon would have scraped
them. The first evaluation (it parses the expressions) is a warm-up.

Printed: the workload, monitord's evaluation time (median and best, and CPU time),
Prometheus's, the ratio against the target (monitord at most 2x Prometheus's), the
samples each evaluation produced on both sides, the RSS, the host's CPU steal, and
the commit measured. Only 127.0.0.1 and free ports are used; every process started
is stopped, also on Ctrl-C. Exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import http.server
import itertools
import json
import math
import os
import platform
import pstats
import random
import re
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from support import free_port, running, wait_for_port

from monitor.model import Labels, Sample
from monitor.query import Engine
from monitor.store import Store
from rules.files import load_rule_file
from rules.group import EvalContext, Group, build_group
from rules.query import engine_query_func
from rules.templates import TemplateExpander

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
RATIO_TARGET = 2.0  # monitord's evaluation time at most this many times Prometheus's
SERIES_PER_INSTANCE = 200
STEP_S = 15
HISTORY_POINTS = 120  # 30 minutes of 15 s samples
GROUP = "synthetic"
SEED = 4242
ORIGIN_S = 1_790_000_000  # the model's time zero (2026-09-21)
PERIOD_S = 1_200.0  # the model's swing: 20 minutes
OMEGA = 2 * math.pi / PERIOD_S
COUNTER_SWING = 0.3
GAUGE_SWING = 0.1
HOT_SHARE = 0.01  # the share of series running hot (80-100% of full scale)
MEAN_RATE = 0.1 + 0.9 * ((1 - HOT_SHARE) * 0.25 + HOT_SHARE * 0.9)  # a counter's, per scale
LAG_MS = 5_000  # how old the newest point is when monitord evaluates

JOBS = ("api", "web", "auth", "search", "billing", "checkout", "ingest", "worker", "batch", "edge")
PATHS = tuple(
    f"/api/v1/{resource}"
    for resource in (
        "users orders items carts payments invoices sessions search reviews stock prices "
        "shipments returns coupons accounts tokens events reports exports health"
    ).split()
)
DISKS = ("sda", "sdb", "sdc", "sdd", "nvme0n1", "nvme1n1", "dm-0", "dm-1")
NICS = ("eth0", "eth1", "bond0", "lo")
CPUS = tuple(str(i) for i in range(8))
MODES = ("user", "system", "iowait", "idle")
QUEUES = tuple(
    f"{what}-{prio}"
    for what in ("email", "sms", "thumbnails", "billing", "exports")
    for prio in ("high", "normal", "low", "bulk")
)
CACHES = ("users", "sessions", "items", "prices", "search", "tokens", "pages", "geo", "cfg", "acl")
POOLS = ("db-primary", "db-replica", "redis", "http", "grpc")

Dims = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One synthetic metric: its name, kind, label dimensions and typical size.

    ``scale`` is a counter's typical rate per second, or a gauge's full scale.
    ``hot`` scales the rate of series having one label value (``code="500"``).
    """

    name: str
    counter: bool
    dims: Dims
    scale: float
    hot: tuple[str, str, float] | None = None

    @property
    def combos(self) -> int:
        """Series per instance."""
        return math.prod(len(values) for _, values in self.dims)


FAMILIES = (
    Family(
        "http_requests_total",
        True,
        (("path", PATHS), ("code", ("200", "500"))),
        20.0,
        hot=("code", "500", 0.02),
    ),
    Family("http_response_bytes_total", True, (("path", PATHS),), 50_000.0),
    Family("node_cpu_seconds_total", True, (("cpu", CPUS), ("mode", MODES)), 0.25),
    Family("node_disk_read_bytes_total", True, (("device", DISKS),), 2e6),
    Family("node_disk_written_bytes_total", True, (("device", DISKS),), 4e6),
    Family("node_disk_io_time_seconds_total", True, (("device", DISKS),), 0.3),
    Family("node_network_receive_bytes_total", True, (("device", NICS),), 1e7),
    Family("node_network_transmit_errs_total", True, (("device", NICS),), 0.05),
    Family("app_tasks_processed_total", True, (("queue", QUEUES),), 5.0),
    Family("app_cache_misses_total", True, (("cache", CACHES),), 10.0),
    Family("node_filesystem_usage_ratio", False, (("device", DISKS),), 1.0),
    Family("app_queue_length", False, (("queue", QUEUES),), 1000.0),
    Family("app_pool_utilization_ratio", False, (("pool", POOLS),), 1.0),
    Family("app_cache_fill_ratio", False, (("cache", CACHES),), 1.0),
    Family("node_memory_usage_ratio", False, (), 1.0),
    Family("node_load1", False, (), 8.0),
    Family("process_open_fds", False, (), 4096.0),
)
assert sum(f.combos for f in FAMILIES) == SERIES_PER_INSTANCE


# --- the synthetic workload -------------------------------------------------------------------


@dataclass
class Workload:
    """The series (family-major, as an exposition lists them) and their model parameters.

    A counter's value at ``x`` seconds after ``ORIGIN_S`` is
    ``base + rate * (x + swing / omega * (cos(phase) - cos(omega * x + phase)))``: it
    grows at ``rate * (1 + swing * sin(omega * x + phase))`` per second. A gauge's is
    ``scale * (level + swing * sin(omega * x + phase))``.
    """

    instances: list[tuple[str, str]]  # (instance, job)
    names: list[str] = field(default_factory=list)
    labels: list[dict[str, str]] = field(default_factory=list)
    counter: list[bool] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)  # a counter's rate, a gauge's scale * level
    amp: list[float] = field(default_factory=list)
    phase: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def values(self, t_s: float) -> list[float]:
        """Every series' value at ``t_s`` (seconds since the epoch), in series order."""
        x = t_s - ORIGIN_S
        sin, cos = math.sin, math.cos
        out: list[float] = []
        for is_counter, base, rate, amp, phase in zip(
            self.counter, self.base, self.rate, self.amp, self.phase, strict=True
        ):
            if is_counter:
                out.append(base + rate * x + amp * (cos(phase) - cos(OMEGA * x + phase)))
            else:
                out.append(rate + amp * sin(OMEGA * x + phase))
        return out

    def exposition_prefixes(self) -> list[str]:
        """``name{labels} `` for every series, in series order."""
        return [
            name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} "
            for name, labels in zip(self.names, self.labels, strict=True)
        ]


def build_workload(series: int) -> Workload:
    """``series`` series (a multiple of 200), the same for the same count on every run."""
    rng = random.Random(SEED)
    n_instances = series // SERIES_PER_INSTANCE
    instances = [
        (f"{JOBS[i % len(JOBS)]}-{i // len(JOBS):02d}.prod.example.net:9100", JOBS[i % len(JOBS)])
        for i in range(n_instances)
    ]
    w = Workload(instances)
    for fam in FAMILIES:
        dim_names = [d for d, _ in fam.dims]
        for instance, job in instances:
            for combo in itertools.product(*(values for _, values in fam.dims)):
                labels = {
                    "instance": instance,
                    "job": job,
                    **dict(zip(dim_names, combo, strict=True)),
                }
                hot, u = rng.random() < HOT_SHARE, rng.random()
                u = 0.8 + 0.2 * u if hot else 0.5 * u  # the load: a few series run hot
                phase = rng.uniform(0, 2 * math.pi)
                w.names.append(fam.name)
                w.labels.append(labels)
                w.counter.append(fam.counter)
                w.phase.append(phase)
                if fam.counter:
                    rate = fam.scale * (0.1 + 0.9 * u)
                    if fam.hot is not None and labels.get(fam.hot[0]) == fam.hot[1]:
                        rate *= fam.hot[2]
                    w.base.append(float(rng.randrange(10**6)))
                    w.rate.append(rate)
                    w.amp.append(rate * COUNTER_SWING / OMEGA)
                else:
                    w.base.append(0.0)
                    w.rate.append(fam.scale * (0.1 + 0.75 * u))
                    w.amp.append(fam.scale * GAUGE_SWING)
    return w


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rule file's text and what its rules select."""

    text: str
    kinds: dict[str, int]
    selected: int  # series read by one evaluation of every rule, all rules added up


def _selector(sel: dict[str, tuple[str, ...]]) -> str:
    parts = [f'{k}="{v[0]}"' if len(v) == 1 else f'{k}=~"{"|".join(v)}"' for k, v in sel.items()]
    return "{" + ",".join(parts) + "}"


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.removesuffix("_total").split("_"))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def build_rules(workload: Workload, count: int) -> RuleSet:
    """``count`` alerting rules in one group: 40% thresholds, 40% rate, 20% sum by rate."""
    rng = random.Random(SEED + 1)
    jobs_count = {job: sum(1 for _, j in workload.instances if j == job) for job in JOBS}
    counters = [f for f in FAMILIES if f.counter]
    gauges = [f for f in FAMILIES if not f.counter]
    kinds = {"threshold": 0, "rate": 0, "sum by": 0}
    selected = 0
    rules: list[dict[str, Any]] = []
    for i in range(count):
        kind = ("threshold", "threshold", "rate", "rate", "sum by")[i % 5]
        fam = rng.choice(gauges if kind == "threshold" else counters)
        # The subset: one job, or a few; all of a label dimension, one value, or a few.
        sel: dict[str, tuple[str, ...]] = {}
        scope = rng.choice(("job", "job", "job", "jobs", "all") if fam.dims else ("job", "jobs"))
        if scope == "job":
            sel["job"] = (rng.choice(JOBS),)
        elif scope == "jobs":
            sel["job"] = tuple(sorted(rng.sample(JOBS, rng.choice((2, 3)))))
        jobs = sel.get("job", JOBS)
        instances = sum(jobs_count[j] for j in jobs)
        n = instances
        for dim, values in fam.dims:
            pick = rng.choice((0, 1, 1, 3)) if scope != "all" else rng.choice((1, 1, 2))
            if fam.hot is not None and dim == fam.hot[0]:
                pick = 1
                sel[dim] = (fam.hot[1],)
            elif pick:
                sel[dim] = tuple(sorted(rng.sample(values, min(pick, len(values)))))
            n *= len(sel.get(dim, values))
        selected += n
        kinds[kind] += 1
        metric = fam.name + _selector(sel)
        level = fam.scale
        if fam.hot is not None:
            level *= fam.hot[2]
        if kind == "threshold":
            expr = f"{metric} > {_fmt(level * rng.choice((0.8, 0.85, 0.9)))}"
            name, who = f"{_camel(fam.name)}High", "{{ $labels.instance }}"
        elif kind == "rate":
            expr = f"rate({metric}[5m]) > {_fmt(level * rng.choice((0.8, 0.9, 1.0)))}"
            name, who = f"{_camel(fam.name)}RateHigh", "{{ $labels.instance }}"
        else:
            by = rng.choice(("job", "job", "job, instance") if fam.dims else ("job",))
            per_group = n / (len(jobs) if by == "job" else max(instances, 1))
            mean = MEAN_RATE * level * per_group
            expr = (
                f"sum by ({by}) (rate({metric}[5m])) > "
                f"{_fmt(mean * rng.choice((1.25, 1.5, 2.0, 2.5)))}"
            )
            name, who = f"{_camel(fam.name)}RateHighPerJob", "{{ $labels.job }}"
        rule: dict[str, Any] = {"alert": f"{name}{i:04d}", "expr": expr}
        hold = rng.choice((None, None, "1m", "5m"))
        if hold:
            rule["for"] = hold
        rule["labels"] = {"severity": rng.choice(("warning", "critical"))}
        rule["annotations"] = {
            "summary": f"{who}: {fam.name} is high",
            "description": "Value is {{ $value | humanize }} (rule " + str(i) + ").",
        }
        rules.append(rule)
    text = yaml.safe_dump(
        {"groups": [{"name": GROUP, "interval": f"{STEP_S}s", "rules": rules}]},
        sort_keys=False,
        width=1000,
    )
    return RuleSet(text, kinds, selected)


# --- processes, ports and the host ------------------------------------------------------------


def steal_ticks() -> int:
    """Clock ticks stolen by the hypervisor from all CPUs so far (0 where unknown)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0
    return int(fields[8]) if len(fields) > 8 else 0


def steal_share(ticks: int, wall_s: float) -> float:
    """The share of the machine's CPU time taken back by the hypervisor over ``wall_s``."""
    total = wall_s * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return ticks / total if total > 0 else 0.0


@contextmanager
def serving(workload: Workload) -> Iterator[int]:
    """The series as Prometheus text on a free 127.0.0.1 port, valued at each scrape's time."""
    prefixes = workload.exposition_prefixes()
    headers: dict[int, str] = {}
    start = 0
    for fam in FAMILIES:
        headers[start] = f"# HELP {fam.name} Synthetic.\n# TYPE {fam.name} " + (
            "counter\n" if fam.counter else "gauge\n"
        )
        start += fam.combos * len(workload.instances)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            values = workload.values(time.time())
            parts: list[str] = []
            for i, (prefix, value) in enumerate(zip(prefixes, values, strict=True)):
                if i in headers:
                    parts.append(headers[i])
                parts.append(f"{prefix}{value!r}\n")
            body = "".join(parts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="synthetic-target", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- Prometheus -------------------------------------------------------------------------------


@dataclass
class PrometheusFigures:
    """Prometheus's own figures for the rule group, one entry per measured evaluation."""

    eval_ms: list[int] = field(default_factory=list)  # evaluation timestamps
    durations: list[float] = field(default_factory=list)  # seconds
    samples: list[float] = field(default_factory=list)
    failures: float = 0.0
    rss: float = 0.0
    head_series: float = 0.0
    backfill_s: float = 0.0
    gap_s: float = 0.0  # between the last backfilled point and the first scrape
    alerts: float = 0.0  # count(ALERTS) after the last measured evaluation
    cpu_per_interval: float = math.nan  # process CPU seconds per 15 s while measuring
    steal: float = 0.0  # the host's CPU steal while measuring


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)")


def read_metrics(port: int, names: set[str], group: str) -> dict[str, float]:
    """The values of ``names`` in Prometheus's /metrics, for ``group`` where labelled by group."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    found: dict[str, float] = {}
    for line in body.splitlines():
        m = _SAMPLE_RE.match(line)
        if m is None or m[1] not in names:
            continue
        if m[2] and "rule_group=" in m[2] and f'rule_group="{group}"' not in m[2]:
            continue
        found[m[1]] = float(m[3])
    return found


def query_scalar(port: int, expr: str) -> float | None:
    """An instant query's single value, or None when the result is empty."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        data = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def write_backfill(workload: Workload, path: Path, end_s: int) -> None:
    """OpenMetrics text of HISTORY_POINTS points per series at 15 s steps ending at ``end_s``."""
    times = [end_s - STEP_S * (HISTORY_POINTS - 1 - k) for k in range(HISTORY_POINTS)]
    columns = [workload.values(t) for t in times]
    prefixes = workload.exposition_prefixes()
    with open(path, "w", encoding="ascii", buffering=1 << 20) as out:
        for i, prefix in enumerate(prefixes):
            out.write(
                "".join(f"{prefix}{col[i]!r} {t}\n" for t, col in zip(times, columns, strict=True))
            )
        out.write("# EOF\n")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def snappy_literal(data: bytes) -> bytes:
    """``data`` as a valid snappy block of one literal: framing without compression."""
    n = len(data) - 1
    return _varint(len(data)) + bytes([63 << 2]) + n.to_bytes(4, "little") + data


def remote_write_history(workload: Workload, port: int, end_s: int) -> None:
    """Push HISTORY_POINTS points per series, 15 s apart, ending at ``end_s``, by remote write.

    The protobuf ``WriteRequest`` (``prompb``) is encoded by hand, 1,000 series a
    request, each series with its points in time order.
    """
    times = [end_s - STEP_S * (HISTORY_POINTS - 1 - k) for k in range(HISTORY_POINTS)]
    columns = [workload.values(t) for t in times]
    # A Sample message: field 1 double value, field 2 int64 timestamp (ms).
    stamps = [b"\x10" + _varint(t * 1000) for t in times]
    pack = struct.Struct("<d").pack
    batch: list[bytes] = []
    for i, (name, labels) in enumerate(zip(workload.names, workload.labels, strict=True)):
        pairs = sorted([("__name__", name), *labels.items()])
        parts = [_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in pairs]
        for col, stamp in zip(columns, stamps, strict=True):
            parts.append(_field(2, b"\x09" + pack(col[i]) + stamp))
        batch.append(_field(1, b"".join(parts)))
        if len(batch) == 1_000 or i == len(workload) - 1:
            body = snappy_literal(b"".join(batch))
            batch = []
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request(
                    "POST",
                    "/api/v1/write",
                    body,
                    {
                        "Content-Encoding": "snappy",
                        "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Write-Version": "0.1.0",
                    },
                )
                response = conn.getresponse()
                answer = response.read()
            finally:
                conn.close()
            if response.status // 100 != 2:
                raise RuntimeError(f"remote write answered {response.status}: {answer[:300]!r}")


def prometheus_config(path: Path, rule_file: Path | None, target_port: int | None) -> None:
    """Write Prometheus's config: 15 s scrapes and evaluations, the rules, the target."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{STEP_S}s",
            "scrape_timeout": "10s",
            "evaluation_interval": f"{STEP_S}s",
        }
    }
    if rule_file is not None:
        config["rule_files"] = [str(rule_file)]
    if target_port is not None:
        target = {"targets": [f"127.0.0.1:{target_port}"]}
        config["scrape_configs"] = [
            {"job_name": "synthetic", "honor_labels": True, "static_configs": [target]}
        ]
    path.write_text(yaml.safe_dump(config))


def run_prometheus(
    workload: Workload,
    rule_file: Path,
    tmp: Path,
    evaluations: int,
    settle: float,
    backfill: str,
    stack: ExitStack,
) -> PrometheusFigures:
    """Load the history, start Prometheus scraping the synthetic target, read its figures.

    ``backfill`` "remote-write" pushes the history into the head of a Prometheus that
    scrapes nothing yet, then reloads its config with the target and the rules;
    "promtool" writes it as a block before the start. Evaluations are measured from
    ``settle`` seconds after the first full scrape on.
    """
    figures = PrometheusFigures()
    port = stack.enter_context(serving(workload))
    data, config, web = tmp / "data", tmp / "prometheus.yml", free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{web}",
    ]
    started = time.monotonic()
    end_s = int(time.time())
    if backfill == "promtool":
        openmetrics = tmp / "backfill.om"
        write_backfill(workload, openmetrics, end_s)
        tool = [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q"]
        subprocess.run(
            [*tool, str(openmetrics), str(data)], check=True, stdin=subprocess.DEVNULL, timeout=600
        )
        openmetrics.unlink()
        figures.backfill_s = time.monotonic() - started
        prometheus_config(config, rule_file, port)
        prom = stack.enter_context(running(argv, log=tmp / "prometheus.log"))
        wait_for_port(web, prom)
    else:
        prometheus_config(config, None, None)
        argv.append("--web.enable-remote-write-receiver")
        prom = stack.enter_context(running(argv, log=tmp / "prometheus.log"))
        wait_for_port(web, prom)
        remote_write_history(workload, web, end_s)
        figures.backfill_s = time.monotonic() - started
        prometheus_config(config, rule_file, port)
        prom.send_signal(signal.SIGHUP)  # reload: scrape the target, evaluate the rules
    group = f"{rule_file};{GROUP}"
    names = {
        "prometheus_rule_group_last_duration_seconds",
        "prometheus_rule_group_last_evaluation_timestamp_seconds",
        "prometheus_rule_group_last_evaluation_samples",
        "prometheus_rule_evaluation_failures_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "prometheus_tsdb_head_series",
    }
    deadline = time.monotonic() + 90 + settle + STEP_S * (evaluations + 3)
    scraped_at: float | None = None  # the wall-clock time a full scrape was seen first
    skip_before: float | None = None
    last_eval = 0.0
    cpu: list[float] = []
    measuring = (time.monotonic(), steal_ticks())  # reset at the first measured evaluation
    while len(figures.durations) < evaluations:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus made {len(figures.durations)} measured evaluations")
        if prom.poll() is not None:
            raise RuntimeError(f"Prometheus exited:\n{(tmp / 'prometheus.log').read_text()}")
        time.sleep(1.0)
        got = read_metrics(web, names, group)
        at = got.get("prometheus_rule_group_last_evaluation_timestamp_seconds", 0.0)
        if scraped_at is None:
            scraped = query_scalar(web, "scrape_samples_scraped")
            if scraped is not None and scraped >= len(workload):
                scraped_at = time.time()
                first = query_scalar(web, 'min(timestamp(node_load1{job="api"}))')
                figures.gap_s = (first or end_s) - end_s
            continue
        if at <= last_eval:
            continue
        last_eval = at
        if skip_before is None or at < scraped_at + settle:
            skip_before = at  # the first evaluation after the first full scrape: a warm-up
            continue
        if not cpu:
            measuring = (time.monotonic(), steal_ticks())
        cpu.append(got.get("process_cpu_seconds_total", math.nan))
        figures.eval_ms.append(round(at * 1000))
        figures.durations.append(got["prometheus_rule_group_last_duration_seconds"])
        figures.samples.append(got.get("prometheus_rule_group_last_evaluation_samples", math.nan))
        figures.failures = got.get("prometheus_rule_evaluation_failures_total", 0.0)
        figures.rss = got.get("process_resident_memory_bytes", 0.0)
        figures.head_series = got.get("prometheus_tsdb_head_series", 0.0)
    figures.alerts = query_scalar(web, "count(ALERTS)") or 0.0
    figures.steal = steal_share(steal_ticks() - measuring[1], time.monotonic() - measuring[0])
    if len(cpu) > 1:
        intervals = (figures.eval_ms[-1] - figures.eval_ms[0]) / (STEP_S * 1000)
        figures.cpu_per_interval = (cpu[-1] - cpu[0]) / intervals
    return figures


# --- monitord (the child) ---------------------------------------------------------------------


def monitord_side(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the series, build the group, time its evaluations at ``spec["eval_ms"]``."""
    workload = build_workload(spec["series"])
    eval_ms: list[int] = spec["eval_ms"]
    result: dict[str, Any] = {"rss_start": psutil.Process().memory_info().rss}
    store = Store(max_series=max(100_000, 3 * len(workload)))
    keys = [(name, Labels(lb)) for name, lb in zip(workload.names, workload.labels, strict=True)]
    grid = eval_ms[0] - LAG_MS
    next_ms = grid - STEP_S * 1000 * (HISTORY_POINTS - 1)

    def append_until(limit_ms: int) -> None:
        nonlocal next_ms
        while next_ms <= limit_ms:
            values = workload.values(next_ms / 1000)
            store.append(
                [Sample(n, lb, v) for (n, lb), v in zip(keys, values, strict=True)], next_ms
            )
            next_ms += STEP_S * 1000

    started = time.perf_counter()
    append_until(grid)
    result["load_s"] = time.perf_counter() - started
    result["points"] = store.stats().samples
    result["rss_loaded"] = psutil.Process().memory_info().rss

    expander = TemplateExpander()
    rule_file = load_rule_file(spec["rule_file"], expander=expander)
    groups = [
        build_group(g, default_interval=float(STEP_S), expander=expander) for g in rule_file.groups
    ]
    for group in groups:
        for rule in group.alerting_rules():
            rule.restored = True  # as after the manager's restore: ALERTS_FOR_STATE written
    ctx = EvalContext(query=engine_query_func(Engine(store)), store=store)

    def evaluate(at: int) -> tuple[float, float, int]:
        append_until(at - LAG_MS)
        wall, cpu = time.perf_counter(), time.process_time()
        for group in groups:
            group.eval(at, ctx)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, sum(g.stats.last_samples for g in groups)

    step = STEP_S * 1000
    warmup = evaluate(eval_ms[0] - step)
    result["warmup"] = warmup[0]
    result["walls"], result["cpus"], result["samples"] = [], [], []
    measuring = (time.monotonic(), steal_ticks())
    for at in eval_ms:
        wall, cpu, samples = evaluate(at)
        result["walls"].append(wall)
        result["cpus"].append(cpu)
        result["samples"].append(samples)
        failed = sum(g.stats.evaluation_failures_total for g in groups)
        if failed:
            raise RuntimeError(f"{failed} rule evaluations failed in monitord")
    result["steal"] = steal_share(steal_ticks() - measuring[1], time.monotonic() - measuring[0])
    result["rss_end"] = psutil.Process().memory_info().rss
    # The kernel's high-water mark lags the current RSS by up to a few pages' bookkeeping.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["rss_peak"] = max(peak, result["rss_end"])
    result["alerts"] = sum(len(r.active_alerts()) for g in groups for r in g.alerting_rules())
    if spec["profile"]:
        at = eval_ms[-1] + step
        append_until(at - LAG_MS)
        profiler = cProfile.Profile()
        profiler.enable()
        for group in groups:
            group.eval(at, ctx)
        profiler.disable()
        print_profile(profiler, spec["profile"], groups)
    return result


def print_profile(profiler: cProfile.Profile, top: int, groups: Sequence[Group]) -> None:
    """The ``top`` functions by own time, and own time added up by module."""
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    by_module: dict[str, float] = {}
    for (file, _line, _func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        module = file.removeprefix(root) if file.startswith(root) else _short(file)
        by_module[module] = by_module.get(module, 0.0) + tt
    rules = sum(len(g.rules) for g in groups)
    print(f"\nprofile of one monitord evaluation ({rules} rules, cProfile): {total:.2f} s own time")
    print(f"{'own s':>7} {'share':>6}  module")
    for module, tt in sorted(by_module.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{tt:>7.3f} {tt / total:>6.1%}  {module}")
    print(f"\n{'own s':>7} {'cum s':>7} {'calls':>10}  function")
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in ranked:
        module = file.removeprefix(root) if file.startswith(root) else _short(file)
        print(f"{tt:>7.3f} {ct:>7.3f} {nc:>10,}  {module}:{line}({func})")
    sys.stdout.flush()


def _short(file: str) -> str:
    if file == "~":
        return "(built-in functions)"
    parts = Path(file).parts
    for anchor in ("site-packages", "python3.11"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return file


# --- the parent ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """What the command line asked for."""

    series: int
    rules: int
    evaluations: int
    profile: int
    monitord_only: bool
    settle: float
    backfill: str


def check_rules(rule_file: Path) -> None:
    """Validate the rule file with promtool; raise with its output when it refuses."""
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"promtool check rules refused the rule file:\n{done.stdout}{done.stderr}"
        )


def run_monitord(
    run: Run, rule_file: Path, eval_ms: list[int], tmp: Path, stack: ExitStack
) -> dict[str, Any]:
    """The monitord side in a fresh child process; its figures."""
    spec_path, result_path = tmp / "child.json", tmp / "child-result.json"
    spec = {
        "series": run.series,
        "rule_file": str(rule_file),
        "eval_ms": eval_ms,
        "profile": run.profile,
        "result": str(result_path),
    }
    spec_path.write_text(json.dumps(spec))
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    argv = [sys.executable, __file__, "--child", str(spec_path)]
    child = stack.enter_context(running(argv, env=env))
    code = child.wait()
    if code != 0:
        raise RuntimeError(f"the monitord child exited with {code}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def mib(n: float) -> str:
    """Bytes as MiB."""
    return f"{n / 2**20:,.0f} MiB"


def report(
    run: Run, rules: RuleSet, md: dict[str, Any], prom: PrometheusFigures | None, total_s: float
) -> None:
    """Print the workload, both sides' figures, the ratio and the verdict."""
    when = time.strftime("%Y-%m-%d %H:%M")
    print(f"\n{when}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {code_state()}")
    kinds = ", ".join(f"{v} {k}" for k, v in rules.kinds.items())
    print(
        f"workload: {run.series:,} series ({len(FAMILIES)} metric names, "
        f"{run.series // SERIES_PER_INSTANCE} instances in {len(JOBS)} jobs), "
        f"{HISTORY_POINTS} points each at {STEP_S} s\n"
        f"          {run.rules:,} alerting rules in one group ({kinds}), "
        f"{rules.selected:,} series selected per evaluation ({rules.selected / run.rules:,.0f} "
        "per rule)"
    )
    print(
        f"monitord: {md['points']:,} points loaded in {md['load_s']:.1f} s; "
        f"warm-up evaluation {md['warmup'] * 1000:,.0f} ms (not counted)"
    )
    walls = md["walls"]
    print(f"\n{'':28} {'median':>10} {'best':>10} {'CPU median':>11} {'samples out':>12}")
    print(
        f"{'monitord Group.eval':28} {ms(statistics.median(walls))} {ms(min(walls))} "
        f"{ms(statistics.median(md['cpus'])):>11} {statistics.median(md['samples']):>12,.0f}"
    )
    if prom is not None:
        print(
            f"{'Prometheus last_duration':28} {ms(statistics.median(prom.durations))} "
            f"{ms(min(prom.durations))} {'':>11} {statistics.median(prom.samples):>12,.0f}"
        )
    steal = f"host CPU steal {md['steal']:.0%} (monitord)"
    if prom is not None:
        steal += f", {prom.steal:.0%} (Prometheus)"
    print(f"({len(walls)} evaluations each; samples out: ALERTS and ALERTS_FOR_STATE; {steal})")
    print(
        f"monitord RSS: {mib(md['rss_start'])} at start, {mib(md['rss_loaded'])} loaded, "
        f"{mib(md['rss_end'])} after the evaluations, peak {mib(md['rss_peak'])}; "
        f"{md['alerts']:,} alerts active at the end"
    )
    if prom is None:
        print("Prometheus: not run (--monitord-only)")
        print(f"total run time: {total_s:.0f} s")
        return
    print(
        f"Prometheus: RSS {mib(prom.rss)}, {prom.head_series:,.0f} head series, "
        f"{prom.alerts:,.0f} alerts active at the end, {prom.failures:.0f} rule failures, "
        f"process CPU {prom.cpu_per_interval:.2f} s per {STEP_S} s while measuring\n"
        f"            history by {run.backfill} in {prom.backfill_s:.0f} s, first scrape "
        f"{prom.gap_s:.0f} s "
        f"after the last backfilled point; measured from {run.settle:.0f} s after it"
    )
    print("per evaluation, monitord at Prometheus's evaluation times:")
    for i, (p, w) in enumerate(zip(prom.durations, walls, strict=True)):
        print(f"  {i + 1}: Prometheus {ms(p)}  monitord {ms(w)}  ratio {w / p:6.1f}")
    ratio = statistics.median(walls) / statistics.median(prom.durations)
    best_ratio = min(walls) / min(prom.durations)
    verdict = "met" if ratio <= RATIO_TARGET else "NOT MET"
    print(
        f"\nmonitord / Prometheus: {ratio:.1f}x by the medians, {best_ratio:.1f}x by the best; "
        f"target <= {RATIO_TARGET:.0f}x: {verdict}"
    )
    print(f"total run time: {total_s:.0f} s")


def code_state() -> str:
    """The commit measured, and which files of monitor/ and rules/ differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "monitor", "rules"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    files = [line[3:] for line in changed if line.strip()]
    return f"commit {head}" + (f" with changes to {', '.join(files)}" if files else "")


def ms(seconds: float) -> str:
    """Seconds as milliseconds, right-aligned."""
    return f"{seconds * 1000:>7,.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides and print the figures; 0 even when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 series and 100 rules")
    parser.add_argument("--series", type=int, help="synthetic series (multiple of 200)")
    parser.add_argument("--rules", type=int, help="alerting rules")
    parser.add_argument("--evaluations", type=int, help="measured evaluations per side")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print N hotspots")
    parser.add_argument("--monitord-only", action="store_true", help="skip Prometheus")
    parser.add_argument(
        "--backfill",
        choices=("remote-write", "promtool"),
        default="remote-write",
        help="how Prometheus gets the 30 minutes of history: into its head (default), or "
        "as a block written by promtool before the start",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="S",
        help="measure Prometheus from S seconds after its first full scrape on "
        "(330: the rules' 5m windows hold scraped points only)",
    )
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        result = monitord_side(spec)
        Path(spec["result"]).write_text(json.dumps(result))
        return 0
    run = Run(
        series=args.series or (5_000 if args.quick else 50_000),
        rules=args.rules or (100 if args.quick else 1_000),
        evaluations=args.evaluations or (3 if args.quick else 5),
        profile=args.profile,
        monitord_only=args.monitord_only,
        settle=args.settle,
        backfill=args.backfill,
    )
    if run.series <= 0 or run.series % SERIES_PER_INSTANCE:
        parser.error(f"--series must be a positive multiple of {SERIES_PER_INSTANCE}")
    if run.rules <= 0 or run.evaluations <= 0:
        parser.error("--rules and --evaluations must be positive")
    for tool in (PROMTOOL,) if run.monitord_only else (PROMTOOL, PROMETHEUS):
        if not Path(tool).exists():
            parser.error(f"{tool} is missing: apt-get update && apt-get install -y prometheus")
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rules-")))
            workload = build_workload(run.series)
            rules = build_rules(workload, run.rules)
            rule_file = tmp / "rules.yml"
            rule_file.write_text(rules.text)
            check_rules(rule_file)
            print(
                f"{len(workload):,} series, {run.rules:,} rules (promtool check rules: ok); "
                f"{'monitord only' if run.monitord_only else 'Prometheus first'}",
                flush=True,
            )
            prom: PrometheusFigures | None = None
            if run.monitord_only:
                now = int(time.time() * 1000)
                eval_ms = [now + i * STEP_S * 1000 for i in range(run.evaluations)]
            else:
                with ExitStack() as prom_stack:
                    prom = run_prometheus(
                        workload,
                        rule_file,
                        tmp,
                        run.evaluations,
                        run.settle,
                        run.backfill,
                        prom_stack,
                    )
                eval_ms = prom.eval_ms
                print("Prometheus done; monitord next", flush=True)
            md = run_monitord(run, rule_file, eval_ms, tmp, stack)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    report(run, rules, md, prom, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
