"""TLS helpers shared by the ``http``, ``tls`` and ``tcp`` checks: client contexts, peer chains,
and blackbox_exporter's TLS families.

:class:`RecordingContext` is an :class:`ssl.SSLContext` that tells the task using it about
every TLS object it creates and when (through :func:`recording_handshakes`), so a check learns
when the handshake began (the ``tls`` phase) and reads the peer's chains afterwards, whatever
library (aiohttp, asyncio streams) drove the connection. Contexts are shared: loading the
system trust store costs about 30 ms of CPU and 0.8 MiB, so :func:`shared_client_context`
keeps one per distinct setting (and file contents, by mtime and size) for all checks.

Chains are read with ``SSLObject.get_verified_chain()`` and ``get_unverified_chain()`` (public
from Python 3.13, private on ``_sslobj`` since 3.10) and decoded with ``cryptography``. The
samples are blackbox_exporter 0.23's (prober/tls.go): the version spelt as ``getTLSVersion``
spells it, the leaf's subject and issuer as Go's ``pkix.Name.String()`` writes them.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from monitor.model import Labels, MetricMetadata, MetricType, Sample

__all__ = [
    "TLS_METADATA",
    "TLS_VERSIONS",
    "Handshake",
    "PeerChain",
    "RecordingContext",
    "client_context",
    "go_name",
    "peer_chain",
    "recording_handshakes",
    "shared_client_context",
    "tls_samples",
]


@dataclass(frozen=True, slots=True)
class Handshake:
    """One TLS connection a context began: when (monotonic seconds) and its TLS object."""

    started: float
    ssl_object: ssl.SSLObject


@dataclass(slots=True)
class HandshakeLog:
    """The TLS connections one task began, in order, timed by ``clock``."""

    clock: Callable[[], float]
    handshakes: list[Handshake] = field(default_factory=list)


_current_log: ContextVar[HandshakeLog | None] = ContextVar("monitord_tls_log", default=None)


@contextmanager
def recording_handshakes(clock: Callable[[], float] = time.monotonic) -> Iterator[HandshakeLog]:
    """Record, for the current task only, the handshakes any :class:`RecordingContext` begins.

    asyncio starts a handshake in a callback scheduled from the connecting task, so the
    callback runs in that task's context and sees this log, not another check's.
    """
    log = HandshakeLog(clock)
    token = _current_log.set(log)
    try:
        yield log
    finally:
        _current_log.reset(token)


class RecordingContext(ssl.SSLContext):
    """A client context that reports each TLS object it wraps to the current task's log."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap as usual, and note the object and the moment the handshake begins."""
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        log = _current_log.get()
        if log is not None:
            log.handshakes.append(Handshake(log.clock(), obj))
        return obj


