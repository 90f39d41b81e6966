"""The ``dns`` check: one query to one DNS server, judged as blackbox_exporter's dns prober.

The query goes over UDP and is repeated over TCP when the answer comes back truncated
(``transport: tcp`` asks over TCP only). Without ``server``, the first nameserver of the
system resolver's configuration (/etc/resolv.conf) is asked. For a ``PTR`` query an IP
address as ``query_name`` is turned into its reverse name.

The result is OK when the response code is one of ``valid_rcodes`` (default ``NOERROR``)
and every ``validate_*_rrs`` rule holds, CRITICAL otherwise (no answer included). The
rules are blackbox's, applied to each record of the section in its text form
(``a.test. 300 IN A 127.0.0.5``): ``fail_if_matches_regexp`` (fails if any record matches
any), ``fail_if_all_match_regexp`` (if every record matches one of them),
``fail_if_not_matches_regexp`` (if any record does not match one of them) and
``fail_if_none_matches_regexp`` (if no record matches one of them).

``conditions`` add Gatus's judgement (``checks.conditions``) on top: ``[DNS_RCODE]`` (the
response code's name, ``NOERROR``), ``[BODY]`` (as Gatus's ``QueryDNS`` makes it: the last
answer record's value, an address for A/AAAA, the target for CNAME/MX/NS/PTR,
``target:port`` for SRV, ``query type is not supported yet`` for other types, empty without
answers), ``[RESPONSE_TIME]`` (ms from the start of the run to the response) and
``[CONNECTED]`` (an answer came back). A run is CRITICAL when a blackbox rule or a condition
fails, each failed condition named in the message as Gatus shows it; ``valid_rcodes`` still
applies, so a condition on another rcode needs that rcode listed there too. A query that
fails is CRITICAL, unless a condition reads ``[CONNECTED]``: then the conditions decide.

Samples carry blackbox's names and labels (no ``check`` label, as the other probes):
``probe_success``, ``probe_duration_seconds``, ``probe_dns_lookup_time_seconds`` (resolving
the server's own name, near 0 for an address), ``probe_ip_protocol``, ``probe_ip_addr_hash``,
``probe_dns_duration_seconds{phase}`` (``resolve``, ``connect``: making the socket, and
``request``: the exchange), ``probe_dns_rcode``, ``probe_dns_answer_rrs``,
``probe_dns_authority_rrs``, ``probe_dns_additional_rrs``, ``probe_dns_query_succeeded``,
and ``probe_dns_serial`` for a SOA answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset
from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from checks.base import Check, CheckConfig
from checks.conditions import Condition, ConditionContext, parse_condition
from checks.probe import DEFAULT_TIMEOUT, PROBE_FAMILIES, ip_addr_hash
from monitor.model import CheckResult, Labels, MetricMetadata, MetricType, Sample, Status
from monitor.schema import ConfigModel

__all__ = ["DNS_PLACEHOLDERS", "FAMILIES", "DNSCheck", "DNSConfig", "RRValidation", "gatus_body"]

QueryType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "PTR"]

FAMILIES: Final[Mapping[str, MetricMetadata]] = {
    **PROBE_FAMILIES,
    "probe_dns_duration_seconds": MetricMetadata(
        MetricType.GAUGE, "Duration of DNS request by phase"
    ),
    "probe_dns_rcode": MetricMetadata(MetricType.GAUGE, "Returns the DNS response code"),
    "probe_dns_answer_rrs": MetricMetadata(
        MetricType.GAUGE, "Returns number of entries in the answer resource record list"
    ),
    "probe_dns_authority_rrs": MetricMetadata(
        MetricType.GAUGE, "Returns number of entries in the authority resource record list"
    ),
    "probe_dns_additional_rrs": MetricMetadata(
        MetricType.GAUGE, "Returns number of entries in the additional resource record list"
    ),
    "probe_dns_query_succeeded": MetricMetadata(
        MetricType.GAUGE, "Displays whether or not the query was executed successfully"
    ),
    "probe_dns_serial": MetricMetadata(MetricType.GAUGE, "Returns the serial number of the zone"),
}

DNS_PLACEHOLDERS: Final = ("[DNS_RCODE]", "[BODY]", "[RESPONSE_TIME]", "[CONNECTED]")
"""The placeholders a dns check's conditions may read."""


