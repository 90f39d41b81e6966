"""Alert-to-delivery latency and dispatcher throughput, monitord beside Prometheus + Alertmanager.

Run: ``.venv/bin/python bench/notify.py`` (about 5 minutes; ``--quick`` for a smoke run of
20 alerts per side and 1,000 alerts across 100 groups, about 75 s; ``--full`` adds
Prometheus + Alertmanager at a 15 s evaluation interval, 3 minutes more; ``--alerts N``
alerts per side).

**Latency.** ``--alerts`` TCP targets (100) listen on free ports of 127.0.0.1, served by
this script's event loop. A target answers every connection with ``ok\\n`` and closes it;
once *flipped* it answers ``down\\n`` instead. Both sides probe each target every second
with ``query_response: [{expect: "^ok"}]`` (monitord's ``tcp`` check, blackbox_exporter's
``tcp`` prober), so a probe after the flip fails as soon as it reads the answer. The
*breach* is the moment the target wrote its first ``down`` answer: the breaching check
result exists a few microseconds later, when the prober has read it, so the figures
below overstate the latency by that much, never understate it. A webhook recorder (an
aiohttp server in the same loop, the same clock) stamps each notification when its
request arrives. Measured per alert: **arrival - breach**. The targets are flipped one at
a time: the next one after the previous alert arrived (or 10 s more than the evaluation
interval passed: counted lost) and a random pause of 0-1 s, so the flips fall at every
phase of the probe and evaluation schedules and deliveries never overlap. Printed:
median and p99 (the 99th of 100 sorted values, nearest rank), the worst, and for
reference *flip -> arrival*, which adds the wait for the next probe (up to 1 s).

- monitord: ``monitord run -c <temporary config>`` with the 100 ``tcp`` checks
  (``interval: 1s``, ``timeout: 500ms``), ``evaluation_interval: 15s``, the rule file
  ``probe_success == 0`` (group ``targets``, no ``for``), and ``alerting:`` routing every
  alert to a ``webhook_configs`` receiver at the recorder with ``group_by: [alertname,
  check]`` and ``group_wait: 0s``. monitord evaluates a group when a sample its rules
  select arrives, at that sample's timestamp (the check run's start), at most once per
  20 ms arrival window, so the alert's ``startsAt`` is the breaching run's start or, when
  another check's sample arrived in the same window, that later one's: the range of
  *startsAt - breach* is printed (it is not used for the latency).
- Prometheus + Alertmanager (Debian's ``/usr/bin/prometheus``,
  ``/usr/bin/prometheus-alertmanager``, ``/usr/bin/prometheus-blackbox-exporter``):
  Prometheus (``scrape_interval: 1s``, ``scrape_timeout: 900ms``,
  ``evaluation_interval: 1s``) probes the same kind of targets through blackbox_exporter
  (each target relabelled to ``/probe?target=...`` and labelled ``check="t<i>"``), with
  the same rule file, and sends its alerts to an Alertmanager (clustering off) with the
  same route and receiver. ``--full`` repeats it at ``evaluation_interval: 15s``; there a
  target is flipped every 1.5 s (+-0.5 s) without waiting, as one at a time would take
  half an hour; deliveries then overlap but each alert is its own group.

**Throughput.** 10,000 alerts (``alertname="BenchAlert"``, ``group="g<j>"`` for 1,000
groups, ``instance="i<k>"``), routed with ``group_by: [alertname, group]`` and
``group_wait: 0s``, group by group:

- monitord's dispatcher, in a child process (this script with ``--child``, so the
  recorder's work is not counted): :class:`notifiers.dispatch.Dispatcher` is given every
  alert (``put``, in batches of 1,000, the alerts built beforehand) and the groups due
  after each batch are flushed (``due``, ``done``); five runs, alerts per second. Then the
  same alerts, as the rules manager's ``Alert`` objects, through
  :class:`notifiers.pipeline.NotificationPipeline` (``send``, in batches of 1,000), once
  with its SQLite outbox in memory and once in a file of a temporary state directory,
  delivered by its webhook receiver to the recorder: the time until every group's
  notification was in the outbox (written or already delivered), and until the recorder
  (in the parent, stamping with the same clock) has all 1,000.
- Alertmanager (fresh, same route): the alerts posted to ``/api/v2/alerts`` in batches of
  1,000 (``endsAt`` an hour ahead); the time until the last post is answered, and until
  the recorder has one notification for each of the 1,000 groups.

Printed beside each: the alerts in the groups' first notifications, added up (with
``group_wait: 0s`` a group is flushed at its first alert, so what arrives in the same
moment may or may not be in its first notification).

Targets (the issue's): median at most 100 ms and p99 at most 250 ms from the breaching
check result to delivery, at a 15 s evaluation interval. Only 127.0.0.1 and free ports
are used; every process started is stopped, also on Ctrl-C or SIGTERM. Exits 0 whether
or not the targets are met.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from support import free_port

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
MEDIAN_TARGET_S = 0.100
P99_TARGET_S = 0.250
PROBE_INTERVAL_S = 1.0
MONITORD_EVAL_S = 15
PAUSE_MAX_S = 1.0  # the random pause before each flip, one alert at a time
LOST_AFTER_S = 10.0  # an alert not arrived this long after the evaluation interval is lost
OVERLAP_SPACING_S = 1.5  # between flips at a 15 s interval, +- a third of it
BATCH = 1_000
LIMIT_S = 900.0  # the longest a throughput run may take
SEED = 5
RULES = """\
groups:
  - name: targets
    rules:
      - alert: TargetDown
        expr: probe_success == 0