def client_context(
    *,
    verify: bool = True,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> RecordingContext:
    """A new client context: the system's trust store (or ``ca_file``), hostname checking
    unless ``verify`` is off, and a client certificate when ``cert_file`` is given."""
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
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


_FileStamp = tuple[int, int] | None
_Stamps = tuple[_FileStamp, _FileStamp, _FileStamp]
_Key = tuple[bool, Path | None, Path | None, Path | None]
_shared: dict[_Key, tuple[_Stamps, RecordingContext]] = {}


def _stamp(path: Path | None) -> _FileStamp:
    if path is None:
        return None
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def shared_client_context(
    *,
    verify: bool = True,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> RecordingContext:
    """:func:`client_context` for these options, built once and shared by every caller.

    The files are checked (mtime and size) on each call, so a renewed certificate or CA
    bundle is loaded on the next run. A missing file raises ``OSError``, a bad one
    ``ssl.SSLError``, as :func:`client_context` does.
    """
    key = (verify, ca_file, cert_file, key_file)
    stamps = (_stamp(ca_file) if verify else None, _stamp(cert_file), _stamp(key_file))
    cached = _shared.get(key)
    if cached is not None and cached[0] == stamps:
        return cached[1]
    context = client_context(verify=verify, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    _shared[key] = (stamps, context)
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


TLS_VERSIONS: Final[Mapping[str, str]] = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}
"""Python's names of the TLS versions, as blackbox's ``getTLSVersion`` spells them (any other
is ``unknown``)."""

# Go's pkix.Name.ToRDNSequence order; String() writes the sequence last to first.
_GO_NAME_ORDER: Final = (
    (NameOID.COUNTRY_NAME, "C"),
    (NameOID.STATE_OR_PROVINCE_NAME, "ST"),
    (NameOID.LOCALITY_NAME, "L"),
    (NameOID.STREET_ADDRESS, "STREET"),
    (NameOID.POSTAL_CODE, "POSTALCODE"),
    (NameOID.ORGANIZATION_NAME, "O"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
    (NameOID.COMMON_NAME, "CN"),
    (NameOID.SERIAL_NUMBER, "SERIALNUMBER"),
)
_GO_PARSED: Final = frozenset(oid for oid, _ in _GO_NAME_ORDER)
# encoding/asn1's isPrintable with '*' and '&' allowed, as Marshal uses it for a string.
_PRINTABLE: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?*&"
)


def _go_escape(value: str) -> str:
    """RFC 2253 escaping as Go's ``AttributeTypeAndValue`` string does it."""
    out = []
    for i, char in enumerate(value):
        if char in ',+"\\<>;' or (i == 0 and char in " #") or (i == len(value) - 1 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def go_name(name: x509.Name) -> str:
    """A distinguished name as Go's ``pkix.Name.String()`` writes it: the attributes Go
    parses (C, ST, L, STREET, POSTALCODE, O, OU, CN, SERIALNUMBER) in reverse of that
    order, then any other attribute as ``oid=#<DER hex>`` of the value as Go re-encodes it,
    in reverse of their order."""
    others = [
        attr for rdn in name.rdns for attr in rdn if attr.oid not in _GO_PARSED
    ]  # Go puts these first in the sequence, so they come out last
    parts = []
    for oid, short in reversed(_GO_NAME_ORDER):
        values = [str(a.value) for a in name.get_attributes_for_oid(oid)]
        if values:
            parts.append("+".join(f"{short}={_go_escape(v)}" for v in values))
    for attr in reversed(others):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        # Go re-marshals the parsed string: PrintableString when it can be one, else UTF8String.
        tag = 0x13 if all(c in _PRINTABLE for c in value) else 0x0C
        raw = value.encode()
        parts.append(
            f"{attr.oid.dotted_string}=#{(bytes([tag]) + _der_length(len(raw)) + raw).hex()}"
        )
    return ",".join(parts)


def _dns_names(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    return ",".join(san.get_values_for_type(x509.DNSName))


TLS_METADATA: Final[Mapping[str, MetricMetadata]] = {
    "probe_ssl_earliest_cert_expiry": MetricMetadata(
        MetricType.GAUGE, "Returns last SSL chain expiry in unixtime"
    ),
    "probe_ssl_last_chain_expiry_timestamp_seconds": MetricMetadata(
        MetricType.GAUGE, "Returns last SSL chain expiry in timestamp"
    ),
    "probe_ssl_last_chain_info": MetricMetadata(
        MetricType.GAUGE, "Contains SSL leaf certificate information"
    ),
    "probe_tls_version_info": MetricMetadata(
        MetricType.GAUGE, "Returns the TLS version used or NaN when unknown"
    ),
}
"""blackbox_exporter's TLS families, with its help texts."""


def tls_samples(chain: PeerChain) -> list[Sample]:
    """blackbox_exporter's TLS samples for one peer chain."""
    version = TLS_VERSIONS.get(chain.version, "unknown")
    samples = [Sample("probe_tls_version_info", Labels.of(version=version), 1.0)]
    if chain.earliest_expiry is not None:
        samples.append(Sample("probe_ssl_earliest_cert_expiry", value=chain.earliest_expiry))
    if chain.last_chain_expiry is not None:
        samples.append(
            Sample("probe_ssl_last_chain_expiry_timestamp_seconds", value=chain.last_chain_expiry)
        )
    leaf = chain.leaf
    if leaf is not None:
        labels = Labels.of(
            fingerprint_sha256=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
            subject=go_name(leaf.subject),
            issuer=go_name(leaf.issuer),
            subjectalternative=_dns_names(leaf),
        )
        samples.append(Sample("probe_ssl_last_chain_info", labels, 1.0))
    return samples
