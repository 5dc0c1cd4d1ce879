"""`dnsfailover import`: real sources in, a config out that validates and serves the same.

BIND 9 serves a zone file (and transfers it with TSIG); moto serves a Route 53 hosted zone.
Each is imported with the real command, the result is served by the real `dnsfailover
serve`, and every imported name and type is asked of both servers over DNS: the answers
must be the same RRsets, TTLs included.  What a config cannot hold must be named in a
warning and in the YAML, never lost without a word; a TSIG secret never shows.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import jsonschema
import pytest
import yaml
from support import Server, free_port, run_cli

from dnsfailover.config.json_schema import config_schema
from dnsfailover.config.load import load, loads
from dnsfailover.importing.sources import from_axfr, from_file
from dnsfailover.importing.zone import ImportFailed, SourceSet, build

NAMED = Path("/usr/sbin/named")
ZONE = "import.test."
R53 = "r53.import.test."
SKIPPED = {("sub", "DS"), ("host", "SSHFP"), ("host", "HINFO"), ("sip", "NAPTR")}
ZONE_FILE = """\
$ORIGIN import.test.
$TTL 1h
@         IN SOA ns1 hostmaster ( 2026120201 7200 900 1209600 300 )
          IN NS   ns1
          IN NS   ns2.elsewhere.invalid.
          IN MX   10 mail
          IN MX   20 mx2.elsewhere.invalid.
          IN TXT  "v=spf1 -all"
          IN CAA  0 issue "letsencrypt.org"
ns1       IN A    192.0.2.53
WWW   300 IN A    192.0.2.1
www   300 IN A    192.0.2.2
www       IN AAAA 2001:db8::1
mail      IN A    192.0.2.25
alias     IN CNAME www
external  IN CNAME www.elsewhere.invalid.
*.wild    IN A    192.0.2.100
*.wild    IN TXT  "wild"
txt       IN TXT  "hello world" "a\\"quote;" \\255bin
dkim._domainkey IN TXT ( "v=DKIM1; k=rsa; "   ; two strings,
                         "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC" )  ; two lines
sub       IN NS   ns.sub
sub       IN NS   ns.elsewhere.invalid.
sub       IN DS   12345 8 1 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE
ns.sub    IN A    192.0.2.60
_sip._udp IN SRV  0 5 5060 www
ptr       IN PTR  www
host      IN A    192.0.2.9
host      IN SSHFP 1 1 123456789ABCDEF67890123456789ABCDEF67890
host      IN HINFO "PC" "Linux"
sip       IN NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp
$GENERATE 1-3 gen$ 600 IN A 10.0.0.$
"""
BIG = "".join(f"big 60 IN A 10.1.0.{i}\n" for i in range(1, 41))  # more than UDP's 512 bytes


class Bind:
    """BIND 9 serving ZONE from a zone file; AXFR only with the key `xfr-key`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.zone_file = directory / "import.test.db"
        self.zone_file.write_text(ZONE_FILE + BIG)
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.key_file = directory / "xfr.key"  # as `tsig-keygen xfr-key` prints it
        self.key_file.write_text(
            f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{self.secret}";\n}};\n'
        )
        self.port = free_port()
        conf = directory / "named.conf"
        conf.write_text(
            f"""include "{self.key_file}";
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    minimal-responses yes;
    allow-transfer {{ key "xfr-key"; }};
}};
zone "{ZONE}" {{ type primary; file "{self.zone_file}"; }};
"""
        )
        self.log = directory / "named.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(NAMED), "-4", "-g", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while b"running" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"named did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    if not NAMED.exists():
        pytest.fail("BIND 9 is not installed: apt-get install bind9 (scripts/system-deps does)")
    server = Bind(tmp_path / "named")
    yield server
    server.stop()


Answer = tuple[int, bool, list[tuple[str, str, str, int, tuple[str, ...]]]]


def answer(port: int, name: str, rtype: str) -> Answer:
    """rcode, AA and the answer and authority RRsets (SOA aside: its serial is each
    server's own) of a non-recursive query over TCP."""
    q = dns.message.make_query(name, rtype)
    q.flags &= ~dns.flags.RD
    r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=10)
    found = [
        (section, rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl,
         tuple(sorted(rd.to_text() for rd in rrset)))
        for section, rrsets in (("answer", r.answer), ("authority", r.authority))
        for rrset in rrsets
        if rrset.rdtype != dns.rdatatype.SOA
    ]  # fmt: skip
    return r.rcode(), bool(r.flags & dns.flags.AA), sorted(found)


