"""The ``monitord`` command: run the daemon, check a config, print the config schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TextIO

import monitor
from monitor.config import build_config_model, config_json_schema, load_config
from monitor.daemon import Daemon, check_registry
from monitor.errors import ConfigError, PluginError
from monitor.log import LEVELS, setup_logging

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitord", description="Health checks, Prometheus rules and alerting in one daemon."
    )
    parser.add_argument("--version", action="version", version=f"monitord {monitor.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="config file")
    run.add_argument("--log-level", choices=list(LEVELS), default="info")
    run.add_argument("--log-format", choices=["text", "json"], default="text")

    check = commands.add_parser(
        "check-config", help="validate config files; exit 0 if valid, 2 if not"
    )
    check.add_argument("files", nargs="+", metavar="FILE")

    commands.add_parser("config-schema", help="print the JSON Schema of the config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitord`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config, args.log_level, args.log_format)
    if args.command == "check-config":
        return _check_config(args.files, sys.stdout, sys.stderr)
    if args.command == "config-schema":
        return _config_schema(sys.stdout, sys.stderr)
    raise AssertionError(args.command)  # argparse rejects unknown commands


def _run(config: str, level: str, fmt: str) -> int:
    setup_logging(level, "json" if fmt == "json" else "text")
    daemon = Daemon(config)
    try:
        return asyncio.run(daemon.run())
    except ConfigError as exc:
        print(f"monitord: invalid config, not starting:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


def _check_config(files: Sequence[str], out: TextIO, err: TextIO) -> int:
    try:
        registry = check_registry()
        model = build_config_model(registry.config_models())
    except PluginError as exc:
        print(f"monitord: {exc}", file=err)
        return EXIT_FAILURE
    status = EXIT_OK
    for file in files:
        try:
            config = load_config(file, model=model)
        except ConfigError as exc:
            print(exc, file=err)
            print(f"{file}: FAILED ({len(exc.issues)} errors)", file=err)
            status = EXIT_CONFIG
            continue
        kinds = {check.type for check in config.checks}
        print(
            f"{file}: OK ({len(config.checks)} checks of kinds {', '.join(sorted(kinds)) or '-'})",
            file=out,
        )
    return status


def _config_schema(out: TextIO, err: TextIO) -> int:
    try:
        model = build_config_model(check_registry().config_models())
    except PluginError as exc:
        print(f"monitord: {exc}", file=err)
        return EXIT_FAILURE
    json.dump(config_json_schema(model), out, indent=2)
    out.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
