"""The ``process`` check: how many processes match, and how much CPU and memory each uses.

Monit's ``check process`` and Nagios' check_procs: processes are matched by name, exe,
command-line regex, user or pidfile (every criterion given must hold), then judged on their
count (min/max) and on each one's CPU (percent of one core since the previous run; over its
lifetime on the first run) and resident memory. Per matched process the samples carry the
names client libraries give a process's own figures (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_start_time_seconds``) under ``monitord_``,
labelled with ``pid`` and ``name``; ``monitord_process_count`` is the number matched.
psutil is called in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal, Self

import psutil
from pydantic import AfterValidator, ByteSize, Field, model_validator

from checks.base import Check, CheckConfig
from checks.thresholds import Limits
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel

__all__ = ["CountLimits", "MemoryLimits", "ProcessCheck", "ProcessConfig"]


def _valid_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


class CountLimits(ConfigModel):
    """How many matching processes are fine: below ``min_*`` or above ``max_*`` is not."""

    min_warning: int | None = None
    min_critical: int | None = 1
    max_warning: int | None = None
    max_critical: int | None = None

    def status(self, count: int) -> Status:
        """OK, WARNING or CRITICAL for ``count`` processes."""
        if (self.min_critical is not None and count < self.min_critical) or (
            self.max_critical is not None and count > self.max_critical
        ):
            return Status.CRITICAL
        if (self.min_warning is not None and count < self.min_warning) or (
            self.max_warning is not None and count > self.max_warning
        ):
            return Status.WARNING
        return Status.OK


class MemoryLimits(ConfigModel):
    """Resident memory of any one process (``500MB``, ``1GiB`` or bytes)."""

    warning: ByteSize | None = None
    critical: ByteSize | None = None


class ProcessConfig(CheckConfig):
    """Options of the ``process`` check."""

    type: Literal["process"]
    match_name: str | None = Field(default=None, description="the process name (comm), exactly")
    match_exe: str | None = Field(default=None, description="the executable's path, exactly")
    match_cmdline: Annotated[str | None, AfterValidator(_valid_regex)] = Field(
        default=None, description="regex searched in the command line joined by spaces"
    )
    match_user: str | None = Field(default=None, description="the owner's user name")
    pidfile: Path | None = Field(default=None, description="the process whose pid it holds")
    count: CountLimits = Field(default_factory=CountLimits)
    cpu_percent: Limits = Field(default_factory=Limits, description="of one core, per process")
    memory: MemoryLimits = Field(default_factory=MemoryLimits)

    @model_validator(mode="after")
    def _some_criterion(self) -> Self:
        criteria = (self.match_name, self.match_exe, self.match_cmdline, self.match_user)
        if all(c is None for c in criteria) and self.pidfile is None:
            raise ValueError(
                "set at least one of match_name, match_exe, match_cmdline, match_user, pidfile"
            )
        return self


_FAMILIES: Final = {
    "monitord_process_count": (MetricType.GAUGE, "How many processes match."),
    "monitord_process_cpu_seconds_total": (MetricType.COUNTER, "CPU time used by the process."),
    "monitord_process_resident_memory_bytes": (MetricType.GAUGE, "Resident memory size."),
    "monitord_process_start_time_seconds": (MetricType.GAUGE, "When the process started."),
}
METADATA: Final = {n: MetricMetadata(t, h) for n, (t, h) in _FAMILIES.items()}


@dataclass(frozen=True, slots=True)
class _Seen:
    pid: int
    name: str
    start: float
    cpu: float
    rss: int
    cpu_percent: float


class ProcessCheck(Check[ProcessConfig]):
    """Finds the matching processes and judges count, CPU and memory; the worst decides."""

    config_model = ProcessConfig

    def __init__(self, config: ProcessConfig) -> None:
        super().__init__(config)
        self._pattern = re.compile(config.match_cmdline) if config.match_cmdline else None
        self._previous: dict[tuple[int, float], tuple[float, float]] = {}

    async def run(self) -> CheckResult:
        """One look at the process table."""
        return await asyncio.to_thread(self._look)

    def _candidates(self) -> list[psutil.Process] | str:
        if self.config.pidfile is None:
            return list(psutil.process_iter())
        try:
            pid = int(self.config.pidfile.read_text().split()[0])
        except FileNotFoundError:
            return []
        except (OSError, ValueError, IndexError) as exc:
            return f"cannot read a pid from {self.config.pidfile}: {exc}"
        try:
            return [psutil.Process(pid)]
        except psutil.NoSuchProcess:
            return []

    def _matches(self, proc: psutil.Process) -> bool:
        c = self.config
        if proc.pid == os.getpid():
            return False  # as pgrep leaves itself out
        if c.match_name is not None and proc.name() != c.match_name:
            return False
        if c.match_exe is not None and proc.exe() != c.match_exe:
            return False
        if c.match_user is not None and proc.username() != c.match_user:
            return False
        return self._pattern is None or self._pattern.search(" ".join(proc.cmdline())) is not None

    def _look(self) -> CheckResult:
        candidates = self._candidates()
        if isinstance(candidates, str):
            return CheckResult(Status.UNKNOWN, candidates)
        now = time.time()
        seen: list[_Seen] = []
        previous, self._previous = self._previous, {}
        for proc in candidates:
            try:
                with proc.oneshot():
                    if not self._matches(proc):
                        continue
                    times = proc.cpu_times()
                    cpu = times.user + times.system
                    start = proc.create_time()
                    rss = proc.memory_info().rss
                    name = proc.name()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                continue  # another user's process whose exe we may not read cannot match
            key = (proc.pid, start)
            before_cpu, before_time = previous.get(key, (0.0, start))
            elapsed = now - before_time
            percent = 100 * (cpu - before_cpu) / elapsed if elapsed > 0 else 0.0
            self._previous[key] = (cpu, now)
            seen.append(_Seen(proc.pid, name, start, cpu, rss, percent))
        return self._judge(seen)

    def _judge(self, seen: list[_Seen]) -> CheckResult:
        samples = [Sample("monitord_process_count", value=float(len(seen)))]
        for p in sorted(seen, key=lambda p: p.pid):
            labels = Labels.of(pid=str(p.pid), name=p.name)
            samples += [
                Sample("monitord_process_cpu_seconds_total", labels, p.cpu),
                Sample("monitord_process_resident_memory_bytes", labels, float(p.rss)),
                Sample("monitord_process_start_time_seconds", labels, p.start),
            ]
        count = len(seen)
        findings = [(self.config.count.status(count), f"{count} process{'es' * (count != 1)}")]
        memory = Limits(warning=self.config.memory.warning, critical=self.config.memory.critical)
        for p in seen:
            status = self.config.cpu_percent.status(p.cpu_percent)
            if status is not Status.OK:
                findings.append((status, f"pid {p.pid} uses {p.cpu_percent:.0f}% CPU"))
            status = memory.status(p.rss)
            if status is not Status.OK:
                findings.append((status, f"pid {p.pid} uses {p.rss / 2**20:.0f} MiB"))
        status = max(s for s, _ in findings)
        shown = [text for s, text in findings if s is status or text is findings[0][1]]
        return CheckResult(status, ", ".join(shown), tuple(samples), metadata=METADATA)