"""


# --- processes ----------------------------------------------------------------------------------


@contextmanager
def running(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """A subprocess with its output in ``log``, stopped with SIGTERM on the way out.

    SIGKILL follows if it has not exited 10 s after SIGTERM.
    """
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    proc = Proc(popen, log)
    try:
        yield proc
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


@dataclass
class Proc:
    """A started process and its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.popen.args!r} exited with {self.popen.returncode}:\n{tail}")


async def wait_until(
    what: str, test: Callable[[], Any], procs: Sequence[Proc], limit_s: float = 60.0
) -> None:
    """Await ``test()`` (sync or async) until it is true; raise if a process dies or after
    ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        try:
            result = test()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
        except (OSError, aiohttp.ClientError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what}: not after {limit_s:.0f} s")


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    """The JSON body of ``GET url``, whatever the status."""
    async with session.get(url, params=params) as response:
        return await response.json(content_type=None)


async def is_ready(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether ``GET url`` answers 200."""
    async with session.get(url) as response:
        return response.status == 200


def monitord_command() -> list[str]:
    """The installed ``monitord`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("monitord")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


# --- the targets and the recorder ---------------------------------------------------------------


@dataclass
class Target:
    """One TCP target: ``ok`` until flipped, then ``down``."""

    name: str
    port: int = 0
    flipped_at: float | None = None
    breach_at: float | None = None  # when it first answered ``down``
    answers: int = 0


class Targets:
    """``n`` TCP targets named ``t0`` .. ``t<n-1>``, each on its own free port."""

    def __init__(self, n: int) -> None:
        self.targets = [Target(f"t{i}") for i in range(n)]
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 for each target."""
        for target in self.targets:
            server = await asyncio.start_server(
                functools.partial(self._answer, target), "127.0.0.1", 0
            )
            target.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def close(self) -> None:
        """Stop listening."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _answer(
        self, target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        del reader
        target.answers += 1
        if target.flipped_at is None:
            writer.write(b"ok\n")
        else:
            if target.breach_at is None:
                target.breach_at = time.time()  # before the prober can have the answer
            writer.write(b"down\n")
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except OSError:
            pass

    def flip(self, target: Target) -> None:
        """From now on, ``target`` answers ``down``."""
        target.flipped_at = time.time()


@dataclass
class Received:
    """One webhook request: when it arrived, and its body."""

    at: float
    body: dict[str, Any]


class Recorder:
    """A webhook receiver that records every notification with its arrival time.

    ``POST /<path>`` is taken for any path, so runs can tell their notifications apart.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.firing: dict[str, tuple[float, dict[str, Any]]] = {}  # check -> first arrival
        self.groups: dict[str, dict[str, float]] = {}  # path -> groupKey -> first arrival
        self.alerts_in_first: dict[str, int] = {}  # path -> alerts in each group's first
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=2**24)
        app.router.add_post("/{path:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def url(self, path: str = "") -> str:
        """The webhook URL for ``path``."""
        return f"http://127.0.0.1:{self.port}/{path}"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def reset(self) -> None:
        """Forget what was received."""
        self.received.clear()
        self.firing.clear()
        self.groups.clear()
        self.alerts_in_first.clear()

    async def _receive(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.json()
        path = request.match_info["path"]
        self.received.append(Received(at, body))
        groups = self.groups.setdefault(path, {})
        if body["groupKey"] not in groups:
            groups[body["groupKey"]] = at
            self.alerts_in_first[path] = self.alerts_in_first.get(path, 0) + len(body["alerts"])
        for alert in body["alerts"]:
            check = alert["labels"].get("check")
            if alert["status"] == "firing" and check and check not in self.firing:
                self.firing[check] = (at, alert)
        self._changed.set()
        return web.Response(text="ok")

    async def wait(self, test: Callable[[], bool], limit_s: float) -> bool:
        """Wait until ``test()`` holds after a notification, at most ``limit_s``; whether it
        holds."""
        deadline = time.monotonic() + limit_s
        while not test():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return test()
        return True


# --- latency --------------------------------------------------------------------------------------


GO_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_time(text: str) -> float:
    """An RFC 3339 time as Go writes it (up to nanoseconds) as epoch seconds."""
    m = GO_TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + zone).timestamp() + float("0." + (m[2] or "0"))


@dataclass(frozen=True, slots=True)
class Sample:
    """One alert's times (epoch seconds); ``arrived`` is None when it never came."""

    flipped: float
    breach: float | None
    arrived: float | None
    starts_at: float | None

    @property
    def latency(self) -> float | None:
        """Breach to arrival."""
        if self.breach is None or self.arrived is None:
            return None
        return self.arrived - self.breach


@dataclass
class Side:
    """What one side measured."""

    label: str
    eval_interval: int
    samples: list[Sample] = field(default_factory=list)
    mode: str = "one at a time"
    notifications: int = 0

    def latencies(self) -> list[float]:
        """Breach to arrival of every alert that arrived, sorted."""
        return sorted(x for s in self.samples if (x := s.latency) is not None)

    def lost(self) -> int:
        """Alerts that never arrived."""
        return sum(1 for s in self.samples if s.latency is None)


async def one_at_a_time(
    targets: Targets, recorder: Recorder, eval_interval: float, rng: random.Random
) -> list[Sample]:
    """Flip each target after a random pause, and wait for its alert before the next."""
    samples = []
    for target in targets.targets:
        await asyncio.sleep(rng.uniform(0.0, PAUSE_MAX_S))
        targets.flip(target)
        await recorder.wait(
            lambda t=target: t.name in recorder.firing,  # type: ignore[misc]
            PROBE_INTERVAL_S + eval_interval + LOST_AFTER_S,
        )
        samples.append(sample_of(target, recorder))
    return samples


async def overlapping(
    targets: Targets, recorder: Recorder, eval_interval: float, rng: random.Random
) -> list[Sample]:
    """Flip a target every ``OVERLAP_SPACING_S`` (+- a third), then wait for every alert."""
    for target in targets.targets:
        spread = OVERLAP_SPACING_S / 3
        await asyncio.sleep(OVERLAP_SPACING_S + rng.uniform(-spread, spread))
        targets.flip(target)
    names = {t.name for t in targets.targets}
    await recorder.wait(
        lambda: names <= recorder.firing.keys(), PROBE_INTERVAL_S + eval_interval + LOST_AFTER_S
    )
    return [sample_of(t, recorder) for t in targets.targets]


def sample_of(target: Target, recorder: Recorder) -> Sample:
    """The times of ``target``'s alert."""
    assert target.flipped_at is not None
    arrival = recorder.firing.get(target.name)
    return Sample(
        flipped=target.flipped_at,
        breach=target.breach_at,
        arrived=arrival[0] if arrival else None,
        starts_at=parse_time(arrival[1]["startsAt"]) if arrival else None,
    )


def monitord_config(targets: Targets, listen: str, state_dir: Path, hook: str) -> str:
    """monitord's config: a ``tcp`` check per target, the rule file, the webhook route."""
    checks = [
        {
            "name": t.name,
            "type": "tcp",
            "address": f"127.0.0.1:{t.port}",
            "interval": f"{PROBE_INTERVAL_S:.0f}s",
            "timeout": "500ms",
            "query_response": [{"expect": "^ok"}],
        }
        for t in targets.targets
    ]
    return json.dumps(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": f"{MONITORD_EVAL_S}s"},
            "server": {"listen": listen},
            "state_dir": str(state_dir),
            "checks": checks,
            "rule_files": ["rules.yml"],
            "alerting": alerting_config(["alertname", "check"], hook),
        },
        indent=1,
    )


