"""The ``command`` check: runs a Nagios/Monitoring Plugins plugin through the plugin API.

- Exit code 0/1/2/3 is OK/WARNING/CRITICAL/UNKNOWN; any other code, or death by a
  signal, is UNKNOWN.
- The first line of stdout (before ``|``) is the message; with no stdout, the first line
  of stderr is shown instead. Perfdata is read by :mod:`checks.perfdata`.
- The argv runs without a shell; ``shell: true`` runs the one string with ``/bin/sh -c``.
- The environment holds only the variables named in ``inherit_env`` (taken from
  monitord's own) and those of ``env``: nothing else of monitord's reaches the plugin.
- The plugin runs in a new session (its own process group). At the timeout the whole
  group is killed with SIGKILL, children included; when the run ends, anything the plugin
  left in its group is killed too, so no plugin outlives its run.
- stdout and stderr are each read up to ``max_output_bytes``; the rest is read and
  dropped, so a chatty plugin neither blocks nor fills memory.
- A plugin that cannot start (missing, not executable) is UNKNOWN with the reason.

Samples, each with a ``check`` label: ``monitord_command_perfdata{label,uom}`` in base
units (see :mod:`checks.perfdata`), and ``_warning``/``_critical`` when that threshold is a
plain upper bound (``10``, ``0:10``, ``~:10``), ``_min``/``_max`` when given. Other ranges
(``10:``, ``10:20``, ``@10:20``) cannot be said with one number and are not exported.
``monitord_command_exit_code`` (negative: the signal that killed the plugin) and
``monitord_command_perfdata_invalid`` (items that do not follow the grammar, or repeat a
label) complete them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from checks.base import Check, CheckConfig
from checks.perfdata import PerfData, parse_output, parse_perfdata
from monitor.log import get_logger
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status

__all__ = ["DEFAULT_INHERIT_ENV", "FAMILIES", "CommandCheck", "CommandConfig", "PluginRun"]

log = get_logger("checks.command")

DEFAULT_INHERIT_ENV: Final = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_TIMEOUT: Final = 10.0  # when the check is built without the config loader's default

FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "monitord_command_perfdata": MetricMetadata(
        MetricType.GAUGE, "A plugin's performance data value, in base units."
    ),
    "monitord_command_perfdata_warning": MetricMetadata(
        MetricType.GAUGE, "The warning threshold of a perfdata value, when it is an upper bound."
    ),
    "monitord_command_perfdata_critical": MetricMetadata(
        MetricType.GAUGE, "The critical threshold of a perfdata value, when it is an upper bound."
    ),
    "monitord_command_perfdata_min": MetricMetadata(
        MetricType.GAUGE, "The smallest value a perfdata value can take."
    ),
    "monitord_command_perfdata_max": MetricMetadata(
        MetricType.GAUGE, "The largest value a perfdata value can take."
    ),
    "monitord_command_perfdata_invalid": MetricMetadata(
        MetricType.GAUGE, "Perfdata items of the last run that could not be read."
    ),
    "monitord_command_exit_code": MetricMetadata(
        MetricType.GAUGE, "The plugin's exit code; minus the signal number if a signal ended it."
    ),
}

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class CommandConfig(CheckConfig):
    """Options of the ``command`` check: the plugin to run and how."""

    type: Literal["command"]
    command: list[str] = Field(
        min_length=1, description="argv of the plugin; with shell: true, one shell command"
    )
    shell: bool = Field(default=False, description="run the command with /bin/sh -c")
    env: dict[EnvName, str] = Field(
        default_factory=dict, description="environment variables set for the plugin"
    )
    inherit_env: list[EnvName] = Field(
        default_factory=lambda: list(DEFAULT_INHERIT_ENV),
        description="variables of monitord's environment passed on to the plugin",
    )
    max_output_bytes: int = Field(
        default=65536, gt=0, description="read at most this much of stdout (and of stderr)"
    )

    @model_validator(mode="after")
    def _shell_takes_one_string(self) -> Self:
        if self.shell and len(self.command) != 1:
            raise ValueError("with shell: true, command must be one string (the shell command)")
        if not self.command[0]:
            raise ValueError("command[0] must not be empty")
        return self


@dataclass(frozen=True, slots=True)
class PluginRun:
    """What one run of a plugin gave: exit code (minus the signal that ended it), output."""

    returncode: int
    stdout: str
    stderr: str
    truncated: bool


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if len(chunk) > room:
            truncated = True
        kept += chunk[: max(room, 0)]
    return bytes(kept), truncated


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_plugin(argv: list[str], env: Mapping[str, str], cap: int) -> PluginRun:
    """Run ``argv`` in its own process group and read its output until it ends.

    However the run ends (finished, cancelled, cut by the caller's ``asyncio.timeout``),
    the plugin's process group is killed on the way out. ``OSError`` if it cannot start.
    A child that keeps the pipes open keeps the run going, as the plugin itself would.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pgid = proc.pid  # the session leader's pid is its group's id
    try:
        (out, out_cut), (err, err_cut) = await asyncio.gather(
            _read_capped(proc.stdout, cap), _read_capped(proc.stderr, cap)
        )
        returncode = await proc.wait()
    finally:
        _kill_group(pgid)
        if proc.returncode is None:
            await proc.wait()  # it was killed, so this is quick
    return PluginRun(
        returncode,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
        out_cut or err_cut,
    )


class CommandCheck(Check[CommandConfig]):
    """Runs a Monitoring Plugins plugin and reports its status, message and perfdata."""

    config_model = CommandConfig

    def __init__(self, config: CommandConfig, *, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        source = os.environ if environ is None else environ
        inherited = {name: source[name] for name in config.inherit_env if name in source}
        self._env = {**inherited, **config.env}
        self._argv = ["/bin/sh", "-c", config.command[0]] if config.shell else list(config.command)

    @property
    def _timeout(self) -> float:
        # A little under the scheduler's own cut, so that this check kills the plugin and
        # says so before the scheduler cancels the run.
        timeout = self.config.timeout if self.config.timeout is not None else DEFAULT_TIMEOUT
        return max(timeout - min(0.5, timeout * 0.05), timeout * 0.5)

    async def run(self) -> CheckResult:
        """Run the plugin once and translate what it said."""
        timeout = self._timeout
        try:
            async with asyncio.timeout(timeout):
                result = await run_plugin(self._argv, self._env, self.config.max_output_bytes)
        except TimeoutError:
            return CheckResult(
                Status.CRITICAL, f"plugin timed out after {timeout:g}s and was killed"
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return CheckResult(Status.UNKNOWN, f"cannot start {self._argv[0]}: {reason}")
        own = Labels.of(check=self.name)
        output = parse_output(result.stdout)
        message = output.message
        if not message:
            first_err = result.stderr.strip().splitlines()[:1]
            message = "(no output on stdout)" + (f" stderr: {first_err[0]}" if first_err else "")
        code = result.returncode
        if code < 0:
            status = Status.UNKNOWN
            message = f"plugin killed by {_signal_name(-code)}: {message}"
        elif code > 3:
            status = Status.UNKNOWN
            message = f"plugin exited with code {code}: {message}"
        else:
            status = Status(code)
        if result.truncated:
            message += f" [output cut at {self.config.max_output_bytes} bytes]"
        items, errors = parse_perfdata(output.perfdata)
        samples, duplicates = _perfdata_samples(items, own)
        for error in errors:
            log.debug("check %s: %s", self.name, error)
        samples.append(Sample("monitord_command_exit_code", own, float(code)))
        samples.append(
            Sample("monitord_command_perfdata_invalid", own, float(len(errors) + duplicates))
        )
        return CheckResult(status, message, tuple(samples), metadata=FAMILIES)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _perfdata_samples(items: list[PerfData], own: Labels) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    seen: set[str] = set()
    duplicates = 0
    for item in items:
        if item.label in seen:
            duplicates += 1
            continue
        seen.add(item.label)
        labels = own.merge({"label": item.label, **({"uom": item.uom} if item.uom else {})})
        samples.append(Sample("monitord_command_perfdata", labels, item.value))
        for suffix, threshold in (("warning", item.warning), ("critical", item.critical)):
            bound = None if threshold is None else threshold.upper_bound
            if bound is not None:
                samples.append(Sample(f"monitord_command_perfdata_{suffix}", labels, bound))
        for suffix, number in (("min", item.min), ("max", item.max)):
            if number is not None and not math.isnan(number):
                samples.append(Sample(f"monitord_command_perfdata_{suffix}", labels, number))
    return samples, duplicates
