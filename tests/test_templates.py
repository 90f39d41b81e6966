"""Alert templates: Prometheus' functions and Go spellings, with Prometheus' exact output."""

from __future__ import annotations

import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rules.template_functions import (
    format_float,
    go_sprintf,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
    humanize_timestamp,
    re_replace_all,
    strip_port,
    title,
)
from rules.templates import TemplateError, TemplateExpander
from tests.support import require_program

INF, NAN = math.inf, math.nan


def expand(text: str, value: float = 1.0, **labels: str) -> str:
    return TemplateExpander().expand(
        text, labels, value, {"dc": "eu1"}, "http://prom.example:9090/prefix", name="Test"
    )


# --- tables from Prometheus' template_test.go and prometheus/common's time_test.go --------


@pytest.mark.parametrize(
    ("function", "inputs", "outputs"),
    [
        pytest.param(
            humanize,
            [0.0, 1.0, 1234567.0, 0.12],
            ["0", "1", "1.235M", "120m"],
            id="humanize uses SI prefixes",
        ),
        pytest.param(
            humanize1024,
            [0.0, 1.0, 1048576.0, 0.12],
            ["0", "1", "1Mi", "0.12"],
            id="humanize1024 uses binary prefixes",
        ),
        pytest.param(
            humanize_duration,
            [0, 1, 60, 3600, 86400, 86400 + 3600, -(86400 * 2 + 3600 * 3 + 60 * 4 + 5), 899.99],
            [
                "0s",
                "1s",
                "1m 0s",
                "1h 0m 0s",
                "1d 0h 0m 0s",
                "1d 1h 0m 0s",
                "-2d 3h 4m 5s",
                "14m 59s",
            ],
            id="humanizeDuration of whole seconds",
        ),
        pytest.param(
            humanize_duration,
            [0.1, 0.0001, 0.12345, 60.1, 60.5, 1.2345, 12.345, 1234567],
            ["100ms", "100us", "123.5ms", "1m 0s", "1m 0s", "1.234s", "12.35s", "14d 6h 56m 7s"],
            id="humanizeDuration of fractions of seconds",
        ),
        pytest.param(
            humanize_duration,
            ["0", "86400", ".12345", "12.345"],
            ["0s", "1d 0h 0m 0s", "123.5ms", "12.35s"],
            id="humanizeDuration of numeric strings",
        ),
        pytest.param(
            humanize_percentage,
            [-0.22222, 0.0, 0.1234567, 1.23456],
            ["-22.22%", "0%", "12.35%", "123.5%"],
            id="humanizePercentage",
        ),
        pytest.param(
            humanize_timestamp,
            [1435065584.128, "1435065584.128", 0, -1, 1234567, 9223372036],
            [
                "2015-06-23 13:19:44.128 +0000 UTC",
                "2015-06-23 13:19:44.128 +0000 UTC",
                "1970-01-01 00:00:00 +0000 UTC",
                "1969-12-31 23:59:59 +0000 UTC",
                "1970-01-15 06:56:07 +0000 UTC",
                "2262-04-11 23:47:16 +0000 UTC",
            ],
            id="humanizeTimestamp prints UTC as Go does",
        ),
        pytest.param(
            humanize,
            [INF, -INF, NAN],
            ["+Inf", "-Inf", "NaN"],
            id="humanize of infinities and NaN",
        ),
        pytest.param(
            humanize1024, [INF, -INF, NAN], ["+Inf", "-Inf", "NaN"], id="humanize1024 of Inf"
        ),
        pytest.param(
            humanize_duration,
            [INF, -INF, NAN],
            ["+Inf", "-Inf", "NaN"],
            id="humanizeDuration of Inf",
        ),
        pytest.param(
            humanize_timestamp,
            [INF, -INF, NAN, "+Inf", "NaN"],
            ["+Inf", "-Inf", "NaN", "+Inf", "NaN"],
            id="humanizeTimestamp of Inf and NaN",
        ),
        pytest.param(
            title,
            ["aa bb CC", "hello-world o'neil_x"],
            ["Aa Bb CC", "Hello-World O'Neil_x"],
            id="title",
        ),
        pytest.param(
            strip_port,
            [
                "foo.example.com",
                "foo.example.com:12345",
                "[2001:0DB8::1]",
                "[2001:0DB8::1]:12345",
                "2001:0DB8::1",
                "1.2.3.4:80",
            ],
            [
                "foo.example.com",
                "foo.example.com",
                "[2001:0DB8::1]",
                "2001:0DB8::1",
                "2001:0DB8::1",
                "1.2.3.4",
            ],
            id="stripPort follows net.SplitHostPort",
        ),
        pytest.param(
            format_float,
            [1.0, 0.5, 1e6, 123456.0, 1234567.0, 1e-5, 0.0001, 1e21, -0.0, 100.25, INF, NAN],
            [
                "1",
                "0.5",
                "1e+06",
                "123456",
                "1.234567e+06",
                "1e-05",
                "0.0001",
                "1e+21",
                "-0",
                "100.25",
                "+Inf",
                "NaN",
            ],
            id="a float prints as Go's %v prints a float64",
        ),
    ],
)
def test_functions_give_prometheus_output(
    function: Any, inputs: list[Any], outputs: list[str]
) -> None:
    assert [function(i) for i in inputs] == outputs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("(a)b", "x$1", "ab"), "xa", id="a group is expanded"),
        pytest.param(("(?P<h>.*):.*", "${h}!", "host:80"), "host!", id="a named group is expanded"),
        pytest.param(("a*", "x", "baaac"), "xbxcx", id="an empty match after a match is skipped"),
        pytest.param(("(a)", "$1x", "a"), "", id="$1x names a group 1x, as in Go"),
        pytest.param(("a", "$$", "aa"), "$$", id="$$ writes a dollar"),
    ],
)
def test_re_replace_all_follows_go(args: tuple[str, str, str], expected: str) -> None:
    assert re_replace_all(*args) == expected


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        pytest.param("%.2f", (1.0 / 3,), "0.33", id="a precision"),
        pytest.param("%v %s %d", (0.5, "x", 3), "0.5 x 3", id="v, s and d"),
        pytest.param("%d", (1.5,), "%!d(float64=1.5)", id="a float for %d is Go's bad verb"),
        pytest.param("%g", (1234567.0,), "1.234567e+06", id="g is shortest"),
        pytest.param("%5.1f|%-5d|%05d", (3.14159, 7, 42), "  3.1|7    |00042", id="widths"),
        pytest.param("%s %s", ("a",), "a %!s(MISSING)", id="a missing argument"),
        pytest.param("%s", ("a", 1), "a%!(EXTRA int=1)", id="an extra argument"),
        pytest.param("%q %x %%", ("hi", 255), '"hi" ff %', id="q, x and a percent sign"),
    ],
)
def test_printf_follows_go(fmt: str, args: tuple[Any, ...], expected: str) -> None:
    assert go_sprintf(fmt, *args) == expected


