"""The ``monitord`` command: run the daemon, check a config or rule files, print the schema."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import monitor
from monitor.config import (
    DEFAULT_LISTEN,
    config_json_schema,
    load_config,
    rule_file_paths,
    split_host_port,
)
from monitor.daemon import Daemon, check_registry, config_model, load_templates, notifier_registry
from monitor.errors import ConfigError, PluginError
from monitor.log import LEVELS, setup_logging
from monitor.schema import parse_duration
from notifiers import admin
from rules.files import check_rule_files, find_duplicate_rules, load_rule_file
from rules.packs import RulePack, rule_pack_files, rule_packs
from rules.templates import TemplateExpander
from rules.unittest import run_test_files

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_LINT = 3  # promtool's code for lint findings under --lint-fatal


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

    rules = commands.add_parser(
        "check-rules",
        help="validate Prometheus rule files like promtool check rules; exit 0 if valid, 1 if not",
    )
    rules.add_argument("files", nargs="+", metavar="FILE")
    rules.add_argument(
        "--lint",
        choices=["all", "duplicate-rules", "none"],
        default="duplicate-rules",
        help="lint checks to apply (default: duplicate-rules)",
    )
    rules.add_argument(
        "--lint-fatal", action="store_true", help="exit 3 when a lint check finds something"
    )

    tests = commands.add_parser(
        "test-rules",
        help="run rule unit tests in promtool's test rules format; exit 0 if all pass, 1 if not",
    )
    tests.add_argument("files", nargs="+", metavar="FILE")

    packs = commands.add_parser(
        "rule-packs",
        help="list the rule packs shipped with monitord (config: rule_packs) and their files",
    )
    packs.add_argument("names", nargs="*", metavar="NAME", help="only these packs")
    packs.add_argument(
        "--paths",
        action="store_true",
        help="print only the rule files' paths, one a line (to copy them, or for promtool)",
    )

    commands.add_parser("config-schema", help="print the JSON Schema of the config file")

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--url",
        help="the monitord to talk to (default: from --config's server.listen, else "
        f"$MONITORD_URL, else http://{DEFAULT_LISTEN})",
    )
    api.add_argument("-c", "--config", metavar="FILE", help="read the URL and token from it")
    api.add_argument("--token-file", metavar="FILE", help="bearer token (default: the config's)")

    silence = commands.add_parser("silence", help="add, list and expire silences")
    verbs = silence.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", parents=[api], help="silence alerts matching the matchers")
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='like alertname="Down"')
    add.add_argument("-d", "--duration", default="1h", help="how long (default 1h)")
    add.add_argument("--comment", required=True, help="why")
    add.add_argument("-a", "--author", default=getpass.getuser(), help="who (default: you)")
    ls = verbs.add_parser("ls", aliases=["query"], parents=[api], help="list silences")
    ls.add_argument("-q", "--quiet", action="store_true", help="only the IDs")
    ls.add_argument("--expired", action="store_true", help="the expired ones instead")
    ls.add_argument("--json", action="store_true", help="the API's JSON")
    expire = verbs.add_parser("expire", parents=[api], help="end silences now")
    expire.add_argument("ids", nargs="+", metavar="ID")

    alerts = commands.add_parser(
        "alerts", parents=[api], help="list active alerts, silenced and inhibited ones marked"
    )
    alerts.add_argument("--json", action="store_true", help="the API's JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitord`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.config, args.log_level, args.log_format)
    if args.command == "check-config":
        return _check_config(args.files, sys.stdout, sys.stderr)
    if args.command == "check-rules":
        return _check_rules(
            args.files, args.lint != "none", args.lint_fatal, sys.stdout, sys.stderr
        )
    if args.command == "test-rules":
        return run_test_files(args.files, sys.stdout, sys.stderr)
    if args.command == "rule-packs":
        installed = rule_packs()
        for name in args.names:
            if name not in installed:
                close = difflib.get_close_matches(name, list(installed), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                parser.error(
                    f"unknown rule pack {name!r}{hint} (known: {', '.join(sorted(installed))})"
                )
        chosen = [installed[n] for n in dict.fromkeys(args.names)] or list(installed.values())
        return _rule_packs(chosen, args.paths, sys.stdout, sys.stderr)
    if args.command == "config-schema":
        return _config_schema(sys.stdout, sys.stderr)
    if args.command in ("silence", "alerts"):
        return _admin(parser, args)
    raise AssertionError(args.command)  # argparse rejects unknown commands


def _run(config: str, level: str, fmt: str) -> int:
    setup_logging(level, "json" if fmt == "json" else "text")
    daemon = Daemon(config)
    try:
        return asyncio.run(daemon.run())
    except ConfigError as exc:
        print(f"monitord: invalid config, not starting:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


def _admin(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``silence ...`` and ``alerts``, against the daemon's API."""
    try:
        client = _client(args)
        if args.command == "alerts":
            return admin.alerts_list(client, as_json=args.json, out=sys.stdout)
        if args.verb == "add":
            try:
                duration = parse_duration(args.duration)
            except ValueError as exc:
                parser.error(f"--duration: {exc}")
            return admin.silence_add(
                client,
                args.matchers,
                duration=duration,
                comment=args.comment,
                author=args.author,
                now=time.time(),
                out=sys.stdout,
            )
        if args.verb in ("ls", "query"):
            return admin.silence_ls(
                client, quiet=args.quiet, as_json=args.json, expired=args.expired, out=sys.stdout
            )
        return admin.silence_expire(client, args.ids, sys.stdout)
    except admin.ApiError as exc:
        print(f"monitord: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError as exc:
        print(f"monitord: invalid config:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG


def _client(args: argparse.Namespace) -> admin.Client:
    url, token = args.url, None
    if args.config is not None:
        config = load_config(args.config, model=config_model(check_registry(), notifier_registry()))
        if url is None:
            host, port = split_host_port(config.server.listen)
            host = "127.0.0.1" if host in ("", "0.0.0.0") else host
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        secret = config.server.token
        token = secret.get_secret_value() if secret is not None else None
    if args.token_file is not None:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    url = url or os.environ.get("MONITORD_URL") or f"http://{DEFAULT_LISTEN}"
    return admin.Client(url, token)


def _check_config(files: Sequence[str], out: TextIO, err: TextIO) -> int:
    try:
        model = config_model(check_registry(), notifier_registry())
    except PluginError as exc:
        print(f"monitord: {exc}", file=err)
        return EXIT_FAILURE
    status = EXIT_OK
    for file in files:
        try:
            config = load_config(
                file, model=model, check_rule_files=check_rule_files, packs=rule_pack_files()
            )
            load_templates(config, Path(file))
        except ConfigError as exc:
            print(exc, file=err)
            print(f"{file}: FAILED ({len(exc.issues)} errors)", file=err)
            status = EXIT_CONFIG
            continue
        kinds = {check.type for check in config.checks}
        rule_files = len(rule_file_paths(config))
        extra = f", {rule_files} rule files" if rule_files else ""
        if config.alerting is not None:
            extra += f", {len(config.alerting.receivers)} receivers"
        print(
            f"{file}: OK ({len(config.checks)} checks of kinds "
            f"{', '.join(sorted(kinds)) or '-'}{extra})",
            file=out,
        )
    return status


def _check_rules(
    files: Sequence[str], lint: bool, lint_fatal: bool, out: TextIO, err: TextIO
) -> int:
    """``promtool check rules``: the same lines, streams and exit codes."""
    expander = TemplateExpander()
    failed = linted = False
    for file in files:
        print(f"Checking {file}", file=out)
        try:
            rule_file = load_rule_file(file, expander=expander)
        except ConfigError as exc:
            print("  FAILED:", file=err)
            for issue in exc.issues:
                print(issue, file=err)
            failed = True
            print(file=out)
            continue
        duplicates = find_duplicate_rules(rule_file) if lint else []
        if duplicates:
            linted = True
            print("  FAILED:", file=err)
            lines = [f"lint error {len(duplicates)} duplicate rule(s) found."]
            for duplicate in duplicates:
                lines.append(f"Metric: {duplicate.name}")
                lines.append("Label(s):")
                lines.extend(f"\t{name}: {value}" for name, value in duplicate.labels.items())
            lines.append("Might cause inconsistency while recording expressions")
            print("\n".join(lines), file=err)
        else:
            print(f"  SUCCESS: {rule_file.rule_count} rules found", file=out)
        print(file=out)
    if failed:
        return EXIT_FAILURE
    return EXIT_LINT if linted and lint_fatal else EXIT_OK


def _rule_packs(packs: Sequence[RulePack], paths_only: bool, out: TextIO, err: TextIO) -> int:
    """What each pack watches, how many rules it has, and where its rule and test files are."""
    expander = TemplateExpander()
    status = EXIT_OK
    for pack in packs:
        if paths_only:
            print(pack.path, file=out)
            continue
        try:
            count = load_rule_file(pack.path, expander=expander).rule_count
        except ConfigError as exc:  # a broken installation
            print(f"monitord: rule pack {pack.name!r} is invalid:\n{exc}", file=err)
            status = EXIT_FAILURE
            continue
        print(f"{pack.name}: {pack.description} ({count} rules)", file=out)
        print(f"  rules: {pack.path}", file=out)
        print(f"  tests: {pack.tests}", file=out)
    return status


def _config_schema(out: TextIO, err: TextIO) -> int:
    try:
        model = config_model(check_registry(), notifier_registry())
    except PluginError as exc:
        print(f"monitord: {exc}", file=err)
        return EXIT_FAILURE
    json.dump(config_json_schema(model), out, indent=2)
    out.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
