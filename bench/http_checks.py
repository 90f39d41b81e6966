"""Run 1,000 HTTP checks in monitord beside Prometheus + blackbox_exporter, in the same run.

Run: ``.venv/bin/python bench/http_checks.py`` (about 3.7 minutes; ``--quick`` for a smoke run
of 100 checks, a 20 s warm-up and a 30 s window; ``--checks``, ``--warmup``, ``--window``).

Four processes on free ports of 127.0.0.1, all at once:

- the target: an aiohttp server (this script with ``--serve PORT``, its own process so
  its CPU is not counted) answering ``GET /t/0`` .. ``/t/N-1`` with a 3-byte 200 body;
- monitord: ``monitord run -c <temporary config>`` with N ``type: http`` checks of
  ``/t/<i>`` (``interval: 10s``, ``timeout: 5s``, ``[STATUS] == 200``), defaults for
  everything else (``max_concurrent_checks`` 64), its state in a temporary folder;
- the reference: ``prometheus`` (``scrape_interval: 10s``, ``scrape_timeout: 5s``,
  temporary ``--storage.tsdb.path``) probing the same N URLs through
  ``prometheus-blackbox-exporter`` (module ``http_2xx``), targets relabelled to
  ``/probe?target=...`` as blackbox_exporter's README shows.

After the warm-up (90 s by default; it used to hide the first minute's backlog when each
http check built its own TLS client context, and the warm-up's own delays are printed so
the start can be judged too) the window opens. CPU is utime+stime of every thread from
/proc/PID/stat at the window's start and end, as a percentage of one core over the
window's wall time; VmRSS is read from /proc/PID/status every second (reported: the
end and the maximum). The scheduling delay (due time to the run getting its slot) comes
from monitord's ``monitord_check_schedule_delay_seconds`` histogram, scraped just before
the window opens and just after it closes; p50 and p99 of the runs in the window are
interpolated inside their bucket as ``histogram_quantile`` does, and the bucket is
printed too; the same figures for the runs of the warm-up are printed below them. The
delay verdict reads the count of the ``le="0.1"`` bucket (99 % of the runs in it), not
the estimate. Prometheus's own ``prometheus_target_interval_length_seconds`` quantiles
(interval between consecutive scrapes of a target, minus nothing) are printed beside it
for reference: they measure jitter of the interval rather than lateness.

Targets for monitord: p99 scheduling delay at most 100 ms, CPU at most 25 % of one core.
Every process started is stopped, also on Ctrl-C. Exits 0 whether or not they are met.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from support import cpu_ticks, free_port, running, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
INTERVAL_S = 10
TIMEOUT_S = 5
DELAY_TARGET_S = 0.100
CPU_TARGET_PERCENT = 25.0
DELAY_METRIC = "monitord_check_schedule_delay_seconds"
TICKS = os.sysconf("SC_CLK_TCK")


# --- the target server (a child process) ------------------------------------------------------


def serve(port: int, paths: int) -> None:
    """Answer ``GET /t/0`` .. ``/t/<paths - 1>`` with 200 ``ok\\n`` until SIGTERM."""
    from aiohttp import web  # only the child needs it

    body = b"ok\n"

    async def target(request: web.Request) -> web.Response:
        n = request.match_info["n"]
        if not n.isdigit() or int(n) >= paths:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/t/{n}", target)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- processes and /proc ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of the process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def steal_ticks() -> int:
    """Clock ticks stolen by the hypervisor from all CPUs so far (0 where unknown)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


@dataclass
class Watched:
    """One process under measurement and what was seen of it in the window."""

    label: str
    proc: subprocess.Popen[bytes]
    rss: list[int] = field(default_factory=list)
    ticks_start: int = 0
    ticks_end: int = 0

    def ticks(self) -> int:
        """CPU ticks used in the window."""
        return self.ticks_end - self.ticks_start


# --- scraping ---------------------------------------------------------------------------------


