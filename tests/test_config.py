"""config.load(): every problem reported once, as FILE:LINE: key.path: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsfailover.config.load import load, loads
from dnsfailover.config.schema import ActiveActive, ActivePassive, StaticRecord
from dnsfailover.errors import ConfigError, Problem

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"

# Lines 1-2: a check; lines 3-8: a valid zone.  Cases append from line 9 (zone records/failover).
CHECKS = "checks:\n  web: {type: http, interval: 1s, timeout: 500ms}\n"
ZONE = """\
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
"""
BASE = CHECKS + ZONE
Z = 'zones["example.test."]'

Expected = list[tuple[int | None, str, str]]  # (line, path, message substring)


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def assert_problems(problems: list[Problem], expected: Expected) -> None:
    assert [(p.line, p.path) for p in problems] == [(line, path) for line, path, _ in expected]
    for problem, (_, _, message) in zip(problems, expected, strict=True):
        assert message in problem.message, str(problem)


CASES: dict[str, tuple[str, Expected]] = {
    "invalid YAML": (
        "checks:\n  web:\n    type: http\n  - x\n",
        [(4, "", "invalid YAML: expected <block end>, but found '-'")],
    ),
    "unquoted @": (
        BASE + '      @: {type: MX, values: ["10 mail.example.test."]}\n',
        [(9, "", 'quote names that start with @, e.g. "@"')],
    ),
    "unknown key, suggested": (
        BASE + "    failover:\n"
        "      www: {policy: active-active, check: web, endpoints: [127.0.0.11], tll: 30}\n",
        [(10, f"{Z}.failover.www.tll", "unknown key 'tll'; did you mean 'ttl'?")],
    ),
    "unknown key, listed": (
        BASE + "    colour: blue\n",
        [(9, f"{Z}.colour", "unknown key 'colour'; expected one of: provider, options, soa,")],
    ),
    "wrong type": (
        "checks:\n  web:\n    type: http\n    rise: two\n" + ZONE,
        [(4, "checks.web.rise", "expected a whole number, got 'two'")],
    ),
    "wrong literal": (
        "checks:\n  web: {type: htp}\n" + ZONE,
        [(2, "checks.web.type", "expected 'http', 'https', 'tcp' or 'dns', got 'htp'; did you")],
    ),
    "unknown check": (
        BASE + "    failover:\n"
        "      www: {policy: active-active, check: wbe, endpoints: [127.0.0.11]}\n",
        [
            (
                10,
                f"{Z}.failover.www.check",
                "unknown check 'wbe'; did you mean 'web'? (defined: web)",
            )
        ],
    ),
    "duplicate key": (
        BASE + "      ns1: {type: A, values: [127.0.0.2]}\n",
        [(9, f"{Z}.records.ns1", "duplicate key (first on line 8)")],
    ),
    "bad address": (
        BASE + "    failover:\n"
        "      www:\n"
        "        policy: active-active\n"
        "        check: web\n"
        "        endpoints:\n"
        "          - 127.0.0.11\n"
        "          - address: 127.0.0.300\n"
        "          - 127.0.0.x\n",
        [
            (15, f"{Z}.failover.www.endpoints[1].address", "'127.0.0.300' is not an IPv4 or IPv6"),
            (16, f"{Z}.failover.www.endpoints[2]", "'127.0.0.x' is not an IPv4 or IPv6 address"),
        ],
    ),
    "address family mismatch": (
        BASE + "    failover:\n"
        "      www: {type: AAAA, policy: active-active, check: web, endpoints: [127.0.0.11]}\n",
        [(10, f"{Z}.failover.www", "127.0.0.11 is not an IPv6 address, as type AAAA needs")],
    ),
    "duration below 100ms": (
        "checks:\n  web:\n    type: http\n    interval: 50ms\n    timeout: 10ms\n" + ZONE,
        [(4, "checks.web.interval", "interval must be at least 100ms")],
    ),
    "bad duration": (
        "checks:\n  web:\n    type: http\n    interval: 1 sec\n" + ZONE,
        [(4, "checks.web.interval", "expected a duration such as 500ms, 1s or 1m, got '1 sec'")],
    ),
    "infinite duration": (
        "checks:\n  web:\n    type: http\n    interval: .inf\n" + ZONE,
        [(4, "checks.web.interval", "a duration must be a finite number of seconds, got inf")],
    ),
    "NaN duration": (
        "checks:\n  web:\n    type: http\n    interval: .nan\n" + ZONE,
        [(4, "checks.web.interval", "a duration must be a finite number of seconds, got nan")],
    ),
    "overflowing duration": (
        "checks:\n  web:\n    type: http\n    interval: 1.0e400\n    timeout: 1e999s\n" + ZONE,
        [
            (4, "checks.web.interval", "a duration must be a finite number of seconds, got inf"),
            (5, "checks.web.timeout", "expected a duration such as 500ms, 1s or 1m, got '1e999s'"),
        ],
    ),
    "duration past a year": (
        "checks:\n  web:\n    type: http\n    interval: 99999999999999\n" + ZONE,
        [(4, "checks.web.interval", "a duration can be at most 366 days (31622400s)")],
    ),
    "YAML 1.1 integers are not numbers": (
        "checks:\n  a: {type: tcp, port: 2:14:40}\n  b: {type: tcp, port: 0x1F90}\n"
        "  c: {type: tcp, port: 0o17}\n" + ZONE,
        [
            (2, "checks.a.port", "expected a whole number, got '2:14:40'"),
            (3, "checks.b.port", "expected a whole number, got '0x1F90'"),
            (4, "checks.c.port", "expected a whole number, got '0o17'"),
        ],
    ),
    "record quorum larger than the regions": (
        BASE + "    failover:\n"
        "      www: {policy: active-active, check: web, endpoints: [127.0.0.11], quorum: 2}\n",
        [(10, f"{Z}.failover.www.quorum", "quorum 2 needs at least 2 regions; 1 is declared")],
    ),
    "expect_body regex with a backreference (RE2)": (
        "checks:\n  web:\n    type: http\n    expect_body: /(a)\\1/\n" + ZONE,
        [(4, "checks.web.expect_body", "invalid regular expression /(a)\\1/: invalid escape")],
    ),
    "timeout longer than interval": (
        "checks:\n  web: {type: http, interval: 1s, timeout: 2s}\n" + ZONE,
        [(2, "checks.web", "timeout (2s) must not be longer than interval (1s)")],
    ),
    "bad expect_body regex": (
        "checks:\n  web:\n    type: http\n    expect_body: /ok(/\n" + ZONE,
        [(4, "checks.web.expect_body", "invalid regular expression /ok(/: missing )")],
    ),
    "name outside zone": (
        BASE + "      www.other.test.: {type: A, values: [127.0.0.2]}\n",
        [
            (
                9,
                f'{Z}.records["www.other.test."]',
                "www.other.test. is outside the zone example.test.",
            )
        ],
    ),
    "name in a nested zone": (
        BASE + "      x.sub: {type: A, values: [127.0.0.2]}\n"
        "      sub: {type: NS, values: [ns1.example.test.]}\n"  # a delegation is fine
        "  sub.example.test.:\n"
        "    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns1.example.test.]\n",
        [(9, f'{Z}.records["x.sub"]', "x.sub.example.test. is in the zone sub.example.test.")],
    ),
    "CNAME next to another record": (
        BASE + "      www: {type: CNAME, values: [x.example.test.]}\n"
        "      www.example.test.: {type: A, values: [127.0.0.2]}\n",
        [(10, f'{Z}.records["www.example.test."]', "is also a static CNAME record (line 9)")],
    ),
    "failover name that is a static CNAME": (
        BASE + "      www: {type: CNAME, value: x.example.test.}\n"
        "    failover:\n"
        "      www: {policy: active-active, check: web, endpoints: [127.0.0.11]}\n",
        [(11, f"{Z}.failover.www", "www.example.test. is also a static CNAME record (line 9)")],
    ),
    "failover name that is a static record of its type": (
        BASE + "    failover:\n"
        "      ns1: {policy: active-active, check: web, endpoints: [127.0.0.11]}\n",
        [(10, f"{Z}.failover.ns1", "ns1.example.test. is also a static A record (line 8)")],
    ),
    "bad MX value": (
        BASE + "      mx:\n        type: MX\n        values:\n          - 10 mail.example.test.\n"
        "          - mail.example.test.\n",
        [
            (
                13,
                f"{Z}.records.mx.values[1]",
                "MX value 'mail.example.test.' needs 2 fields, has 1; expected 'PRIORITY NAME'",
            )
        ],
    ),
    "bad A value": (
        BASE + '      a: {type: A, value: "::1"}\n',
        [(9, f"{Z}.records.a.value", "A value '::1' is not an IPv4 address")],
    ),
    "apex NS": (
        BASE + '      "@": {type: NS, values: [ns2.example.test.]}\n',
        [(9, f'{Z}.records["@"].type', "the apex NS records come from the zone's nameservers")],
    ),
    "repeated endpoint": (
        BASE + "    failover:\n"
        "      api:\n"
        "        policy: active-passive\n"
        "        check: web\n"
        "        tiers:\n"
        "          - {name: a, endpoints: [127.0.0.21]}\n"
        "          - name: b\n"
        "            endpoints: [{address: 127.0.0.21}]\n",
        [
            (
                16,
                f"{Z}.failover.api.tiers[1].endpoints[0].address",
                "127.0.0.21 is already an endpoint of this record (line 14)",
            )
        ],
    ),
    "unknown policy": (
        BASE + "    failover:\n      www: {policy: active-pasive, check: web}\n",
        [
            (
                10,
                f"{Z}.failover.www.policy",
                "unknown policy 'active-pasive'; did you mean 'active-p",
            )
        ],
    ),
    "missing policy": (
        BASE + "    failover:\n      www: {check: web}\n",
        [(10, f"{Z}.failover.www", "missing required key 'policy' (active-active or active-pas")],
    ),
    "record neither mapping nor list": (
        BASE + "      txt: hello\n      lst: [{type: TXT, values: [a]}, {type: TXT}]\n",
        [
            (9, f"{Z}.records.txt", "expected a mapping or a list, got 'hello'"),
            (10, f"{Z}.records.lst[1].values", "missing required key"),
        ],
    ),
    "unknown provider": (
        CHECKS + ZONE.replace("    soa:", "    provider: nosuch\n    soa:"),
        [(5, f"{Z}.provider", "unknown provider 'nosuch'; installed: embedded")],
    ),
    "bad provider option": (
        CHECKS + ZONE.replace("    soa:", "    options: {bogus: 1}\n    soa:"),
        [(5, f"{Z}.options.bogus", "unknown key 'bogus'")],
    ),
    "zone name not absolute": (
        CHECKS + ZONE.replace("example.test.:", "example.test:"),
        [(4, 'zones["example.test"]', "'example.test' must be absolute (end with a dot)")],
    ),
    "same zone twice": (
        BASE + "  Example.Test.:\n"
        "    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}\n"
        "    nameservers: [ns9.other.test.]\n",
        [(9, 'zones["Example.Test."]', "same zone as 'example.test.' (line 4)")],
    ),
    "in-zone nameserver without an address": (
        CHECKS + ZONE.replace("[ns1.example.test.]", "[ns1.example.test., ns2.example.test.]"),
        [(6, f"{Z}.nameservers[1]", "nameserver ns2.example.test. is in this zone but has no A")],
    ),
    "missing section": (
        CHECKS,
        [(1, "zones", "missing required key")],
    ),
    "empty section": (
        "checks:\nzones:\n  example.test.:\n    soa:\n    nameservers: [ns1.example.test.]\n",
        [(1, "checks", "expected a mapping, got nothing"), (3, Z, "an embedded zone needs soa")],
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_problem(tmp_path: Path, text: str, expected: Expected) -> None:
    assert_problems(problems_of(tmp_path, text), expected)


def test_many_problems_at_once_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = """\
checks:
  web:
    type: http
    prot: 8080
    interval: 50ms
  web: {type: tcp}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
      mx: {type: MX, values: [10 mail]}
      out.example.org.: {type: TXT, values: [hi]}
    failover:
      www:
        type: A
        policy: active-active
        check: nope
        endpoints: [127.0.0.11, 127.0.0.11]
      api:
        policy: active-active
        check: web
        endpoints: ["::1"]
