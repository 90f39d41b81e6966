"""Gatus's condition language: parsing at load time, every placeholder and function."""

from __future__ import annotations

import json

import pytest

from checks.conditions import PLACEHOLDERS, ConditionContext, parse_condition

BODY = json.dumps(
    {
        "status": "UP",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "nothing": None,
        "name": "monitord",
        "data": [{"status": "ok", "id": 1}, {"status": "degraded", "id": 2}],
        "items": ["a", "b", "c"],
        "nested": {"b": 2, "a": 1},
        "matrix": [[1, 2], [3, 4]],
        "big": 12345678901234567890,
    }
).encode()

CTX = ConditionContext(
    status=200,
    response_time_ms=120,
    body=BODY,
    headers={"Content-Type": "application/json; charset=utf-8", "X-Request-Id": "abc123"},
    certificate_expiration_ms=72 * 3600 * 1000,
    connected=True,
    ip="127.0.0.1",
    dns_rcode="NOERROR",
)


def check(text: str, ctx: ConditionContext = CTX) -> tuple[bool, str]:
    result = parse_condition(text).evaluate(ctx)
    return result.success, result.display


@pytest.mark.parametrize(
    ("text", "success"),
    [
        pytest.param("[STATUS] == 200", True, id="status equals its code"),
        pytest.param("[STATUS] != 200", False, id="status differs is false when it is 200"),
        pytest.param("[STATUS] == 0xC8", True, id="integers compare by value across bases"),
        pytest.param("[STATUS] < 300", True, id="status below 300"),
        pytest.param("[STATUS] >= 201", False, id="status 200 is not at least 201"),
        pytest.param("[RESPONSE_TIME] < 500", True, id="response time in ms below 500"),
        pytest.param("[RESPONSE_TIME] > 120", False, id="response time 120 is not above 120"),
        pytest.param("[RESPONSE_TIME] <= 120", True, id="response time at most 120"),
        pytest.param("[RESPONSE_TIME] < 1s", True, id="a duration on the right is in ms"),
        pytest.param("[BODY].status == UP", True, id="a top-level JSON field"),
        pytest.param("[body].status == UP", True, id="placeholder names ignore case"),
        pytest.param("[BODY].data[0].status == ok", True, id="a field of an array element"),
        pytest.param("[BODY].data[1].id == 2", True, id="a JSON number compares as an integer"),
        pytest.param("[BODY].matrix[1][0] == 3", True, id="nested array indexes"),
        pytest.param("[BODY].count > 2", True, id="a JSON number compares numerically"),
        pytest.param("[BODY].ratio == 0.5", True, id="a float renders as Go renders it"),
        pytest.param("[BODY].ok == true", True, id="a JSON boolean renders as true"),
        pytest.param('[BODY].nested == {"a":1,"b":2}', True, id="an object is minified JSON"),
        pytest.param("[BODY].items == [a b c]", True, id="an array renders as Go's %v"),
        pytest.param(
            "[BODY].big == 12345678901234567168", True, id="big integers lose precision as in Go"
        ),
        pytest.param("[BODY].missing == x", False, id="a missing field never equals"),
        pytest.param("[BODY].nothing == <nil>", False, id="a null field is invalid"),
        pytest.param("[BODY].data[9].status == ok", False, id="an index past the end is invalid"),
        pytest.param("[BODY] == pat(*monitord*)", True, id="the whole body against a glob"),
        pytest.param("len([BODY].items) == 3", True, id="len of a JSON array"),
        pytest.param("len([BODY].items) > 0", True, id="len with an ordering operator"),
        pytest.param("len([BODY].name) == 8", True, id="len of a string counts bytes"),
        pytest.param("len([BODY].missing) == 0", False, id="len of a missing field is invalid"),
        pytest.param("len([IP]) == 9", True, id="len of a plain placeholder"),
        pytest.param("has([BODY].status) == true", True, id="has of a present field"),
        pytest.param("has([BODY].missing) == false", True, id="has of a missing field"),
        pytest.param("has([BODY]) == true", True, id="has of a non-empty body"),
        pytest.param("[BODY].name == pat(mon*)", True, id="pat matches a glob"),
        pytest.param("pat(*tord) == [BODY].name", True, id="pat works on the left too"),
        pytest.param("[BODY].name == pat(m?nitor[a-d])", True, id="pat has ? and classes"),
        pytest.param("[BODY].name == pat(x*)", False, id="pat that does not match"),
        pytest.param("[BODY].name != pat(x*)", True, id="not equal to a pattern"),
        pytest.param("[STATUS] == any(200, 201)", True, id="any lists the accepted values"),
        pytest.param("any(201, 204) == [STATUS]", False, id="any on the left, not listed"),
        pytest.param("[HEADERS].content-type == pat(application/json*)", True, id="a header"),
        pytest.param("[HEADERS].X-REQUEST-ID == abc123", True, id="header names ignore case"),
        pytest.param("has([HEADERS].x-missing) == false", True, id="has of a missing header"),
        pytest.param("[HEADERS].x-missing == x", False, id="a missing header is invalid"),
        pytest.param("[CERTIFICATE_EXPIRATION] > 48h", True, id="certificate beyond 48h"),
        pytest.param("[CERTIFICATE_EXPIRATION] > 96h", False, id="certificate not beyond 96h"),
        pytest.param("[CERTIFICATE_EXPIRATION] > 1h30m", True, id="compound Go durations"),
        pytest.param("[CONNECTED] == true", True, id="connected"),
        pytest.param("[IP] == 127.0.0.1", True, id="the peer address"),
        pytest.param("[IP] == pat(127.0.*)", True, id="the peer address against a glob"),
        pytest.param("[DNS_RCODE] == NOERROR", True, id="the DNS response code"),
        pytest.param("[BODY].name > 5", False, id="text on an ordering operator counts as 0"),
    ],
)
def test_condition(text: str, success: bool) -> None:
    assert check(text)[0] is success