def get(port: int, path: str) -> str:
    """The body of ``GET path`` on 127.0.0.1:port (text format asked for)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept": "text/plain;version=0.0.4"})
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"GET {path} on :{port} answered {response.status}")
        return body
    finally:
        conn.close()


def metric_lines(text: str, prefix: str) -> dict[str, float]:
    """``name{labels}`` -> value for the exposition lines starting with ``prefix``."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def delay_buckets(text: str) -> list[tuple[float, float]]:
    """monitord's delay histogram: (upper bound, cumulative count), in bound order."""
    buckets = []
    for key, value in metric_lines(text, DELAY_METRIC + "_bucket{").items():
        bound = key.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((math.inf if bound == "+Inf" else float(bound), value))
    if not buckets:
        raise RuntimeError(f"monitord exports no {DELAY_METRIC}")
    return sorted(buckets)


def quantile(q: float, buckets: list[tuple[float, float]]) -> tuple[float, float, float]:
    """``histogram_quantile``'s estimate, and the bucket's bounds: (estimate, lower, upper)."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower, lower, upper
            inside = count - below
            estimate = lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
            return estimate, lower, upper
        lower, below = upper, count
    return math.nan, math.nan, math.nan


def prom_query(port: int, expr: str) -> list[tuple[dict[str, str], float]]:
    """An instant query on Prometheus's API: (labels, value) per result."""
    body = get(port, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return [(r["metric"], float(r["value"][1])) for r in json.loads(body)["data"]["result"]]


# --- configs ----------------------------------------------------------------------------------


def target_urls(port: int, n: int) -> list[str]:
    """The ``n`` target URLs."""
    return [f"http://127.0.0.1:{port}/t/{i}" for i in range(n)]


def monitord_config(urls: list[str], listen: str, state_dir: Path) -> str:
    """monitord's config: one ``http`` check per URL (written as JSON, which is YAML)."""
    checks = [
        {
            "name": f"t{i}",
            "type": "http",
            "url": url,
            "interval": f"{INTERVAL_S}s",
            "timeout": f"{TIMEOUT_S}s",
            "conditions": ["[STATUS] == 200"],
        }
        for i, url in enumerate(urls)
    ]
    return json.dumps(
        {
            "server": {"listen": listen},
            "state_dir": str(state_dir),
            "checks": checks,
        },
        indent=1,
    )


def prometheus_config(urls: list[str], blackbox_port: int) -> str:
    """Prometheus's config: the URLs probed through blackbox_exporter's ``http_2xx``."""
    job = {
        "job_name": "blackbox",
        "metrics_path": "/probe",
        "params": {"module": ["http_2xx"]},
        "static_configs": [{"targets": urls}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{blackbox_port}"},
        ],
    }
    return json.dumps(
        {
            "global": {"scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": f"{TIMEOUT_S}s"},
            "scrape_configs": [job],
        },
        indent=1,
    )


BLACKBOX_CONFIG = f"""\
modules:
  http_2xx:
    prober: http
    timeout: {TIMEOUT_S}s
    http:
      preferred_ip_protocol: ip4
"""


def monitord_command() -> list[str]:
    """The installed ``monitord`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("monitord")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run measured."""

    checks: int
    seconds: float = 0.0
    steal: float = 0.0
    delays: list[tuple[float, float]] = field(default_factory=list)  # in the window
    warmup_delays: list[tuple[float, float]] = field(default_factory=list)  # before it
    runs: float = 0.0
    up: float = 0.0
    probes_ok: float = 0.0
    interval_quantiles: dict[str, float] = field(default_factory=dict)


def measure(
    procs: list[Watched], md_port: int, prom_port: int, outcome: Outcome, warmup: float,
    window: float,
) -> None:  # fmt: skip
    """Wait out the warm-up, then measure CPU, RSS and the delay histogram over the window."""
    start = time.monotonic()
    while time.monotonic() < start + warmup:
        alive(procs)
        time.sleep(1.0)
    before_text = get(md_port, "/metrics")
    before = outcome.warmup_delays = delay_buckets(before_text)
    runs_before = sum(metric_lines(before_text, "monitord_check_runs_total{").values())
    steal_start = steal_ticks()
    for p in procs:
        p.ticks_start = cpu_ticks(p.proc.pid)
    opened = time.monotonic()
    next_sample = opened
    while (now := time.monotonic()) < opened + window:
        alive(procs)
        if now >= next_sample:
            for p in procs:
                p.rss.append(rss_kib(p.proc.pid))
            next_sample += 1.0
        time.sleep(max(0.0, min(next_sample, opened + window) - time.monotonic()))
    for p in procs:
        p.ticks_end = cpu_ticks(p.proc.pid)
        p.rss.append(rss_kib(p.proc.pid))
    outcome.seconds = time.monotonic() - opened
    stolen = steal_ticks() - steal_start
    outcome.steal = stolen / (outcome.seconds * TICKS * (os.cpu_count() or 1))
    after_text = get(md_port, "/metrics")
    after = delay_buckets(after_text)
    outcome.delays = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    outcome.runs = sum(metric_lines(after_text, "monitord_check_runs_total{").values())
    outcome.runs -= runs_before
    outcome.up = sum(metric_lines(after_text, "monitord_check_up{").values())
    outcome.probes_ok = sum(v for _, v in prom_query(prom_port, "sum(probe_success)"))
    prefix = f'prometheus_target_interval_length_seconds{{interval="{INTERVAL_S}s",quantile="'
    for key, value in metric_lines(get(prom_port, "/metrics"), prefix).items():
        outcome.interval_quantiles[key[len(prefix) : -2]] = value


def alive(procs: list[Watched]) -> None:
    """Raise if any process under measurement has exited."""
    for p in procs:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.label} exited with {p.proc.returncode}")