"""
    assert_problems(
        problems_of(tmp_path, text),
        [
            (6, "checks.web", "duplicate key (first on line 2)"),
            (6, "checks.web", "a tcp check needs a port"),
            (
                13,
                f"{Z}.records.mx.values[0]",
                "name 'mail' is not absolute (no trailing dot); expected 'PRIORITY NAME'",
            ),
            (14, f'{Z}.records["out.example.org."]', "outside the zone example.test."),
            (19, f"{Z}.failover.www.check", "unknown check 'nope' (defined: web)"),
            (20, f"{Z}.failover.www.endpoints[1]", "127.0.0.11 is already an endpoint"),
            (21, f"{Z}.failover.api", "::1 is not an IPv4 address, as type A needs"),
        ],
    )


def test_problem_str_is_file_line_path_message(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, BASE + "      ns1: {type: A, values: [127.0.0.2]}\n")
    file = tmp_path / "c.yaml"
    assert str(problem) == f"{file}:9: {Z}.records.ns1: duplicate key (first on line 8)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "<string>: empty config; expected a mapping with zones"),
        ("# only a comment\n", "<string>: empty config; expected a mapping with zones"),
        ("- a\n- b\n", "<string>:1: expected a mapping with zones at the top, got a list"),
        ("a: 1\n---\nb: 2\n", "<string>:2: invalid YAML: expected a single document in the"),
        ("zones:\n\tx: 1\n", "<string>:2: invalid YAML: found character '\\t' that cannot"),
        ("zones: !!python/object:os.system {}\n", "<string>:1: invalid YAML: could not determine"),
    ],
)
def test_bad_document(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(text)
    assert str(info.value).startswith(expected)


def test_missing_file_is_a_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


def test_example_config_loads() -> None:
    config = load(EXAMPLE)
    web = config.checks["web"]
    assert (web.type, web.effective_port, web.interval, web.timeout) == ("http", 8080, 1.0, 0.5)
    assert web.expect_status == ((200, 200),)
    zone = config.zones["example.test."]
    assert zone.records["@"] == StaticRecord(type="MX", ttl=3600, values=("10 mail.example.test.",))
    www, api = zone.failover["www"], zone.failover["api"]
    assert isinstance(www, ActiveActive)
    assert [e.address for e in www.endpoints] == ["127.0.0.11", "127.0.0.12"]
    assert isinstance(api, ActivePassive)
    assert [t.name for t in api.tiers] == ["us-east", "eu-west"]
    assert api.hold_down == 30.0
    assert len(config.targets()) == 5


def test_loads_valid_config_with_merges_list_records_and_numeric_names() -> None:
    config = loads(
        """\
