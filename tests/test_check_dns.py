"""The dns check against a real dnsmasq on a loopback port."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.dns import DNSCheck, DNSConfig
from monitor.config import build_config_model, load_config
from monitor.errors import ConfigError
from monitor.model import CheckResult, Labels, Status
from tests.dnsmasq_server import dnsmasq_server, free_udp_and_tcp_port


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A dnsmasq serving fixed records of ``a.test`` on 127.0.0.1; yields its port."""
    txt = "v=spf1 -all"
    long_txt = ",".join(f"{i:03d}" + "x" * 200 for i in range(4))  # truncated over UDP
    records = [
        "--address=/a.test/127.0.0.5",
        "--host-record=www.a.test,127.0.0.6,::6",
        "--mx-host=a.test,mail.a.test,10",
        f"--txt-record=a.test,{txt}",
        f"--txt-record=big.a.test,{long_txt}",
        "--srv-host=_http._tcp.a.test,www.a.test,80,0,5",
        "--cname=alias.a.test,www.a.test",
        "--ptr-record=5.0.0.127.in-addr.arpa,a.test",
    ]
    with dnsmasq_server(tmp_path_factory.mktemp("dnsmasq"), records) as port:
        yield port


def make_check(port: int, **options: Any) -> DNSCheck:
    options.setdefault("timeout", "2s")
    options.setdefault("server", f"127.0.0.1:{port}")
    return DNSCheck(DNSConfig(name="dns", type="dns", **options))


def value(result: CheckResult, name: str, **labels: str) -> float:
    want = Labels.of(**labels)
    return next(s.value for s in result.samples if s.name == name and s.labels == want)


@pytest.mark.parametrize(
    ("name", "qtype", "answer"),
    [
        pytest.param("a.test", "A", "127.0.0.5", id="A record from --address"),
        pytest.param("www.a.test", "AAAA", "::6", id="AAAA record from --host-record"),
        pytest.param("a.test", "MX", "10 mail.a.test.", id="MX record"),
        pytest.param("a.test", "TXT", '"v=spf1 -all"', id="TXT record"),
        pytest.param("_http._tcp.a.test", "SRV", "0 5 80 www.a.test.", id="SRV record"),
        pytest.param("alias.a.test", "CNAME", "www.a.test.", id="CNAME record"),
        pytest.param("127.0.0.5", "PTR", "a.test.", id="PTR from an IP address"),
        pytest.param("5.0.0.127.in-addr.arpa", "PTR", "a.test.", id="PTR from its name"),
    ],
)
async def test_record_types(dnsmasq: int, name: str, qtype: str, answer: str) -> None:
    result = await make_check(dnsmasq, query_name=name, query_type=qtype).run()
    assert result.status is Status.OK, result.message
    assert result.message == f"NOERROR, 1 answer: {answer}"
    assert value(result, "probe_dns_rcode") == 0
    assert value(result, "probe_dns_answer_rrs") == 1
    assert value(result, "probe_dns_query_succeeded") == 1
    assert 0 <= value(result, "probe_dns_duration_seconds", phase="request") < 2
    assert 0 <= value(result, "probe_dns_duration_seconds", phase="connect") < 2
    assert value(result, "probe_dns_lookup_time_seconds") >= 0
    assert value(result, "probe_success") == 1
    assert value(result, "probe_ip_protocol") == 4
    assert all(not s.labels or set(s.labels) == {"phase"} for s in result.samples)


async def test_cname_chain_is_answered_with_the_address(dnsmasq: int) -> None:
    result = await make_check(dnsmasq, query_name="alias.a.test").run()
    assert result.message == "NOERROR, 2 answers: www.a.test., 127.0.0.6"


async def test_nxdomain_is_critical_unless_valid(dnsmasq: int) -> None:
    result = await make_check(dnsmasq, query_name="nope.a.test.", query_type="A").run()
    assert result.status is Status.OK  # --address answers every name under a.test
    result = await make_check(dnsmasq, query_name="nope.test").run()
    assert result.status is Status.CRITICAL
    assert result.message == "rcode NXDOMAIN is not one of NOERROR; NXDOMAIN, 0 answers"
    assert value(result, "probe_dns_rcode") == 3
    assert value(result, "probe_success") == 0
    assert value(result, "probe_dns_query_succeeded") == 1
    assert value(result, "probe_dns_answer_rrs") == 0
    result = await make_check(dnsmasq, query_name="nope.test", valid_rcodes=["NXDOMAIN"]).run()
    assert result.status is Status.OK


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        pytest.param(
            {"fail_if_not_matches_regexp": [r"IN A 127\.0\.0\.5$"]}, None, id="not-matches passes"
        ),
        pytest.param(
            {"fail_if_not_matches_regexp": [r"IN A 10\."]},
            "answer record 'a.test. 0 IN A 127.0.0.5' matched no fail_if_not_matches_regexp",
            id="not-matches fails",
        ),
        pytest.param(
            {"fail_if_matches_regexp": ["127.0.0.5"]},
            "answer record matched '127.0.0.5'",
            id="matches fails",
        ),
        pytest.param(
            {"fail_if_all_match_regexp": ["IN A"]},
            "every answer record matched fail_if_all_match_regexp",
            id="all-match fails",
        ),
        pytest.param(
            {"fail_if_none_matches_regexp": ["IN AAAA"]},
            "no answer record matched fail_if_none_matches_regexp",
            id="none-matches fails",
        ),
    ],
)
async def test_answer_validation(
    dnsmasq: int, rules: dict[str, list[str]], problem: str | None
) -> None:
    result = await make_check(dnsmasq, query_name="a.test", validate_answer_rrs=rules).run()
    if problem is None:
        assert result.status is Status.OK
    else:
        assert result.status is Status.CRITICAL
        assert result.message == f"{problem}; NOERROR, 1 answer: 127.0.0.5"


