"""setup_logging's text, journald and JSON output, read back from real streams."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from monitor.log import get_logger, setup_logging

CONFIGURED = ("monitord", "aiohttp", "apscheduler", "asyncio")

# 2026-11-22T10:00:00.123Z
FIXED_TIME = 1795341600.123
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """Put the loggers setup_logging touches back the way they were."""
    saved = {}
    for name in CONFIGURED:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[TextIO, dict[str, str]]]:
    """A real file standing in for journald's stream, and the $JOURNAL_STREAM naming it."""
    with (tmp_path / "journal").open("w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        yield stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def read(stream: TextIO) -> list[str]:
    """The lines written to ``stream`` so far."""
    stream.seek(0)
    return stream.read().splitlines()


def emit_at(logger: logging.Logger, created: float, level: int, msg: str, **extra: Any) -> None:
    """Log through ``logger`` with a fixed creation time."""
    record = logger.makeRecord(logger.name, level, __file__, 1, msg, (), None, extra=extra)
    record.created = created
    logger.handle(record)


def raise_and_log(log: Callable[..., None], msg: str) -> None:
    """Raise an exception and log it with ``log(msg, exc_info=True)``."""
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log(msg, exc_info=True)


def test_get_logger_names_loggers_under_monitord() -> None:
    assert get_logger("checks.http").name == "monitord.checks.http"
    assert get_logger("checks.http") is logging.getLogger("monitord.checks.http")


# Text, outside systemd


def test_text_line_has_utc_time_level_logger_and_message() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={})
    emit_at(get_logger("test"), FIXED_TIME, logging.INFO, "hello")
    assert stream.getvalue() == "2026-11-22T10:00:00.123Z info monitord.test: hello\n"


def test_text_line_of_a_live_record() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={})
    get_logger("test").warning("%d checks failed", 3)
    assert re.fullmatch(TIMESTAMP + r" warning monitord.test: 3 checks failed\n", stream.getvalue())


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"check": "api"}, " check=api", id="a plain value is bare"),
        pytest.param({"n": 3, "ok": True}, " n=3 ok=true", id="numbers and booleans are bare"),
        pytest.param({"url": "http://x/?a=b"}, ' url="http://x/?a=b"', id="an = is quoted"),
        pytest.param({"msg_": "two words"}, ' msg_="two words"', id="a space is quoted"),
        pytest.param({"q": 'say "hi"'}, r' q="say \"hi\""', id="a quote is escaped"),
        pytest.param({"e": ""}, ' e=""', id="an empty value is quoted"),
        pytest.param({"v": None}, " v=null", id="None is null"),
        pytest.param({"body": "a\nb"}, r' body="a\nb"', id="a newline is escaped, not written"),
    ],
)
def test_text_appends_extras_as_logfmt(extra: dict[str, Any], expected: str) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={})
    get_logger("test").info("done", extra=extra)
    assert stream.getvalue().endswith(f"monitord.test: done{expected}\n")


def test_text_indents_a_traceback_under_its_message() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={})
    raise_and_log(get_logger("test").error, "check failed")
    first, *rest = stream.getvalue().splitlines()
    assert re.fullmatch(TIMESTAMP + " error monitord.test: check failed", first)
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-1] == "  RuntimeError: disk on fire"
    assert all(line.startswith("  ") for line in rest)


def test_text_indents_the_lines_of_a_multi_line_message() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={})
    get_logger("test").info("first\nsecond", extra={"k": "v"})
    first, second = stream.getvalue().splitlines()
    assert first.endswith("monitord.test: first k=v")
    assert second == "  second"


def test_level_filters_records() -> None:
    stream = io.StringIO()
    setup_logging(level="warning", stream=stream, environ={})
    get_logger("test").info("hidden")
    get_logger("test").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_debug_level_shows_debug() -> None:
    stream = io.StringIO()
    setup_logging(level="DEBUG", stream=stream, environ={})
    get_logger("test").debug("details")
    assert " debug monitord.test: details" in stream.getvalue()


def test_an_unknown_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"verbose.*debug, info, warning, error, critical"):
        setup_logging(level="verbose", stream=io.StringIO())