def alerting_config(group_by: list[str], hook: str) -> dict[str, Any]:
    """The ``route`` and ``receivers`` both monitord and Alertmanager are given."""
    return {
        "route": {
            "receiver": "hook",
            "group_by": group_by,
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook}]}],
    }


async def monitord_latency(
    n: int, recorder: Recorder, session: aiohttp.ClientSession, tmp: Path, rng: random.Random
) -> Side:
    """monitord's side of the latency run."""
    targets = Targets(n)
    await targets.start()
    try:
        port = free_port()
        folder = tmp / "monitord"
        folder.mkdir()
        (folder / "rules.yml").write_text(RULES)
        config = folder / "monitord.yml"
        config.write_text(
            monitord_config(targets, f"127.0.0.1:{port}", folder / "state", recorder.url())
        )
        argv = [*monitord_command(), "run", "-c", str(config)]
        with running(argv, folder / "monitord.log") as md:
            base = f"http://127.0.0.1:{port}"

            async def all_up() -> bool:
                health = await get_json(session, base + "/api/v1/health")
                return bool(health["data"]["counts"]["OK"] == n)

            await wait_until(f"monitord: {n} checks up", all_up, [md])
            await asyncio.sleep(2.0)  # a few more evaluations before the first flip
            recorder.reset()
            side = Side("monitord", MONITORD_EVAL_S)
            side.samples = await one_at_a_time(targets, recorder, MONITORD_EVAL_S, rng)
            side.notifications = len(recorder.received)
            md.check()
        return side
    finally:
        await targets.close()


