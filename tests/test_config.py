"""The config loader: every error located by file, line and path, all reported at once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import pytest

from checks.base import CheckConfig
from monitor.cli import main
from monitor.config import build_config_model, load_config, parse_config, rule_file_paths
from monitor.daemon import Daemon
from monitor.errors import ConfigError
from monitor.query import Engine
from monitor.schema import format_duration, parse_duration
from monitor.store import Store
from rules.files import check_rule_files
from rules.group import EvalContext
from rules.query import engine_query_func


class WebConfig(CheckConfig):
    """A check kind used only by these tests."""

    type: Literal["web"]
    url: str


class HostConfig(CheckConfig):
    """Another test kind, so the union has more than one member."""

    type: Literal["host"]


MODEL = build_config_model({"web": WebConfig, "host": HostConfig})


def errors_of(text: str, environ: dict[str, str] | None = None, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="m.yaml", model=MODEL, environ=environ or {}, **kw)  # type: ignore[arg-type]
    return [str(issue) for issue in info.value.issues]


def test_a_value_of_the_wrong_type_names_file_line_and_path() -> None:
    text = "store:\n  retention: 2h\n  max_series: lots\n"
    assert errors_of(text) == [
        "m.yaml:3: store.max_series: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "15",
            "15 is not a duration; write it with a unit, e.g. 15s",
            id="a bare number asks for a unit",
        ),
        pytest.param(
            "5 minutes",
            "'5 minutes' is not a duration; use units ms, s, m, h, d, w, y as in 1h30m",
            id="prose is refused",
        ),
        pytest.param(
            "1m30",
            "'1m30' is not a duration; use units ms, s, m, h, d, w, y as in 1h30m",
            id="a trailing number without unit is refused",
        ),
    ],
)
def test_a_bad_duration_is_located(value: str, expected: str) -> None:
    text = f"checks:\n  - name: a\n    type: host\n    interval: {value}\n"
    assert errors_of(text) == [f"m.yaml:4: checks[0].interval: {expected}"]


def test_a_zero_duration_is_not_a_positive_interval() -> None:
    text = "global:\n  scrape_interval: 0\n"
    assert errors_of(text) == ["m.yaml:2: global.scrape_interval: Input should be greater than 0"]


def test_an_unknown_key_suggests_the_closest_one() -> None:
    text = "store:\n  retension: 2h\n"
    assert errors_of(text) == ["m.yaml:2: store.retension: unknown key; did you mean 'retention'?"]


def test_an_unknown_key_inside_a_check_suggests_from_that_kinds_options() -> None:
    text = "checks:\n  - name: a\n    type: web\n    ulr: http://127.0.0.1/\n"
    errors = errors_of(text)
    assert "m.yaml:4: checks[0].ulr: unknown key; did you mean 'url'?" in errors


def test_an_unknown_check_type_suggests_a_known_one() -> None:
    text = "checks:\n  - name: a\n    type: wbe\n"
    assert errors_of(text) == [
        "m.yaml:3: checks[0].type: unknown check type 'wbe'; did you mean 'web'? (known: host, web)"
    ]


def test_a_missing_required_key_points_at_its_mapping() -> None:
    text = "checks:\n  - name: a\n    type: host\n  - type: web\n    name: b\n"
    assert errors_of(text) == ["m.yaml:4: checks[1].url: required key is missing"]


def test_two_errors_are_reported_at_once_in_file_order() -> None:
    text = "global:\n  scrape_interval: soon\nstore:\n  max_seriess: 5\n"
    assert errors_of(text) == [
        "m.yaml:2: global.scrape_interval: 'soon' is not a duration; "
        "use units ms, s, m, h, d, w, y as in 1h30m",
        "m.yaml:4: store.max_seriess: unknown key; did you mean 'max_series'?",
    ]


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    text = "server:\n  auth_token_file: no-such-token\n"
    assert errors_of(text, base_dir=tmp_path) == [
        f"m.yaml:2: server.auth_token_file: cannot read secret file "
        f"'{tmp_path / 'no-such-token'}': No such file or directory"
    ]


def test_a_secret_file_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  auth_token_file: token\n")
    loaded = load_config(config, model=MODEL)
    assert loaded.server.token is not None
    assert loaded.server.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)


def test_a_secret_and_its_file_twin_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("x")
    text = "server:\n  auth_token: a\n  auth_token_file: token\n"
    assert errors_of(text, base_dir=tmp_path) == [
        "m.yaml:1: server: set auth_token or auth_token_file, not both"
    ]


def test_environment_variables_are_expanded_with_defaults() -> None:
    text = "server:\n  listen: ${HOST}:${PORT:-9999}\nstate_dir: ${NOPE:-/tmp/x}\n"
    config = parse_config(text, model=MODEL, environ={"HOST": "127.0.0.1"})
    assert config.server.listen == "127.0.0.1:9999"
    assert str(config.state_dir) == "/tmp/x"


def test_an_unset_variable_without_default_is_an_error() -> None:
    text = "checks:\n  - name: a\n    type: web\n    url: ${API_URL}\n"
    assert errors_of(text) == [
        "m.yaml:4: checks[0].url: environment variable API_URL is not set "
        "(write ${API_URL:-default})"
    ]


def test_a_doubled_dollar_writes_a_literal() -> None:
    config = parse_config(
        "checks:\n  - {name: a, type: web, url: 'x$${Y}'}\n", model=MODEL, environ={}
    )
    assert config.checks[0].url == "x${Y}"


def test_check_defaults_come_from_global() -> None:
    text = (
        "global: {scrape_interval: 1m, scrape_timeout: 20s}\n"
        "checks:\n  - {name: a, type: host}\n  - {name: b, type: host, interval: 5s}\n"
    )
    a, b = parse_config(text, model=MODEL).checks
    assert (a.interval, a.timeout) == (60.0, 20.0)
    assert (b.interval, b.timeout) == (5.0, 5.0)  # the timeout is capped at the interval


def test_a_timeout_longer_than_the_interval_is_refused() -> None:
    text = "checks:\n  - name: a\n    type: host\n    interval: 5s\n    timeout: 10s\n"
    assert errors_of(text) == [
        "m.yaml:5: checks[0].timeout: timeout 10s is longer than the interval 5s"
    ]


def test_duplicate_check_names_are_refused() -> None:
    text = "checks:\n  - name: a\n    type: host\n  - name: a\n    type: host\n"
    assert errors_of(text) == [
        "m.yaml:4: checks[1].name: duplicate check name 'a' (also checks[0])"
    ]


def test_invalid_yaml_gives_the_line() -> None:
    assert errors_of("store:\n  retention: [2h\n") == [
        "m.yaml:3: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_a_bad_listen_address_is_explained() -> None:
    assert errors_of("server:\n  listen: localhost\n") == [
        "m.yaml:2: server.listen: 'localhost' is not host:port (use [addr]:port for IPv6)"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("15s", 15.0, id="seconds"),
        pytest.param("1h30m", 5400.0, id="hours and minutes"),
        pytest.param("100ms", 0.1, id="milliseconds"),
        pytest.param("2d", 172800.0, id="days"),
    ],
)
def test_durations_round_trip(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == text


def test_check_config_exits_0_for_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("checks:\n  - {name: host, type: system}\n")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK (1 checks of kinds system)\n"


def test_check_config_exits_2_and_lists_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  retension: 2h\nchecks:\n  - {name: host, type: sytem}\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: store.retension: unknown key; did you mean 'retention'?" in err
    assert f"{bad}:4: checks[0].type: unknown check type 'sytem'; did you mean 'system'?" in err
    assert f"{bad}: FAILED (2 errors)" in err


def test_check_config_exits_2_for_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_the_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    assert main(["check-config", str(example)]) == 0


def test_the_example_configs_commented_checks_are_valid_once_uncommented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    lines, in_checks = [], False
    for line in example.read_text().splitlines():
        if line.startswith("checks:"):
            in_checks = True
        elif line and not line.startswith((" ", "#")):
            in_checks = False
        if in_checks and re.match(r"^  # (- name|\s+\S)", line):
            line = "  " + line[4:]
        lines.append(line)
    uncommented = tmp_path / "config.yaml"
    uncommented.write_text("\n".join(lines) + "\n")
    assert main(["check-config", str(uncommented)]) == 0, capsys.readouterr().err
    kinds = capsys.readouterr().out
    kinds_shown = ("command", "dns", "file", "host", "http", "icmp", "process", "tcp", "tls")
    for kind in (*kinds_shown, "postgres", "mysql", "redis", "cluster"):
        assert kind in kinds


def test_the_example_configs_commented_alerting_section_is_valid_once_uncommented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    lines, in_alerting = [], False
    for line in example.read_text().splitlines():
        if line == "# alerting:":
            in_alerting = True
        elif not line.startswith("#   ") and line != "# alerting:":
            in_alerting = False
        if in_alerting:
            line = line[2:]
        lines.append(line)
    for secret in ("slack-url", "smtp-password", "pagerduty-key", "heartbeat-url"):
        path = tmp_path / secret
        url = secret.endswith("-url")
        path.write_text("https://hooks.example.org/x\n" if url else "s3cret\n")
    text = "\n".join(lines).replace("/etc/monitord/", f"{tmp_path}/") + "\n"
    uncommented = tmp_path / "config.yaml"
    uncommented.write_text(text)
    assert "\nalerting:\n" in text
    assert main(["check-config", str(uncommented)]) == 0, capsys.readouterr().err
    assert "3 receivers" in capsys.readouterr().out


def test_config_schema_is_json_schema_of_the_same_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"global", "server", "store", "checks", "state_dir"}
    store = schema["$defs"]["StoreConfig"]["properties"]
    assert store["retention"]["default"] == "2h"
    kinds = json.dumps(schema["properties"]["checks"])
    assert "system" in json.dumps(schema["$defs"]) and "$ref" in kinds


# --- rule files -------------------------------------------------------------------------------

GOOD_RULES = "groups:\n  - name: g\n    rules:\n      - {alert: A, expr: up == 0}\n"
BAD_RULES = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n"


def test_rule_file_globs_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "b.yml").write_text(GOOD_RULES)
    (tmp_path / "rules" / "a.yml").write_text(GOOD_RULES)
    (tmp_path / "rules" / "notes.txt").write_text("not rules")
    config_file = tmp_path / "m.yaml"
    config_file.write_text('rule_files: ["rules/*.yml", "rules/a.yml", "missing/*.yml"]\n')
    config = load_config(config_file, model=MODEL)
    assert rule_file_paths(config) == [tmp_path / "rules" / "a.yml", tmp_path / "rules" / "b.yml"]


def test_rule_evaluation_on_arrival_defaults_to_true_and_can_be_turned_off() -> None:
    assert parse_config("{}", model=MODEL, environ={}).rule_evaluation.on_arrival is True
    config = parse_config("rule_evaluation:\n  on_arrival: false\n", model=MODEL, environ={})
    assert config.rule_evaluation.on_arrival is False


def test_rule_evaluation_flags_default_to_prometheus_and_take_durations() -> None:
    defaults = parse_config("{}", model=MODEL, environ={}).rule_evaluation
    assert (
        defaults.resend_delay,
        defaults.for_outage_tolerance,
        defaults.for_grace_period,
        defaults.query_offset,
    ) == (60.0, 3600.0, 600.0, 0.0)
    text = (
        "rule_evaluation:\n  resend_delay: 30s\n  for_outage_tolerance: 2h\n"
        "  for_grace_period: 5m\n  query_offset: 1m\n"
    )
    config = parse_config(text, model=MODEL, environ={}).rule_evaluation
    assert (
        config.resend_delay,
        config.for_outage_tolerance,
        config.for_grace_period,
        config.query_offset,
    ) == (30.0, 7200.0, 300.0, 60.0)


def test_rule_evaluation_resend_delay_must_be_positive() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("rule_evaluation:\n  resend_delay: 0s\n", model=MODEL, environ={})
    assert "rule_evaluation.resend_delay" in str(caught.value)
    assert ":2:" in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        pytest.param(
            "rules/[a.yml",
            "a [character class] is malformed or unclosed",
            id="an unclosed character class is refused",
        ),
        pytest.param(
            "rules/[]a].yml",
            "a [character class] is malformed or unclosed",
            id="an empty character class is refused",
        ),
        pytest.param("rules\\", "it ends in a backslash", id="a trailing backslash is refused"),
    ],
)
def test_a_glob_that_is_not_valid_is_an_error(pattern: str, problem: str) -> None:
    text = f"store: {{}}\nrule_files:\n  - {json.dumps(pattern)}\n"
    assert errors_of(text) == [
        f"m.yaml:3: rule_files[0]: invalid glob {json.loads(json.dumps(pattern))!r}: {problem}"
    ]


def test_rule_file_errors_fail_the_config_with_their_own_location(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(BAD_RULES)
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_files: ['*.yml']\n")
    assert load_config(config_file, model=MODEL).rule_files  # without a checker: not read
    with pytest.raises(ConfigError) as info:
        load_config(config_file, model=MODEL, check_rule_files=check_rule_files)
    assert [str(i) for i in info.value.issues] == [
        f'{tmp_path / "bad.yml"}:5: group "g", rule 1 "A": expr: could not parse expression: '
        "cannot parse 'up ==': invalid promql query"
    ]


def test_check_config_validates_the_rule_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yml").write_text(GOOD_RULES)
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_files: ['*.yml']\n")
    assert main(["check-config", str(config_file)]) == 0
    assert capsys.readouterr().out == f"{config_file}: OK (0 checks of kinds -, 1 rule files)\n"
    (tmp_path / "worse.yml").write_text(BAD_RULES)
    assert main(["check-config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert f'{tmp_path / "worse.yml"}:5: group "g", rule 1 "A": expr:' in err
    assert f"{config_file}: FAILED (1 errors)" in err


def test_the_daemon_refuses_a_config_whose_rule_file_is_bad(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(BAD_RULES)
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_files: ['bad.yml']\n")
    with pytest.raises(ConfigError, match=r"bad\.yml:5: group \"g\""):
        Daemon(config_file, environ={}).load()


# --- rule packs -------------------------------------------------------------------------------


def fake_packs(tmp_path: Path) -> dict[str, Path]:
    """A catalogue of two packs whose files are in ``tmp_path``, as the daemon passes one."""
    packs = {}
    for name in ("host", "checks"):
        path = tmp_path / "packs" / f"{name} [v1].yml"  # glob characters are taken literally
        path.parent.mkdir(exist_ok=True)
        path.write_text(GOOD_RULES)
        packs[name] = path
    return packs


def test_rule_packs_add_their_files_after_the_rule_files(tmp_path: Path) -> None:
    (tmp_path / "own.yml").write_text(GOOD_RULES)
    packs = fake_packs(tmp_path)
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_files: ['*.yml']\nrule_packs: [checks, host]\n")
    config = load_config(config_file, model=MODEL, packs=packs)
    assert config.rule_packs == ("checks", "host")
    assert rule_file_paths(config) == [tmp_path / "own.yml", packs["checks"], packs["host"]]


@pytest.mark.parametrize(
    ("packs", "listed", "message"),
    [
        pytest.param(
            True,
            "[host, hots]",
            "m.yaml:2: rule_packs[1]: unknown rule pack 'hots'; did you mean 'host'? "
            "(known: checks, host)",
            id="a misspelt pack name suggests the closest one",
        ),
        pytest.param(
            True,
            "[nginx]",
            "m.yaml:2: rule_packs[0]: unknown rule pack 'nginx' (known: checks, host)",
            id="a name like no pack lists the known ones",
        ),
        pytest.param(
            False,
            "[host]",
            "m.yaml:2: rule_packs[0]: unknown rule pack 'host' (no rule packs are installed)",
            id="without a catalogue no pack is known",
        ),
        pytest.param(
            True,
            "\n  - host\n  - checks\n  - host",
            "m.yaml:5: rule_packs[2]: duplicate rule pack 'host' (also rule_packs[0])",
            id="a pack listed twice is refused on the second line",
        ),
    ],
)
def test_a_rule_pack_that_cannot_be_loaded_is_located(
    tmp_path: Path, packs: bool, listed: str, message: str
) -> None:
    text = f"store: {{}}\nrule_packs: {listed}\n"
    catalogue = fake_packs(tmp_path) if packs else None
    assert errors_of(text, packs=catalogue) == [message]


def test_a_bad_pack_file_fails_like_a_bad_rule_file(tmp_path: Path) -> None:
    packs = fake_packs(tmp_path)
    packs["host"].write_text(BAD_RULES)
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_packs: [host]\n")
    with pytest.raises(ConfigError) as info:
        load_config(config_file, model=MODEL, check_rule_files=check_rule_files, packs=packs)
    assert [str(i) for i in info.value.issues] == [
        f'{packs["host"]}:5: group "g", rule 1 "A": expr: could not parse expression: '
        "cannot parse 'up ==': invalid promql query"
    ]


def test_check_config_and_the_daemon_load_the_shipped_packs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "m.yaml"
    config_file.write_text("rule_packs: [host, checks, monitord]\n")
    assert main(["check-config", str(config_file)]) == 0
    assert capsys.readouterr().out == f"{config_file}: OK (0 checks of kinds -, 3 rule files)\n"
    daemon = Daemon(config_file, environ={})
    config, _ = daemon.load()
    groups = daemon.load_rules(config)
    assert [(Path(g.file).name, g.name) for g in groups] == [
        ("host.yml", "host"),
        ("checks.yml", "checks"),
        ("monitord.yml", "monitord"),
    ]
    config_file.write_text("rule_packs: [hots]\n")
    assert main(["check-config", str(config_file)]) == 2
    assert "did you mean 'host'?" in capsys.readouterr().err


def test_daemon_hands_rule_evaluation_flags_to_the_rule_manager(tmp_path: Path) -> None:
    config_file = tmp_path / "m.yaml"
    config_file.write_text(
        "rule_evaluation:\n  resend_delay: 30s\n  for_outage_tolerance: 2h\n"
        "  for_grace_period: 5m\n  query_offset: 1m\n  on_arrival: false\n"
    )
    daemon = Daemon(str(config_file))
    config, _ = daemon.load()
    options = daemon._rule_options(config)
    assert (
        options.resend_delay,
        options.outage_tolerance,
        options.grace_period,
        options.default_query_offset,
        options.on_arrival,
    ) == (30_000, 7_200_000, 300_000, 60_000, False)


def test_external_url_defaults_to_hostname_and_listen_port_and_must_be_absolute() -> None:
    import socket

    config = parse_config("server:\n  listen: 127.0.0.1:9999\n", model=MODEL, environ={})
    assert config.server.effective_external_url == f"http://{socket.gethostname()}:9999"
    text = "server:\n  external_url: https://mon.example.org/monitord/\n"
    config = parse_config(text, model=MODEL, environ={})
    assert config.server.effective_external_url == "https://mon.example.org/monitord"
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  external_url: mon.example.org\n", model=MODEL, environ={})
    assert ":2: server.external_url: " in str(caught.value)
    assert "is not an absolute http:// or https:// URL" in str(caught.value)


def test_alert_templates_in_the_daemon_see_the_external_url(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n"
        "        annotations: {link: '{{ $externalURL }}/alerts'}\n"
    )
    config_file = tmp_path / "m.yaml"
    config_file.write_text(
        "server:\n  external_url: https://mon.example.org\nrule_files: [r.yml]\n"
    )
    daemon = Daemon(config_file, environ={})
    config, _ = daemon.load()
    (group,) = daemon.load_rules(config)
    store = Store()
    group.eval(60_000, EvalContext(query=engine_query_func(Engine(store)), store=store))
    (alert,) = group.alerting_rules()[0].active_alerts()
    assert dict(alert.annotations) == {"link": "https://mon.example.org/alerts"}
