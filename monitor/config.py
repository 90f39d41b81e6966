"""The configuration file: YAML to validated, frozen models, with every error located.

Loading never stops at the first problem: every issue is collected with its file,
line and dotted path (``checks[3].timeout``) and raised together as a
:class:`~monitor.errors.ConfigError`. Unknown keys are errors with a "did you
mean" hint. ``${VAR}`` and ``${VAR:-default}`` are expanded in string values
(``$${`` writes a literal ``${``). Relative paths are relative to the config file.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import types
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from glob import escape as glob_escape
from glob import glob as expand_glob
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SecretStr,
    StringConstraints,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from monitor.errors import ConfigError, ConfigIssue
from monitor.schema import DURATION_PATTERN, ConfigModel, Duration, SecretFile, format_duration

__all__ = [
    "DEFAULT_LISTEN",
    "Config",
    "GlobalConfig",
    "RuleEvaluationConfig",
    "RuleFilesChecker",
    "RulePacks",
    "ServerConfig",
    "StoreConfig",
    "build_config_model",
    "config_json_schema",
    "load_config",
    "parse_config",
    "rule_file_paths",
]

DEFAULT_LISTEN = "127.0.0.1:9753"

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
Loc = tuple[str | int, ...]


class GlobalConfig(ConfigModel):
    """Defaults shared by every check and rule group, as in Prometheus' ``global``."""

    scrape_interval: Duration = Field(default=15.0, gt=0, description="default check interval")
    scrape_timeout: Duration = Field(
        default=10.0, gt=0, description="default check timeout (capped at the check's interval)"
    )
    evaluation_interval: Duration = Field(
        default=15.0, gt=0, description="default rule group interval"
    )
    external_labels: dict[LabelName, str] = Field(
        default_factory=dict, description="added to alerts sent out; not to /metrics"
    )
    max_concurrent_checks: int = Field(
        default=64,
        ge=1,
        description="at most this many check runs at once; others wait for a slot, "
        "and the wait does not count against their timeout",
    )


class ServerConfig(ConfigModel):
    """The HTTP server: /metrics, health, reload, API."""

    listen: str = Field(default=DEFAULT_LISTEN, description="host:port to listen on")
    external_url: str | None = Field(
        default=None,
        description="the URL users reach monitord at (Prometheus' --web.external-url), "
        "$externalURL in alert templates; default http://<hostname>:<listen port>",
    )
    auth_token: SecretStr | None = Field(
        default=None, description="bearer token required by mutating endpoints (/-/reload)"
    )
    auth_token_file: SecretFile | None = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("external_url")
    @classmethod
    def _valid_external_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_token(self) -> ServerConfig:
        self._check_secret_pair("auth_token")
        return self

    @property
    def effective_external_url(self) -> str:
        """``external_url``, or ``http://<hostname>:<port>`` as Prometheus defaults it."""
        if self.external_url is not None:
            return self.external_url
        _, port = split_host_port(self.listen)
        return f"http://{socket.gethostname()}:{port}"

    @property
    def token(self) -> SecretStr | None:
        """The effective auth token, from ``auth_token`` or ``auth_token_file``."""
        return self.auth_token if self.auth_token is not None else self.auth_token_file


