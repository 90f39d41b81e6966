"""Real certificates for the TLS tests: a CA and leaves for 127.0.0.1 and localhost."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Leaf:
    """A certificate and its key, written to files, with its expiry."""

    cert_file: Path
    key_file: Path
    not_after: dt.datetime

    def server_context(self, client_ca: Path | None = None) -> ssl.SSLContext:
        """A server-side context presenting this leaf; requiring a client cert if ``client_ca``."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        return context


@dataclass(frozen=True)
class PKI:
    """A CA and the leaves the tests need."""

    ca_file: Path
    valid: Leaf
    expired: Leaf
    wrong_host: Leaf
    expiring: Leaf
    client: Leaf
    other_ca_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name.replace(' ', '_')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _leaf(
    directory: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path],
    *,
    names: list[x509.GeneralName],
    not_before: dt.datetime,
    not_after: dt.datetime,
    client: bool = False,
) -> Leaf:
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    return Leaf(cert_file, key_file, not_after)


def make_pki(directory: Path) -> PKI:
    """Make the CA, a valid leaf, an expired leaf, a wrong-hostname leaf, one expiring in
    3 days, a client certificate, and an unrelated CA, all under ``directory``."""
    ca = _ca(directory, "monitord test CA")
    local: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    day = dt.timedelta(days=1)
    return PKI(
        ca_file=ca[2],
        valid=_leaf(
            directory, "valid", ca, names=local, not_before=NOW - day, not_after=NOW + 90 * day
        ),
        expired=_leaf(
            directory,
            "expired",
            ca,
            names=local,
            not_before=NOW - 60 * day,
            not_after=NOW - 2 * day,
        ),
        wrong_host=_leaf(
            directory,
            "wrong-host",
            ca,
            names=[x509.DNSName("wrong.example.org")],
            not_before=NOW - day,
            not_after=NOW + 90 * day,
        ),
        expiring=_leaf(
            directory, "expiring", ca, names=local, not_before=NOW - day, not_after=NOW + 3 * day
        ),
        client=_leaf(
            directory,
            "client",
            ca,
            names=[x509.DNSName("client.test")],
            not_before=NOW - day,
            not_after=NOW + 90 * day,
            client=True,
        ),
        other_ca_file=_ca(directory, "unrelated CA")[2],
    )


TestPKI = PKI
"""The earlier name, still used by the tcp tests (not collected: they import the module)."""
