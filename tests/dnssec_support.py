"""What the DNSSEC tests share: a zone built the way the node builds it (a config, the
engine's decision, `dnssec.zone.rrsets`), signed by our signer, and the real validators
(BIND's `dnssec-verify`, Knot's `kzonecheck`) run on it as a zone file."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import dns.name
import dns.rrset

from dnsfailover.config.load import loads
from dnsfailover.config.schema import Config
from dnsfailover.dnssec import keys, sign
from dnsfailover.dnssec.zone import rrsets
from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import EngineState
from dnsfailover.model import State, ZoneContent

ORIGIN = "example.test."
NOW = time.time()  # dnssec-verify checks signature windows against the real clock

CONFIG = """\
checks:
  web: {type: tcp, port: 80}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test., minimum: 30}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, value: 192.0.2.1}
      mail: {type: A, value: 192.0.2.25}
      "@": [{type: MX, value: "10 mail.example.test."}, {type: TXT, value: "v=spf1 -all"}]
      txt.deep.er: {type: TXT, value: "an empty non-terminal above"}
      "*.wild": {type: TXT, value: "wildcard"}
      alias: {type: CNAME, value: www.example.test.}
      sub: {type: NS, values: [ns.sub.example.test.]}
      ns.sub: {type: A, value: 192.0.2.53}
    failover:
      www:
        policy: active-passive
        check: web
        tiers:
          - {name: primary, endpoints: [192.0.2.10, 192.0.2.11]}
          - {name: backup, endpoints: [192.0.2.20]}
      api:
        policy: active-active
        check: web
        endpoints: [192.0.2.30, 192.0.2.31]
    dnssec: DNSSEC
"""


def tool(name: str) -> str:
    """A Debian tool the tests drive (scripts/system-deps installs them)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert found, f"{name} is missing: run scripts/system-deps"
    return found


def config(dnssec: str = "{}", text: str = CONFIG) -> Config:
    return loads(text.replace("DNSSEC", dnssec), "dnssec.yaml")


def zone_rrsets(cfg: Config, down: tuple[str, ...] = ()) -> list[dns.rrset.RRset]:
    """The zone as the engine decides it: every endpoint up except those in `down`."""
    return rrsets(content(cfg, down))


def keyset(cfg: Config, directory: Path) -> keys.KeySet:
    section = cfg.zones[ORIGIN].dnssec
    assert section is not None
    return keys.ensure(directory, ORIGIN, section.algorithm, section.keys)


def signed(cfg: Config, directory: Path, down: tuple[str, ...] = ()) -> sign.SignedZone:
    section = cfg.zones[ORIGIN].dnssec
    assert section is not None
    return sign.sign_zone(
        dns.name.from_text(ORIGIN),
        zone_rrsets(cfg, down),
        keyset(cfg, directory),
        NOW,
        section.policy,
        section.denial,
    )


def verify(path: Path, *, csk: bool) -> subprocess.CompletedProcess[str]:
    """BIND's `dnssec-verify` (-z: a CSK signs everything, so its KSK flag is not a role
    there)."""
    cmd = [tool("dnssec-verify"), "-o", ORIGIN, *(["-z"] if csk else []), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def kzonecheck(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [tool("kzonecheck"), "--dnssec", "on", "-o", ORIGIN, "-t", str(int(NOW)), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def content(cfg: Config, down: tuple[str, ...] = ()) -> ZoneContent:
    health = {key: State.DOWN if any(d in key for d in down) else State.UP for key in cfg.votes()}
    (zone,) = decide(cfg, health, EngineState(), NOW).zones
    return zone