def split_host_port(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:9753`` for IPv6) into its parts, or raise ValueError."""
    match = re.fullmatch(
        r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]*):(?P<port>\d+)", listen
    )
    if match is None:
        raise ValueError(f"{listen!r} is not host:port (use [addr]:port for IPv6)")
    host = match["v6"] if match["v6"] is not None else match["host"]
    port = int(match["p6"] or match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


class StoreConfig(ConfigModel):
    """The in-memory ring store; memory is about max_series x samples_per_series x 16 bytes."""

    retention: Duration = Field(
        default=7200.0, gt=0, description="drop series not written for this long"
    )
    samples_per_series: int = Field(default=720, ge=2, description="ring capacity per series")
    max_series: int = Field(default=100_000, ge=1, description="refuse new series beyond this")


class RuleEvaluationConfig(ConfigModel):
    """When rule groups are evaluated, besides every group's interval."""

    on_arrival: bool = Field(
        default=True,
        description="also evaluate a group as soon as samples that its rules select arrive",
    )
    resend_delay: Duration = Field(
        default=60.0,
        gt=0,
        description="how often a firing alert is re-sent (Prometheus' --rules.alert.resend-delay)",
    )
    for_outage_tolerance: Duration = Field(
        default=3600.0,
        ge=0,
        description="longest outage after which 'for' state is still restored on start "
        "(Prometheus' --rules.alert.for-outage-tolerance)",
    )
    for_grace_period: Duration = Field(
        default=600.0,
        ge=0,
        description="least time a restored alert stays pending before it fires again "
        "(Prometheus' --rules.alert.for-grace-period)",
    )
    query_offset: Duration = Field(
        default=0.0,
        ge=0,
        description="default query_offset of every rule group (Prometheus' rule_query_offset)",
    )


RuleFilesChecker = Callable[[Sequence[Path]], Sequence[ConfigIssue]]
"""Validates rule files and returns every issue found; passed in by the composition root,
since ``monitor`` does not import ``rules``."""


RulePacks = Mapping[str, Path]
"""The rule packs installed, by name, each with its rule file; passed in by the composition
root like :data:`RuleFilesChecker`, since the packs live in ``rules``."""


