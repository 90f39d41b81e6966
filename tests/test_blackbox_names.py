"""The http, tcp (plain and TLS) and dns checks side by side with the real blackbox_exporter.

Each test probes one local target twice, once through blackbox_exporter's ``/probe`` and
once with monitord's check run in-process, and compares the families: the same names,
the same label names, the same type and help, and the same values, exactly for what both
must agree on (status code, success, certificate expiry, record counts, address hash) and
within a generous bound for durations. Families of one side that the other lacks are
listed below, each with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from checks.dns import DNSCheck, DNSConfig
from checks.http import HttpCheck, HttpConfig
from checks.tcp import TCPCheck, TCPConfig
from monitor.model import CheckResult
from tests.certs import PKI, make_pki
from tests.dnsmasq_server import dnsmasq_server
from tests.support import free_port, require_program, wait_for

pytestmark = pytest.mark.integration

# Families blackbox_exporter exports for a kind that monitord's check does not, and why.
BLACKBOX_ONLY: Mapping[str, Mapping[str, str]] = {
    "http": {
        "probe_failed_due_to_regex": (
            "monitord's http check has no fail_if_body/header regexps (it judges by Gatus "
            "conditions), so the family would be a constant 0"
        ),
    },
    "tcp": {},
    "dns": {},
}

# Families monitord's check exports that the installed blackbox_exporter 0.23 does not, and why.
MONITORD_ONLY: Mapping[str, Mapping[str, str]] = {
    "http": {},
    "tcp": {},
    "dns": {
        "probe_dns_rcode": (
            "the response code as a number, so REFUSED and no answer differ (blackbox issue "
            "#474, PR #858); 0.23 only says probe_success 0"
        ),
    },
}

# Families compared by value exactly; every other family shared by both is a duration.
EXACT = frozenset(
    {
        "probe_success",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
        "probe_failed_due_to_regex",
        "probe_http_status_code",
        "probe_http_version",
        "probe_http_ssl",
        "probe_http_redirects",
        "probe_http_content_length",
        "probe_http_uncompressed_body_length",
        "probe_ssl_earliest_cert_expiry",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "probe_ssl_last_chain_info",
        "probe_tls_version_info",
        "probe_dns_query_succeeded",
        "probe_dns_rcode",
        "probe_dns_answer_rrs",
        "probe_dns_authority_rrs",
        "probe_dns_additional_rrs",
    }
)
DURATIONS = frozenset(
    {
        "probe_duration_seconds",
        "probe_dns_lookup_time_seconds",
        "probe_http_duration_seconds",
        "probe_dns_duration_seconds",
    }
)
# Durations that are the time to resolve an address literal: blackbox still times its
# lookup code path, monitord's http check does no lookup and reports 0.
MAY_BE_ZERO = frozenset({"probe_dns_lookup_time_seconds", "probe_http_duration_seconds"})
SLOW = 5.0  # seconds: any local probe phase is far below this


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


@dataclass
class Families:
    """One probe's families: series by name, and each name's type and help."""

    series: dict[str, dict[frozenset[tuple[str, str]], float]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Families:
        families = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                families.series.setdefault(sample.name, {})[_key(sample.labels)] = sample.value
                families.types[sample.name] = family.type
                families.helps[sample.name] = family.documentation
        return families

    @classmethod
    def of(cls, result: CheckResult) -> Families:
        families = cls()
        for sample in result.samples:
            families.series.setdefault(sample.name, {})[_key(sample.labels)] = sample.value
            meta = result.metadata[sample.name]
            families.types[sample.name] = str(meta.type)
            families.helps[sample.name] = meta.help
        return families

    def label_names(self, name: str) -> set[frozenset[str]]:
        return {frozenset(n for n, _ in key) for key in self.series[name]}


def compare(kind: str, theirs: Families, ours: Families) -> None:
    """Assert that monitord's families are blackbox's, less the listed ones."""
    skipped, extra = BLACKBOX_ONLY[kind], MONITORD_ONLY[kind]
    for name in skipped:
        assert name in theirs.series and name not in ours.series, f"{name} need not be excused"
    for name in extra:
        assert name in ours.series and name not in theirs.series, f"{name} need not be excused"
    assert set(ours.series) - set(extra) == set(theirs.series) - set(skipped)
    for name in sorted(set(ours.series) - set(extra)):
        assert name in EXACT | DURATIONS, f"{name} is not compared"
        assert ours.label_names(name) == theirs.label_names(name), name
        assert (ours.types[name], ours.helps[name]) == (theirs.types[name], theirs.helps[name])
        mine, blackbox = ours.series[name], theirs.series[name]
        if name in EXACT:
            assert mine == blackbox, name
            continue
        assert set(mine) == set(blackbox), name
        for key, value in blackbox.items():
            floor = 0.0 if name in MAY_BE_ZERO else 1e-9
            where = f"{name}{dict(key)}: monitord {mine[key]!r}, blackbox {value!r}"
            assert value > 0 and floor <= mine[key] < SLOW and value < SLOW, where


# --- the peers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Rich:
    """A self-signed certificate with a many-part name (its own CA) and its files."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> Rich:
    """Repeated and multi-part attributes, characters Go escapes, a leading '#', a trailing
    space, an attribute Go does not parse (emailAddress) and two DNS names beside an IP."""
    tmp = tmp_path_factory.mktemp("rich")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.org"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Berlin"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Berlin"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Second, "Org" <x>;y+z'),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops"),
            x509.NameAttribute(NameOID.COMMON_NAME, "#rich host "),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("rich.test"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "rich.pem", tmp / "rich.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Rich(cert_file, key_file)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A dnsmasq answering for ``a.test`` (NXDOMAIN elsewhere under .test); yields its port."""
    records = [
        "--host-record=a.test,127.0.0.5",
        "--host-record=two.a.test,127.0.0.6",
        "--host-record=two.a.test,127.0.0.7",
    ]
    with dnsmasq_server(tmp_path_factory.mktemp("dnsmasq"), records) as port:
        yield port


DNS_QUERIES = {"dns_a": "a.test", "dns_two": "two.a.test", "dns_nxdomain": "nope.test"}


@pytest.fixture(scope="module")
def blackbox(tmp_path_factory: pytest.TempPathFactory, pki: PKI, rich: Rich) -> Iterator[str]:
    """blackbox_exporter on a free port with the modules these tests use; yields its URL."""
    program = require_program("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    tmp = tmp_path_factory.mktemp("blackbox")
    dns_modules = "".join(
        f"""
  {module}:
    prober: dns
    dns:
      query_name: {name}
      query_type: A
      transport_protocol: udp
      preferred_ip_protocol: ip4
"""
        for module, name in DNS_QUERIES.items()
    )
    config = tmp / "blackbox.yml"
    config.write_text(
        f"""modules:
  http_2xx:
    prober: http
    http:
      preferred_ip_protocol: ip4
      tls_config:
        ca_file: {pki.ca_file}
  http_rich:
    prober: http
    http:
      preferred_ip_protocol: ip4
      tls_config:
        ca_file: {rich.cert_file}
  tcp_connect:
    prober: tcp
    tcp:
      preferred_ip_protocol: ip4
  tcp_tls:
    prober: tcp
    tcp:
      preferred_ip_protocol: ip4
      tls: true
      tls_config:
        ca_file: {pki.ca_file}
{dns_modules}"""
    )
    port = free_port()
    log = tmp / "blackbox.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                program,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=out,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"blackbox_exporter exited {proc.returncode}:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(ready)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


async def probe(blackbox: str, module: str, target: str) -> Families:
    """blackbox_exporter's families for one probe (asynchronously: the target may be
    served on this very event loop)."""
    query = urllib.parse.urlencode({"module": module, "target": target})
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{blackbox}/probe?{query}", timeout=aiohttp.ClientTimeout(10)) as response,
    ):
        assert response.status == 200, await response.text()
        return Families.parse(await response.text())


@contextlib.asynccontextmanager
async def serve_https(context: ssl.SSLContext) -> AsyncIterator[str]:
    """An aiohttp server over TLS on 127.0.0.1 with ``/hello`` and ``/moved`` (a redirect to
    it); yields its base URL."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the test")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def https_site(pki: PKI) -> AsyncIterator[str]:
    """The test CA's leaf for 127.0.0.1 and localhost."""
    async with serve_https(pki.valid.server_context()) as url:
        yield url


# --- the comparisons ------------------------------------------------------------------------


async def run_http(url: str, ca_file: Path) -> Families:
    config = HttpConfig(
        name="web",
        type="http",
        url=url,
        timeout="5s",
        preferred_ip_protocol="ip4",
        tls={"ca_file": ca_file},
    )
    async with HttpCheck(config) as check:
        return Families.of(await check.run())


@pytest.mark.parametrize(
    ("path", "status", "redirects"),
    [
        pytest.param("/hello", 200, 0, id="an https page answers 200 directly"),
        pytest.param("/moved", 200, 1, id="an https page is reached through one redirect"),
    ],
)
async def test_http_families_are_blackboxs(
    blackbox: str, https_site: str, pki: PKI, path: str, status: int, redirects: int
) -> None:
    theirs = await probe(blackbox, "http_2xx", https_site + path)
    ours = await run_http(https_site + path, pki.ca_file)
    assert theirs.series["probe_http_status_code"] == {frozenset(): status}
    assert theirs.series["probe_http_redirects"] == {frozenset(): redirects}
    assert theirs.series["probe_success"] == {frozenset(): 1.0}
    expiry = pki.valid.not_after.timestamp()
    assert theirs.series["probe_ssl_earliest_cert_expiry"] == {frozenset(): expiry}
    compare("http", theirs, ours)


async def test_http_tls_families_are_spelt_as_blackbox_spells_them(
    blackbox: str, https_site: str, pki: PKI
) -> None:
    theirs = await probe(blackbox, "http_2xx", https_site + "/hello")
    ours = await run_http(https_site + "/hello", pki.ca_file)
    for name in ("probe_tls_version_info", "probe_ssl_last_chain_info"):
        assert ours.series.get(name) == theirs.series[name], name
        assert ours.helps.get(name) == theirs.helps[name], name


async def test_a_many_part_name_is_written_as_go_writes_it(blackbox: str, rich: Rich) -> None:
    async with serve_https(rich.server_context()) as url:
        theirs = await probe(blackbox, "http_rich", url + "/hello")
        ours = await run_http(url + "/hello", rich.cert_file)
    ((labels, _),) = theirs.series["probe_ssl_last_chain_info"].items()
    assert dict(labels)["subjectalternative"] == "localhost,rich.test"
    assert dict(labels)["subject"] == (
        r"CN=\#rich host\ ,OU=Ops,O=Example+O=Second\, \"Org\" \<x\>\;y\+z,L=Berlin,ST=Berlin,"
        "C=DE,1.2.840.113549.1.9.1=#0c0f6f7073406578616d706c652e6f7267"
    )
    assert ours.series["probe_ssl_last_chain_info"] == theirs.series["probe_ssl_last_chain_info"]
    compare("http", theirs, ours)


async def test_tcp_tls_families_are_blackboxs(blackbox: str, pki: PKI) -> None:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=pki.valid.server_context())
    try:
        target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        theirs = await probe(blackbox, "tcp_tls", target)
        config = TCPConfig(
            name="port",
            type="tcp",
            address=target,
            timeout="5s",
            preferred_ip_protocol="ip4",
            tls=True,
            tls_config={"ca_file": pki.ca_file},
        )
        ours = Families.of(await TCPCheck(config).run())
    finally:
        server.close()
        await server.wait_closed()
    assert theirs.series["probe_success"] == {frozenset(): 1.0}
    assert theirs.series["probe_tls_version_info"] == {frozenset({("version", "TLS 1.3")}): 1.0}
    compare("tcp", theirs, ours)