BLACKBOX_CONFIG = """\
modules:
  tcp_ok:
    prober: tcp
    timeout: 500ms
    tcp:
      preferred_ip_protocol: ip4
      query_response:
        - expect: "^ok"
"""


def prometheus_config(targets: Targets, blackbox: int, alertmanager: int, eval_s: int) -> str:
    """Prometheus's config: the targets through blackbox_exporter, the rule, the Alertmanager."""
    job = {
        "job_name": "blackbox",
        "metrics_path": "/probe",
        "params": {"module": ["tcp_ok"]},
        "static_configs": [
            {"targets": [f"127.0.0.1:{t.port}"], "labels": {"check": t.name}}
            for t in targets.targets
        ],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{blackbox}"},
        ],
    }
    return json.dumps(
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": f"{eval_s}s",
            },
            "rule_files": ["rules.yml"],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]
            },
            "scrape_configs": [job],
        },
        indent=1,
    )


@contextmanager
def alertmanager(folder: Path, group_by: list[str], hook: str) -> Iterator[tuple[Proc, int]]:
    """A fresh Alertmanager (clustering off) routing to ``hook``; its process and port."""
    folder.mkdir()
    config = folder / "alertmanager.yml"
    config.write_text(json.dumps(alerting_config(group_by, hook), indent=1))
    port = free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with running(argv, folder / "alertmanager.log") as proc:
        yield proc, port