class Config(ConfigModel):
    """The whole configuration file. ``checks`` is typed per kind by :func:`build_config_model`."""

    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    server: ServerConfig = Field(default_factory=ServerConfig)
    state_dir: Path = Field(
        default=Path("/var/lib/monitord"), description="where state is kept (relative to the file)"
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    checks: tuple[Any, ...] = ()
    rule_files: tuple[str, ...] = Field(
        default=(),
        description="Prometheus rule files; globs, relative to this file (absolute once loaded, "
        "the rule packs' files added)",
    )
    rule_packs: tuple[str, ...] = Field(
        default=(),
        description="rule packs shipped with monitord, by name (monitord rule-packs lists them); "
        "loaded like rule_files",
    )
    rule_evaluation: RuleEvaluationConfig = Field(default_factory=RuleEvaluationConfig)
    alerting: Any = Field(
        default=None,
        description="routing, receivers, inhibition and silences, as alertmanager.yml; "
        "typed by build_config_model",
    )


def _check_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


def build_config_model(
    check_models: Mapping[str, type[ConfigModel]], alerting_model: type[ConfigModel] | None = None
) -> type[Config]:
    """The Config model whose ``checks`` accept exactly the given check kinds, and whose
    ``alerting`` section is ``alerting_model`` (built by the notifiers from their kinds)."""
    extra: dict[str, Any] = {}
    if alerting_model is not None:
        extra["alerting"] = (
            alerting_model | None,
            Field(default=None, description="routing, receivers, inhibition, as alertmanager.yml"),
        )
    if not check_models:
        return create_model("Config", __base__=Config, **extra) if extra else Config
    members = tuple(Annotated[model, Tag(kind)] for kind, model in sorted(check_models.items()))
    check_union = Annotated[
        Union[members],  # type: ignore[valid-type]  # noqa: UP007 - built at run time
        Discriminator(
            _check_tag, custom_error_type="check_kind", custom_error_message="check kind"
        ),
    ]
    model: type[Config] = create_model(
        "Config",
        __base__=Config,
        checks=(tuple[check_union, ...], Field(default=(), description="probes and collectors")),
        **extra,
    )
    return model


# --- YAML with line numbers -------------------------------------------------------------

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Document:
    """A YAML document turned into plain data, remembering the line of every path."""

    def __init__(self, text: str, environ: Mapping[str, str]) -> None:
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[Loc, int | None, str]] = []
        self._environ = environ
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            self.data: Any = {} if root is None else self._build(loader, root, ())
        finally:
            loader.dispose()
        if root is not None:
            self.lines[()] = root.start_mark.line + 1

    def _build(self, loader: yaml.SafeLoader, node: yaml.Node, loc: Loc) -> Any:
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    self.problems.append((loc, line, f"key {key!r} is not a string; quote it"))
                    continue
                if key in out:
                    first = self.lines.get((*loc, key))
                    self.problems.append(
                        ((*loc, key), line, f"duplicate key (first at line {first})")
                    )
                    continue
                self.lines[(*loc, key)] = line
                out[key] = self._build(loader, value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*loc, index)] = item.start_mark.line + 1
                items.append(self._build(loader, item, (*loc, index)))
            return items
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            value = self._expand(value, loc, node.start_mark.line + 1)
        return value

    def _expand(self, text: str, loc: Loc, line: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            value = self._environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problems.append(
                        (
                            loc,
                            line,
                            f"environment variable {name} is not set (write ${{{name}:-default}})",
                        )
                    )
                    return ""
                return default
            return value

        return _ENV_RE.sub(substitute, text)


# --- error reporting ----------------------------------------------------------------------


def format_loc(loc: Sequence[str | int]) -> str:
    """``("checks", 3, "timeout")`` as ``checks[3].timeout``."""
    out = ""
    for elem in loc:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional layers off a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_tag(model: Any) -> str | None:
    field = getattr(model, "model_fields", {}).get("type")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _field_named(model: type[BaseModel], key: str | int) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _walk(root: type[BaseModel], data: Any, loc: Loc) -> tuple[Loc, type[BaseModel] | None, Any]:
    """Follow a pydantic error location through the model and the data.

    Returns the data path (pydantic's union tags removed), the model that owns the
    last element, and the data found at the parent of the last element.
    """
    path: list[str | int] = []
    tp: Any = root
    node: Any = data
    parent: Any = None
    owner: type[BaseModel] | None = None
    for elem in loc:
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, types.UnionType):
            members = {_model_tag(_unwrap(m)): _unwrap(m) for m in get_args(tp)}
            if isinstance(elem, str) and elem in members and _check_tag(node) == elem:
                tp = members[elem]
                continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            field = _field_named(tp, elem)
            tp = field.annotation if field is not None else Any
        elif get_origin(tp) in (list, tuple, Sequence):
            tp = get_args(tp)[0] if get_args(tp) else Any
        elif get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1] if get_args(tp) else Any
        else:
            tp = Any
        path.append(elem)
        parent = node
        try:
            node = node[elem]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(path), owner, parent


