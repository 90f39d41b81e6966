"""TLS helpers shared by the ``http`` and ``tls`` checks: client contexts, peer chains, expiry.

:class:`RecordingContext` is an :class:`ssl.SSLContext` that remembers every TLS object it
creates and when, so a check learns when the handshake began (the ``tls`` phase) and reads
the peer's chains afterwards, whatever library (aiohttp, asyncio streams) drove the
connection. Chains are read with ``SSLObject.get_verified_chain()`` and
``get_unverified_chain()`` (public from Python 3.13, private on ``_sslobj`` since 3.10) and
decoded with ``cryptography``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from monitor.model import Labels, MetricMetadata, MetricType, Sample

__all__ = [
    "TLS_METADATA",
    "Handshake",
    "PeerChain",
    "RecordingContext",
    "client_context",
    "peer_chain",
    "tls_samples",
]


@dataclass(frozen=True, slots=True)
class Handshake:
    """One TLS connection a context began: when (monotonic seconds) and its TLS object."""

    started: float
    ssl_object: ssl.SSLObject


class RecordingContext(ssl.SSLContext):
    """A client context that keeps every TLS object it wraps, in order, in ``handshakes``."""

    handshakes: list[Handshake]
    clock: Callable[[], float]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap as usual, and remember the object and the moment the handshake begins."""
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        self.handshakes.append(Handshake(self.clock(), obj))
        return obj


def client_context(
    *,
    verify: bool = True,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RecordingContext:
    """A client context: the system's trust store (or ``ca_file``), hostname checking unless
    ``verify`` is off, and a client certificate when ``cert_file`` is given."""
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.handshakes = []
    context.clock = clock
    if verify:
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


_ENCODING_DER: Final = 2  # _ssl.ENCODING_DER, which the stubs do not declare


def _ders(chain: Sequence[Any] | None) -> tuple[bytes, ...]:
    if not chain:
        return ()
    # 3.13's public methods give DER bytes; the private ones give _ssl.Certificate objects.
    return tuple(c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in chain)


def _chain(obj: ssl.SSLObject, method: str) -> tuple[bytes, ...]:
    for owner in (obj, getattr(obj, "_sslobj", None)):
        get = getattr(owner, method, None)
        if get is not None:
            return _ders(get())
    leaf = obj.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


@dataclass(frozen=True, slots=True)
class PeerChain:
    """What a TLS peer presented and what was verified, with the TLS version and cipher."""

    presented: tuple[x509.Certificate, ...]
    verified: tuple[x509.Certificate, ...]
    version: str
    cipher: str

    @property
    def leaf(self) -> x509.Certificate | None:
        """The peer's own certificate."""
        return self.presented[0] if self.presented else None

    @property
    def earliest_expiry(self) -> float | None:
        """When the first presented certificate expires (``probe_ssl_earliest_cert_expiry``)."""
        if not self.presented:
            return None
        return min(c.not_valid_after_utc.timestamp() for c in self.presented)

    @property
    def last_chain_expiry(self) -> float | None:
        """When the verified chain's first certificate expires, or None if nothing was
        verified (``probe_ssl_last_chain_expiry_timestamp_seconds``; Python builds one chain)."""
        if not self.verified:
            return None
        return min(c.not_valid_after_utc.timestamp() for c in self.verified)


def peer_chain(obj: ssl.SSLObject) -> PeerChain:
    """The chains of a completed handshake."""
    presented = tuple(map(x509.load_der_x509_certificate, _chain(obj, "get_unverified_chain")))
    verified: tuple[x509.Certificate, ...] = ()
    if obj.context.verify_mode != ssl.CERT_NONE:
        verified = tuple(map(x509.load_der_x509_certificate, _chain(obj, "get_verified_chain")))
    cipher = obj.cipher()
    return PeerChain(presented, verified, obj.version() or "", cipher[0] if cipher else "")


TLS_METADATA: Final[Mapping[str, MetricMetadata]] = {
    "probe_ssl_earliest_cert_expiry": MetricMetadata(
        MetricType.GAUGE, "Returns last SSL chain expiry in unixtime"
    ),
    "probe_ssl_last_chain_expiry_timestamp_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns last SSL chain expiry in timestamp"
    ),
    "probe_tls_version_info": MetricMetadata(MetricType.GAUGE, "Returns the TLS version used"),
}
"""blackbox_exporter's TLS families, with its help texts."""


def tls_samples(chain: PeerChain) -> list[Sample]:
    """blackbox_exporter's TLS samples for one peer chain."""
    samples = [Sample("probe_tls_version_info", Labels.of(version=chain.version), 1.0)]
    if chain.earliest_expiry is not None:
        samples.append(Sample("probe_ssl_earliest_cert_expiry", value=chain.earliest_expiry))
    if chain.last_chain_expiry is not None:
        samples.append(
            Sample("probe_ssl_last_chain_expiry_timestamp_seconds", value=chain.last_chain_expiry)
        )
    return samples