async def test_truncated_udp_answer_falls_back_to_tcp(dnsmasq: int) -> None:
    result = await make_check(dnsmasq, query_name="big.a.test", query_type="TXT").run()
    assert result.status is Status.OK, result.message
    assert result.message.startswith('NOERROR, 1 answer: "000xxx')
    result = await make_check(dnsmasq, query_name="a.test", transport="tcp").run()
    assert result.message == "NOERROR, 1 answer: 127.0.0.5"


async def test_no_server_listening_is_critical() -> None:
    port = free_udp_and_tcp_port()
    result = await make_check(port, query_name="a.test", timeout="1s").run()
    assert result.status is Status.CRITICAL
    assert result.message in (
        f"no answer from 127.0.0.1 port {port} within 1s",
        f"query to 127.0.0.1 port {port} failed: [Errno 111] Connection refused",
    )
    assert value(result, "probe_dns_query_succeeded") == 0


async def test_system_resolver_is_asked_when_no_server(dnsmasq: int) -> None:
    config = DNSConfig(name="dns", type="dns", query_name="a.test", timeout="2s")
    check = DNSCheck(config, system_nameserver=lambda: ("127.0.0.1", dnsmasq))
    result = await check.run()
    assert result.status is Status.OK
    assert result.message == "NOERROR, 1 answer: 127.0.0.5"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param(
            {"query_type": "HINFO"}, "literal_error|Input should be", id="unsupported type"
        ),
        pytest.param({"valid_rcodes": ["NOPE"]}, "not a DNS response code", id="unknown rcode"),
        pytest.param({"server": "127.0.0.1:99999"}, "host:port", id="bad port"),
        pytest.param(
            {"validate_answer_rrs": {"fail_if_matches_regexp": ["("]}},
            "not a regular",
            id="bad regex",
        ),
    ],
)
def test_config_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        DNSConfig(name="d", type="dns", query_name="a.test", **options)


@pytest.mark.parametrize(
    ("options", "conditions"),
    [
        pytest.param(
            {"query_name": "a.test"},
            ["[DNS_RCODE] == NOERROR", "[BODY] == 127.0.0.5", "[CONNECTED] == true"],
            id="an A answer's body is its address",
        ),
        pytest.param(
            {"query_name": "a.test"},
            ["[BODY] == pat(127.0.0.*)", "[RESPONSE_TIME] < 2000"],
            id="a glob on the answer and a response time in ms",
        ),
        pytest.param(
            {"query_name": "alias.a.test"},
            ["[BODY] == 127.0.0.6"],
            id="a CNAME chain's body is its last record, the address",
        ),
        pytest.param(
            {"query_name": "www.a.test", "query_type": "AAAA"},
            ["[BODY] == ::6"],
            id="an AAAA answer's body is its address",
        ),
        pytest.param(
            {"query_name": "a.test", "query_type": "MX"},
            ["[BODY] == mail.a.test."],
            id="an MX answer's body is the exchange without its preference",
        ),
        pytest.param(
            {"query_name": "_http._tcp.a.test", "query_type": "SRV"},
            ["[BODY] == www.a.test.:80"],
            id="an SRV answer's body is target:port",
        ),
        pytest.param(
            {"query_name": "127.0.0.5", "query_type": "PTR"},
            ["[BODY] == a.test."],
            id="a PTR answer's body is its target",
        ),
        pytest.param(
            {"query_name": "a.test", "query_type": "TXT"},
            ["[BODY] == query type is not supported yet"],
            id="a TXT answer's body is Gatus's not supported text",
        ),
        pytest.param(
            {"query_name": "nope.test", "valid_rcodes": ["NXDOMAIN"]},
            ["[DNS_RCODE] == NXDOMAIN", "len([BODY]) == 0"],
            id="an NXDOMAIN with valid_rcodes listing it and an empty body",
        ),
    ],
)
async def test_conditions_that_hold_are_ok(
    dnsmasq: int, options: dict[str, Any], conditions: list[str]
) -> None:
    result = await make_check(dnsmasq, conditions=conditions, **options).run()
    assert result.status is Status.OK, result.message
    assert value(result, "probe_success") == 1


