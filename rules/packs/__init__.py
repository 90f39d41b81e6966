"""The rule packs shipped with monitord: ready Prometheus rule files, found by name.

Each pack is one rule file in this package, with its unit tests in promtool's format
in ``tests/<name>_test.yml`` beside it. The config names packs (``rule_packs: [host]``)
instead of paths, because where a package is installed differs from one machine to
the next; :func:`rule_packs` resolves the names to the installed files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

__all__ = ["PACKS", "RulePack", "rule_pack_files", "rule_packs"]

PACKS: Mapping[str, str] = {
    "host": "the machine on node_exporter's names: filesystems, memory, swap, CPU, load, "
    "clock, network, disks",
    "checks": "monitord's checks: down, in WARNING, flapping, slow",
    "monitord": "monitord itself: the always-firing Watchdog, and (in the Prometheus that "
    "scrapes monitord) rule failures, notification failures, failed reloads, a full store",
    "postgres": "PostgreSQL on postgres_exporter's names: down, connections, replication lag, "
    "deadlocks, cache hit ratio",
    "mysql": "MySQL and MariaDB on mysqld_exporter's names: down, connections, replication "
    "threads and lag, deadlocks, buffer pool hit ratio",
    "redis": "Redis on redis_exporter's names: down, clients, lost replicas, memory near "
    "maxmemory, hit ratio",
}
"""Every shipped pack by name, with what it watches."""


@dataclass(frozen=True, slots=True)
class RulePack:
    """One shipped pack: its name, what it watches, its rule file and its unit-test file."""

    name: str
    description: str
    path: Path
    tests: Path


def rule_packs() -> dict[str, RulePack]:
    """The shipped packs by name, resolved to the installed files."""
    root = files(__name__)
    if not isinstance(root, Path):  # a zip import: rule files must be real files
        raise LookupError(f"the rule packs of {__name__} are not files on disk: {root}")
    return {
        name: RulePack(name, description, root / f"{name}.yml", root / "tests" / f"{name}_test.yml")
        for name, description in PACKS.items()
    }


def rule_pack_files() -> dict[str, Path]:
    """The shipped packs' rule files by pack name: what the config's ``rule_packs`` accepts."""
    return {name: pack.path for name, pack in rule_packs().items()}
