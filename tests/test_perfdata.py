"""The perfdata parser against the Monitoring Plugins guidelines' grammar."""

from __future__ import annotations

import math

import pytest

from checks.perfdata import (
    PerfData,
    Range,
    parse_output,
    parse_perfdata,
    parse_range,
)

INF = math.inf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("time=0.5s", [PerfData("time", 0.5, "s")], id="seconds stay seconds"),
        pytest.param("time=250ms", [PerfData("time", 0.25, "s")], id="ms become seconds"),
        pytest.param("rtt=1500us", [PerfData("rtt", 0.0015, "s")], id="us become seconds"),
        pytest.param("size=2048B", [PerfData("size", 2048.0, "B")], id="bytes stay bytes"),
        pytest.param("size=2KB", [PerfData("size", 2048.0, "B")], id="KB is 1024 bytes"),
        pytest.param("size=3MB", [PerfData("size", 3 * 1024.0**2, "B")], id="MB is 1024 KB"),
        pytest.param("size=1GB", [PerfData("size", 1024.0**3, "B")], id="GB is 1024 MB"),
        pytest.param("size=1TB", [PerfData("size", 1024.0**4, "B")], id="TB is 1024 GB"),
        pytest.param("used=42.5%", [PerfData("used", 42.5, "%")], id="percent stays percent"),
        pytest.param("bytes=123456c", [PerfData("bytes", 123456.0, "c")], id="counter keeps c"),
        pytest.param("users=3", [PerfData("users", 3.0, "")], id="no unit is a number"),
        pytest.param("temp=21.5degC", [PerfData("temp", 21.5, "degC")], id="unknown uom kept"),
        pytest.param("neg=-3.25", [PerfData("neg", -3.25, "")], id="negative value"),
        pytest.param("x=.5", [PerfData("x", 0.5, "")], id="leading dot"),
        pytest.param("x=6.02e3", [PerfData("x", 6020.0, "")], id="scientific notation is read"),
        pytest.param(
            "'disk usage /'=10MB;20;30;0;100",
            [
                PerfData(
                    "disk usage /",
                    10 * 1024.0**2,
                    "B",
                    Range(0, 20 * 1024.0**2),
                    Range(0, 30 * 1024.0**2),
                    0.0,
                    100 * 1024.0**2,
                )
            ],
            id="quoted label with spaces and every field scaled by the unit",
        ),
        pytest.param(
            "'it''s here'=1",
            [PerfData("it's here", 1.0)],
            id="two single quotes in a quoted label are one quote",
        ),
        pytest.param(
            "'a=b'=1 '''x'''=2",
            [PerfData("a=b", 1.0), PerfData("'x'", 2.0)],
            id="equals sign and leading and trailing quotes in quoted labels",
        ),
        pytest.param(
            "load1=0.950;50.000;60.000;0; load5=0.790;40.000;50.000;0;",
            [
                PerfData("load1", 0.95, "", Range(0, 50), Range(0, 60), 0.0),
                PerfData("load5", 0.79, "", Range(0, 40), Range(0, 50), 0.0),
            ],
            id="check_load with trailing semicolons",
        ),
        pytest.param("a=1;;;;", [PerfData("a", 1.0)], id="empty warn crit min max are absent"),
        pytest.param("a=1;;5", [PerfData("a", 1.0, critical=Range(0, 5))], id="crit without warn"),
        pytest.param(
            "a=U;1;2;0;10",
            [PerfData("a", math.nan, "", Range(0, 1), Range(0, 2), 0.0, 10.0)],
            id="U is an unknown value",
        ),
        pytest.param(
            "a=5;10:;~:20;3",
            [PerfData("a", 5.0, "", Range(10, INF), Range(-INF, 20), 3.0)],
            id="lower-bound and negative-infinity ranges",
        ),
        pytest.param(
            "a=5;@10:20;10:20",
            [PerfData("a", 5.0, "", Range(10, 20, inside=True), Range(10, 20))],
            id="inside and outside ranges",
        ),
        pytest.param(
            "  a=1   b=2  ",
            [PerfData("a", 1.0), PerfData("b", 2.0)],
            id="extra spaces between items",
        ),
        pytest.param("", [], id="nothing"),
    ],
)
def test_parse_perfdata(text: str, expected: list[PerfData]) -> None:
    items, errors = parse_perfdata(text)
    assert errors == []
    assert [(i.label, i.uom) for i in items] == [(i.label, i.uom) for i in expected]
    assert [_numbers(i) for i in items] == [
        pytest.approx(_numbers(i), nan_ok=True) for i in expected
    ]


