"""Parsing, refusing unimplemented features, selectors(), float spelling, the series notation."""

from __future__ import annotations

import math

import pytest

from monitor.errors import QueryError, UnsupportedQueryError
from monitor.model import STALE_NAN, Labels, is_stale_nan
from monitor.query import format_float, parse_expr, selectors
from monitor.query.notation import (
    NativeHistogramNotation,
    expand_values,
    parse_series_description,
    parse_series_line,
)
from monitor.store import Matcher, MatchOp

UNSUPPORTED = [
    pytest.param("up @ -1700000000", "negative @ timestamp", id="an @ time before 1970"),
    pytest.param("up @ 1e30", "out of bounds", id="an @ time past int64 milliseconds"),
    pytest.param("histogram_count(h)", "native histogram", id="native histogram function"),
    pytest.param("histogram_fraction(0, 1, h)", "native histogram", id="histogram_fraction"),
    pytest.param("mad_over_time(up[5m])", "experimental", id="experimental function"),
    pytest.param('sort_by_label(up, "job")', "experimental", id="sort_by_label"),
    pytest.param("limitk(2, up)", "experimental aggregation", id="limitk"),
    pytest.param("limit_ratio(0.5, up)", "experimental aggregation", id="limit_ratio"),
    pytest.param('up{a="b" or c="d"}', "'or'", id="or inside matchers"),
    pytest.param(r'up{a=~"\\pL"}', "regular expression", id="untranslatable regex"),
]


@pytest.mark.parametrize(("expr", "feature"), UNSUPPORTED)
def test_out_of_scope_feature_is_refused_at_parse_time(expr: str, feature: str) -> None:
    with pytest.raises(UnsupportedQueryError, match="is not supported") as info:
        parse_expr(expr)
    assert feature in str(info.value)
    assert info.value.expr == expr


ACCEPTED = [
    pytest.param("max_over_time(up[10m:1m])", id="a subquery"),
    pytest.param("max_over_time(up[10m:])", id="a subquery with the default step"),
    pytest.param("up @ 1700000000", id="the @ modifier"),
    pytest.param("rate(up[5m] @ end() offset 1m)", id="@ end() and offset on a range selector"),
    pytest.param("max_over_time(rate(up[1m])[5m:] @ start())", id="@ start() on a subquery"),
    pytest.param("up @ -0", id="an @ time of minus zero"),
    pytest.param('up{a="@ -5"} @ 5', id="a label value that reads like a negative @"),
    pytest.param("up # @ -5\n @ 5", id="a comment that reads like a negative @"),
]


@pytest.mark.parametrize("expr", ACCEPTED)
def test_at_modifier_and_subqueries_are_accepted(expr: str) -> None:
    parse_expr(expr)


def test_syntax_error_is_a_query_error_but_not_unsupported() -> None:
    with pytest.raises(QueryError) as info:
        parse_expr("sum(")
    assert not isinstance(info.value, UnsupportedQueryError)


def test_unknown_function_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="holt_winters"):
        parse_expr("holt_winters(up[5m], 0.5, 0.5)")


def test_selectors_lists_every_selector_with_its_name() -> None:
    found = selectors('rate(a{job="x"}[5m]) / on(job) {__name__=~"b|c", job!="y"}')
    assert found == [
        [Matcher("__name__", MatchOp.EQ, "a"), Matcher("job", MatchOp.EQ, "x")],
        [Matcher("__name__", MatchOp.RE, "(?s:b|c)"), Matcher("job", MatchOp.NE, "y")],
    ]


def test_selectors_finds_the_selectors_inside_subqueries() -> None:
    found = selectors('max_over_time(rate(a{job="x"}[1m])[10m:] @ 100) + b offset 1m')
    assert found == [
        [Matcher("__name__", MatchOp.EQ, "a"), Matcher("job", MatchOp.EQ, "x")],
        [Matcher("__name__", MatchOp.EQ, "b")],
    ]


def test_selectors_of_a_constant_is_empty() -> None:
    assert selectors("1 + 2") == []