@pytest.mark.parametrize(
    ("options", "conditions", "message"),
    [
        pytest.param(
            {"query_name": "nope.test", "valid_rcodes": ["NXDOMAIN"]},
            ["[DNS_RCODE] == NOERROR"],
            "condition failed: [DNS_RCODE] (NXDOMAIN) == NOERROR; NXDOMAIN, 0 answers",
            id="a failed rcode condition is shown resolved",
        ),
        pytest.param(
            {"query_name": "a.test"},
            ["[BODY] == 127.0.0.9", "[DNS_RCODE] == NOERROR", "[BODY] != pat(127.*)"],
            "condition failed: [BODY] (127.0.0.5) == 127.0.0.9; [BODY] (127.0.0.5) != pat(127.*)"
            "; NOERROR, 1 answer: 127.0.0.5",
            id="each failed condition is named, the one that holds is not",
        ),
        pytest.param(
            {"query_name": "nope.test"},
            ["[DNS_RCODE] == NXDOMAIN"],
            "rcode NXDOMAIN is not one of NOERROR; NXDOMAIN, 0 answers",
            id="valid_rcodes still applies beside a condition that holds",
        ),
    ],
)
async def test_conditions_that_fail_are_critical(
    dnsmasq: int, options: dict[str, Any], conditions: list[str], message: str
) -> None:
    result = await make_check(dnsmasq, conditions=conditions, **options).run()
    assert result.status is Status.CRITICAL
    assert result.message == message
    assert value(result, "probe_success") == 0


async def test_the_response_time_condition_is_shown_in_ms(dnsmasq: int) -> None:
    result = await make_check(
        dnsmasq, query_name="a.test", conditions=["[RESPONSE_TIME] > 60000"]
    ).run()
    assert result.status is Status.CRITICAL
    prefix, _, rest = result.message.partition("[RESPONSE_TIME] (")
    assert prefix == "condition failed: "
    ms = int(rest.partition(")")[0])
    assert 0 <= ms < 2000
    assert rest.partition(")")[2] == " > 60000; NOERROR, 1 answer: 127.0.0.5"


@pytest.mark.parametrize(
    ("conditions", "status", "message"),
    [
        pytest.param(
            ["[CONNECTED] == false"],
            Status.OK,
            "{error}; all conditions met",
            id="a server that must be down is OK when nothing answers",
        ),
        pytest.param(
            ["[CONNECTED] == true"],
            Status.CRITICAL,
            "condition failed: [CONNECTED] (false) == true",
            id="a condition on CONNECTED decides instead of the error",
        ),
        pytest.param(
            ["[DNS_RCODE] == NOERROR"],
            Status.CRITICAL,
            "{error}",
            id="without CONNECTED in a condition the error is the message",
        ),
    ],
)
async def test_conditions_when_nothing_answers(
    conditions: list[str], status: Status, message: str
) -> None:
    port = free_udp_and_tcp_port()
    result = await make_check(port, query_name="a.test", timeout="1s", conditions=conditions).run()
    errors = (
        f"no answer from 127.0.0.1 port {port} within 1s",
        f"query to 127.0.0.1 port {port} failed: [Errno 111] Connection refused",
    )
    assert result.status is status
    assert result.message in {message.format(error=e) for e in errors}
    assert value(result, "probe_dns_query_succeeded") == 0


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        pytest.param("[STATUS] == 200", "[STATUS]", id="an HTTP placeholder is not a DNS one"),
        pytest.param("[DNS_RCOD] == NOERROR", "DNS_RCODE", id="a misspelt placeholder"),
        pytest.param("[DNS_RCODE] = NOERROR", "no comparison", id="a condition needs an operator"),
    ],
)
def test_a_bad_condition_is_a_config_error_at_its_path(
    tmp_path: Path, condition: str, error: str
) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(
        "checks:\n"
        "  - name: resolver\n"
        "    type: dns\n"
        "    query_name: a.test\n"
        "    conditions:\n"
        "      - '[DNS_RCODE] == NOERROR'\n"
        f"      - {json.dumps(condition)}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config, model=build_config_model({"dns": DNSConfig}))
    (issue,) = info.value.issues
    # monitor/config.py puts the union's tag in the path and gives the check's own line.
    assert re.match(
        rf"{re.escape(str(config))}:\d+: checks\[0\]\.(dns\.)?conditions\[1\]: ", str(issue)
    )
    assert issue.message.startswith(repr(condition)), issue.message
    assert error in issue.message