def test_the_whole_array_body_and_its_length() -> None:
    ctx = ConditionContext(body=b'[{"id": 1}, {"id": 2}]')
    assert check("len([BODY]) == 2", ctx)[0]
    assert check("[BODY][1].id == 2", ctx)[0]


def test_a_body_that_is_not_json_has_no_fields_but_a_length() -> None:
    ctx = ConditionContext(body=b"plain text")
    assert check("len([BODY]) == 10", ctx)[0]
    assert not check("[BODY].x == y", ctx)[0]
    assert check("[BODY] == plain text", ctx)[0]


def test_not_connected_reads_as_false_and_status_zero() -> None:
    ctx = ConditionContext()
    assert check("[CONNECTED] == false", ctx)[0]
    assert check("[STATUS] == 0", ctx)[0]


@pytest.mark.parametrize(
    ("text", "display"),
    [
        pytest.param(
            "[STATUS] == 404", "[STATUS] (200) == 404", id="a placeholder shows its value"
        ),
        pytest.param("[RESPONSE_TIME] < 100", "[RESPONSE_TIME] (120) < 100", id="numbers too"),
        pytest.param(
            "[CERTIFICATE_EXPIRATION] > 96h",
            "[CERTIFICATE_EXPIRATION] (72h) > 96h",
            id="expiry shows as a duration",
        ),
        pytest.param(
            "[BODY].missing == x", "[BODY].missing (INVALID) == x", id="an invalid path is marked"
        ),
        pytest.param(
            "[BODY] == pat(x*)",
            f"[BODY] ({BODY.decode()[:25]}...(truncated)) == pat(x*)",
            id="a long value beside a pattern is truncated",
        ),
    ],
)
def test_a_failed_condition_shows_what_was_found(text: str, display: str) -> None:
    success, shown = check(text)
    assert not success
    assert shown == display


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("[STATUS]==200", "has no comparison", id="an operator needs spaces around it"),
        pytest.param("[STATUS] 200", "has no comparison", id="no operator at all"),
        pytest.param("[STATUS_CODE] == 200", "did you mean [STATUS]", id="a misspelt placeholder"),
        pytest.param("[STATUS] == 200 == 201", "more than one", id="two comparisons"),
        pytest.param("[STATUS] < any(200, 201)", "compares with == or !=", id="any with <"),
        pytest.param("len(200) == 3", "takes a placeholder", id="len of a literal"),
        pytest.param("len([BODY] == 3", "closing parenthesis", id="len without its parenthesis"),
        pytest.param("[HEADERS] == x", "name the header", id="headers without a name"),
        pytest.param("[STATUS].x == 1", "takes no path", id="a path after a plain placeholder"),
        pytest.param("[BODY]x == 1", "follows [BODY]", id="a path not starting with a dot"),
    ],
)
def test_a_bad_condition_is_refused_when_parsed(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("(", r"\(")):
        parse_condition(text)


def test_a_placeholder_the_check_does_not_supply_is_refused() -> None:
    allowed = [p for p in PLACEHOLDERS if p != "[DNS_RCODE]"]
    with pytest.raises(ValueError, match="not available in this check"):
        parse_condition("[DNS_RCODE] == NOERROR", allowed)


def test_conditions_compare_by_their_text() -> None:
    assert parse_condition("[STATUS] == 200") == parse_condition("[STATUS] == 200")
    assert parse_condition("[STATUS] == 200") != parse_condition("[STATUS] == 201")
