"""The ``alerting:`` section through ``monitord check-config`` as a user meets it: errors
name file, line and path (exit 2), a full example with every receiver kind passes, and
secrets never show, in errors, in ``monitord config-schema`` or in a loaded config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.config import load_config
from monitor.daemon import check_registry, config_model, notifier_registry

SECRETS = {
    "hook": "HOOKSECRET",
    "slack": "SLACKSECRET",
    "pagerduty": "PDROUTINGKEYSECRET",
    "smtp": "SMTPPASSWORDSECRET",
}

FULL = """\
server:
  listen: 127.0.0.1:9999
checks:
  - name: host
    type: system
alerting:
  templates: [templates/*.tmpl]
  route:
    receiver: hook
    group_by: ['alertname', 'cluster']
    routes:
      - receiver: chat
        matchers: ['severity="warning"']
        continue: true
      - receiver: pager
        match: {severity: critical}
        mute_time_intervals: [weekends]
      - receiver: mail
        match_re: {team: 'ops|infra'}
        active_time_intervals: [office]
      - receiver: upstream
        matchers: ['forward="yes"']
  receivers:
    - name: hook
      webhook_configs:
        - url: http://127.0.0.1:9/hook?token=HOOKSECRET
    - name: chat
      slack_configs:
        - api_url_file: slack_url
          channel: '#alerts'
    - name: mail
      email_configs:
        - to: ops@example.com
          from: monitord@example.com
          smarthost: 127.0.0.1:25
          auth_username: monitord
          auth_password_file: smtp_password
    - name: pager
      pagerduty_configs:
        - routing_key_file: routing_key
    - name: upstream
      alertmanager_configs:
        - urls: [http://127.0.0.1:9093]
  inhibit_rules:
    - source_matchers: ['severity="critical"']
      target_matchers: ['severity="warning"']
      equal: [cluster]
  time_intervals:
    - name: weekends
      time_intervals:
        - weekdays: [saturday, sunday]
    - name: office
      time_intervals:
        - times: [{start_time: '09:00', end_time: '17:00'}]
          weekdays: ['monday:friday']
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the secret files and a template the full example refers to."""
    (tmp_path / "slack_url").write_text(
        f"https://hooks.slack.com/services/T0/B0/{SECRETS['slack']}\n"
    )
    (tmp_path / "routing_key").write_text(f"{SECRETS['pagerduty']}\n")
    (tmp_path / "smtp_password").write_text(f"{SECRETS['smtp']}\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "title.tmpl").write_text(
        "{% macro title(n) %}[{{ n.status }}] {{ n.group_labels.alertname }}{% endmacro %}\n"
    )
    return tmp_path


def write(workdir: Path, text: str) -> Path:
    path = workdir / "config.yaml"
    path.write_text(text)
    return path


def edited(old: str, new: str) -> str:
    assert FULL.count(old) == 1, old
    return FULL.replace(old, new)


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the last line of ``text`` containing ``fragment``."""
    return max(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def check_config(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_full_example_with_every_receiver_kind_passes(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(workdir, FULL)
    code, out, err = check_config(capsys, path)
    assert (code, err) == (0, "")
    assert out == f"{path}: OK (1 checks of kinds system, 5 receivers)\n"
    config = load_config(path, model=config_model(check_registry(), notifier_registry()))
    assert config.alerting is not None
    kinds = {kind for r in config.alerting.receivers for kind, _, _ in r.integrations()}
    assert kinds == {"webhook", "slack", "email", "pagerduty", "alertmanager"}


ERRORS = [
    pytest.param(
        edited("      - receiver: mail\n", "      - receiver: mial\n"),
        "receiver: mial",
        'alerting.route.routes[2].receiver: undefined receiver "mial" used in route',
        id="an undefined receiver in a child route",
    ),
    pytest.param(
        edited("active_time_intervals: [office]", "active_time_intervals: [ofice]"),
        "active_time_intervals: [ofice]",
        "alerting.route.routes[2].active_time_intervals[0]: "
        'undefined time interval "ofice" used in route',
        id="an undefined time interval",
    ),
    pytest.param(
        edited(
            """        matchers: ['severity="warning"']\n        continue""",
            "        matchers: ['foo!!bar']\n        continue",
        ),
        "matchers: ['foo!!bar']",
        """alerting.route.routes[0].matchers: 'foo!!bar': expected a matcher like name="value\"""",
        id="a bad matcher line in a route",
    ),
    pytest.param(
        edited("      slack_configs:\n", "      teams_configs:\n"),
        "teams_configs:",
        "alerting.receivers[1].teams_configs: unknown key",
        id="an unknown receiver kind",
    ),
    pytest.param(
        edited("    - name: pager\n", "    - name: mail\n").replace(
            "receiver: pager", "receiver: mail"
        ),
        "- name: mail",  # the last one is the duplicate
        "alerting.receivers[3].name: receiver names must be unique: mail",
        id="a duplicate receiver name",
    ),
]


@pytest.mark.parametrize(("text", "fragment", "message"), ERRORS)
def test_a_config_error_names_file_line_and_path(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str, message: str
) -> None:
    path = write(workdir, text)
    code, out, err = check_config(capsys, path)
    assert (code, out) == (2, "")
    assert f"{path}:{line_of(text, fragment)}: {message}" in err, err
    assert err.endswith(f"{path}: FAILED (1 errors)\n")


def test_a_template_with_a_syntax_error_is_named_with_its_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = workdir / "templates" / "broken.tmpl"
    broken.write_text("line one\n{% if x %}\n  {{ oops\n")
    path = write(workdir, FULL)
    code, out, err = check_config(capsys, path)
    assert (code, out) == (2, "")
    assert f"{path}: alerting.templates: {broken}:3: " in err, err
    assert err.endswith(f"{path}: FAILED (1 errors)\n")


SECRET_ERRORS = [
    pytest.param(
        "        - url: http://127.0.0.1:9/hook?token=HOOKSECRET\n",
        "        - url: http://127.0.0.1:9/hook?token=HOOKSECRET\n          max_alerts: -1\n",
        "alerting.receivers[0].webhook_configs[0].max_alerts",
        id="a webhook whose URL holds a token",
    ),
    pytest.param(
        "        - url: http://127.0.0.1:9/hook?token=HOOKSECRET\n",
        "        - url: ftp//user:HOOKSECRET@example.com\n",
        "alerting.receivers[0].webhook_configs[0]",
        id="a webhook whose URL itself is invalid",
    ),
    pytest.param(
        "        - api_url_file: slack_url\n          channel: '#alerts'\n",
        "        - api_url: https://hooks.slack.com/services/T0/B0/SLACKSECRET\n"
        "          channel: [not, a, string]\n",
        "alerting.receivers[1].slack_configs[0].channel",
        id="a slack receiver with an inline URL",
    ),
    pytest.param(
        "        - routing_key_file: routing_key\n",
        "        - routing_key: PDROUTINGKEYSECRET\n          severity_default: bogus\n",
        "alerting.receivers[3].pagerduty_configs[0].severity_default",
        id="a pagerduty receiver with an inline routing key",
    ),
    pytest.param(
        "          auth_password_file: smtp_password\n",
        "          auth_password: SMTPPASSWORDSECRET\n          require_tls: maybe\n",
        "alerting.receivers[2].email_configs[0].require_tls",
        id="an email receiver with an inline password",
    ),
]


@pytest.mark.parametrize(("old", "new", "where"), SECRET_ERRORS)
def test_a_failing_check_config_shows_no_secret_of_the_receiver(
    workdir: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, where: str
) -> None:
    path = write(workdir, edited(old, new))
    code, out, err = check_config(capsys, path)
    assert code == 2
    assert f": {where}" in err, err
    for secret in SECRETS.values():
        assert secret not in out + err


def test_config_schema_marks_secrets_write_only_and_holds_none(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(workdir, FULL)
    assert main(["config-schema"]) == 0
    out, _ = capsys.readouterr()
    for secret in SECRETS.values():
        assert secret not in out
    defs: dict[str, Any] = json.loads(out)["$defs"]
    secret_fields = [
        ("WebhookConfig", "url"),
        ("SlackConfig", "api_url"),
        ("PagerDutyConfig", "routing_key"),
        ("EmailConfig", "auth_password"),
    ]
    for model, name in secret_fields:
        field = defs[model]["properties"][name]
        variants = field.get("anyOf", [field])
        assert {"type": "string", "format": "password", "writeOnly": True} in variants, field


def test_a_loaded_config_shows_its_secrets_redacted(workdir: Path) -> None:
    path = write(workdir, FULL)
    config = load_config(path, model=config_model(check_registry(), notifier_registry()))
    assert config.alerting is not None
    shown = [repr(config), str(config), config.model_dump_json(), repr(config.alerting)]
    shown += [repr(c) for r in config.alerting.receivers for _, _, c in r.integrations()]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text
    hook = config.alerting.receivers[0].webhook_configs[0]
    assert repr(hook.url) == "SecretStr('**********')"
    dumped = json.loads(config.model_dump_json())
    assert dumped["alerting"]["receivers"][0]["webhook_configs"][0]["url"] == "**********"
    pager = config.alerting.receivers[3].pagerduty_configs[0]
    assert str(pager.routing_key_file) == "**********"
    assert pager.routing_key_file.get_secret_value() == SECRETS["pagerduty"]