async def prometheus_latency(
    n: int,
    eval_s: int,
    recorder: Recorder,
    session: aiohttp.ClientSession,
    tmp: Path,
    rng: random.Random,
) -> Side:
    """Prometheus + Alertmanager's side of the latency run at ``eval_s``."""
    targets = Targets(n)
    await targets.start()
    try:
        folder = tmp / f"prometheus-{eval_s}s"
        folder.mkdir()
        hook = recorder.url()
        with ExitStack() as stack:
            am, am_port = stack.enter_context(
                alertmanager(folder / "am", ["alertname", "check"], hook)
            )
            bb_port = free_port()
            (folder / "blackbox.yml").write_text(BLACKBOX_CONFIG)
            bb = stack.enter_context(
                running(
                    [
                        BLACKBOX,
                        f"--config.file={folder / 'blackbox.yml'}",
                        f"--web.listen-address=127.0.0.1:{bb_port}",
                    ],
                    folder / "blackbox.log",
                )
            )
            (folder / "rules.yml").write_text(RULES)
            (folder / "prometheus.yml").write_text(
                prometheus_config(targets, bb_port, am_port, eval_s)
            )
            prom_port = free_port()
            prom = stack.enter_context(
                running(
                    [
                        PROMETHEUS,
                        f"--config.file={folder / 'prometheus.yml'}",
                        f"--storage.tsdb.path={folder / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    folder / "prometheus.log",
                )
            )
            procs = [am, bb, prom]
            api = f"http://127.0.0.1:{prom_port}/api/v1/query"

            async def all_up() -> bool:
                body = await get_json(session, api, query="count(probe_success == 1)")
                result = body["data"]["result"]
                return bool(result) and int(result[0]["value"][1]) == n

            async def evaluated() -> bool:
                body = await get_json(session, f"http://127.0.0.1:{prom_port}/api/v1/rules")
                group = body["data"]["groups"][0]
                return not str(group["lastEvaluation"]).startswith("0001-")

            await wait_until(
                "Alertmanager ready",
                lambda: is_ready(session, f"http://127.0.0.1:{am_port}/-/ready"),
                procs,
            )
            await wait_until(f"Prometheus: {n} probes up", all_up, procs)
            await wait_until("Prometheus: rules evaluated", evaluated, procs, eval_s * 3 + 10)
            recorder.reset()
            side = Side("Prometheus + Alertmanager", eval_s)
            if eval_s > PROBE_INTERVAL_S * 5:
                side.mode = f"a flip every {OVERLAP_SPACING_S} s"
                side.samples = await overlapping(targets, recorder, eval_s, rng)
            else:
                side.samples = await one_at_a_time(targets, recorder, eval_s, rng)
            side.notifications = len(recorder.received)
            for proc in procs:
                proc.check()
        return side
    finally:
        await targets.close()


# --- throughput -----------------------------------------------------------------------------------


THROUGHPUT_GROUP_BY = ["alertname", "group"]


def bench_labels(alerts: int, groups: int) -> list[dict[str, str]]:
    """The alerts' labels, group by group (``alerts // groups`` in each)."""
    per_group = alerts // groups
    return [
        {"alertname": "BenchAlert", "group": f"g{j}", "instance": f"i{k}"}
        for j in range(groups)
        for k in range(per_group)
    ]


@dataclass
class Throughput:
    """One way through: seconds until every group was handed on, and until all were delivered."""

    label: str
    alerts: int
    groups: int
    handed_s: float | None  # monitord: in the outbox; Alertmanager: the last POST answered
    delivered_s: float | None  # the recorder has a notification of every group
    alerts_delivered: int  # alerts in the groups' first notifications, added up
    handed_what: str


def dispatcher_run(alerts: int, groups: int) -> dict[str, float]:
    """Put prebuilt alerts into a :class:`~notifiers.dispatch.Dispatcher` in batches, taking
    the due flushes after each batch; seconds and what was flushed."""
    from monitor.model import Labels
    from notifiers.dispatch import Dispatcher, IncomingAlert
    from notifiers.route import Route, RouteConfig

    route = Route.from_config(
        RouteConfig.model_validate(alerting_config(THROUGHPUT_GROUP_BY, "")["route"])
    )
    now = time.time()
    incoming = [
        IncomingAlert(Labels(x), Labels(), now, now + 3600, updated_at=now)
        for x in bench_labels(alerts, groups)
    ]
    dispatcher = Dispatcher(route)
    flushed = flushed_alerts = 0
    started = time.perf_counter()
    for i in range(0, len(incoming), BATCH):
        dispatcher.put(incoming[i : i + BATCH])
        for flush in dispatcher.due():
            flushed += 1
            flushed_alerts += len(flush.alerts)
            flush.done(True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "flushes": flushed, "alerts": flushed_alerts}


async def pipeline_run(
    alerts: int, groups: int, hook: str, db: Path | None
) -> dict[str, float | None]:
    """The alerts through a :class:`~notifiers.pipeline.NotificationPipeline` as the rules
    manager hands them over, in batches; seconds until every group's notification was
    enqueued and until every one was delivered (child-side), and the wall-clock start."""
    from monitor.model import Alert, AlertState, Labels
    from monitor.plugins import PluginRegistry
    from notifiers.base import Notifier
    from notifiers.config import build_alerting_model
    from notifiers.pipeline import NotificationPipeline, PipelineSettings

    kinds = PluginRegistry[Notifier[Any]]("monitord.notifiers", Notifier)
    model = build_alerting_model(kinds.config_models())
    config = model.model_validate(alerting_config(THROUGHPUT_GROUP_BY, hook))
    pipeline = NotificationPipeline(kinds, db)
    await pipeline.start(PipelineSettings(alerting=config))
    try:
        assert pipeline.outbox is not None and pipeline.deliverer is not None
        outbox, stats = pipeline.outbox, pipeline.deliverer.stats
        now_ms = int(time.time() * 1000)
        rule_alerts = [
            Alert(
                labels=Labels(x),
                annotations=Labels(),
                state=AlertState.FIRING,
                active_at=now_ms,
                value=1.0,
                fired_at=now_ms,
                valid_until=now_ms + 3_600_000,
            )
            for x in bench_labels(alerts, groups)
        ]

        def delivered() -> int:
            return stats.count("hook", "webhook", "delivered")

        wall = time.time()
        started = time.perf_counter()
        for i in range(0, len(rule_alerts), BATCH):
            pipeline.send(rule_alerts[i : i + BATCH])
            await asyncio.sleep(0)
        complete = await polled(lambda: outbox.count() + delivered() >= groups, 0.001, LIMIT_S)
        enqueued = time.perf_counter() - started if complete else None
        await polled(lambda: delivered() >= groups, 0.005, LIMIT_S)
        done = time.perf_counter() - started
        return {
            "wall": wall,
            "enqueued": enqueued,
            "delivered": done,
            "count": delivered(),
            "outcomes": sum(stats.outcomes.values()),
        }
    finally:
        await pipeline.stop()


def child(spec_path: Path) -> int:
    """The monitord throughput runs (``--child``): figures as JSON next to the spec."""
    spec = json.loads(spec_path.read_text())
    alerts, groups = spec["alerts"], spec["groups"]
    result: dict[str, Any] = {"dispatcher": [dispatcher_run(alerts, groups) for _ in range(5)]}
    result["pipeline"] = {
        "memory": asyncio.run(pipeline_run(alerts, groups, spec["hooks"]["memory"], None)),
        "file": asyncio.run(
            pipeline_run(alerts, groups, spec["hooks"]["file"], Path(spec["state"]) / "md.db")
        ),
    }
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


async def monitord_throughput(
    alerts: int, groups: int, recorder: Recorder, tmp: Path
) -> tuple[list[float], list[Throughput]]:
    """The dispatcher's seconds per run and the pipeline's runs, from the child."""
    folder = tmp / "throughput"
    (folder / "state").mkdir(parents=True)
    spec = {
        "alerts": alerts,
        "groups": groups,
        "hooks": {"memory": recorder.url("memory"), "file": recorder.url("file")},
        "state": str(folder / "state"),
        "result": str(folder / "result.json"),
    }
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, str(SCRIPT), "--child", str(spec_path)]
    with running(argv, folder / "child.log", env=env) as proc:
        if await asyncio.to_thread(proc.popen.wait) != 0:
            proc.check()
    result = json.loads((folder / "result.json").read_text())
    runs = []
    for store, what in (("memory", "in memory"), ("file", "in a file")):
        r = result["pipeline"][store]
        arrivals = recorder.groups.get(store, {})
        runs.append(
            Throughput(
                label=f"monitord pipeline, outbox {what}",
                alerts=alerts,
                groups=groups,
                handed_s=r["enqueued"],
                delivered_s=max(arrivals.values()) - r["wall"] if len(arrivals) == groups else None,
                alerts_delivered=recorder.alerts_in_first.get(store, 0),
                handed_what="in the outbox",
            )
        )
    return [d["seconds"] for d in result["dispatcher"]], runs