checks:
  base: &base {type: tcp, port: 22, interval: 2s, timeout: 1s}
  ssh:
    <<: *base
    fall: 5
zones:
  2.0.192.in-addr.arpa.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      1: {type: PTR, value: host.example.test.}
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
      "@":
        - {type: MX, values: ["10 mail.example.test."]}
        - {type: TXT, values: ['"v=spf1 -all"']}
        - {type: CAA, values: ['0 issue "letsencrypt.org"']}
      _sip._tcp: {type: SRV, values: [10 5 5060 sip.example.test.]}
    failover:
      www6: {type: AAAA, policy: active-active, check: ssh, endpoints: ["::1"]}
"""
    )
    assert config.checks["ssh"].fall == 5
    assert config.checks["ssh"].port == 22
    assert "1" in config.zones["2.0.192.in-addr.arpa."].records


def test_decimal_numbers_only_leading_zeros_are_not_octal() -> None:
    """YAML 1.2 integers: `017` is 17 (YAML 1.1 read it as octal 15)."""
    config = loads(CHECKS.replace("timeout: 500ms}", "timeout: 500ms, rise: 017}") + ZONE)
    assert config.checks["web"].rise == 17


def test_expect_body_regex_is_compiled() -> None:
    config = loads(BASE.replace("timeout: 500ms}", "timeout: 500ms, expect_body: /^ok$/}"))
    pattern = config.checks["web"].expect_body_regex
    assert pattern is not None
    assert pattern.search("ok")
    assert loads(BASE).checks["web"].expect_body_regex is None


def test_cluster_example_config_loads() -> None:
    config = load(EXAMPLE.with_name("cluster.yaml"))
    assert list(config.regions) == ["us", "eu", "ap"]
    assert config.regions["ap"].source_address == "127.0.0.103"
    assert config.cluster is not None
    assert config.cluster.etcd.endpoints == ("127.0.0.1:2379",)
    assert config.cluster.etcd.prefix == "/dnsfailover/example"
    # api votes under "all", www under the check's majority: two different health keys
    votes = config.votes()
    assert sorted(str(q) for _t, q in votes.values()) == ["all", "all", "majority", "majority"]
