"""Named time intervals (``time_intervals:``) that mute or activate routes, as Alertmanager
reads and evaluates them (``timeinterval/timeinterval.go``, ``config/config.go``).

A :class:`TimeInterval` is the conjunction of its parts; each part is a list of ranges, of
which any may hold; a part left out places no limit::

    - times: [{start_time: "09:00", end_time: "17:00"}]   # start inclusive, end exclusive
      weekdays: ["monday:friday"]                         # inclusive, by name only
      days_of_month: ["1:5", "-3:-1"]                     # inclusive; -1 is the last day
      months: ["january:march", "12"]                     # inclusive, by name or number
      years: ["2020:2022"]                                # inclusive
      location: "Europe/Berlin"                           # the clock read; UTC if left out

``24:00`` is allowed as an end time. Negative days of the month count from the month's end
and are clamped to it, as Alertmanager clamps them; a range whose start falls past the end
of a short month does not hold in it. Names are case-insensitive. Validation errors carry
Alertmanager's wording.
"""

from __future__ import annotations

import calendar
import re
import zoneinfo
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from monitor.schema import ConfigModel

__all__ = [
    "DayOfMonthRange",
    "InclusiveRange",
    "Location",
    "MonthRange",
    "NamedTimeInterval",
    "TimeInterval",
    "TimeRange",
    "WeekdayRange",
    "YearRange",
]

_WEEKDAYS: Final = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
_WEEKDAY_NAMES: Final = {number: name for name, number in _WEEKDAYS.items()}
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        start=1,
    )
}
_MONTH_NAMES: Final = {number: name for name, number in _MONTHS.items()}
_VALID_TIME: Final = re.compile(r"^((([01][0-9])|(2[0-3])):[0-5][0-9])$|(^24:00$)")
_INTEGER: Final = re.compile(r"^[+-]?[0-9]+$")


class InclusiveRange(NamedTuple):
    """A range of weekdays (0 = Sunday), days of the month, months (1 = January) or years,
    both ends included."""

    begin: int
    end: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.begin <= value <= self.end