# --- templates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        pytest.param("{{ $value }}", 1.0, "1", id="a whole value prints without a point"),
        pytest.param("{{ $value }}", 1e6, "1e+06", id="a million prints as Go prints it"),
        pytest.param("{{ $value | humanize }}", 1234567, "1.235M", id="Go's pipe to a function"),
        pytest.param("{{ humanize $value }}", 1234567, "1.235M", id="Go's function-call style"),
        pytest.param("{{ value | humanize }}", 1234567, "1.235M", id="a Jinja2 filter"),
        pytest.param('{{ printf "%.2f" $value }}', 0.5, "0.50", id="printf with arguments"),
        pytest.param('{{ $value | printf "%.2f" }}', 0.5, "0.50", id="printf piped into"),
        pytest.param("{{ $labels.instance }}", 1, "db:5432", id="a label through $labels"),
        pytest.param("{{ .Labels.instance }} {{ .Value }}", 2, "db:5432 2", id="dot's fields"),
        pytest.param("{{ $labels }}", 1, "map[instance:db:5432 job:pg]", id="labels as a Go map"),
        pytest.param("{{ $labels.nope }}|", 1, "|", id="a missing label is empty"),
        pytest.param(
            "{{ $externalLabels.dc }} {{ $externalURL }}",
            1,
            "eu1 http://prom.example:9090/prefix",
            id="external labels and URL",
        ),
        pytest.param("{{ pathPrefix }}", 1, "/prefix", id="pathPrefix"),
        pytest.param(
            "{{ if gt $value 1.0 }}big{{ else if eq $value 1.0 }}one{{ else }}small{{ end }}",
            1,
            "one",
            id="if, else if and else",
        ),
        pytest.param(
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            1,
            "instance=db:5432;job=pg;",
            id="range over labels in key order",
        ),
        pytest.param(
            "{{ with $labels.nope }}{{ . }}{{ else }}none{{ end }}",
            1,
            "none",
            id="with and else",
        ),
        pytest.param(
            '{{ $labels.instance | reReplaceAll ":.*" "" | toUpper }}',
            1,
            "DB",
            id="a pipeline of functions with arguments",
        ),
        pytest.param("a {{- /* note */ -}} b", 1, "ab", id="a comment with trim markers"),
        pytest.param("{{ $x := humanize $value }}{{ $x }}", 2000, "2k", id="a variable"),
        pytest.param(
            "{{ labels.job | title }} {{ value * 2 }}", 1.5, "Pg 3", id="Jinja2 as Jinja2"
        ),
        pytest.param("{% if value > 1 %}up{% endif %}", 2, "up", id="a Jinja2 statement"),
        pytest.param("100%", 2, "100%", id="text without templates is kept"),
    ],
)
def test_templates_expand_like_prometheus(text: str, value: float, expected: str) -> None:
    assert expand(text, value, instance="db:5432", job="pg") == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("{{ $label.foo }}", 'undefined variable "$label"', id="an undefined variable"),
        pytest.param(
            "{{ humanise $value }}", 'function "humanise" not defined', id="an unknown function"
        ),
        pytest.param(
            "{{ if $value }}x", "unexpected EOF: {{if}} has no {{end}}", id="an unclosed if"
        ),
        pytest.param("{{ end }}", "unexpected {{end}}", id="an end without a block"),
        pytest.param("{{ $value", "unclosed action '{{'", id="an unclosed action"),
        pytest.param(
            "{{ value | nope }}", "No filter named 'nope'. (line 1)", id="an unknown filter"
        ),
        pytest.param(
            '{{ template "x" }}', "{{template}} is not supported in alert templates", id="template"
        ),
    ],
)
def test_check_refuses_what_cannot_be_parsed(text: str, reason: str) -> None:
    with pytest.raises(TemplateError) as info:
        TemplateExpander().check(text)
    assert info.value.reason == reason


