"""Silences: Alertmanager's validation, update and expiry rules (cases ported from
``silence/silence_test.go``), matching, retention and persistence in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifiers.matchers import Matcher, Matchers, parse_matchers
from notifiers.silences import (
    InvalidSilence,
    Silence,
    SilenceAlreadyExpired,
    SilenceNotFound,
    SilenceStore,
    SilenceStoreError,
    _can_update,
)

T0 = 1_700_000_000.0
HOUR = 3600.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def m(text: str) -> Matchers:
    return Matchers(tuple(parse_matchers(text)))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[SilenceStore]:
    with SilenceStore(None, clock=clock) as s:
        yield s


def add(store: SilenceStore, matchers: str = 'alertname="X"', **fields: object) -> str:
    fields.setdefault("ends_at", T0 + HOUR)
    return store.add(matchers=matchers, **fields)  # type: ignore[arg-type]


# -- states -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "state"),
    [
        pytest.param(T0 - 1, "pending", id="before starts_at it is pending"),
        pytest.param(T0, "active", id="at starts_at it is active"),
        pytest.param(T0 + HOUR, "active", id="at ends_at it is still active"),
        pytest.param(T0 + HOUR + 0.001, "expired", id="after ends_at it is expired"),
    ],
)
def test_state(now: float, state: str) -> None:
    silence = Silence(matchers=m("a=b"), starts_at=T0, ends_at=T0 + HOUR)
    assert silence.state(now) == state


def test_state_moves_with_the_injected_clock(store: SilenceStore, clock: Clock) -> None:
    sid = add(store, starts_at=T0 + 60, ends_at=T0 + 120)
    got = store.get(sid)
    assert got is not None
    assert got.state(clock()) == "pending"
    assert store.mutes({"alertname": "X"}) == []
    clock.advance(60)
    assert store.list(state="active")[0].id == sid
    assert store.mutes({"alertname": "X"}) == [sid]
    clock.advance(61)
    assert store.list(state="expired")[0].id == sid
    assert store.mutes({"alertname": "X"}) == []


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"matchers": ""}, "at least one matcher required", id="no matcher"),
        pytest.param(
            {"matchers": 'a=""'},
            "at least one matcher must not match the empty string",
            id="an equality with the empty value matches everything",
        ),
        pytest.param(
            {"matchers": 'a=~".*",b=~"x?"'},
            "at least one matcher must not match the empty string",
            id="regexes that all match the empty string",
        ),
        pytest.param(
            {"matchers": 'a=~"("'}, "regular expression", id="a regex that does not compile"
        ),
        pytest.param(
            {"matchers": '"a b"="x"'}, "expected a matcher", id="a label name that cannot parse"
        ),
        pytest.param(
            {"starts_at": T0 + HOUR, "ends_at": T0},
            "start time must be before end time",
            id="ends before it starts",
        ),
        pytest.param(
            {"starts_at": T0, "ends_at": T0},
            "start time must be before end time",
            id="ends when it starts",
        ),
        pytest.param(
            {"starts_at": T0 - 2 * HOUR, "ends_at": T0 - HOUR},
            "end time can't be in the past",
            id="a new silence that has already ended",
        ),
    ],
)
def test_validation(store: SilenceStore, fields: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidSilence) as info:
        add(store, **fields)  # type: ignore[arg-type]
    assert reason in str(info.value)
    assert store.list() == []


def test_invalid_label_name_in_a_silence_object(store: SilenceStore) -> None:
    bad = Silence(
        matchers=Matchers((Matcher.create("a-b", "=", "x"),)), starts_at=T0, ends_at=T0 + 1
    )
    with pytest.raises(InvalidSilence, match="invalid label matcher 0: invalid label name 'a-b'"):
        store.add(bad)


def test_a_negative_matcher_alone_is_accepted_as_alertmanager_does(store: SilenceStore) -> None:
    # matchesEmpty counts only = and =~; team!="db" matches "" but is allowed.
    sid = add(store, 'team!="db"')
    assert store.mutes({"alertname": "Y"}) == [sid]


def test_missing_end_time(store: SilenceStore) -> None:
    with pytest.raises(InvalidSilence, match="zero end"):
        store.add(matchers="a=b")


def test_unknown_id(store: SilenceStore) -> None:
    with pytest.raises(SilenceNotFound, match="silence nope not found"):
        add(store, id="nope")


# -- updates (Set and canUpdate) --------------------------------------------------------

NOW = T0
PENDING = Silence(matchers=m("a=b"), starts_at=NOW + HOUR, ends_at=NOW + 2 * HOUR)
ACTIVE = Silence(matchers=m("a=b"), starts_at=NOW - HOUR, ends_at=NOW + 2 * HOUR)
EXPIRED = Silence(matchers=m("a=b"), starts_at=NOW - HOUR, ends_at=NOW - 1)


def other(starts: float, ends: float, matchers: str = "a=b") -> Silence:
    return Silence(matchers=m(matchers), starts_at=starts, ends_at=ends)


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        pytest.param(EXPIRED, other(NOW, NOW), False, id="an expired silence never updates"),
        pytest.param(
            PENDING,
            other(NOW - 60, NOW + HOUR),
            False,
            id="a pending silence cannot start in the past",
        ),
        pytest.param(
            PENDING, other(NOW + 60, NOW + 60), True, id="a pending silence may move its start"
        ),
        pytest.param(
            PENDING, other(NOW, NOW + 2 * HOUR), True, id="a pending silence may start right now"
        ),
        pytest.param(
            ACTIVE,
            other(NOW - 60, NOW + 2 * HOUR),
            False,
            id="an active silence keeps its start",
        ),
        pytest.param(
            ACTIVE,
            other(NOW - HOUR + 0.5, NOW + 2 * HOUR),
            True,
            id="an active silence's start is compared in whole seconds",
        ),
        pytest.param(
            ACTIVE,
            other(NOW - HOUR, NOW - 1),
            False,
            id="an active silence cannot end in the past",
        ),
        pytest.param(
            ACTIVE, other(NOW - HOUR, NOW), True, id="an active silence may end right now"
        ),
        pytest.param(
            ACTIVE, other(NOW - HOUR, NOW + 3 * HOUR), True, id="an active silence may be extended"
        ),
        pytest.param(
            ACTIVE,
            other(NOW - HOUR, NOW + 2 * HOUR, "a=c"),
            False,
            id="changed matchers never update",
        ),
        pytest.param(
            ACTIVE,
            other(NOW - HOUR, NOW + 2 * HOUR, "b=c,a=b"),
            False,
            id="matchers are compared in order",
        ),
    ],
)
def test_can_update(old: Silence, new: Silence, ok: bool) -> None:
    assert _can_update(old, new, NOW) is ok


def test_extending_an_active_silence_updates_it_in_place(store: SilenceStore, clock: Clock) -> None:
    sid = add(store, comment="first", created_by="a")
    clock.advance(60)
    assert add(store, id=sid, starts_at=T0, ends_at=T0 + 2 * HOUR, comment="second") == sid
    got = store.get(sid)
    assert got is not None
    assert (got.ends_at, got.comment, got.created_by, got.updated_at) == (
        T0 + 2 * HOUR,
        "second",
        "",
        T0 + 60,
    )
    assert len(store.list()) == 1


def test_changing_an_active_silence_start_replaces_it(store: SilenceStore, clock: Clock) -> None:
    sid = add(store)
    clock.advance(60)
    new_id = add(store, id=sid, starts_at=T0 + 30, ends_at=T0 + HOUR)
    assert new_id != sid
    old, new = store.get(sid), store.get(new_id)
    assert old is not None and new is not None
    assert (old.starts_at, old.ends_at) == (T0, T0 + 60), "the old one ended now"
    assert new.starts_at == T0 + 60, "a new silence starting in the past starts now"
    clock.advance(1)
    assert old.state(clock()) == "expired"
    assert store.mutes({"alertname": "X"}) == [new_id]


def test_changing_matchers_replaces_the_silence(store: SilenceStore, clock: Clock) -> None:
    sid = add(store)
    new_id = add(store, 'alertname="Y"', id=sid, starts_at=T0)
    assert new_id != sid
    clock.advance(1)
    assert [s.id for s in store.list(state="expired")] == [sid]
    assert store.mutes({"alertname": "Y"}) == [new_id]
    assert store.mutes({"alertname": "X"}) == []


def test_pending_silence_moved_into_the_past(store: SilenceStore, clock: Clock) -> None:
    sid = add(store, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
    assert add(store, id=sid, starts_at=T0 + 2 * 60, ends_at=T0 + 2 * HOUR) == sid
    new_id = add(store, id=sid, starts_at=T0 - 60, ends_at=T0 + 2 * HOUR)
    assert new_id != sid
    old, new = store.get(sid), store.get(new_id)
    assert old is not None and new is not None
    assert (old.starts_at, old.ends_at) == (T0, T0), "a replaced pending silence ends now"
    assert new.starts_at == T0


def test_updating_an_expired_silence_creates_a_new_one(store: SilenceStore, clock: Clock) -> None:
    sid = add(store, ends_at=T0 + 60)
    clock.advance(120)
    before = store.get(sid)
    new_id = add(store, id=sid, ends_at=T0 + HOUR)
    assert new_id != sid
    assert store.get(sid) == before, "an expired silence is left as it was"


# -- expire -----------------------------------------------------------------------------


def test_expire_active(store: SilenceStore, clock: Clock) -> None:
    sid = add(store)
    clock.advance(10)
    store.expire(sid)
    got = store.get(sid)
    assert got is not None
    assert (got.starts_at, got.ends_at, got.updated_at) == (T0, T0 + 10, T0 + 10)
    clock.advance(0.001)
    assert got.state(clock()) == "expired"
    with pytest.raises(SilenceAlreadyExpired, match=f"silence {sid} already expired"):
        store.expire(sid)


def test_expire_pending(store: SilenceStore, clock: Clock) -> None:
    sid = add(store, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
    store.expire(sid)
    got = store.get(sid)
    assert got is not None
    assert (got.starts_at, got.ends_at) == (T0, T0)
    clock.advance(0.001)
    assert got.state(clock()) == "expired"


def test_expire_unknown(store: SilenceStore) -> None:
    with pytest.raises(SilenceNotFound):
        store.expire("00000000-0000-0000-0000-000000000000")


# -- matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "labels", "muted"),
    [
        pytest.param('job=~"api|web"', {"job": "api"}, True, id="regex matches a whole value"),
        pytest.param('job=~"api|web"', {"job": "api2"}, False, id="regex is anchored at the end"),
        pytest.param('job=~"pi"', {"job": "api"}, False, id="regex is anchored at the start"),
        pytest.param(
            'alertname="X",team=""', {"alertname": "X"}, True, id="a missing label equals empty"
        ),
        pytest.param(
            'alertname="X",team=""',
            {"alertname": "X", "team": "db"},
            False,
            id="a present label is not empty",
        ),
        pytest.param(
            'alertname="X",team!="db"',
            {"alertname": "X"},
            True,
            id="a missing label is not equal to db",
        ),
        pytest.param(
            'alertname="X",team!~".+"',
            {"alertname": "X"},
            True,
            id="a missing label does not match a non-empty regex",
        ),
        pytest.param(
            'alertname="X",env="prod"',
            {"alertname": "X"},
            False,
            id="every matcher must match",
        ),
    ],
)
def test_mutes(store: SilenceStore, matchers: str, labels: dict[str, str], muted: bool) -> None:
    sid = add(store, matchers)
    assert store.mutes(labels) == ([sid] if muted else [])


def test_mutes_lists_every_active_silence_sorted(store: SilenceStore) -> None:
    ids = [add(store, 'alertname="X"'), add(store, 'alertname=~"X|Y"')]
    add(store, 'alertname="X"', starts_at=T0 + 60)  # pending
    assert store.mutes({"alertname": "X"}) == sorted(ids)
    assert store.mutes({"alertname": "X"}, now=T0 + 61) == sorted([*ids, store.list()[2].id])


# -- list -------------------------------------------------------------------------------


def test_list_order_state_and_filters(store: SilenceStore, clock: Clock) -> None:
    long = add(store, 'alertname="A"', ends_at=T0 + 3 * HOUR)
    short = add(store, 'alertname="B",env=~"p.*"', ends_at=T0 + HOUR)
    later = add(store, 'alertname="C"', starts_at=T0 + 2 * HOUR, ends_at=T0 + 3 * HOUR)
    soon = add(store, 'alertname="D"', starts_at=T0 + HOUR, ends_at=T0 + 3 * HOUR)
    old = add(store, 'alertname="E"', ends_at=T0 + 10)
    recent = add(store, 'alertname="F"', ends_at=T0 + 20)
    clock.advance(30)
    assert [s.id for s in store.list()] == [short, long, soon, later, recent, old]
    assert [s.id for s in store.list(state="pending")] == [soon, later]
    assert [s.id for s in store.list(state=["active", "expired"])] == [short, long, recent, old]
    assert [s.id for s in store.list(matchers='alertname="B"')] == [short]
    assert [s.id for s in store.list(matchers='env=~"p.*"')] == [short]
    assert store.list(matchers='env=~"p.+"') == [], "filters compare matchers, not values"
    assert store.list(matchers='alertname=~"B"') == [], "the operator must be the same"


# -- retention --------------------------------------------------------------------------


def test_gc_drops_silences_ended_longer_than_retention_ago(clock: Clock) -> None:
    with SilenceStore(None, clock=clock, retention=HOUR) as store:
        first = add(store, ends_at=T0 + 60)
        second = add(store, ends_at=T0 + 120)
        active = add(store, ends_at=T0 + 10 * HOUR)
        clock.advance(60 + HOUR - 1)
        assert store.gc() == 0
        clock.advance(1)
        assert store.gc() == 1, "ended exactly retention ago"
        assert store.get(first) is None
        assert {s.id for s in store.list()} == {second, active}
        clock.advance(60)
        assert store.gc() == 1
        assert [s.id for s in store.list()] == [active]


# -- persistence ------------------------------------------------------------------------


def test_silences_survive_a_reopened_store(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state" / "monitord.db"
    with SilenceStore(path, clock=clock) as first:
        sid = add(first, 'alertname="X",job=~"a|b"', comment="deploy", created_by="ops")
        pending = add(first, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
        saved = first.get(sid)
    with SilenceStore(path, clock=clock) as second:
        assert second.get(sid) == saved
        assert second.mutes({"alertname": "X", "job": "b"}) == [sid]
        second.expire(pending)
    clock.advance(1)
    with SilenceStore(path, clock=clock) as third:
        assert [s.id for s in third.list(state="expired")] == [pending]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_second_connection_sees_changes(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "monitord.db"
    with SilenceStore(path, clock=clock) as daemon, SilenceStore(path, clock=clock) as cli:
        assert daemon.mutes({"alertname": "X"}) == []
        sid = add(cli)
        assert daemon.mutes({"alertname": "X"}) == [sid]
        cli.expire(sid)
        clock.advance(1)
        assert daemon.mutes({"alertname": "X"}) == []


def test_the_file_is_shared_with_other_tables(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "monitord.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other_part (x INTEGER)")
        conn.execute("INSERT INTO other_part VALUES (1)")
    with SilenceStore(path, clock=clock) as store:
        sid = add(store)
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO other_part VALUES (2)")
        assert store.mutes({"alertname": "X"}) == [sid]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM other_part").fetchone() == (2,)


def test_unreadable_database(tmp_path: Path) -> None:
    path = tmp_path / "monitord.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SilenceStoreError, match=r"monitord\.db"):
        SilenceStore(path)


def test_closed_store(clock: Clock) -> None:
    store = SilenceStore(None, clock=clock)
    store.close()
    with pytest.raises(SilenceStoreError, match="closed"):
        store.list()