def _atoi(text: str) -> int:
    """Go's ``strconv.Atoi``, with its error text."""
    if not _INTEGER.match(text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _weekday(text: str) -> int:
    if text not in _WEEKDAYS:
        raise ValueError(f"{text} is not a valid weekday")
    return _WEEKDAYS[text]


def _month(text: str) -> int:
    if text in _MONTHS:
        return _MONTHS[text]
    try:
        return _atoi(text)
    except ValueError:
        raise ValueError(f"{text} is not a valid month") from None


def _range(value: Any, member: Callable[[str], int]) -> tuple[str, InclusiveRange]:
    """``stringableRangeFromString``: one member or ``begin:end``, lower-cased."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a string such as 'monday:friday' or '1:5'")
    text = str(value).lower()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            raise ValueError(f"couldn't parse range {text}, invalid format")
        return text, InclusiveRange(member(parts[0]), member(parts[1]))
    number = member(text)
    return text, InclusiveRange(number, number)


def _weekday_range(value: Any) -> InclusiveRange:
    text, parsed = _range(value, _weekday)
    if parsed.begin > parsed.end:
        raise ValueError("start day cannot be before end day")
    if not (0 <= parsed.begin <= 6 and 0 <= parsed.end <= 6):
        raise ValueError(f"{text} is not a valid day of the week: out of range")
    return parsed


def _day_of_month_range(value: Any) -> InclusiveRange:
    _, parsed = _range(value, _atoi)
    begin, end = parsed
    for day in (begin, end):
        if day == 0 or not -31 <= day <= 31:
            raise ValueError(f"{day} is not a valid day of the month: out of range")
    if begin < 0 < end:
        raise ValueError("end day must be negative if start day is negative")
    # Alertmanager cannot know every month's length here; it refuses what no month of at
    # least 28 days could satisfy.
    check_begin = 28 + begin if begin < 0 else begin
    check_end = 28 + end if end < 0 else end
    if check_begin > check_end:
        raise ValueError(f"end day {end} is always before start day {begin}")
    return parsed


def _month_range(value: Any) -> InclusiveRange:
    _, parsed = _range(value, _month)
    if parsed.begin > parsed.end:
        begin = _MONTH_NAMES.get(parsed.begin, "")
        end = _MONTH_NAMES.get(parsed.end, "")
        raise ValueError(f"end month {end} is before start month {begin}")
    return parsed


def _year_range(value: Any) -> InclusiveRange:
    _, parsed = _range(value, _atoi)
    if parsed.begin > parsed.end:
        raise ValueError(f"end year {parsed.end} is before start year {parsed.begin}")
    return parsed


def _format_range(names: dict[int, str] | None) -> Callable[[InclusiveRange], str]:
    def format_range(value: InclusiveRange) -> str:
        def one(n: int) -> str:
            return names.get(n, str(n)) if names else str(n)

        if value.begin == value.end:
            return one(value.begin)
        return f"{one(value.begin)}:{one(value.end)}"

    return format_range


WeekdayRange = Annotated[
    InclusiveRange,
    PlainValidator(_weekday_range),
    PlainSerializer(_format_range(_WEEKDAY_NAMES), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["monday:friday", "sunday"]}),
]
"""``monday:friday`` or ``sunday``: weekdays by name, 0 = Sunday once parsed."""

DayOfMonthRange = Annotated[
    InclusiveRange,
    PlainValidator(_day_of_month_range),
    PlainSerializer(_format_range(None), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["1:5", "-3:-1"]}),
]
"""``1:5``, ``-3:-1`` or ``15``: days of the month, negative ones counted from its end."""

MonthRange = Annotated[
    InclusiveRange,
    PlainValidator(_month_range),
    PlainSerializer(_format_range(_MONTH_NAMES), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["january:march", "1:3"]}),
]
"""``january:march``, ``1:3`` or ``december``."""

YearRange = Annotated[
    InclusiveRange,
    PlainValidator(_year_range),
    PlainSerializer(_format_range(None), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["2020:2022"]}),
]
"""``2020:2022`` or ``2030``."""


def _location(value: Any) -> zoneinfo.ZoneInfo:
    if isinstance(value, zoneinfo.ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a time zone name such as 'Europe/Berlin'")
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value}") from None


Location = Annotated[
    zoneinfo.ZoneInfo,
    PlainValidator(_location),
    PlainSerializer(lambda zone: zone.key, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["Europe/Berlin", "UTC"]}),
]
"""An IANA time zone name (``Europe/Berlin``), read from the system's zoneinfo."""


def _minutes(text: str) -> int:
    """``parseTime``: ``HH:MM`` as minutes since midnight; ``24:00`` is 1440."""
    if not _VALID_TIME.match(text):
        raise ValueError(f"couldn't parse timestamp {text}, invalid format")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class TimeRange(ConfigModel):
    """A span of the day: from ``start_time`` (included) to ``end_time`` (excluded)."""

    start_time: str = Field(default="", description="HH:MM, included")
    end_time: str = Field(default="", description="HH:MM, excluded; 24:00 is the day's end")

    _start_minute: int = PrivateAttr(default=0)
    _end_minute: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _parse(self) -> TimeRange:
        if not self.start_time or not self.end_time:
            raise ValueError("both start and end times must be provided")
        start, end = _minutes(self.start_time), _minutes(self.end_time)
        if start >= end:
            raise ValueError("start time cannot be equal or greater than end time")
        self._start_minute, self._end_minute = start, end
        return self

    @property
    def start_minute(self) -> int:
        """Minutes since midnight at which the range begins."""
        return self._start_minute

    @property
    def end_minute(self) -> int:
        """Minutes since midnight at which the range has ended (1440 for ``24:00``)."""
        return self._end_minute

    def __contains__(self, minute: object) -> bool:
        return isinstance(minute, int) and self._start_minute <= minute < self._end_minute


_UTC_ZONE: Final = zoneinfo.ZoneInfo("UTC")


def _clamp(n: int, low: int, high: int) -> int:
    return low if n <= low else high if n >= high else n


class TimeInterval(ConfigModel):
    """One entry of a named interval's ``time_intervals``: the instants every given part
    allows (see the module's docstring)."""

    times: list[TimeRange] | None = None
    weekdays: list[WeekdayRange] | None = None
    days_of_month: list[DayOfMonthRange] | None = None
    months: list[MonthRange] | None = None
    years: list[YearRange] | None = None
    location: Location = Field(
        default=_UTC_ZONE, description="time zone whose clock the interval reads"
    )

    def contains(self, t: datetime) -> bool:
        """Tell whether instant ``t`` lies in the interval (``ContainsTime``); a naive ``t``
        is taken as UTC."""
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        local = t.astimezone(self.location)
        if self.times is not None:
            minute = local.hour * 60 + local.minute
            if not any(minute in span for span in self.times):
                return False
        if self.days_of_month is not None and not self._day_matches(local):
            return False
        if self.months is not None and not any(local.month in r for r in self.months):
            return False
        if self.weekdays is not None:
            weekday = (local.weekday() + 1) % 7  # Go's time.Weekday: Sunday is 0
            if not any(weekday in r for r in self.weekdays):
                return False
        return self.years is None or any(local.year in r for r in self.years)

    def _day_matches(self, local: datetime) -> bool:
        assert self.days_of_month is not None
        days = calendar.monthrange(local.year, local.month)[1]
        for r in self.days_of_month:
            begin = days + r.begin + 1 if r.begin < 0 else r.begin
            end = days + r.end + 1 if r.end < 0 else r.end
            if begin > days:
                continue
            begin, end = _clamp(begin, -days, days), _clamp(end, -days, days)
            if begin <= local.day <= end:
                return True
        return False


class NamedTimeInterval(ConfigModel):
    """An entry of ``time_intervals:`` (or the older ``mute_time_intervals:``): a name that
    routes give in ``mute_time_intervals``/``active_time_intervals``, and its intervals."""

    name: str = Field(description="how routes refer to it")
    time_intervals: list[TimeInterval] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_given(cls, value: str) -> str:
        if not value:
            raise ValueError("missing name in time interval")
        return value

    def contains(self, t: datetime) -> bool:
        """Tell whether any of the intervals holds at instant ``t``."""
        return any(interval.contains(t) for interval in self.time_intervals)

    @staticmethod
    def names_containing(
        intervals: Iterable[NamedTimeInterval], names: Iterable[str], t: datetime
    ) -> list[str]:
        """Of ``names``, those whose interval holds at ``t`` (Alertmanager's
        ``Intervener.Mutes``); a name no interval has raises :class:`KeyError`."""
        by_name = {interval.name: interval for interval in intervals}
        found = []
        for name in names:
            if name not in by_name:
                raise KeyError(f"time interval {name} doesn't exist in config")
            if by_name[name].contains(t):
                found.append(name)
        return found
