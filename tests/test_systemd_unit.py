"""systemd/monitord.service: systemd accepts it, rates it well, and it keeps what checks need."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import require_program

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "monitord.service"
EXEC_START = "ExecStart=/usr/local/bin/monitord "
MAX_EXPOSURE = 2.0


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze without colours or a pager."""
    program = require_program("systemd-analyze", "systemd")
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"}
    return subprocess.run(
        [program, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Every assignment of a unit file, by section and key, in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: continuation lines are not parsed"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"line {number}: not an assignment: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    """The [Service] section of the unit."""
    return parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]


def last(service: dict[str, list[str]], key: str) -> str | None:
    """The effective value of a single-valued setting (the last assignment wins)."""
    values = service.get(key)
    return values[-1] if values else None


@pytest.mark.integration
def test_systemd_rates_the_exposure_at_most_2() -> None:
    result = run_analyze("security", "--offline=true", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"Overall exposure level for monitord\.service: (\d+(?:\.\d+)?)", result.stdout
    )
    assert match, result.stdout + result.stderr
    exposure = float(match[1])
    assert exposure <= MAX_EXPOSURE, result.stdout


@pytest.mark.integration
def test_systemd_verifies_the_unit_without_a_warning(tmp_path: Path) -> None:
    # verify insists that ExecStart= names an executable; everything else is checked as it is.
    stub = tmp_path / "monitord"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="ascii")
    stub.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(EXEC_START) == 1
    unit = tmp_path / "monitord.service"
    unit.write_text(text.replace(EXEC_START, f"ExecStart={stub} "), encoding="utf-8")

    result = run_analyze("verify", "--man=no", str(unit))
    # verify exits 0 on unknown keys and unparsable values; it only says so on stderr.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("Type", "notify", id="it reports readiness with sd_notify"),
        pytest.param("NotifyAccess", "main", id="only the main process may notify"),
        pytest.param(
            "ExecStart",
            "/usr/local/bin/monitord run -c /etc/monitord/config.yaml",
            id="it runs the installed entry point on the installed config",
        ),
        pytest.param("ExecReload", "/bin/kill -HUP $MAINPID", id="reload is a SIGHUP"),
        pytest.param("WatchdogSec", "30s", id="a 30s watchdog"),
        pytest.param("Restart", "on-failure", id="it restarts after a crash or watchdog kill"),
        pytest.param(
            "RestartPreventExitStatus", "2", id="an invalid config (exit 2) is not retried"
        ),
        pytest.param("TimeoutStopSec", "15s", id="it gets 15s to flush on stop"),
        pytest.param("StateDirectory", "monitord", id="state lives in /var/lib/monitord"),
        pytest.param("ConfigurationDirectory", "monitord", id="config lives in /etc/monitord"),
        pytest.param("DynamicUser", "yes", id="it runs as a transient unprivileged user"),
        pytest.param("CapabilityBoundingSet", "", id="it holds no capabilities"),
        pytest.param("NoNewPrivileges", "yes", id="nothing it runs can gain privileges"),
        pytest.param("ProtectSystem", "strict", id="the host filesystem is read-only"),
        pytest.param("ProtectHome", "read-only", id="home is read-only yet its mounts visible"),
        pytest.param("ProtectProc", "default", id="other processes stay visible"),
        pytest.param("ProcSubset", "all", id="/proc/stat and friends stay readable"),
    ],
)
def test_the_unit_sets(service: dict[str, list[str]], key: str, value: str) -> None:
    assert last(service, key) == value


def test_the_network_and_the_host_stay_reachable(service: dict[str, list[str]]) -> None:
    assert last(service, "PrivateNetwork") in (None, "no"), "checks probe other hosts"
    assert "IPAddressDeny" not in service, "checks and receivers reach arbitrary addresses"
    assert last(service, "PrivateUsers") in (None, "no"), "process owners would all be nobody"
    families = set(" ".join(service["RestrictAddressFamilies"]).split())
    # AF_NETLINK: psutil's interface list uses getifaddrs(3).
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_no_capability_comes_back_in(service: dict[str, list[str]]) -> None:
    assert service["CapabilityBoundingSet"] == [""]
    assert service.get("AmbientCapabilities", [""]) == [""]


def test_the_system_call_filter_starts_from_system_service(service: dict[str, list[str]]) -> None:
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later lines may only take away"


def test_parse_unit_reads_repeated_keys_and_empty_values() -> None:
    text = "[Service]\n# note\nA=1\nA=2\nB=\n\n[Install]\nC = x y\n"
    assert parse_unit(text) == {"Service": {"A": ["1", "2"], "B": [""]}, "Install": {"C": ["x y"]}}