def verdict(met: bool) -> str:
    """How a target's outcome is printed."""
    return "met" if met else "NOT MET"


def ms(seconds: float) -> str:
    """Seconds as milliseconds for printing."""
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.1f}"


def report(outcome: Outcome, md: Watched, reference: list[Watched], target: Watched) -> None:
    """Print the figures, the targets and the verdicts."""
    seconds = outcome.seconds

    def cpu(*procs: Watched) -> float:
        return 100.0 * sum(p.ticks() for p in procs) / TICKS / seconds

    def mib(kib: int) -> float:
        return kib / 1024

    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, host steal {outcome.steal:.1%}"
    )
    print(
        f"{outcome.checks} HTTP checks every {INTERVAL_S} s (timeout {TIMEOUT_S} s), window"
        f" {seconds:.1f} s; monitord runs in the window: {outcome.runs:.0f}"
        f" (expected about {outcome.checks * seconds / INTERVAL_S:.0f}),"
        f" up at the end {outcome.up:.0f}/{outcome.checks};"
        f" Prometheus probe_success {outcome.probes_ok:.0f}/{outcome.checks}"
    )
    print(f"{'':26} {'CPU % core':>10} {'RSS end':>9} {'RSS max':>9}")
    rows = [("monitord", [md]), ("Prometheus + blackbox", reference)]
    rows += [(f"  {p.label}", [p]) for p in reference] + [("(target server)", [target])]
    for label, procs in rows:
        end = sum(p.rss[-1] for p in procs)
        peak = sum(max(p.rss) for p in procs)  # per process, as they need not peak together
        print(f"{label:26} {cpu(*procs):>9.2f}% {mib(end):>5.1f} MiB {mib(peak):>5.1f} MiB")
    for label, buckets in (
        ("in the window", outcome.delays),
        ("in the warm-up", outcome.warmup_delays),
    ):
        count = buckets[-1][1]
        within = dict(buckets)[DELAY_TARGET_S]
        q50, q99 = quantile(0.5, buckets), quantile(0.99, buckets)
        print(
            f"monitord scheduling delay {label}: {count:.0f} runs,"
            f" p50 {ms(q50[0])} ms (bucket {ms(q50[1])} - {ms(q50[2])}),"
            f" p99 {ms(q99[0])} ms (bucket {ms(q99[1])} - {ms(q99[2])}),"
            f" within {ms(DELAY_TARGET_S)} ms: {within / count if count else math.nan:.2%}"
        )
    if outcome.interval_quantiles:
        quantiles = ", ".join(
            f"q{q} {v:.4f} s" for q, v in sorted(outcome.interval_quantiles.items())
        )
        print(f"Prometheus target interval length (reference): {quantiles}")
    print()
    p99 = quantile(0.99, outcome.delays)[0]
    # The target is a bucket bound: the verdict reads the bucket count, not the estimate.
    count, within = outcome.delays[-1][1], dict(outcome.delays)[DELAY_TARGET_S]
    delay_met = count > 0 and within / count >= 0.99
    print(f"p99 delay {ms(p99)} ms, target <= {ms(DELAY_TARGET_S)} ms: {verdict(delay_met)}")
    md_cpu = cpu(md)
    print(
        f"monitord CPU {md_cpu:.2f} % of one core, target <= {CPU_TARGET_PERCENT:g} %:"
        f" {verdict(md_cpu <= CPU_TARGET_PERCENT)}"
        f" (Prometheus + blackbox: {cpu(*reference):.2f} %)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start the four processes, measure, print; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 checks, 20 s + 30 s")
    parser.add_argument("--checks", type=int, help="HTTP checks (default 1000)")
    parser.add_argument("--warmup", type=float, help="seconds before the window (default 90)")
    parser.add_argument("--window", type=float, help="seconds measured (default 120)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    checks = args.checks or (100 if args.quick else 1000)
    if args.serve:
        serve(args.serve, checks)
        return 0
    warmup = args.warmup if args.warmup is not None else (20.0 if args.quick else 90.0)
    window = args.window if args.window is not None else (30.0 if args.quick else 120.0)
    if warmup < INTERVAL_S + 5:
        parser.error(f"--warmup must be at least {INTERVAL_S + 5} s: every check must have run")
    for binary, package in ((PROMETHEUS, "prometheus"), (BLACKBOX, "prometheus-blackbox-exporter")):
        if not Path(binary).exists():
            parser.error(f"{binary} is missing (Debian package {package})")
    # Ctrl-C and SIGTERM both unwind the ExitStack, which stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    outcome = Outcome(checks)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitord-checks-")))
        t_port, md_port, bb_port, prom_port = (free_port() for _ in range(4))
        urls = target_urls(t_port, checks)
        (tmp / "monitord.yaml").write_text(
            monitord_config(urls, f"127.0.0.1:{md_port}", tmp / "state")
        )
        (tmp / "prometheus.yml").write_text(prometheus_config(urls, bb_port))
        (tmp / "blackbox.yml").write_text(BLACKBOX_CONFIG)
        (tmp / "state").mkdir()
        server = stack.enter_context(
            running(
                [sys.executable, __file__, "--serve", str(t_port), "--checks", str(checks)],
                log=tmp / "target.log",
            )
        )
        wait_for_port(t_port, server)
        md = stack.enter_context(
            running(
                [*monitord_command(), "run", "-c", str(tmp / "monitord.yaml")],
                log=tmp / "monitord.log",
            )
        )
        bb = stack.enter_context(
            running(
                [
                    BLACKBOX,
                    f"--config.file={tmp / 'blackbox.yml'}",
                    f"--web.listen-address=127.0.0.1:{bb_port}",
                ],
                log=tmp / "blackbox.log",
            )
        )
        prom = stack.enter_context(
            running(
                [
                    PROMETHEUS,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                log=tmp / "prometheus.log",
            )
        )
        for port, proc in ((md_port, md), (bb_port, bb), (prom_port, prom)):
            wait_for_port(port, proc)
        watched = Watched("monitord", md)
        reference = [Watched("prometheus", prom), Watched("blackbox_exporter", bb)]
        target = Watched("target", server)
        measure([watched, *reference, target], md_port, prom_port, outcome, warmup, window)
    report(outcome, watched, reference, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
