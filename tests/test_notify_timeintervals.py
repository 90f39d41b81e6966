"""Time intervals: parsing, validation messages and containment, ported from Alertmanager's
``timeinterval/timeinterval_test.go`` and the examples of its configuration docs."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.timeintervals import InclusiveRange, NamedTimeInterval, TimeInterval


def at(text: str) -> datetime:
    """Go's RFC822Z layout, ``02 Jan 06 15:04 -0700``, as an aware datetime."""
    day, month, year, clock, zone = text.split()
    return parsedate_to_datetime(f"{int(day):02d} {month} 20{year} {clock}:00 {zone}")


def interval(**spec: Any) -> TimeInterval:
    return TimeInterval.model_validate(spec)


def error_of(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        TimeInterval.model_validate(spec)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["msg"]).removeprefix("Value error, ")


BUSINESS_HOURS = {"times": [{"start_time": "09:00", "end_time": "17:00"}]}


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        pytest.param(
            {},
            ["02 Jan 06 15:04 +0000", "03 Jan 07 10:04 +0000", "04 Jan 06 09:04 +0000"],
            [],
            id="an empty interval holds at every instant",
        ),
        pytest.param(
            {
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
                "weekdays": ["monday:friday"],
            },
            ["04 May 20 15:04 +0000", "05 May 20 10:04 +0000", "09 Jun 20 09:04 +0000"],
            ["03 May 20 15:04 +0000", "04 May 20 08:59 +0000", "05 May 20 05:00 +0000"],
            id="9am to 5pm monday to friday",
        ),
        pytest.param(
            {"days_of_month": ["4:6"], "months": ["april"], "years": ["2020"]},
            ["04 Apr 20 15:04 +0000", "05 Apr 20 00:00 +0000", "06 Apr 20 23:05 +0000"],
            [
                "03 May 18 15:04 +0000",
                "03 Apr 20 23:59 +0000",
                "04 Jun 20 23:59 +0000",
                "06 Apr 19 23:59 +0000",
                "07 Apr 20 00:00 +0000",
            ],
            id="easter 2020 by day of month, month and year",
        ),
        pytest.param(
            {"days_of_month": ["-3:-1"]},
            [
                "31 Jan 20 15:04 +0000",
                "30 Jan 20 15:04 +0000",
                "29 Jan 20 15:04 +0000",
                "30 Jun 20 00:00 +0000",
                "29 Feb 20 23:05 +0000",
            ],
            [
                "27 Jan 20 15:04 +0000",
                "03 Apr 20 23:59 +0000",
                "01 Mar 20 00:00 +0000",
            ],
            id="negative days of the month are the last days of each month",
        ),
        pytest.param(
            {"months": ["6"], "days_of_month": ["-31:-1"]},
            ["30 Jun 20 00:00 +0000", "01 Jun 20 00:00 +0000"],
            ["31 May 20 00:00 +0000", "1 Jul 20 00:00 +0000"],
            id="out of bound days are clamped to the month",
        ),
        pytest.param(
            {"days_of_month": ["30:31"], "years": ["2020:2023"], "months": ["february"]},
            [],
            ["28 Feb 21 13:00 +0000"],
            id="a range starting after the end of a short month does not hold in it",
        ),
        pytest.param(
            {
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
                "weekdays": ["monday:friday"],
                "location": "Australia/Sydney",
            },
            ["06 Apr 21 13:00 +1000"],
            ["06 Apr 21 13:00 +0000"],
            id="location makes the interval read Sydney's clock",
        ),
        pytest.param(
            {
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
                "weekdays": ["monday:friday"],
                "months": ["november"],
                "location": "Australia/Sydney",
            },
            ["01 Nov 21 09:00 +1100", "31 Oct 21 22:00 +0000"],
            ["31 Oct 21 21:00 +0000"],
            id="location follows daylight saving time",
        ),
        pytest.param(
            {
                "weekdays": ["monday:friday", "sunday"],
                "months": ["january:march"],
                "days_of_month": ["-7:-1"],
                "years": ["2020:2025", "2030:2035"],
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
            },
            [
                "27 Jan 21 09:00 +0000",
                "28 Jan 21 16:59 +0000",
                "29 Jan 21 13:00 +0000",
                "31 Mar 25 13:00 +0000",
                "31 Jan 35 13:00 +0000",
            ],
            [
                "30 Jan 21 13:00 +0000",
                "01 Apr 21 13:00 +0000",
                "30 Jan 26 13:00 +0000",
                "31 Jan 35 17:01 +0000",
            ],
            id="last week of the first quarter without saturdays in business hours",
        ),
        pytest.param(
            {
                "weekdays": ["monday:wednesday", "saturday", "sunday"],
                "times": [{"start_time": "13:00", "end_time": "15:00"}],
                "days_of_month": ["1", "10", "20:-1"],
                "years": ["2020:2023"],
                "months": ["january:march"],
            },
            ["10 Jan 21 13:00 +0000", "30 Jan 21 14:24 +0000"],
            ["09 Jan 21 13:00 +0000", "20 Jan 21 12:59 +0000", "02 Feb 21 13:00 +0000"],
            id="several ranges per part, any of which may hold",
        ),
        pytest.param(
            BUSINESS_HOURS,
            ["08 Jul 20 09:00 +0000", "08 Jul 20 16:59 +0000"],
            ["08 Jul 20 08:59 +0000", "08 Jul 20 17:00 +0000"],
            id="start time is included and end time excluded",
        ),
        pytest.param(
            {"times": [{"start_time": "17:00", "end_time": "24:00"}]},
            ["08 Jul 20 17:00 +0000", "08 Jul 20 23:59 +0000"],
            ["09 Jul 20 00:00 +0000", "08 Jul 20 16:59 +0000"],
            id="24:00 ends the day",
        ),
        pytest.param(
            {"weekdays": ["Saturday", "SUNDAY"], "months": ["December"]},
            ["05 Dec 20 12:00 +0000", "06 Dec 20 12:00 +0000"],
            ["07 Dec 20 12:00 +0000"],
            id="names are case-insensitive",
        ),
        pytest.param(
            {"times": [{"start_time": "09:00", "end_time": "17:00"}]},
            ["08 Jul 20 18:00 +0200"],
            ["08 Jul 20 10:00 +0200"],
            id="without a location the interval reads UTC",
        ),
        pytest.param(
            {"times": []},
            [],
            ["08 Jul 20 10:00 +0000"],
            id="an empty list of times never holds, as in Alertmanager",
        ),
    ],
)
def test_contains(spec: dict[str, Any], inside: list[str], outside: list[str]) -> None:
    parsed = interval(**spec)
    for text in inside:
        assert parsed.contains(at(text)), text
    for text in outside:
        assert not parsed.contains(at(text)), text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"times": [{"start_time": "01:99", "end_time": "23:59"}]},
            "couldn't parse timestamp 01:99, invalid format",
            id="invalid start time",
        ),
        pytest.param(
            {"times": [{"start_time": "00:00", "end_time": "99:99"}]},
            "couldn't parse timestamp 99:99, invalid format",
            id="invalid end time",
        ),
        pytest.param(
            {"times": [{"start_time": "12:30", "end_time": "24:01"}]},
            "couldn't parse timestamp 24:01, invalid format",
            id="end time past 24:00",
        ),
        pytest.param(
            {"times": [{"start_time": "17:31", "end_time": "17:31"}]},
            "start time cannot be equal or greater than end time",
            id="start and end times equal",
        ),
        pytest.param(
            {"times": [{"start_time": "09:30", "end_time": "07:41"}]},
            "start time cannot be equal or greater than end time",
            id="start time after end time",
        ),
        pytest.param(
            {"times": [{"start_time": "14:03"}]},
            "both start and end times must be provided",
            id="no end time",
        ),
        pytest.param(
            {"weekdays": ["saturday:sunday"]},
            "start day cannot be before end day",
            id="a weekend range wrapping past sunday, which is day 0",
        ),
        pytest.param(
            {"weekdays": ["friday:monday"]},
            "start day cannot be before end day",
            id="weekdays out of order",
        ),
        pytest.param(
            {"weekdays": ["blurgsday:flurgsday"]},
            "blurgsday is not a valid weekday",
            id="unknown weekday",
        ),
        pytest.param(
            {"weekdays": ["1:3"]}, "1 is not a valid weekday", id="numeric weekdays are refused"
        ),
        pytest.param(
            {"weekdays": ["-2:-1"]},
            "-2 is not a valid weekday",
            id="negative numeric weekdays are refused",
        ),
        pytest.param(
            {"days_of_month": ["0"]},
            "0 is not a valid day of the month: out of range",
            id="day zero of the month",
        ),
        pytest.param(
            {"days_of_month": ["-50:-20"]},
            "-50 is not a valid day of the month: out of range",
            id="day of month below -31",
        ),
        pytest.param(
            {"days_of_month": ["1:50"]},
            "50 is not a valid day of the month: out of range",
            id="day of month above 31",
        ),
        pytest.param(
            {"days_of_month": ["-15:5"]},
            "end day must be negative if start day is negative",
            id="negative start day with positive end day",
        ),
        pytest.param(
            {"days_of_month": ["10:-25"]},
            "end day -25 is always before start day 10",
            id="negative end day always before the start day",
        ),
        pytest.param(
            {"days_of_month": ["first"]},
            'strconv.Atoi: parsing "first": invalid syntax',
            id="day of month that is not a number",
        ),
        pytest.param(
            {"months": ["martius:june"]}, "martius is not a valid month", id="unknown start month"
        ),
        pytest.param(
            {"months": ["march:junius"]}, "junius is not a valid month", id="unknown end month"
        ),
        pytest.param(
            {"months": ["december:january"]},
            "end month january is before start month december",
            id="months out of order",
        ),
        pytest.param(
            {"years": ["2022:2020"]},
            "end year 2020 is before start year 2022",
            id="years out of order",
        ),
        pytest.param(
            {"years": ["2020:2021:2022"]},
            "couldn't parse range 2020:2021:2022, invalid format",
            id="a range with two colons",
        ),
        pytest.param(
            {"location": "Mars/Olympus_Mons"},
            "unknown time zone Mars/Olympus_Mons",
            id="unknown time zone",
        ),
    ],
)
def test_invalid_intervals(spec: dict[str, Any], message: str) -> None:
    assert error_of(spec) == message


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        pytest.param(
            {"times": [{"start_time": "00:00", "end_time": "24:00"}]},
            "times",
            (0, 1440),
            id="the whole day is minutes 0 to 1440",
        ),
        pytest.param(
            {"times": [{"start_time": "01:35", "end_time": "17:39"}]},
            "times",
            (95, 1059),
            id="times become minutes since midnight",
        ),
        pytest.param(
            {"days_of_month": ["1:-1"]},
            "days_of_month",
            InclusiveRange(1, -1),
            id="a positive start with a negative end is the whole month",
        ),
        pytest.param(
            {"months": ["January:december"]},
            "months",
            InclusiveRange(1, 12),
            id="months by name in any case",
        ),
        pytest.param({"months": ["1:3"]}, "months", InclusiveRange(1, 3), id="months by number"),
        pytest.param(
            {"weekdays": ["sunday"]},
            "weekdays",
            InclusiveRange(0, 0),
            id="a single weekday, sunday being day 0",
        ),
    ],
)
def test_parsed_values(spec: dict[str, Any], field: str, expected: object) -> None:
    parsed = interval(**spec)
    first = getattr(parsed, field)[0]
    if field == "times":
        assert (first.start_minute, first.end_minute) == expected
    else:
        assert first == expected


