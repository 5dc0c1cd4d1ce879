"""A node's signing as the runtime runs it: signers from the config (keys generated into the
state directory once, then reused), the overdue/failing-signature problem that status,
metrics and a notice report, and a reload that would change signing (refused)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from dnssec_support import NOW, ORIGIN, Clock, config, content

from dnsfailover.config.schema import Config
from dnsfailover.dnssec import rollover
from dnsfailover.engine.overrides import Override
from dnsfailover.engine.values import EngineState
from dnsfailover.model import State
from dnsfailover.runtime import signing
from dnsfailover.runtime.reload import ReloadRefused, refuse_unreloadable
from dnsfailover.server.embedded import EmbeddedZones
from dnsfailover.server.secure import ZoneSigner


def test_keys_are_generated_once_into_the_state_directory_and_reused(tmp_path: Path) -> None:
    cfg = config("{keys: ksk+zsk}")
    state = tmp_path / "state.db"
    first = signing.zone_signers(cfg, state, Clock())[ORIGIN]
    again = signing.zone_signers(cfg, state, Clock())[ORIGIN]
    assert sorted(k.role for k in first.keys.keys) == ["ksk", "zsk"]
    assert [k.dnskey for k in again.keys.keys] == [k.dnskey for k in first.keys.keys]
    directory = tmp_path / "state.db.keys" / "example.test"
    assert len(list(directory.glob("K*.private"))) == 2
    assert all(p.stat().st_mode & 0o077 == 0 for p in directory.glob("K*.private"))


def test_overdue_signatures_are_a_problem_until_a_publish_re_makes_them(tmp_path: Path) -> None:
    cfg = config()
    clock = Clock()
    signer: ZoneSigner = signing.zone_signers(cfg, tmp_path / "st.db", clock)[ORIGIN]
    zones = EmbeddedZones()
    zones.sign_with({ORIGIN: signer})
    zone = content(cfg)
    zones.put([zone])
    (found,) = signing.status(zones, clock.now).values()
    assert found["problem"] is None
    clock.now = found["next_refresh"] + signing.OVERDUE + 1  # no publish came
    (found,) = signing.status(zones, clock.now).values()
    assert "not re-made" in found["problem"]
    assert found["next_expiry"] > clock.now  # still served, still valid
    zones.put([replace(zone, soa=replace(zone.soa, serial=zone.soa.serial + 1))])
    (found,) = signing.status(zones, clock.now).values()
    assert found["problem"] is None
    assert found["next_refresh"] > clock.now


def test_a_reload_cannot_change_how_a_zone_is_signed() -> None:
    old = config()
    refuse_unreloadable(old, config())  # the same section: fine
    with pytest.raises(ReloadRefused, match="restart instead"):
        refuse_unreloadable(old, config("{denial: nsec3}"))


def test_the_signing_time_is_the_hour(tmp_path: Path) -> None:
    """Nodes sign at the hour: same keys and data give byte-identical signatures."""
    signer = signing.zone_signers(config(), tmp_path / "st.db", Clock(NOW))[ORIGIN]
    assert signer.moment() % 3600 == 0
    assert NOW - 3600 < signer.moment() <= NOW


class _Node:
    """What `signing.warm_once` reads of a node: its config, health, engine state and zones."""

    def __init__(self, cfg: Config, zones: EmbeddedZones) -> None:
        self.config, self.embedded = cfg, zones
        self.publisher = SimpleNamespace(engine=EngineState())
        self._health = dict.fromkeys(cfg.votes(), State.UP)

    @property
    def tracker(self) -> SimpleNamespace:
        return SimpleNamespace(states=lambda: self._health)

    def overrides(self) -> list[Override]:
        return []


def test_a_tier_failover_signed_ahead_signs_only_its_soa(tmp_path: Path) -> None:
    cfg = config()
    signer = signing.zone_signers(cfg, tmp_path / "st.db", Clock())[ORIGIN]
    zones = EmbeddedZones()
    zones.sign_with({ORIGIN: signer})
    up = content(cfg)
    zones.put([up])
    assert signing.failure_domains(cfg) == ["backup", "primary"]
    made, domains = signing.warm_once(_Node(cfg, zones), NOW)  # type: ignore[arg-type]
    assert (made, domains) == (1, 2)  # www on its backup tier (losing backup changes nothing)
    before = signer.stats.signatures
    down = content(cfg, down=("192.0.2.10", "192.0.2.11"))  # the primary tier
    zones.put([replace(down, soa=replace(down.soa, serial=up.soa.serial + 1))])
    assert signer.stats.signatures - before == 1  # the SOA: www's answer was signed ahead
    again = signing.warm_once(_Node(cfg, zones), NOW)  # type: ignore[arg-type]
    assert again[0] == 0  # nothing new to sign ahead


def test_a_zsk_rollover_is_followed_by_the_served_zone(tmp_path: Path) -> None:
    """Generated KSK+ZSK keys with a short ZSK lifetime: the node's key check at each step
    of the pre-publish rollover gives a new signer, and the zone it serves publishes the
    successor first, then signs with it, every answer validating against the DNSKEY set."""
    import dns.dnssec
    import dns.message
    import dns.name
    import dns.rdatatype

    from dnsfailover.server.wire import respond

    cfg = config("{keys: ksk+zsk, zsk_lifetime: 2h, dnskey_ttl: 300, propagation_delay: 60}")
    clock = Clock()
    signers = signing.zone_signers(cfg, tmp_path / "st.db", clock)
    zones = EmbeddedZones()
    zones.sign_with(signers)
    zone = content(cfg)
    serial = zone.soa.serial

    def publish() -> None:
        nonlocal serial
        serial += 1
        zones.put([replace(zone, soa=replace(zone.soa, serial=serial))])

    def served() -> tuple[set[int], set[int]]:
        """(the DNSKEY tags, the tags that sign www's A), both validated."""
        origin = dns.name.from_text(ORIGIN)
        out = []
        for name, rtype in ((ORIGIN, "DNSKEY"), ("www.example.test.", "A")):
            q = dns.message.make_query(name, rtype, want_dnssec=True)
            out.append(dns.message.from_wire(respond(zones.snapshot, q.to_wire(), tcp=True) or b""))
        keys = out[0].answer[0]
        (data,) = [r for r in out[1].answer if r.rdtype == dns.rdatatype.A]
        (sig,) = [r for r in out[1].answer if r.rdtype == dns.rdatatype.RRSIG]
        dns.dnssec.validate(data, sig, {origin: keys}, now=clock.now)
        return {dns.dnssec.key_id(k) for k in keys}, {s.key_tag for s in sig}

    publish()
    first_keys, first_signers = served()
    assert len(first_keys) == 2
    steps = []
    while clock.now < NOW + 9000:  # as the node wakes: at each key event, else every 10 min
        event = rollover.next_event(zones.signers[ORIGIN].keys, clock.now)
        clock.now = min(clock.now + 600, event if event is not None else clock.now + 600)
        fresh = signing.renewed(zones.signers)
        if fresh:
            zones.sign_with({**zones.signers, **fresh})
        publish()
        steps.append(served())
    keys_seen = [k for k, _ in steps]
    signing_seen = [s for _, s in steps]
    assert any(len(k) == 3 for k in keys_seen)  # the successor published before it signs
    new_zsk = next(iter(set().union(*keys_seen) - first_keys))
    assert new_zsk in signing_seen[-1]
    assert not first_signers & signing_seen[-1]
    published_at = next(i for i, k in enumerate(keys_seen) if new_zsk in k)
    signing_at = next(i for i, s in enumerate(signing_seen) if new_zsk in s)
    assert signing_at > published_at  # pre-publish: it signs only once it can be cached
