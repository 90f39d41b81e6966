"""A third-party check kind: its own package, installed with pip, run by the daemon from config.

The package is ``tests/plugins/monitord-example-check``. It is installed offline into
a throwaway virtualenv that sees this one's packages (through a ``.pth`` file), so
the project's virtualenv is never changed; monitord is then started from there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.daemon import check_registry
from tests.support import REQUIRE_INTEGRATION, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tests" / "plugins" / "monitord-example-check"

CONFIG = """
server:
  listen: 127.0.0.1:{port}
state_dir: {state}
checks:
  - name: answer
    type: example
    path: {path}
    warning_above: 5
    interval: 1s
"""


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture
def plugin_venv(tmp_path: Path) -> Iterator[Path]:
    """A virtualenv with the example package installed over this one's packages; removed after."""
    if importlib.util.find_spec("wheel") is None:
        reason = "pip needs the wheel package to build a setuptools project offline"
        if REQUIRE_INTEGRATION:
            pytest.fail(f"MONITORD_REQUIRE_INTEGRATION=1 but {reason}")
        pytest.skip(reason)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run(
        [python_of(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir, not a bare path, so this venv's own .pth files (the editable
    # install of monitord) are processed too.
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "monitord-parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    source = tmp_path / "src"  # setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(PACKAGE, source)
    install = subprocess.run(
        [
            python_of(venv),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    yield venv
    shutil.rmtree(venv)


def get(port: int, path: str) -> tuple[int, Any]:
    """Status and body (parsed if JSON) of a GET; connection errors give status 0."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status, content_type, raw = (
                response.status,
                response.headers["Content-Type"],
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        status, content_type, raw = exc.code, exc.headers["Content-Type"], exc.read()
    except OSError:
        return 0, None
    body = raw.decode()
    return status, json.loads(body) if content_type.startswith("application/json") else body


def test_the_daemon_runs_a_check_kind_from_an_installed_package(
    plugin_venv: Path, tmp_path: Path
) -> None:
    value = tmp_path / "value.txt"
    value.write_text("3\n")
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=port, state=tmp_path / "state", path=value))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    log = tmp_path / "monitord.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [python_of(plugin_venv), "-m", "monitor.cli", "run", "-c", str(config)],
            cwd=tmp_path,  # monitor, checks and the plugin come from the venv, not the work tree
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def health() -> tuple[int, Any]:
            return get(port, "/api/v1/health")

        def answer() -> dict[str, Any]:
            status, body = health()
            assert status in (0, 200, 503), (status, body)
            return body["data"]["checks"][0] if status else {}

        wait_for(lambda: answer().get("status") == "OK", timeout=20)
        _, metrics = get(port, "/metrics")
        assert f'example_value{{check="answer",path="{value}"}} 3.0' in metrics.splitlines()
        assert 'monitord_check_up{check="answer",kind="example"} 1.0' in metrics.splitlines()
        status, body = health()
        assert (status, body["data"]["status"]) == (200, "healthy")
        times = ("lastRun", "nextRun", "lastDuration")
        checked = answer()
        last_run, next_run = (
            datetime.fromisoformat(checked[k].replace("Z", "+00:00")) for k in times[:2]
        )
        assert 0.5 <= (next_run - last_run).total_seconds() <= 1.5  # the interval is 1 s
        assert {k: v for k, v in checked.items() if k not in times} == {
            "name": "answer",
            "kind": "example",
            "status": "OK",
            "message": "value is 3",
            "interval": 1.0,
        }

        value.write_text("7\n")
        wait_for(lambda: answer().get("status") == "WARNING", timeout=10)
        assert health()[0] == 200 and health()[1]["data"]["status"] == "degraded"

        value.write_text("seven\n")
        wait_for(lambda: answer().get("status") == "UNKNOWN", timeout=10)
        status, body = health()
        assert (status, body["data"]["status"]) == (503, "unhealthy")
        assert answer()["message"] == (
            "check failed: ValueError: could not convert string to float: 'seven\\n'"
        )

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Traceback" not in log.read_text()


def test_without_the_package_the_kind_is_unknown_here(tmp_path: Path) -> None:
    """The kind comes from the installed package alone: this virtualenv does not know it."""
    assert "example" not in check_registry().names()
    assert importlib.util.find_spec("monitord_example_check") is None
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=free_port(), state=tmp_path, path=tmp_path / "v"))
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "checks[0].type: unknown check type 'example'" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("pyproject.toml", id="the README shows the package's pyproject.toml"),
        pytest.param("monitord_example_check.py", id="the README shows the package's module"),
    ],
)
def test_the_readme_shows_the_example_package_as_it_is(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert (PACKAGE / name).read_text() in readme
