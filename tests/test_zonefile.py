"""`zone_file:` — static records from a master file: what it reads, what the real server then
answers, and every problem named by the zone file's name and line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import BIN, Server

from dnsfailover.config.load import load
from dnsfailover.config.zonefile import parse_ttl, read_zone_file
from dnsfailover.errors import ConfigError

ZONE = """\
$ORIGIN example.test.
$TTL 1h
@   IN SOA ns1 hostmaster ( 2024010101 ; serial, skipped: the config's soa is served
        3600 600 86400 300 )
@       NS  ns1.example.test.
ns1     A   127.0.0.1
www 300 IN  A   192.0.2.1
        IN 60 A 192.0.2.2          ; the same owner, a lower TTL
mail    MX  10 mx1                 ; a relative target
mx1     A   192.0.2.25
txt     TXT "a ; not a comment" "quote \\" and \\065"
alias   CNAME www
$ORIGIN sub.example.test.
x       A   192.0.2.9
$INCLUDE more.zone other.example.test.
y       AAAA 2001:db8::1
"""
MORE = "q 2d A 10.0.0.1\n"


def config(tmp_path: Path, zone: str = ZONE, extra: str = "") -> Path:
    (tmp_path / "example.zone").write_text(zone)
    (tmp_path / "more.zone").write_text(MORE)
    path = tmp_path / "c.yaml"
    path.write_text(f"""\
checks:
  web: {{type: tcp, port: 80, interval: 1s}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    zone_file: example.zone
{extra}""")
    return path


def test_ttl_units() -> None:
    assert (parse_ttl("300"), parse_ttl("1h30m"), parse_ttl("2D"), parse_ttl("A")) == (
        300,
        5400,
        172800,
        None,
    )


def test_the_file_becomes_the_zones_static_records(tmp_path: Path) -> None:
    cfg = load(config(tmp_path))
    static = {
        (r.name, r.rtype): r for r in cfg.zones["example.test."].static_records("example.test.")
    }
    assert static[("www.example.test.", "A")].values == ("192.0.2.1", "192.0.2.2")
    assert static[("www.example.test.", "A")].ttl == 60  # one set, at its lowest TTL
    assert static[("mail.example.test.", "MX")].values == ("10 mx1.example.test.",)
    assert static[("alias.example.test.", "CNAME")].values == ("www.example.test.",)
    assert static[("x.sub.example.test.", "A")].ttl == 3600  # $TTL 1h
    assert static[("q.other.example.test.", "A")].ttl == 172800  # included with its origin
    assert ("y.sub.example.test.", "AAAA") in static  # the includer's $ORIGIN goes on
    assert ("example.test.", "SOA") not in static
    assert static[("example.test.", "NS")].values == ("ns1.example.test.",)


def test_the_server_answers_from_the_file(tmp_path: Path) -> None:
    server = Server(config(tmp_path), tmp_path / "state.db", "--api", "off")
    try:
        assert server.answer("www.example.test.") == ("192.0.2.1", "192.0.2.2")
        assert server.answer("mail.example.test.", "MX") == ("10 mx1.example.test.",)
        txt = server.query("txt.example.test.", "TXT").answer[0][0]
        assert [bytes(s) for s in txt.strings] == [b"a ; not a comment", b'quote " and A']
        cname = server.query("alias.example.test.").answer
        assert [r.rdtype for r in cname] == [5, 1]  # the CNAME, then the target's A records
        assert server.answer("q.other.example.test.") == ("10.0.0.1",)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("zone", "line", "message"),
    [
        ("www A 192.0.2.1\nwww DS 1 2 3 abcd\n", 2, "type DS is not supported in zone files"),
        ("www A not-an-address\n", 1, "A value 'not-an-address' is not an IPv4 address"),
        ("$INCLUDE missing.zone\n", 1, "cannot read zone file"),
        ("$GENERATE 1-3 h$ A 1.2.3.$\n", 1, "$GENERATE is not supported"),
        ("www CNAME a.example.test.\nwww A 192.0.2.1\n", 2, "a CNAME must be alone"),
        ('www TXT "open\n', 1, "a quoted string is not closed"),
        ("www A ( 192.0.2.1\n", 1, "a parenthesis opened here is never closed"),
        ("@ NS other.example.test.\n", 1, "differ from the zone's nameservers"),
        ("far.example.org. A 192.0.2.1\n", 1, "is outside the zone example.test."),
        ("www CH A 192.0.2.1\n", 1, "class CH is not served"),
    ],
)
def test_problems_name_the_zone_file_and_line(
    tmp_path: Path, zone: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(config(tmp_path, "ns1 A 127.0.0.1\n" + zone))
    want = f"{tmp_path / 'example.zone'}:{line + 1}: "
    assert any(str(p).startswith(want) and message in str(p) for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


def test_a_file_record_clashing_with_yaml_names_both_places(tmp_path: Path) -> None:
    extra = "    records:\n      www: {type: CNAME, value: mail.example.test.}\n"
    with pytest.raises(ConfigError) as info:
        load(config(tmp_path, extra=extra))
    text = "\n".join(str(p) for p in info.value.problems)
    assert "www.example.test. is also a static A record" in text
    assert f"{tmp_path / 'example.zone'}:7" in text  # where the file's www is


def test_an_include_loop_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "loop.zone").write_text("$INCLUDE loop.zone\n")
    problems = read_zone_file(tmp_path / "loop.zone", "example.test.", 3600).problems
    assert [p.message for p in problems] == [
        f"cannot read zone file {tmp_path / 'loop.zone'}: it includes itself"
    ]


def test_validate_exits_2_with_file_line(tmp_path: Path) -> None:
    path = config(tmp_path, "ns1 A 127.0.0.1\nwww A 300.1.1.1\n")
    done = subprocess.run([str(BIN), "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert f"{tmp_path / 'example.zone'}:2: " in done.stderr