def test_dump_gives_back_the_config_spelling() -> None:
    spec = {
        "times": [{"start_time": "09:00", "end_time": "17:00"}],
        "weekdays": ["monday:friday", "sunday"],
        "days_of_month": ["1:5", "-3:-1"],
        "months": ["january:march"],
        "years": ["2020:2022"],
        "location": "Europe/Berlin",
    }
    dumped = interval(**spec).model_dump()
    assert dumped == spec
    assert TimeInterval.model_validate(dumped) == interval(**spec)


def test_docs_example_named_interval() -> None:
    """The example of Alertmanager's configuration docs, under ``time_intervals:``."""
    named = NamedTimeInterval.model_validate(
        {
            "name": "offhours",
            "time_intervals": [
                {
                    "times": [{"start_time": "00:00", "end_time": "09:00"}],
                    "weekdays": ["monday:friday"],
                },
                {"weekdays": ["saturday", "sunday"]},
            ],
        }
    )
    assert named.contains(datetime(2024, 3, 4, 8, 59, tzinfo=UTC))  # Monday
    assert not named.contains(datetime(2024, 3, 4, 9, 0, tzinfo=UTC))
    assert named.contains(datetime(2024, 3, 9, 12, 0, tzinfo=UTC))  # Saturday
    assert named.contains(datetime(2024, 3, 4, 8, 0))  # naive: taken as UTC


def test_named_interval_needs_a_name() -> None:
    with pytest.raises(ValidationError, match="missing name in time interval"):
        NamedTimeInterval.model_validate({"name": "", "time_intervals": []})


def test_names_containing_reports_holding_names_and_refuses_unknown_ones() -> None:
    weekend = NamedTimeInterval.model_validate(
        {"name": "weekend", "time_intervals": [{"weekdays": ["saturday", "sunday"]}]}
    )
    nights = NamedTimeInterval.model_validate(
        {
            "name": "nights",
            "time_intervals": [{"times": [{"start_time": "00:00", "end_time": "06:00"}]}],
        }
    )
    saturday_noon = datetime(2024, 3, 9, 12, 0, tzinfo=UTC)
    found = NamedTimeInterval.names_containing(
        [weekend, nights], ["nights", "weekend"], saturday_noon
    )
    assert found == ["weekend"]
    with pytest.raises(KeyError, match="time interval holidays doesn't exist in config"):
        NamedTimeInterval.names_containing([weekend], ["holidays"], saturday_noon)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="time_zone"):
        TimeInterval.model_validate({"time_zone": "UTC"})