def _line_of(lines: Mapping[Loc, int], path: Loc) -> int | None:
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _issue_from_error(
    err: ErrorDetails, root: type[BaseModel], doc: _Document, file: str, kinds: Sequence[str]
) -> ConfigIssue:
    path, owner, parent = _walk(root, doc.data, tuple(err["loc"]))
    line = _line_of(doc.lines, path)
    kind = err["type"]
    if kind == "extra_forbidden":
        names = [f.alias or n for n, f in owner.model_fields.items()] if owner else []
        message = "unknown key" + _suggest(str(path[-1]), names)
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "check_kind":
        given = err["input"].get("type") if isinstance(err["input"], Mapping) else None
        known = ", ".join(kinds)
        if given is None:
            path, message = (*path, "type"), f"required key is missing (one of: {known})"
        else:
            path = (*path, "type")
            line = _line_of(doc.lines, path)
            message = f"unknown check type {given!r}{_suggest(str(given), kinds)} (known: {known})"
    elif kind == "value_error":
        message = err["msg"].removeprefix("Value error, ")
    else:
        message = err["msg"]
    del parent
    return ConfigIssue(file, line, format_loc(path), message)


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    model: type[Config] = Config,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    check_rule_files: RuleFilesChecker | None = None,
    packs: RulePacks | None = None,
) -> Config:
    """Validate config text completely; raise ConfigError with every issue found.

    With ``check_rule_files``, the rule files that ``rule_files`` matches are validated
    too, and their issues (located in the rule files) are reported after the config's.
    ``packs`` are the rule packs that ``rule_packs`` may name (none without it); their
    files are added to ``rule_files``, to be checked and loaded like the others.
    """
    try:
        doc = _Document(text, os.environ if environ is None else environ)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(file, line, "", f"invalid YAML: {problem}")]) from None
    issues = [ConfigIssue(file, line, format_loc(loc), msg) for loc, line, msg in doc.problems]
    if not isinstance(doc.data, dict):
        issues.append(ConfigIssue(file, doc.lines.get(()), "", "the file must hold a mapping"))
        raise ConfigError(issues)
    kinds = sorted(t for m in _check_models(model) if (t := _model_tag(m)) is not None)
    base = base_dir if base_dir is not None else Path.cwd()
    config: Config | None = None
    try:
        config = model.model_validate(doc.data, context={"base_dir": base})
    except ValidationError as exc:
        issues.extend(_issue_from_error(e, model, doc, file, kinds) for e in exc.errors())
    if config is not None:
        config, more = _resolve(config, doc, file, base, packs or {})
        issues.extend(more)
    issues.sort(key=lambda i: (i.line if i.line is not None else 0, i.path))
    if config is not None and check_rule_files is not None and not issues:
        issues.extend(check_rule_files(rule_file_paths(config)))
    if issues:
        raise ConfigError(issues)
    assert config is not None
    return config


def _check_models(model: type[Config]) -> list[Any]:
    tp = _unwrap(model.model_fields["checks"].annotation)
    args = get_args(tp)
    union = _unwrap(args[0]) if args else None
    if get_origin(union) in (Union, types.UnionType):
        return [_unwrap(m) for m in get_args(union)]
    return [union] if _model_tag(union) is not None else []  # a union of one collapses


def _resolve(
    config: Config, doc: _Document, file: str, base: Path, packs: RulePacks
) -> tuple[Config, list[ConfigIssue]]:
    """Fill defaults that depend on other sections and check what spans sections."""
    issues: list[ConfigIssue] = []
    glob = config.global_
    seen: dict[str, int] = {}
    checks = []
    for index, check in enumerate(config.checks):
        loc: Loc = ("checks", index)
        if check.name in seen:
            first = seen[check.name]
            issues.append(
                ConfigIssue(
                    file,
                    _line_of(doc.lines, (*loc, "name")),
                    format_loc((*loc, "name")),
                    f"duplicate check name {check.name!r} (also checks[{first}])",
                )
            )
        else:
            seen[check.name] = index
        interval = check.interval if check.interval is not None else glob.scrape_interval
        timeout = check.timeout if check.timeout is not None else min(glob.scrape_timeout, interval)
        if timeout > interval:
            where = (*loc, "timeout") if check.timeout is not None else ("global", "scrape_timeout")
            issues.append(
                ConfigIssue(
                    file,
                    _line_of(doc.lines, where),
                    format_loc(where),
                    f"timeout {timeout:g}s is longer than the interval "
                    f"{interval:g}s of check {check.name!r}",
                )
            )
        checks.append(check.model_copy(update={"interval": interval, "timeout": timeout}))
    state_dir = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    patterns = []
    for index, pattern in enumerate(config.rule_files):
        problem = _glob_problem(pattern)
        if problem is not None:
            loc = ("rule_files", index)
            issues.append(ConfigIssue(file, _line_of(doc.lines, loc), format_loc(loc), problem))
            continue
        python = _python_glob(pattern)
        patterns.append(
            python if os.path.isabs(python) else os.path.join(glob_escape(str(base)), python)
        )
    patterns += _pack_patterns(config, doc, file, packs, issues)
    resolved = config.model_copy(
        update={"checks": tuple(checks), "state_dir": state_dir, "rule_files": tuple(patterns)}
    )
    return resolved, issues


