"""SystemdNotifier against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.systemd import SystemdNotifier


class NotifyReceiver:
    """A bound datagram socket that records what a notifier sends, like systemd's."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket  # the value for $NOTIFY_SOCKET
        self.received: list[tuple[float, bytes]] = []

    def drain(self) -> list[bytes]:
        """Record the datagrams waiting now; return all recorded so far."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return [d for _, d in self.received]
            self.received.append((time.monotonic(), data))

    async def receive(self) -> bytes:
        """Wait for the next datagram and record it with its arrival time."""
        data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        self.received.append((time.monotonic(), data))
        return data

    def assert_received(self, *datagrams: bytes) -> None:
        """Assert that exactly these datagrams arrived, in this order."""
        assert self.drain() == list(datagrams)

    def notifier(self, **env: str) -> SystemdNotifier:
        """A notifier whose environment points at this receiver."""
        return SystemdNotifier(environ={"NOTIFY_SOCKET": self.notify_socket, **env})


MakeReceiver = Callable[[str], NotifyReceiver]


@pytest.fixture
def make_receiver(tmp_path: Path) -> Iterator[MakeReceiver]:
    """Factory of receivers bound to a path ("path") or an abstract name ("abstract")."""
    socks: list[socket.socket] = []

    def make(kind: str) -> NotifyReceiver:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        socks.append(sock)
        sock.setblocking(False)
        if kind == "path":
            path = str(tmp_path / "notify")
            sock.bind(path)
            return NotifyReceiver(sock, path)
        name = f"monitord-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        return NotifyReceiver(sock, "@" + name)

    yield make
    for sock in socks:
        sock.close()


@pytest.fixture(
    params=[
        pytest.param("path", id="to a socket file"),
        pytest.param("abstract", id="to an abstract socket"),
    ]
)
def receiver(request: pytest.FixtureRequest, make_receiver: MakeReceiver) -> NotifyReceiver:
    """A receiver of each kind systemd may hand over."""
    return make_receiver(request.param)


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        pytest.param(lambda n: n.ready(), b"READY=1\n", id="ready sends READY=1"),
        pytest.param(
            lambda n: n.ready("watching 3 checks"),
            b"READY=1\nSTATUS=watching 3 checks\n",
            id="ready with a status sends both in one datagram",
        ),
        pytest.param(lambda n: n.stopping(), b"STOPPING=1\n", id="stopping sends STOPPING=1"),
        pytest.param(lambda n: n.watchdog(), b"WATCHDOG=1\n", id="watchdog sends WATCHDOG=1"),
        pytest.param(
            lambda n: n.status("2 alerts firing"),
            b"STATUS=2 alerts firing\n",
            id="status sends STATUS",
        ),
        pytest.param(
            lambda n: n.status("line one\nREADY=1"),
            b"STATUS=line one READY=1\n",
            id="a newline in the status cannot inject another assignment",
        ),
        pytest.param(
            lambda n: n.status("caf\u00e9"), "STATUS=caf\u00e9\n".encode(), id="status is UTF-8"
        ),
    ],
)
def test_each_method_sends_its_datagram(
    receiver: NotifyReceiver, send: Callable[[SystemdNotifier], None], expected: bytes
) -> None:
    notifier = receiver.notifier()
    assert notifier.enabled
    send(notifier)
    receiver.assert_received(expected)


def test_reloading_sends_the_monotonic_time_with_it(receiver: NotifyReceiver) -> None:
    notifier = receiver.notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    [datagram] = receiver.drain()
    lines = datagram.decode().splitlines()
    assert datagram.endswith(b"\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert len(lines) == 2


def test_a_sequence_of_calls_arrives_in_order(receiver: NotifyReceiver) -> None:
    notifier = receiver.notifier()
    notifier.ready()
    notifier.stopping()
    receiver.assert_received(b"READY=1\n", b"STOPPING=1\n")


OTHER_PID = str(os.getpid() + 1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, None, id="no WATCHDOG_USEC means no watchdog"),
        pytest.param({"WATCHDOG_USEC": "30000000"}, 15.0, id="WatchdogSec=30s pings every 15s"),
        pytest.param({"WATCHDOG_USEC": "200000"}, 0.1, id="a short watchdog pings every 0.1s"),
        pytest.param(
            {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())},
            15.0,
            id="WATCHDOG_PID naming this process keeps the watchdog",
        ),
        pytest.param(
            {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": OTHER_PID},
            None,
            id="WATCHDOG_PID naming another process means the watchdog is not ours",
        ),
        pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero WATCHDOG_USEC means no watchdog"),
        pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage WATCHDOG_USEC is ignored"),
    ],
)
def test_watchdog_interval(
    make_receiver: MakeReceiver, env: dict[str, str], expected: float | None
) -> None:
    assert make_receiver("path").notifier(**env).watchdog_interval == expected


def test_watchdog_interval_without_a_socket_is_none() -> None:
    notifier = SystemdNotifier(environ={"WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval is None


async def test_run_watchdog_pings_at_the_interval(receiver: NotifyReceiver) -> None:
    notifier = receiver.notifier(WATCHDOG_USEC="200000", WATCHDOG_PID=str(os.getpid()))
    started = time.monotonic()
    task = asyncio.create_task(notifier.run_watchdog())
    try:
        async with asyncio.timeout(5):
            for _ in range(4):
                await receiver.receive()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    times = [t for t, _ in receiver.received]
    assert [d for _, d in receiver.received] == [b"WATCHDOG=1\n"] * len(times)
    assert times[0] - started < 0.05, "the first ping goes out at once"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert sum(gaps) / len(gaps) < 0.2, gaps


async def test_run_watchdog_stops_sending_once_cancelled(receiver: NotifyReceiver) -> None:
    notifier = receiver.notifier(WATCHDOG_USEC="100000")
    task = asyncio.create_task(notifier.run_watchdog())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(receiver.drain())
    await asyncio.sleep(0.15)
    assert len(receiver.drain()) == count == 1


async def test_run_watchdog_returns_at_once_without_a_watchdog(receiver: NotifyReceiver) -> None:
    async with asyncio.timeout(1):
        await receiver.notifier().run_watchdog()
    receiver.assert_received()


async def test_run_watchdog_returns_at_once_without_a_socket() -> None:
    async with asyncio.timeout(1):
        await SystemdNotifier(environ={"WATCHDOG_USEC": "100000"}).run_watchdog()


def test_everything_is_a_no_op_without_notify_socket(
    make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = make_receiver("path")
    # The process environment points at the receiver, but the notifier was given its own.
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.notify_socket)
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("up")
    notifier.reloading()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    receiver.assert_received()


def test_the_process_environment_is_the_default(
    make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = make_receiver("path")
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.notify_socket)
    SystemdNotifier().ready()
    receiver.assert_received(b"READY=1\n")


def test_a_dead_socket_does_not_raise_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="monitord.systemd"):
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    levels = [(r.name, r.levelno) for r in caplog.records]
    assert levels == [
        ("monitord.systemd", logging.WARNING),
        ("monitord.systemd", logging.DEBUG),
        ("monitord.systemd", logging.DEBUG),
    ]
    assert str(tmp_path / "gone") in caplog.records[0].getMessage()


def test_a_socket_closed_by_its_reader_does_not_raise(
    make_receiver: MakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = make_receiver("path")
    notifier = receiver.notifier()
    receiver.sock.close()  # the file stays, nobody listens: ECONNREFUSED
    with caplog.at_level(logging.WARNING, logger="monitord.systemd"):
        notifier.ready()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("relative/notify", id="a relative path"),
        pytest.param("vsock:2:1234", id="a vsock address this implementation does not speak"),
        pytest.param("@", id="an empty abstract name"),
    ],
)
def test_an_unsupported_notify_socket_disables_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="monitord.systemd"):
        notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": value})
        notifier.ready()
    assert not notifier.enabled
    assert len(caplog.records) == 1