def _numbers(item: PerfData) -> tuple[float, ...]:
    """The item's numbers in a flat tuple (absent ones as None's stand-in -1e300)."""
    absent = -1e300
    numbers = [item.value, absent if item.min is None else item.min]
    numbers.append(absent if item.max is None else item.max)
    for r in (item.warning, item.critical):
        numbers += [absent] * 3 if r is None else [r.start, r.end, float(r.inside)]
    return tuple(numbers)


@pytest.mark.parametrize(
    ("text", "good", "reason"),
    [
        pytest.param("a=x b=2", ["b"], "value 'x' is not a number", id="value not a number"),
        pytest.param("a b=2", ["b"], "no '='", id="label without equals sign"),
        pytest.param("=1 b=2", ["b"], "the label is empty", id="empty label"),
        pytest.param("a=1;x b=2", ["b"], "warn 'x' is not a range", id="warn not a range"),
        pytest.param("a=1;20:10", [], "starts after it ends", id="range start after end"),
        pytest.param("a=1;;;z", [], "min 'z' is not a number", id="min not a number"),
        pytest.param("a=1;1;2;3;4;5", [], "more than", id="too many fields"),
        pytest.param("b=2 'open=1", ["b"], "not closed", id="quoted label not closed"),
        pytest.param("a=1.2.3", [], "is not a number", id="two decimal points"),
    ],
)
def test_malformed_items_are_reported_and_skipped(text: str, good: list[str], reason: str) -> None:
    items, errors = parse_perfdata(text)
    assert [item.label for item in items] == good
    assert len(errors) == 1
    assert reason in str(errors[0])


@pytest.mark.parametrize(
    ("text", "expected", "upper"),
    [
        pytest.param("10", Range(0, 10), 10.0, id="a number is 0 to it, an upper bound"),
        pytest.param("0:10", Range(0, 10), 10.0, id="0 to 10 is an upper bound"),
        pytest.param("~:10", Range(-INF, 10), 10.0, id="minus infinity to 10 is an upper bound"),
        pytest.param("10:", Range(10, INF), None, id="10 or more is a lower bound"),
        pytest.param("10:20", Range(10, 20), None, id="between two numbers"),
        pytest.param("@10:20", Range(10, 20, True), None, id="inside a range"),
        pytest.param("-5:-1", Range(-5, -1), None, id="negative numbers"),
    ],
)
def test_parse_range(text: str, expected: Range, upper: float | None) -> None:
    parsed = parse_range(text)
    assert parsed == expected
    assert parsed.upper_bound == upper


@pytest.mark.parametrize(
    ("text", "value", "alerts"),
    [
        pytest.param("10", -1, True, id="10 alerts below 0"),
        pytest.param("10", 10, False, id="10 includes its end"),
        pytest.param("10", 11, True, id="10 alerts above 10"),
        pytest.param("10:", 9, True, id="10: alerts below 10"),
        pytest.param("~:10", -1000, False, id="~:10 has no lower end"),
        pytest.param("@10:20", 15, True, id="@10:20 alerts inside"),
        pytest.param("@10:20", 21, False, id="@10:20 is quiet outside"),
    ],
)
def test_range_alerts_as_the_guidelines_table_says(text: str, value: float, alerts: bool) -> None:
    assert parse_range(text).alerts(value) is alerts


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("@", id="only the inside sign"),
        pytest.param("abc", id="letters"),
        pytest.param("1:2:3", id="two colons"),
        pytest.param("~", id="minus infinity without a colon"),
    ],
)
def test_bad_ranges(text: str) -> None:
    with pytest.raises(ValueError, match="range"):
        parse_range(text)


def test_output_with_long_text_and_perfdata_on_later_lines() -> None:
    # The example of the Nagios plugin API's "multiple lines of output".
    text = (
        "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%);\n"
        "/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414 \n"
        "/var/log=818MB;970;975;0;980\n"
    )
    output = parse_output(text)
    assert output.message == "DISK OK - free space: / 3326 MB (56%);"
    assert output.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/var/log 819 MB (84%);"
    items, errors = parse_perfdata(output.perfdata)
    assert errors == []
    assert [i.label for i in items] == ["/", "/boot", "/home", "/var/log"]
    assert items[1].value == 68 * 1024.0**2


def test_output_without_perfdata() -> None:
    output = parse_output("OK: all good\n")
    assert output == type(output)("OK: all good", "", "")