async def alertmanager_throughput(
    alerts: int, groups: int, recorder: Recorder, session: aiohttp.ClientSession, tmp: Path
) -> Throughput:
    """Alertmanager's ingestion of the alerts by its API and its deliveries of every group."""
    with alertmanager(tmp / "am-throughput", THROUGHPUT_GROUP_BY, recorder.url("am")) as (am, port):
        base = f"http://127.0.0.1:{port}"
        await wait_until("Alertmanager ready", lambda: is_ready(session, base + "/-/ready"), [am])
        now = datetime.now(UTC)
        starts, ends = now.isoformat(), (now + timedelta(hours=1)).isoformat()
        bodies = [
            json.dumps(
                [
                    {"labels": x, "annotations": {}, "startsAt": starts, "endsAt": ends}
                    for x in batch
                ]
            )
            for batch in chunks(bench_labels(alerts, groups), BATCH)
        ]
        wall = time.time()
        started = time.perf_counter()
        for body in bodies:
            async with session.post(
                base + "/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"Alertmanager answered {response.status}")
        posted = time.perf_counter() - started
        arrivals = recorder.groups.setdefault("am", {})
        await recorder.wait(lambda: len(arrivals) >= groups, LIMIT_S)
        am.check()
    return Throughput(
        label="Alertmanager",
        alerts=alerts,
        groups=groups,
        handed_s=posted,
        delivered_s=max(arrivals.values()) - wall if len(arrivals) == groups else None,
        alerts_delivered=recorder.alerts_in_first.get("am", 0),
        handed_what="posted",
    )


async def polled(test: Callable[[], bool], every_s: float, limit_s: float) -> bool:
    """Check ``test()`` every ``every_s`` until it holds, at most ``limit_s``; whether it holds."""
    deadline = time.monotonic() + limit_s
    while True:
        if test():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """What the command line asked for."""

    alerts: int
    throughput_alerts: int
    throughput_groups: int
    full: bool


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (the 99th of 100 for 0.99)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds, right-aligned."""
    return f"{'-':>9}" if seconds is None else f"{seconds * 1000:>9,.1f}"


def verdict(met: bool) -> str:
    """How a target's outcome is printed."""
    return "met" if met else "NOT MET"


def report(
    run: Run,
    code: str,
    sides: list[Side],
    dispatcher_s: list[float],
    throughputs: list[Throughput],
    steal: float,
    total_s: float,
) -> None:
    """Print the figures beside each other, the targets and the verdict."""
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {code}, host steal {steal:.1%}"
    )
    print(
        f"\nLatency, breach (the target's first failing answer) -> webhook arrival, "
        f"{run.alerts} alerts per side, probes every {PROBE_INTERVAL_S:.0f} s, group_wait 0s:"
    )
    print(
        f"{'':42} {'median':>9} {'p99':>9} {'max':>9} {'lost':>5}   {'flip->arrival':>13}  "
        f"{'startsAt-breach':>22}"
    )
    for side in sides:
        lat = side.latencies()
        flips = sorted(s.arrived - s.flipped for s in side.samples if s.arrived is not None)
        starts = sorted(
            s.starts_at - s.breach
            for s in side.samples
            if s.starts_at is not None and s.breach is not None
        )
        name = f"{side.label}, evaluation {side.eval_interval} s"
        if not lat:
            print(f"{name:42} no alert arrived ({side.lost()} lost)")
            continue
        print(
            f"{name:42} {ms(statistics.median(lat))} {ms(percentile(lat, 0.99))} "
            f"{ms(lat[-1])} {side.lost():>5}   {ms(statistics.median(flips))} median  "
            f"{ms(starts[0])} .. {ms(starts[-1]).strip()} ms"
        )
        print(
            f"{'':42} ({side.mode}; {side.notifications} notifications received for "
            f"{len(lat)} alerts)"
        )
    md = sides[0].latencies()
    if md and sides[0].lost() == 0:
        median, p99 = statistics.median(md), percentile(md, 0.99)
        print(
            f"target (monitord, evaluation {MONITORD_EVAL_S} s): median <= "
            f"{MEDIAN_TARGET_S * 1000:.0f} ms: {verdict(median <= MEDIAN_TARGET_S)} "
            f"({median * 1000:.1f} ms); p99 <= {P99_TARGET_S * 1000:.0f} ms: "
            f"{verdict(p99 <= P99_TARGET_S)} ({p99 * 1000:.1f} ms)"
        )
    else:
        print("target: NOT MET (monitord lost alerts or delivered none)")
    print(
        f"\nThroughput, {run.throughput_alerts:,} alerts across {run.throughput_groups:,} groups "
        f"(group_wait 0s, batches of {BATCH:,}):"
    )
    alerts = run.throughput_alerts
    median_s = statistics.median(dispatcher_s)
    print(
        f"monitord Dispatcher.put + due + done, alerts prebuilt: median "
        f"{median_s * 1000:,.1f} ms ({alerts / median_s:,.0f} alerts/s), best "
        f"{min(dispatcher_s) * 1000:,.1f} ms ({alerts / min(dispatcher_s):,.0f} alerts/s), "
        f"{len(dispatcher_s)} runs"
    )
    print(f"{'':36} {'handed on':>22} {'all groups delivered':>28} {'alerts in them':>15}")
    for t in throughputs:
        handed = (
            f"{t.handed_s * 1000:,.0f} ms {t.handed_what}"
            if t.handed_s is not None
            else f"not all {t.handed_what}"
        )
        if t.delivered_s is None:
            delivered = "not all (timeout)"
        else:
            delivered = f"{t.delivered_s * 1000:,.0f} ms ({t.alerts / t.delivered_s:,.0f} alerts/s)"
        print(f"{t.label:36} {handed:>22} {delivered:>28} {t.alerts_delivered:>15,}")
    print(f"total run time: {total_s:.0f} s")