def _condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    return parse_condition(value, DNS_PLACEHOLDERS)


DNSCondition = Annotated[
    Condition,
    PlainValidator(_condition),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["[DNS_RCODE] == NOERROR"]}),
]
"""A Gatus condition on a DNS answer, parsed when the config is loaded."""

_PHASE: Final = {phase: Labels.of(phase=phase) for phase in ("resolve", "connect", "request")}


def _valid_regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return patterns


Regexes = Annotated[list[str], AfterValidator(_valid_regexes)]


class RRValidation(ConfigModel):
    """blackbox's rules for the records of one section (see the module docstring)."""

    fail_if_matches_regexp: Regexes = Field(default_factory=list)
    fail_if_all_match_regexp: Regexes = Field(default_factory=list)
    fail_if_not_matches_regexp: Regexes = Field(default_factory=list)
    fail_if_none_matches_regexp: Regexes = Field(default_factory=list)

    def problem(self, section: str, records: Sequence[str]) -> str | None:
        """Why ``records`` fail these rules, or ``None`` when they pass."""

        def matches(patterns: list[str], record: str) -> bool:
            return any(re.search(p, record) for p in patterns)

        for pattern in self.fail_if_matches_regexp:
            if any(re.search(pattern, r) for r in records):
                return f"{section} record matched {pattern!r}"
        if self.fail_if_all_match_regexp and records:
            if all(matches(self.fail_if_all_match_regexp, r) for r in records):
                return f"every {section} record matched fail_if_all_match_regexp"
        for record in records:
            if self.fail_if_not_matches_regexp and not matches(
                self.fail_if_not_matches_regexp, record
            ):
                return f"{section} record {record!r} matched no fail_if_not_matches_regexp"
        if self.fail_if_none_matches_regexp and not any(
            matches(self.fail_if_none_matches_regexp, r) for r in records
        ):
            return f"no {section} record matched fail_if_none_matches_regexp"
        return None


class DNSConfig(CheckConfig):
    """Options of the ``dns`` check: what to ask, whom, and what a good answer is."""

    type: Literal["dns"]
    query_name: str = Field(min_length=1, description="the name to look up")
    query_type: QueryType = "A"
    server: str | None = Field(
        default=None,
        description="host, host:port or [v6]:port of the server; default the system resolver",
    )
    transport: Literal["udp", "tcp"] = Field(
        default="udp", description="udp falls back to tcp on a truncated answer"
    )
    recursion_desired: bool = True
    valid_rcodes: list[str] = Field(default_factory=lambda: ["NOERROR"], min_length=1)
    validate_answer_rrs: RRValidation = Field(default_factory=RRValidation)
    validate_authority_rrs: RRValidation = Field(default_factory=RRValidation)
    validate_additional_rrs: RRValidation = Field(default_factory=RRValidation)
    conditions: tuple[DNSCondition, ...] = ()

    @field_validator("valid_rcodes")
    @classmethod
    def _known_rcodes(cls, value: list[str]) -> list[str]:
        for name in value:
            try:
                dns.rcode.from_text(name)
            except dns.rcode.UnknownRcode:
                raise ValueError(f"{name!r} is not a DNS response code such as NXDOMAIN") from None
        return [name.upper() for name in value]

    @field_validator("server")
    @classmethod
    def _server_address(cls, value: str | None) -> str | None:
        if value is not None:
            _split_server(value)
        return value


def _split_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``v6`` or ``[v6]:port`` as host and port (default 53)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif server.count(":") == 1:
        host, port = server.split(":")
    else:
        host, port = server, "53"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{server!r} is not host, host:port or [IPv6]:port")
    return host, int(port)


