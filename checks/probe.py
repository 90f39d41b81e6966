"""What the network probe kinds (``http``, ``tls``, ``tcp``, ``icmp``, ``dns``) share.

Address resolution with blackbox_exporter's IP-family preference (:func:`resolve`), the
deadline a probe keeps inside its check's timeout (:func:`probe_deadline`),
``probe_ip_addr_hash`` (:func:`ip_addr_hash`), the TLS client options
(:class:`TlsClientConfig`) and the families every blackbox prober exports with their help
texts (:data:`PROBE_FAMILIES`). Check kinds import these from here, never from one another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from checks.certs import RecordingContext, shared_client_context
from monitor.model import MetricMetadata, MetricType
from monitor.schema import ConfigModel

__all__ = [
    "DEFAULT_TIMEOUT",
    "PROBE_FAMILIES",
    "IPProtocol",
    "ResolveError",
    "Resolved",
    "TlsClientConfig",
    "ip_addr_hash",
    "probe_deadline",
    "resolve",
]

DEFAULT_TIMEOUT: Final = 10.0
"""The global ``scrape_timeout`` default, for a check built without a timeout."""

_MARGIN: Final = 0.5  # blackbox's scrape-timeout offset

PROBE_FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    "probe_success": MetricMetadata(
        MetricType.GAUGE, "Displays whether or not the probe was a success"
    ),
    "probe_duration_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns how long the probe took to complete in seconds"
    ),
    "probe_dns_lookup_time_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns the time taken for probe dns lookup in seconds"
    ),
    "probe_ip_protocol": MetricMetadata(
        MetricType.GAUGE, "Specifies whether probe ip protocol is IP4 or IP6"
    ),
    "probe_ip_addr_hash": MetricMetadata(
        MetricType.GAUGE,
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
    ),
}
"""The families blackbox_exporter's probers share, with its help texts."""

IPProtocol = Literal["ip4", "ip6"]


def probe_deadline(timeout: float | None) -> float:
    """How long a probe may take under a check timeout of ``timeout`` seconds (10 s if
    unset): the timeout less a tenth of it, at most 0.5 s, as blackbox_exporter leaves
    0.5 s of Prometheus' scrape timeout. A target that hangs then still yields the probe's
    samples and a message saying where it hung, rather than the scheduler's bare timeout."""
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    return timeout - min(_MARGIN, timeout / 10)


def ip_addr_hash(ip: str) -> float:
    """blackbox's ``probe_ip_addr_hash``: FNV-1a (32 bits) of the address's bytes, 4 for
    IPv4 (also IPv4-mapped IPv6, as Go's ``To4`` gives), 16 for IPv6."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    value = 0x811C9DC5
    for byte in address.packed:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return float(value)


class ResolveError(Exception):
    """The target's name did not resolve to an address of a usable family."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The address a probe talks to and how long finding it took."""

    ip: str
    family: socket.AddressFamily
    lookup_seconds: float

    @property
    def protocol(self) -> int:
        """4 or 6, as ``probe_ip_protocol`` says it."""
        return 6 if self.family == socket.AF_INET6 else 4


async def resolve(host: str, preferred: IPProtocol = "ip6", fallback: bool = True) -> Resolved:
    """blackbox's ``chooseProtocol``: the first address of the preferred family, else of
    the other family when ``fallback`` is set."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host}: {exc.strerror}") from exc
    lookup = time.monotonic() - started
    want = socket.AF_INET6 if preferred == "ip6" else socket.AF_INET
    for info in infos:
        if info[0] == want:
            return Resolved(str(info[4][0]), want, lookup)
    if fallback:
        for info in infos:
            if info[0] in (socket.AF_INET, socket.AF_INET6):
                return Resolved(str(info[4][0]), socket.AddressFamily(info[0]), lookup)
    raise ResolveError(f"{host} has no {preferred} address")


class TlsClientConfig(ConfigModel):
    """How a check verifies its peer and presents itself (Prometheus' ``tls_config``)."""

    ca_file: Path | None = Field(
        default=None, description="trust these CAs instead of the system's"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="its private key; default cert_file")
    insecure_skip_verify: bool = Field(
        default=False, description="accept any certificate and hostname (expiry is still read)"
    )
    server_name: str | None = Field(default=None, description="the name to verify and send as SNI")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    def context(self) -> RecordingContext:
        """The shared context for these options; a bad file raises ``OSError``/``SSLError``."""
        return shared_client_context(
            verify=not self.insecure_skip_verify,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )
