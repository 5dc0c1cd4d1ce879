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