def _system_nameserver() -> tuple[str, int]:
    """The first nameserver of /etc/resolv.conf and its port."""
    resolver = dns.resolver.Resolver()
    if not resolver.nameservers:
        raise ValueError("the system resolver has no nameserver")
    return str(resolver.nameservers[0]), resolver.port


class DNSCheck(Check[DNSConfig]):
    """Asks one DNS question and checks the response code and records."""

    config_model = DNSConfig

    def __init__(
        self,
        config: DNSConfig,
        *,
        system_nameserver: Callable[[], tuple[str, int]] = _system_nameserver,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self._system_nameserver = system_nameserver
        self._monotonic = monotonic
        name = config.query_name
        if config.query_type == "PTR":
            try:
                name = dns.reversename.from_address(name).to_text()
            except (ValueError, dns.exception.SyntaxError):
                pass  # already a name
        self._qname = name
        self._reads_connected = any("[CONNECTED]" in c.placeholders for c in config.conditions)

    async def run(self) -> CheckResult:
        """Resolve the server, connect, ask, and judge the response."""
        samples: list[Sample] = []
        started = self._monotonic()
        status, message = await self._probe(samples, started)
        samples += [
            Sample("probe_success", value=1.0 if status is Status.OK else 0.0),
            Sample("probe_duration_seconds", value=self._monotonic() - started),
        ]
        return CheckResult(status, message, tuple(samples), metadata=FAMILIES)

    async def _probe(self, samples: list[Sample], started: float) -> tuple[Status, str]:
        timeout = self.config.timeout if self.config.timeout is not None else DEFAULT_TIMEOUT
        samples.append(Sample("probe_dns_query_succeeded", value=0.0))
        try:
            host, port = (
                _split_server(self.config.server)
                if self.config.server is not None
                else self._system_nameserver()
            )
            address = await _resolve(host)
        except (OSError, ValueError) as exc:
            return self._unanswered(f"cannot resolve the server: {exc}")
        resolved = self._monotonic()
        family = dns.inet.af_for_address(address)
        samples += [
            Sample("probe_dns_lookup_time_seconds", value=resolved - started),
            Sample("probe_ip_protocol", value=6.0 if family == socket.AF_INET6 else 4.0),
            Sample("probe_ip_addr_hash", value=ip_addr_hash(address)),
            Sample("probe_dns_duration_seconds", _PHASE["resolve"], resolved - started),
        ]
        query = dns.message.make_query(self._qname, self.config.query_type)
        if not self.config.recursion_desired:
            query.flags &= ~dns.flags.RD
        try:
            tcp = self.config.transport == "tcp"
            sock = await _open_socket(family, address, port, tcp=tcp, within=timeout)
            connected = self._monotonic()
            samples.append(
                Sample("probe_dns_duration_seconds", _PHASE["connect"], connected - resolved)
            )
            left = max(0.0, timeout - (connected - resolved))
            async with sock:
                if tcp:
                    response = await dns.asyncquery.tcp(query, address, left, port, sock=sock)
                else:
                    response, _tcp = await dns.asyncquery.udp_with_fallback(
                        query, address, left, port, udp_sock=sock
                    )
        except dns.exception.Timeout:
            return self._unanswered(f"no answer from {address} port {port} within {timeout:g}s")
        except (OSError, dns.exception.DNSException) as exc:
            return self._unanswered(f"query to {address} port {port} failed: {exc}")
        answered = self._monotonic()
        samples[0] = Sample("probe_dns_query_succeeded", value=1.0)
        samples.append(
            Sample("probe_dns_duration_seconds", _PHASE["request"], answered - connected)
        )
        return self._judge(response, samples, int((answered - started) * 1000))

    def _failed_conditions(self, context: ConditionContext) -> list[str]:
        """Each failed condition as Gatus displays it."""
        results = (c.evaluate(context) for c in self.config.conditions)
        return [r.display for r in results if not r.success]

    def _unanswered(self, error: str) -> tuple[Status, str]:
        """No response: CRITICAL, unless the conditions read ``[CONNECTED]`` and all hold."""
        if not self._reads_connected:
            return Status.CRITICAL, error
        failures = self._failed_conditions(ConditionContext(connected=False))
        if failures:
            return Status.CRITICAL, "condition failed: " + "; ".join(failures)
        return Status.OK, f"{error}; all conditions met"

    def _judge(
        self, response: dns.message.Message, samples: list[Sample], response_ms: int
    ) -> tuple[Status, str]:
        rcode = response.rcode()
        sections = {
            "answer": _records(response.answer),
            "authority": _records(response.authority),
            "additional": _records(response.additional),
        }
        samples += [
            Sample("probe_dns_rcode", value=float(rcode)),
            *(Sample(f"probe_dns_{s}_rrs", value=float(len(r))) for s, r in sections.items()),
        ]
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                samples.append(Sample("probe_dns_serial", value=float(rrset[0].serial)))
                break
        rcode_text = dns.rcode.to_text(rcode)
        answers = [r.split(None, 4)[-1] for r in sections["answer"]]
        summary = f"{rcode_text}, {len(answers)} answer{'' if len(answers) == 1 else 's'}"
        if answers:
            summary += ": " + ", ".join(answers[:3]) + (", ..." if len(answers) > 3 else "")
        problems = []
        if rcode_text not in self.config.valid_rcodes:
            problems.append(
                f"rcode {rcode_text} is not one of {', '.join(self.config.valid_rcodes)}"
            )
        rules = {
            "answer": self.config.validate_answer_rrs,
            "authority": self.config.validate_authority_rrs,
            "additional": self.config.validate_additional_rrs,
        }
        for section, rule in rules.items():
            problem = rule.problem(section, sections[section])
            if problem is not None:
                problems.append(problem)
        if self.config.conditions:
            context = ConditionContext(
                dns_rcode=rcode_text,
                body=gatus_body(response).encode(),
                response_time_ms=response_ms,
                connected=True,
            )
            failures = self._failed_conditions(context)
            if failures:
                problems.append("condition failed: " + "; ".join(failures))
        status = Status.CRITICAL if problems else Status.OK
        return status, "; ".join([*problems, summary])


def _gatus_value(rdata: Any) -> str:
    rdtype = rdata.rdtype
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        address = ipaddress.ip_address(rdata.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # Go's net.IP prints these as IPv4
        return str(address)
    if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.PTR):
        return str(rdata.target.to_text())
    if rdtype == dns.rdatatype.MX:
        return str(rdata.exchange.to_text())
    if rdtype == dns.rdatatype.SRV:
        return f"{rdata.target.to_text()}:{rdata.port}"
    return "query type is not supported yet"


def gatus_body(response: dns.message.Message) -> str:
    """``[BODY]`` of a DNS answer as Gatus's ``QueryDNS`` makes it: the value of the last
    answer record (see the module docstring), empty without answers."""
    body = ""
    for rrset in response.answer:
        for rdata in rrset:
            body = _gatus_value(rdata)
    return body


def _records(section: Sequence[dns.rrset.RRset]) -> list[str]:
    """Each record of a section in text form, one per record (as blackbox's ``rr.String()``)."""
    return [
        f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in section
        for rdata in rrset
    ]


async def _open_socket(family: int, address: str, port: int, *, tcp: bool, within: float) -> Any:
    """A socket of dnspython's default backend for the server: a TCP one connected within
    ``within`` seconds, or a UDP one. Made apart from the query so that blackbox's ``connect``
    phase (making the socket) is timed apart from its ``request`` phase (the exchange)."""
    backend = dns.asyncbackend.get_default_backend()
    # dnspython's backend methods carry no annotations.
    if tcp:
        return await backend.make_socket(  # type: ignore[no-untyped-call]
            family, socket.SOCK_STREAM, 0, None, (address, port), within
        )
    connect = backend.datagram_connection_required()  # type: ignore[no-untyped-call]
    return await backend.make_socket(  # type: ignore[no-untyped-call]
        family, socket.SOCK_DGRAM, 0, None, (address, port) if connect else None
    )


async def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{host!r} has no address")
    return str(infos[0][4][0])