# Text under journald


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        pytest.param(logging.DEBUG, "<7>debug", id="debug is priority 7"),
        pytest.param(logging.INFO, "<6>info", id="info is priority 6"),
        pytest.param(logging.WARNING, "<4>warning", id="warning is priority 4"),
        pytest.param(logging.ERROR, "<3>error", id="error is priority 3"),
        pytest.param(logging.CRITICAL, "<2>critical", id="critical is priority 2"),
    ],
)
def test_journald_lines_carry_the_priority_and_no_time(
    journal: tuple[TextIO, dict[str, str]], level: int, prefix: str
) -> None:
    stream, env = journal
    setup_logging(level="debug", stream=stream, environ=env)
    get_logger("test").log(level, "hello", extra={"check": "api"})
    assert read(stream) == [f"{prefix} monitord.test: hello check=api"]


def test_journald_prefixes_every_traceback_line(journal: tuple[TextIO, dict[str, str]]) -> None:
    stream, env = journal
    setup_logging(stream=stream, environ=env)
    raise_and_log(get_logger("test").error, "check failed")
    first, *rest = read(stream)
    assert first == "<3>error monitord.test: check failed"
    assert rest[0] == "<3>  Traceback (most recent call last):"
    assert rest[-1] == "<3>  RuntimeError: disk on fire"
    assert all(line.startswith("<3>  ") for line in rest)


def test_a_journal_stream_naming_another_file_means_plain_text(
    journal: tuple[TextIO, dict[str, str]], tmp_path: Path
) -> None:
    _, env = journal  # stderr was redirected elsewhere after systemd set the variable
    with (tmp_path / "elsewhere").open("w+", encoding="utf-8") as stream:
        setup_logging(stream=stream, environ=env)
        get_logger("test").info("hello")
        [line] = read(stream)
    assert re.fullmatch(TIMESTAMP + " info monitord.test: hello", line)


@pytest.mark.parametrize(
    "value",
    [pytest.param("8:1234", id="a stream without a descriptor"), pytest.param("x", id="garbage")],
)
def test_a_journal_stream_that_cannot_be_checked_means_plain_text(value: str) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream, environ={"JOURNAL_STREAM": value})
    get_logger("test").info("hello")
    assert re.fullmatch(TIMESTAMP + r" info monitord.test: hello\n", stream.getvalue())


# JSON


def test_json_line_has_the_core_fields_and_extras() -> None:
    stream = io.StringIO()
    setup_logging(fmt="json", stream=stream, environ={})
    emit_at(get_logger("test"), FIXED_TIME, logging.WARNING, "slow", check="api", ms=812.5)
    assert json.loads(stream.getvalue()) == {
        "ts": "2026-11-22T10:00:00.123Z",
        "level": "warning",
        "logger": "monitord.test",
        "msg": "slow",
        "check": "api",
        "ms": 812.5,
    }


def test_json_is_one_line_per_record_with_the_traceback_in_exc() -> None:
    stream = io.StringIO()
    setup_logging(fmt="json", stream=stream, environ={})
    raise_and_log(get_logger("test").error, "two\nlines")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["msg"] == "two\nlines"
    assert entry["exc"].startswith("Traceback (most recent call last):\n")
    assert entry["exc"].endswith("RuntimeError: disk on fire")


def test_json_keeps_an_extra_that_shadows_a_core_field_under_another_name() -> None:
    stream = io.StringIO()
    setup_logging(fmt="json", stream=stream, environ={})
    get_logger("test").info("hi", extra={"level": 3, "path": Path("/x")})
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "info"
    assert entry["extra_level"] == 3
    assert entry["path"] == "/x"


def test_json_under_journald_carries_the_priority_prefix(
    journal: tuple[TextIO, dict[str, str]],
) -> None:
    stream, env = journal
    setup_logging(fmt="json", stream=stream, environ=env)
    get_logger("test").error("bad")
    [line] = read(stream)
    assert line.startswith("<3>{")
    assert json.loads(line.removeprefix("<3>"))["msg"] == "bad"


# Which loggers are configured


@pytest.mark.parametrize("library", ["aiohttp", "apscheduler", "asyncio"])
def test_library_warnings_reach_the_handler_but_not_their_info(library: str) -> None:
    stream = io.StringIO()
    setup_logging(level="debug", stream=stream, environ={})
    logging.getLogger(f"{library}.sub").info("chatter")
    logging.getLogger(f"{library}.sub").warning("trouble")
    assert "chatter" not in stream.getvalue()
    assert f" warning {library}.sub: trouble" in stream.getvalue()


def test_the_root_logger_is_left_alone() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    setup_logging(stream=io.StringIO(), environ={})
    assert (list(root.handlers), root.level) == before
    assert not logging.getLogger("monitord").propagate


def test_calling_setup_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(stream=first, environ={})
    setup_logging(stream=second, environ={})
    get_logger("test").info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert len(logging.getLogger("monitord").handlers) == 1