def soa_fields(port: int, zone: str) -> tuple[Any, ...]:
    q = dns.message.make_query(zone, "SOA")
    rrset = dns.query.tcp(q, "127.0.0.1", port=port, timeout=10).answer[0]
    soa = rrset[0]
    return (rrset.ttl, soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum)


def every_set(config: Path, zone: str) -> list[tuple[str, str]]:
    """(name, type) of every record set the config serves in `zone`."""
    return [(rs.name, rs.rtype) for rs in load(config).zones[zone].static_records(zone)]


def records(text: str) -> dict[str, Any]:
    """The `records:` of the one zone in an imported YAML (a config or a zone's entry)."""
    data = yaml.safe_load(text)
    zones = data.get("zones", data)
    (zone,) = zones.values()
    return dict(zone["records"])


def test_a_zone_file_imports_into_a_config_that_serves_what_bind_serves(
    tmp_path: Path, bind: Bind, serve: Callable[..., Server]
) -> None:
    out = tmp_path / "imported.yaml"
    done = run_cli("import", ZONE, "--from-file", str(bind.zone_file), "--config", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    # every record set left out is named, with its reason, on stderr and in the YAML
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == len(SKIPPED), done.stderr
    text = out.read_text()
    for name, rtype in SKIPPED:
        assert any(f" {name}.{ZONE} {rtype} (" in line for line in warned), (name, rtype)
        assert f"#   {name}.{ZONE} 3600 IN {rtype} " in text
    assert "DNSSEC records are not imported" in done.stderr
    assert f"{ZONE}: 24 record set(s) imported to {out}, 4 not imported" in done.stderr
    checked = run_cli("validate", str(out))
    assert checked.returncode == 0, checked.stderr
    jsonschema.validate(yaml.safe_load(text), config_schema())  # the editor agrees
    # served, with transfers open to us for the round trip below
    data = yaml.safe_load(text)
    data["zones"][ZONE]["allow_transfer"] = ["127.0.0.1"]
    (config := tmp_path / "serve.yaml").write_text(yaml.safe_dump(data))
    ours = serve(config)
    names = every_set(config, ZONE)
    assert len(names) == 23  # the SOA aside
    for name, rtype in names:
        theirs = answer(bind.port, name, rtype)
        assert theirs[2], (name, rtype)  # BIND has it: the comparison means something
        assert answer(ours.port, name, rtype) == theirs, (name, rtype)
    assert soa_fields(ours.port, ZONE) == soa_fields(bind.port, ZONE)
    # and our own AXFR gives the same records back
    again = run_cli("import", ZONE, "--axfr", f"127.0.0.1:{ours.port}")
    assert again.returncode == 0, again.stderr
    assert records(again.stdout) == records(text)


def test_an_axfr_with_tsig_imports_the_zone_and_never_shows_the_secret(
    tmp_path: Path, bind: Bind
) -> None:
    where = f"127.0.0.1:{bind.port}"
    done = run_cli("import", ZONE, "--axfr", where, "--tsig-key-file", str(bind.key_file))
    assert done.returncode == 0, done.stderr
    assert bind.secret not in done.stdout + done.stderr
    assert "(TSIG xfr-key)" in done.stdout  # the key's name, never its secret
    # the zone's entry goes right under `zones:`, beside other zones
    head = "zones:\n  other.test.:\n    soa: {mname: ns.other.test., rname: h.other.test.}\n"
    head += "    nameservers: [ns.elsewhere.invalid.]\n"
    loads(head + done.stdout)
    assert records(done.stdout) == records(run_cli("import", ZONE, "--from-file",
                                                   str(bind.zone_file)).stdout)  # fmt: skip
    # the same zone, in process: AXFR and file alike, what was skipped included
    key_zone = from_axfr("127.0.0.1", bind.port, ZONE, _key(bind))
    file_zone = from_file(bind.zone_file, ZONE)
    assert key_zone.records == file_zone.records
    assert key_zone.soa == file_zone.soa
    assert key_zone.nameservers == file_zone.nameservers
    assert {(s.name, s.rtype) for s in key_zone.skipped} == {(f"{n}.{ZONE}", t) for n, t in SKIPPED}
    # without the key BIND refuses; with a wrong secret it does not know us
    unsigned = run_cli("import", ZONE, "--axfr", where)
    assert unsigned.returncode == 1
    assert "REFUSED" in unsigned.stderr
    assert "allowed" in unsigned.stderr
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    (bad := tmp_path / "bad.key").write_text(wrong + "\n")
    refused = run_cli(
        "import", ZONE, "--axfr", where, "--tsig-key-file", str(bad), "--tsig-name", "xfr-key"
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: AXFR of import.test. from 127.0.0.1:")
    assert wrong not in refused.stdout + refused.stderr
    env_key = run_cli("import", ZONE, "--axfr", where, "--tsig-secret-env", "NOT_SET_ANYWHERE",
                      "--tsig-name", "xfr-key")  # fmt: skip
    assert env_key.returncode == 2
    assert "environment variable NOT_SET_ANYWHERE is not set" in env_key.stderr


def _key(bind: Bind) -> Any:
    from dnsfailover.importing.sources import TsigKey

    return TsigKey("xfr-key", "hmac-sha256", base64.b64decode(bind.secret))


def _rrset(name: str, rtype: str, *values: str, ttl: int = 60, **extra: Any) -> dict[str, Any]:
    rrset: dict[str, Any] = {"Name": name, "Type": rtype, **extra}
    if values:
        rrset |= {"TTL": ttl, "ResourceRecords": [{"Value": v} for v in values]}
    return rrset


def test_a_route53_zone_imports_into_a_config_that_serves_what_route53_lists(
    tmp_path: Path,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[..., Server],
) -> None:
    aws_secret = "import-test-aws-secret-never-shown"
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": aws_secret,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("route53", endpoint_url=moto_endpoint, region_name="us-east-1")
    zone_id = client.create_hosted_zone(Name=R53, CallerReference="import")["HostedZone"]["Id"]
    soa = "ns-1.awsdns-01.org. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"
    plain = [
        _rrset(R53, "SOA", soa, ttl=900),
        _rrset(R53, "MX", f"10 mail.{R53}", "20 mx.elsewhere.invalid"),  # no final dot
        _rrset(R53, "TXT", '"v=spf1 -all"'),
        _rrset(f"www.{R53}", "A", "192.0.2.2", "192.0.2.1", ttl=300),
        _rrset(f"www.{R53}", "AAAA", "2001:db8::1"),
        _rrset(f"mail.{R53}", "A", "192.0.2.25"),
        _rrset(f"alias.{R53}", "CNAME", f"www.{R53}"),
        _rrset(f"\\052.wild.{R53}", "A", "192.0.2.100"),  # Route 53 lists `*` as \052
        _rrset(f"txt.{R53}", "TXT", '"semi\\073colon"', '"two" "strings"'),  # \073 (octal): ;
        _rrset(f"_sip._udp.{R53}", "SRV", f"0 5 5060 www.{R53}"),
        _rrset(f"caa.{R53}", "CAA", '0 issue "amazon.com"'),
        _rrset(f"sub.{R53}", "NS", "ns.elsewhere.invalid."),
    ]
    routed = [
        _rrset(f"apex-alias.{R53}", "A", AliasTarget={
            "HostedZoneId": zone_id.split("/")[-1], "DNSName": f"www.{R53}",
            "EvaluateTargetHealth": False}),
        _rrset(f"weighted.{R53}", "A", "192.0.2.31", SetIdentifier="blue", Weight=90),
        _rrset(f"weighted.{R53}", "A", "192.0.2.32", SetIdentifier="green", Weight=10),
        _rrset(f"spf.{R53}", "SPF", '"v=spf1 -all"'),
    ]  # fmt: skip
    changes: Any = [{"Action": "UPSERT", "ResourceRecordSet": r} for r in plain + routed]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    out = tmp_path / "r53.yaml"
    done = run_cli(
        "import", R53, "--route53", "--endpoint-url", moto_endpoint, "--config", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert aws_secret not in done.stdout + done.stderr + out.read_text()
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 4, done.stderr  # the alias, each weighted set, the SPF set
    assert f"apex-alias.{R53} A (alias to www.{R53})" in done.stderr
    assert "weighted routing (set 'blue'" in done.stderr
    assert "weighted routing (set 'green'" in done.stderr
    assert f"spf.{R53} SPF (1 record): type SPF is not one dnsfailover serves" in done.stderr
    text = out.read_text()
    assert f"#   apex-alias.{R53} 0 IN A ; alias to www.{R53}" in text
    assert run_cli("validate", str(out)).returncode == 0
    ours = serve(out)
    listed = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    simple = [r for r in listed if "ResourceRecords" in r and "SetIdentifier" not in r]
    simple = [r for r in simple if r["Type"] not in ("SOA", "SPF")]
    assert len(simple) == len(plain)  # the apex NS moto made, less the SOA
    for rrset in simple:
        name = rrset["Name"].replace("\\052", "*")
        want = tuple(sorted(
            dns.rdata.from_text("IN", rrset["Type"], r["Value"].replace("\\073", ";"),
                                origin=dns.name.root, relativize=False).to_text()
            for r in rrset["ResourceRecords"]
        ))  # fmt: skip
        _rcode, _aa, got = answer(ours.port, name, rrset["Type"])
        assert [(n, t, ttl, v) for _s, n, t, ttl, v in got] == [
            (name, rrset["Type"], rrset["TTL"], want)
        ], name
    assert answer(ours.port, f"txt.{R53}", "TXT")[2][0][4] == ('"semi;colon"', '"two" "strings"')
    assert soa_fields(ours.port, R53)[1:] == (
        dns.name.from_text("ns-1.awsdns-01.org."),
        dns.name.from_text("awsdns-hostmaster.amazon.com."),
        7200, 900, 1209600, 86400,
    )  # fmt: skip
    for name in (f"apex-alias.{R53}", f"weighted.{R53}", f"spf.{R53}"):
        assert answer(ours.port, name, "A")[0] == dns.rcode.NXDOMAIN


def _set(name: str, rtype: str, *values: str, ttl: int = 300) -> SourceSet:
    return SourceSet(name if name.endswith(".") else f"{name}.{ZONE}", rtype, ttl, values)


APEX = [
    _set(ZONE, "SOA", f"ns1.{ZONE} hostmaster.{ZONE} 1 7200 900 1209600 300"),
    _set(ZONE, "NS", f"ns1.{ZONE}"),
    _set("ns1", "A", "192.0.2.53"),
]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (_set("both", "A", "192.0.2.1"), "a CNAME is at this name too"),
        (_set("www.elsewhere.invalid.", "A", "192.0.2.1"), "is outside the zone"),
        (_set("quoted", "CNAME", 'a\\"b.import.test.'), "quotes and spaces are not allowed"),
        (_set(ZONE, "CNAME", f"www.{ZONE}"), "a CNAME cannot be at the zone apex"),
        (_set("*.wild", "NS", f"ns1.{ZONE}"), "a wildcard name cannot be a delegation"),
        (_set("signed", "RRSIG", "A 8 3 300 20270101000000 20260101000000 1 x. AAAA"), "DNSSEC"),
        (_set("loc", "LOC", "52 22 23.000 N 4 53 32.000 E -2.00m"), "type LOC is not one"),
    ],
)
def test_what_a_config_cannot_hold_is_set_apart_with_its_reason(
    source: SourceSet, why: str
) -> None:
    zone = build(ZONE, [*APEX, _set("both", "CNAME", f"ns1.{ZONE}"), source])
    (skipped,) = zone.skipped
    assert (skipped.name, skipped.rtype, skipped.values) == (
        source.name, source.rtype, source.values,
    )  # fmt: skip
    assert why in skipped.why
    assert skipped.warning().startswith(f"not imported: {source.name} {source.rtype} (")
    assert "both" in zone.records  # the CNAME itself stays


def test_a_zone_without_an_soa_gets_one_made_up_and_one_without_ns_is_refused() -> None:
    zone = build(ZONE, APEX[1:])
    assert zone.soa == {"mname": f"ns1.{ZONE}", "rname": f"hostmaster.{ZONE}"}
    assert zone.notes
    assert "check it" in zone.notes[0]
    with pytest.raises(ImportFailed, match="no NS records"):
        build(ZONE, [APEX[0], APEX[2]])


def test_strict_fails_on_anything_left_out_and_a_bad_file_names_its_line(tmp_path: Path) -> None:
    (good := tmp_path / "good.db").write_text(
        f"$ORIGIN {ZONE}\n@ 300 IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.53\n"
        "ns1 IN HINFO PC Linux\n"
    )
    lenient = run_cli("import", ZONE, "--from-file", str(good))
    strict = run_cli("import", ZONE, "--from-file", str(good), "--strict")
    assert (lenient.returncode, strict.returncode) == (0, 1)
    assert lenient.stdout == strict.stdout
    assert "warning: not imported: ns1.import.test. HINFO" in strict.stderr
    (bad := tmp_path / "bad.db").write_text(good.read_text() + "www IN A 300.1.2.3\n")
    broken = run_cli("import", ZONE, "--from-file", str(bad))
    assert broken.returncode == 1
    # dnspython's line (it counts the newline the bad line ended with)
    assert broken.stderr.startswith(f"error: cannot parse zone file {bad}: {bad}:")
    assert "malformed" in broken.stderr
    assert broken.stdout == ""
    assert run_cli("import", "not a zone", "--from-file", str(good)).returncode == 2
    wrong = run_cli("import", ZONE, "--axfr", "ns1.example.com")
    assert wrong.returncode == 2
    assert "is not an IP address" in wrong.stderr