def test_an_error_while_expanding_becomes_the_field_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="monitord.rules.templates"):
        out = expand('{{ "x" | humanize }}')
    assert out == (
        "<error expanding template: error executing template __alert_Test: "
        'strconv.ParseFloat: parsing "x": invalid syntax>'
    )
    assert [r.getMessage() for r in caplog.records] == ["expanding alert template failed"]
    assert caplog.records[0].levelno == logging.WARNING


def test_the_sandbox_refuses_python_internals() -> None:
    out = expand("{{ labels.__class__.__mro__ }}")
    assert out.startswith("<error expanding template:") or out == ""


# --- side by side with promtool ------------------------------------------------------------

PROMTOOL_TEMPLATES = [
    "{{ $value }}",
    "{{ $value | humanize }}",
    "{{ humanize1024 $value }}",
    "{{ $value | humanizeDuration }}",
    "{{ humanizePercentage $value }}",
    "{{ $value | humanizeTimestamp }}",
    '{{ printf "%.2f" $value }}',
    '{{ $value | printf "%.3e|%g|%v" $value $value }}',
    "{{ $labels }}",
    "{{ .Labels.instance }}/{{ .Value }}",
    "{{ $labels.instance | stripPort }}",
    '{{ reReplaceAll "(.*):(.*)" "$2-$1" $labels.instance }}',
    '{{ title "hello world-wide" }} {{ toUpper $labels.job }}',
    "{{ if gt $value 100.0 }}big{{ else }}small{{ end }}",
    "{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}",
    '{{ print $value "x" 1 2 }}',
]
PROMTOOL_VALUES = ["1", "0.5", "1234567", "0.1234567", "90000", "1e+06", "1435065584.128", "-2.5"]


@pytest.mark.integration
def test_templates_expand_exactly_as_promtool_expands_them(tmp_path: Path) -> None:
    promtool = require_program("promtool", "prometheus")
    expander = TemplateExpander()
    annotations = {f"t{i}": text for i, text in enumerate(PROMTOOL_TEMPLATES)}
    rules = {
        "groups": [
            {
                "name": "templates",
                "rules": [
                    {"alert": "T", "expr": "m", "annotations": annotations},
                ],
            }
        ]
    }
    series, expected = [], []
    for index, value in enumerate(PROMTOOL_VALUES):
        labels = {"case": str(index), "instance": f"host{index}:9100", "job": "node"}
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series.append({"series": f"m{{{selector}}}", "values": value})
        expected.append(
            {
                "exp_labels": labels,
                "exp_annotations": {
                    key: expander.expand(text, {"__name__": "m", **labels}, float(value), {}, "")
                    for key, text in annotations.items()
                },
            }
        )
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "0m", "alertname": "T", "exp_alerts": expected}],
            }
        ],
    }
    (tmp_path / "rules.yml").write_text(json.dumps(rules))
    (tmp_path / "tests.yml").write_text(json.dumps(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