FLOATS = [
    pytest.param(math.inf, "+Inf", id="positive infinity"),
    pytest.param(-math.inf, "-Inf", id="negative infinity"),
    pytest.param(math.nan, "NaN", id="NaN"),
    pytest.param(STALE_NAN, "NaN", id="stale marker is a NaN"),
    pytest.param(1.0, "1", id="integral value without a point"),
    pytest.param(0.1, "0.1", id="shortest decimal"),
    pytest.param(0.1 + 0.2, "0.30000000000000004", id="all digits needed to round-trip"),
    pytest.param(1e21, "1000000000000000000000", id="large value without exponent"),
    pytest.param(1.5e-7, "0.00000015", id="small value without exponent"),
    pytest.param(-2.5, "-2.5", id="negative value"),
    pytest.param(-0.0, "-0", id="negative zero"),
]


@pytest.mark.parametrize(("value", "text"), FLOATS)
def test_format_float_spells_like_prometheus(value: float, text: str) -> None:
    assert format_float(value) == text


EXPANSIONS = [
    pytest.param("1 2 3", [1.0, 2.0, 3.0], id="plain numbers"),
    pytest.param("0+10x3", [0.0, 10.0, 20.0, 30.0], id="increasing series has N+1 values"),
    pytest.param("10-2x2", [10.0, 8.0, 6.0], id="decreasing series"),
    pytest.param("-1+1x2", [-1.0, 0.0, 1.0], id="negative start"),
    pytest.param("5x2", [5.0, 5.0, 5.0], id="repeated value"),
    pytest.param("1 _ 2", [1.0, None, 2.0], id="one missing step"),
    pytest.param("_x3 1", [None, None, None, 1.0], id="several missing steps"),
    pytest.param("Inf -Inf", [math.inf, -math.inf], id="infinities"),
    pytest.param("0.5+0.25x2", [0.5, 0.75, 1.0], id="fractional step"),
]


@pytest.mark.parametrize(("text", "values"), EXPANSIONS)
def test_values_expand(text: str, values: list[float | None]) -> None:
    assert expand_values(text) == values


def test_stale_and_nan_values() -> None:
    stale, nan = expand_values("stale NaN")
    assert stale is not None and is_stale_nan(stale)
    assert nan is not None and math.isnan(nan) and not is_stale_nan(nan)


def test_native_histogram_samples_are_refused() -> None:
    with pytest.raises(NativeHistogramNotation):
        expand_values("1 {{schema:0 sum:1 count:1}}")


def test_series_line_splits_name_labels_and_values() -> None:
    spec = parse_series_line('up{job="api", instance="0"}  1+1x1 stale')
    assert spec.name == "up"
    assert spec.labels == Labels.of(job="api", instance="0")
    assert spec.values[:2] == [1.0, 2.0]


DESCRIPTIONS = [
    pytest.param("", ("", Labels()), id="nothing is the empty label set"),
    pytest.param("up", ("up", Labels()), id="bare name"),
    pytest.param('up{job="x"}', ("up", Labels.of(job="x")), id="name and labels"),
    pytest.param('{__name__="up", job="x"}', ("up", Labels.of(job="x")), id="name as a label"),
    pytest.param(
        '{"my.metric", "a.b"="c"}', ("my.metric", Labels({"a.b": "c"})), id="quoted names"
    ),
    pytest.param("{job='x'}", ("", Labels.of(job="x")), id="single quotes and no name"),
    pytest.param(r'm{a="x\"y"}', ("m", Labels.of(a='x"y')), id="escaped quote"),
    pytest.param("m{a=`raw\\n`}", ("m", Labels.of(a="raw\\n")), id="raw string"),
    pytest.param(
        'ns:metric:rate5m{a="b",}',
        ("ns:metric:rate5m", Labels.of(a="b")),
        id="colons and trailing comma",
    ),
]


@pytest.mark.parametrize(("text", "expected"), DESCRIPTIONS)
def test_series_descriptions(text: str, expected: tuple[str, Labels]) -> None:
    assert parse_series_description(text) == expected


BAD_LINES = [
    pytest.param('up{job="x"', id="unterminated label set"),
    pytest.param("up{job=x}", id="unquoted value"),
    pytest.param("up 1 zz", id="bad value"),
    pytest.param('up{a="1",a="2"} 1', id="label given twice"),
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_series_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_series_line(line)