def _pack_patterns(
    config: Config, doc: _Document, file: str, packs: RulePacks, issues: list[ConfigIssue]
) -> list[str]:
    """The rule files of the packs that ``rule_packs`` names, as globs matching just them."""
    patterns = []
    seen: dict[str, int] = {}
    known = sorted(packs)
    for index, name in enumerate(config.rule_packs):
        loc: Loc = ("rule_packs", index)
        if name not in packs:
            listing = f"known: {', '.join(known)}" if known else "no rule packs are installed"
            message = f"unknown rule pack {name!r}{_suggest(name, known)} ({listing})"
        elif name in seen:
            message = f"duplicate rule pack {name!r} (also rule_packs[{seen[name]}])"
        else:
            seen[name] = index
            patterns.append(glob_escape(str(packs[name])))
            continue
        issues.append(ConfigIssue(file, _line_of(doc.lines, loc), format_loc(loc), message))
    return patterns


def _glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid glob in Go's ``filepath.Match`` syntax, or None."""
    if not pattern:
        return "an empty pattern matches no file"
    pos, end = 0, len(pattern)

    def escaped(at: int) -> int:
        """The position after one class character at ``at``, or -1 if there is none."""
        if at >= end or pattern[at] in "-]":
            return -1
        if pattern[at] == "\\":
            at += 1
            if at >= end:
                return -1
        return at + 1

    while pos < end:
        char = pattern[pos]
        if char == "\\":
            if pos + 1 >= end:
                return f"invalid glob {pattern!r}: it ends in a backslash"
            pos += 2
            continue
        if char == "[":
            pos += 1
            if pos < end and pattern[pos] == "^":
                pos += 1
            ranges = 0
            while True:
                if pos < end and pattern[pos] == "]" and ranges > 0:
                    pos += 1
                    break
                pos = escaped(pos)
                if pos != -1 and pos < end and pattern[pos] == "-":
                    pos = escaped(pos + 1)
                if pos == -1:
                    return f"invalid glob {pattern!r}: a [character class] is malformed or unclosed"
                ranges += 1
            continue
        pos += 1
    return None


def _python_glob(pattern: str) -> str:
    """A Go glob in Python's spelling: ``[^a]`` is ``[!a]``."""
    return pattern.replace("[^", "[!")


def rule_file_paths(config: Config) -> list[Path]:
    """The rule files that the (loaded) config's ``rule_files`` match now, each once, in order.

    A pattern that matches nothing adds nothing, as in Prometheus.
    """
    seen: dict[Path, None] = {}
    for pattern in config.rule_files:
        for match in sorted(expand_glob(pattern, include_hidden=True)):
            if os.path.isfile(match):
                seen.setdefault(Path(match), None)
    return list(seen)


def config_json_schema(model: type[Config]) -> dict[str, Any]:
    """The JSON Schema of ``model``, with durations' defaults written as durations."""
    schema = model.model_json_schema(by_alias=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            default = node.get("default")
            if node.get("pattern") == DURATION_PATTERN and isinstance(default, int | float):
                node["default"] = format_duration(default)
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(schema)
    return schema


def load_config(
    path: str | os.PathLike[str],
    *,
    model: type[Config] = Config,
    environ: Mapping[str, str] | None = None,
    check_rule_files: RuleFilesChecker | None = None,
    packs: RulePacks | None = None,
) -> Config:
    """Read and validate the config file at ``path``; raise ConfigError listing every issue.

    ``check_rule_files`` validates the rule files it names, and ``packs`` are the rule
    packs it may name (see :func:`parse_config`).
    """
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"not UTF-8 text: {exc.reason}")]) from None
    base_dir = Path(file).resolve().parent
    return parse_config(
        text,
        file=file,
        model=model,
        environ=environ,
        base_dir=base_dir,
        check_rule_files=check_rule_files,
        packs=packs,
    )