def code_state() -> str:
    """The commit measured, and which files of monitor/, rules/, notifiers/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "--",
                "monitor",
                "rules",
                "notifiers",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    files = [line[3:] for line in changed if line.strip()]
    return f"commit {head}" + (f" with changes to {', '.join(files)}" if files else "")


def steal_ticks() -> tuple[int, int]:
    """(stolen, total) clock ticks of all CPUs so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


async def run_all(run: Run) -> None:
    """Both sides' latency, then throughput; then the report."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.monotonic()
    code = code_state()  # what the processes started below run
    stolen0, total0 = steal_ticks()
    rng = random.Random(SEED)
    recorder = Recorder()
    await recorder.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-notify-") as name:
            tmp = Path(name)
            async with aiohttp.ClientSession() as session:
                print(f"monitord: {run.alerts} alerts, one at a time", flush=True)
                sides = [await monitord_latency(run.alerts, recorder, session, tmp, rng)]
                print(f"Prometheus + Alertmanager at 1 s: {run.alerts} alerts", flush=True)
                sides.append(await prometheus_latency(run.alerts, 1, recorder, session, tmp, rng))
                if run.full:
                    print(f"Prometheus + Alertmanager at 15 s: {run.alerts} alerts", flush=True)
                    sides.append(
                        await prometheus_latency(run.alerts, 15, recorder, session, tmp, rng)
                    )
                recorder.reset()
                print("throughput: monitord", flush=True)
                dispatcher_s, throughputs = await monitord_throughput(
                    run.throughput_alerts, run.throughput_groups, recorder, tmp
                )
                print("throughput: Alertmanager", flush=True)
                throughputs.append(
                    await alertmanager_throughput(
                        run.throughput_alerts, run.throughput_groups, recorder, session, tmp
                    )
                )
    finally:
        await recorder.close()
    stolen1, total1 = steal_ticks()
    steal = (stolen1 - stolen0) / max(1, total1 - total0)
    report(run, code, sides, dispatcher_s, throughputs, steal, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides and print the figures; 0 even when the targets are missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 alerts; 1,000 across 100 groups")
    parser.add_argument("--full", action="store_true", help="also Prometheus at 15 s")
    parser.add_argument("--alerts", type=int, help="alerts per side for the latency (100)")
    parser.add_argument("--child", metavar="SPEC", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    run = Run(
        alerts=args.alerts or (20 if args.quick else 100),
        throughput_alerts=1_000 if args.quick else 10_000,
        throughput_groups=100 if args.quick else 1_000,
        full=args.full,
    )
    if run.alerts <= 0:
        parser.error("--alerts must be positive")
    for tool in (PROMETHEUS, ALERTMANAGER, BLACKBOX):
        if not Path(tool).exists():
            parser.error(
                f"{tool} is missing: apt-get install prometheus prometheus-alertmanager "
                "prometheus-blackbox-exporter"
            )
    try:
        asyncio.run(run_all(run))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
