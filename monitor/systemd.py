"""systemd integration: readiness, reload and stop notifications and the watchdog.

Implements the ``sd_notify(3)`` datagram protocol directly, so the daemon needs
no libsystemd binding. Without ``$NOTIFY_SOCKET`` (not started by systemd, or a
unit that is not ``Type=notify``) every method does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

from monitor.log import get_logger

__all__ = ["SystemdNotifier"]

logger = get_logger("systemd")

# A blocked send would stall the event loop; systemd drains its queue quickly,
# so a full queue for this long means something is wrong and the message is dropped.
_SEND_TIMEOUT = 1.0


class SystemdNotifier:
    """Sends state changes and watchdog pings to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval = _watchdog_interval(env) if self._address else None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured, so messages go anywhere."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec=``), or None if not expected."""
        return self._watchdog_interval

    def ready(self, status: str | None = None) -> None:
        """Report start-up (or a reload) as finished, with an optional status line."""
        fields = {"READY": "1"}
        if status is not None:
            fields["STATUS"] = status
        self._notify(fields)

    def reloading(self) -> None:
        """Report that a reload has begun; call :meth:`ready` when it is done."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._notify({"RELOADING": "1", "MONOTONIC_USEC": str(monotonic_usec)})

    def stopping(self) -> None:
        """Report that shutdown has begun."""
        self._notify({"STOPPING": "1"})

    def watchdog(self) -> None:
        """Tell the watchdog that the daemon is alive."""
        self._notify({"WATCHDOG": "1"})

    def status(self, text: str) -> None:
        """Set the free-form status line that ``systemctl status`` shows."""
        self._notify({"STATUS": text})

    async def run_watchdog(self) -> None:
        """Ping the watchdog every :attr:`watchdog_interval` until cancelled; return if none."""
        interval = self._watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def _notify(self, fields: Mapping[str, str]) -> None:
        if self._address is None:
            return
        # One assignment per line: a newline inside a value would start a bogus one.
        message = "".join(
            f"{key}={' '.join(value.splitlines())}\n" for key, value in fields.items()
        )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if self._warned:
                logger.debug("cannot notify systemd at %s: %s", self._address, exc)
            else:
                self._warned = True
                logger.warning(
                    "cannot notify systemd at %s: %s (further failures are logged at debug level)",
                    self._address,
                    exc,
                )


def _socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address named by ``$NOTIFY_SOCKET``, or None if unset or unsupported."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # an abstract socket name
    if value:
        logger.warning("ignoring NOTIFY_SOCKET=%r: not an absolute path or @abstract name", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds if the watchdog is meant for this process."""
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None  # set for the process that forked us, not for us
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