@pytest.mark.parametrize(
    "listening",
    [
        pytest.param(True, id="a listener that accepts is a success on both"),
        pytest.param(False, id="a port nothing listens on is a failure on both"),
    ],
)
async def test_tcp_families_are_blackboxs(blackbox: str, listening: bool) -> None:
    port = free_port()
    server: asyncio.Server | None = None
    if listening:

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        target = f"127.0.0.1:{port}"
        theirs = await probe(blackbox, "tcp_connect", target)
        check = TCPCheck(
            TCPConfig(
                name="port", type="tcp", address=target, timeout="5s", preferred_ip_protocol="ip4"
            )
        )
        ours = Families.of(await check.run())
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    assert theirs.series["probe_success"] == {frozenset(): 1.0 if listening else 0.0}
    compare("tcp", theirs, ours)


@pytest.mark.parametrize(
    ("module", "rcode", "answers"),
    [
        pytest.param("dns_a", 0, 1, id="a name with one A record"),
        pytest.param("dns_two", 0, 2, id="a name with two A records"),
        pytest.param("dns_nxdomain", 3, 0, id="a name that does not exist fails on both"),
    ],
)
async def test_dns_families_are_blackboxs(
    blackbox: str, dnsmasq: int, module: str, rcode: int, answers: int
) -> None:
    server = f"127.0.0.1:{dnsmasq}"
    theirs = await probe(blackbox, module, server)
    config = DNSConfig(
        name="resolver",
        type="dns",
        query_name=DNS_QUERIES[module],
        query_type="A",
        server=server,
        transport="udp",
        timeout="5s",
    )
    ours = Families.of(await DNSCheck(config).run())
    assert ours.series["probe_dns_rcode"] == {frozenset(): float(rcode)}
    assert theirs.series["probe_dns_answer_rrs"] == {frozenset(): float(answers)}
    assert theirs.series["probe_success"] == {frozenset(): 1.0 if rcode == 0 else 0.0}
    compare("dns", theirs, ours)
