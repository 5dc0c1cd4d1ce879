"""End to end: a signed zone's keys, signatures and their times in `serve`'s status and
metrics, as an operator reads them (the API, `dnsfailover status`)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.dnssec
import dns.message
import dns.query
import dns.rdatatype
import pytest
from support import Server, TcpListener, run_cli

pytestmark = pytest.mark.e2e


def test_status_and_metrics_show_the_keys_and_the_signatures_times(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    listener = TcpListener("127.0.0.61")
    try:
        config = tmp_path / "signed.yaml"
        config.write_text(
            f"""\
checks:
  tcp: {{type: tcp, port: {listener.port}, interval: 200ms, timeout: 150ms}}
zones:
  example.test.:
    soa: {{mname: ns1.example.test., rname: hostmaster.example.test.}}
    nameservers: [ns1.example.test.]
    dnssec: {{denial: nsec3, signature_validity: 7d}}
    records:
      ns1: {{type: A, value: 127.0.0.1}}
    failover:
      www: {{policy: active-active, check: tcp, endpoints: [127.0.0.61]}}
"""
        )
        server = serve(config)
        started = time.time()
        with urllib.request.urlopen(f"{server.api}/api/v1/status", timeout=5) as r:
            status = json.load(r)
        (zone,) = status["zones"]
        signed = zone["dnssec"]
        q = dns.message.make_query("example.test.", "DNSKEY", want_dnssec=True)
        reply = dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=2)
        (keys,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.DNSKEY]
        assert [k["tag"] for k in signed["keys"]] == [dns.dnssec.key_id(k) for k in keys]
        assert signed["keys"][0]["role"] == "csk"
        assert signed["keys"][0]["algorithm"] == "ECDSAP256SHA256"
        assert signed["denial"] == "nsec3"
        assert signed["signatures_made"] >= 6  # SOA, NS, DNSKEY, CDS, CDNSKEY, A, chain...
        # 7 days, less up to 10 % jitter, signed at the hour; re-signed with 25 % left
        assert started + 6 * 86400 - 3600 < signed["next_expiry"] <= started + 7 * 86400
        assert signed["next_refresh"] < signed["next_expiry"] - 0.2 * 7 * 86400
        assert signed["problem"] is None
        assert status["problems"] == []
        with urllib.request.urlopen(f"{server.api}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        expiry = 'dnsfailover_dnssec_signature_expiry_timestamp_seconds{zone="example.test."} '
        assert expiry in metrics
        tag = signed["keys"][0]["tag"]
        assert (
            f'dnsfailover_dnssec_key{{algorithm="ECDSAP256SHA256",role="csk",tag="{tag}",'
            'zone="example.test."} 1.0' in metrics
        )
        assert 'dnsfailover_dnssec_problem{zone="example.test."} 0.0' in metrics
        shown = run_cli("status", "--api", server.api or "")
        assert shown.returncode == 0, shown.stderr
        assert f"CSK {tag} NSEC3, expires " in shown.stdout
    finally:
        listener.close()
