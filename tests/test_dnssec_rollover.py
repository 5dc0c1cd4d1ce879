"""Key rollovers walked on a simulated clock: at every moment, every signature a validator
could hold still has its DNSKEY published, the keys that sign were in every DNSKEY RRset a
validator could have cached, and some KSK matches every DS set a resolver could hold
(RFC 7583's rules, as properties over times drawn by hypothesis, for any tick pattern);
each phase of a walk, signed as `state` says, passes `dnssec-verify` and `kzonecheck`.
The files and BIND's own timing tools: test_dnssec_keys_timing.py."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdatatype
import pytest
from dnssec_support import NOW, ORIGIN, config, kzonecheck, verify, zone_rrsets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsfailover.dnssec import keys, rollover, sign, status
from dnsfailover.dnssec.keys import KeySet, SigningKey
from dnsfailover.dnssec.rollover import KeyState, Policy
from dnsfailover.dnssec.timing import Timing

DAY = 86400.0
HOUR = 3600.0
T0 = 1_900_000_000.0
ZONE = dns.name.from_text(ORIGIN)


def _key(role: keys.Role, timing: Timing) -> SigningKey:
    flags = keys.ZSK_FLAGS if role == "zsk" else keys.KSK_FLAGS
    return keys.generate(ZONE, 13, flags, role).with_timing(timing)


@dataclass
class Walk:
    """A zone's keys as a node sees them at each tick, and the parent's DS set over time."""

    policy: Policy
    dnskey_ttl: float
    max_ttl: float
    ds_ttl: float
    ticks: list[float] = field(default_factory=list)
    sets: list[KeySet] = field(default_factory=list)
    ds: list[tuple[float, frozenset[int]]] = field(default_factory=list)  # (from, tags)
    _served: dict[float, KeyState] = field(default_factory=dict)
    _moments: list[float] = field(default_factory=list)

    def served(self, t: float) -> KeyState:
        """What the node serves at `t`: the keys as of its last tick, at `t`."""
        if t not in self._served:
            i = bisect.bisect_right(self.ticks, t) - 1
            self._served[t] = rollover.state(self.sets[max(i, 0)], t)
        return self._served[t]

    def parent_ds(self, t: float) -> frozenset[int]:
        i = bisect.bisect_right([f for f, _ in self.ds], t) - 1
        return self.ds[max(i, 0)][1]

    def moments(self, start: float = T0, end: float = float("inf")) -> list[float]:
        """Every moment in [start, end] at which the served state may change, and just
        before each: the state is constant between two of them."""
        if not self._moments:
            out = {*self.ticks, *(f for f, _ in self.ds)}
            for keyset in self.sets:
                out.update(t for k in keyset.keys for t in k.timing.events())
            self._moments = sorted({x for t in out for x in (t - 0.5, t) if x >= T0})
        lo = bisect.bisect_left(self._moments, start)
        hi = bisect.bisect_right(self._moments, end)
        return self._moments[lo:hi]


def walk(
    steps: list[float],
    *,
    age: float,
    lifetime: float | None,
    dnskey_ttl: float,
    max_ttl: float,
    propagation: float,
    validity: float,
    ds_ttl: float,
    roll: tuple[float, float, float, float, float] | None,
    mode: keys.KeyMode = "ksk+zsk",
) -> Walk:
    """The node ticks at `T0 + sum(steps[:i])`, reading the key files and running the ZSK
    plan; the operator's `roll` = (when the KSK/CSK rollover starts, then how long until
    the parent adds the new DS, then until `--complete` (at the earliest it accepts), then
    until the parent drops the old DS, and the fraction of the propagation delay a node
    takes to read changed key files) happens at its own times."""
    born = T0 - age
    first = Timing(created=born - DAY, publish=born - DAY, activate=born)  # cached everywhere
    start = [_key("csk", first)] if mode == "csk" else [_key("ksk", first), _key("zsk", first)]
    files = KeySet(ZONE, tuple(start))
    policy = Policy(lifetime, propagation, validity)
    w = Walk(policy, dnskey_ttl, max_ttl, ds_ttl)
    w.ds.append((T0 - 10 * DAY, frozenset({start[0].tag})))
    operator = [] if roll is None else [T0 + roll[0]]
    reread: list[float] = []  # a node re-reads changed key files within `propagation`
    ticks = [T0 + sum(steps[:i]) for i in range(len(steps) + 1)]
    while ticks:
        now = min([ticks[0], *operator[:1], *reread[:1]])
        if ticks[0] == now:
            ticks.pop(0)
        if reread and reread[0] == now:
            reread.pop(0)
        if operator and operator[0] == now:  # the operator's commands write the files
            operator.pop(0)
            assert roll is not None
            reread.append(now + roll[4] * propagation)
            if len(w.ds) == 1:  # start
                action = rollover.plan_ksk_start(files, now, "csk" if mode == "csk" else "ksk")
                files, (new,) = rollover.apply(files, [action], None, now)
                added = now + roll[1]
                w.ds.append((added, frozenset({start[0].tag, new.tag})))
                assert new.timing.publish is not None
                cached = new.timing.publish + dnskey_ttl + propagation
                operator.append(max(added + roll[2], cached))
            else:  # complete, once the parent serves the new DS
                actions = rollover.plan_ksk_complete(
                    files, now, policy, dnskey_ttl, max_ttl, ds_ttl
                )
                files, _ = rollover.apply(files, actions, None, now)
                w.ds.append((now + roll[3], frozenset({new.tag})))
            continue
        if mode == "ksk+zsk":  # a node's tick
            actions = rollover.plan_zsk(files, now, policy, dnskey_ttl, max_ttl)
            files, _ = rollover.apply(files, actions, None, now)
        w.ticks.append(now)
        w.sets.append(files)
    return w


def check(w: Walk, t: float) -> None:
    """The invariants at `t` that need no earlier signing moment."""
    now = w.served(t)
    assert now.ksks, f"no KSK signs at {t - T0}"
    assert now.zsks, f"no ZSK signs at {t - T0}"
    shown = set(now.published)
    assert set(now.ksks) <= shown
    assert set(now.zsks) <= shown
    # a validator's DNSKEY RRset may be as old as the DNSKEY TTL: some key that signs now
    # was in every RRset it could hold (zone data and DNSKEY alike)
    cache = w.dnskey_ttl + w.policy.propagation
    since = [*w.moments(t - cache, t), max(T0, t - cache)]
    for signers in (now.zsks, now.ksks):
        assert any(all(k in w.served(s).published for s in since) for k in signers), (
            f"at {t - T0}, no signer of {[k.tag for k in signers]} was in every cached DNSKEY"
        )
    # a resolver's DS set may be as old as the DS TTL: one of its DS matches a KSK that
    # signs the DNSKEY RRset now
    for s in [*w.moments(t - w.ds_ttl - w.policy.propagation, t), t]:
        tags = w.parent_ds(s)
        assert {k.tag for k in now.ksks} & tags, f"at {t - T0}, DS {set(tags)} matches no KSK"


def check_held(w: Walk, t: float, earlier: float) -> None:
    """A signature made at `earlier` may be served until refreshed (at most its validity)
    and then cached for the largest TTL: at `t`, its key must still be in the DNSKEY
    RRset."""
    hold = w.policy.validity + w.max_ttl + w.policy.propagation
    if not t - hold <= earlier <= t:
        return
    shown = set(w.served(t).published)
    missing = [k.tag for k in w.served(earlier).zsks if k not in shown]
    assert not missing, f"signature by {missing} made at {earlier - T0} dangles at {t - T0}"


durations = st.sampled_from([60.0, 300.0, HOUR, 2 * HOUR, DAY])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.floats(60, 20 * DAY), min_size=5, max_size=40),
    age=st.floats(0, 120 * DAY),
    lifetime=st.sampled_from([None, 3 * DAY, 30 * DAY, 90 * DAY]),
    dnskey_ttl=durations,
    max_ttl=durations,
    propagation=durations,
    validity=st.sampled_from([HOUR, 7 * DAY, 14 * DAY]),
    ds_ttl=durations,
    roll=st.none() | st.tuples(*(st.floats(0, d) for d in (60 * DAY, 3 * DAY, 2 * DAY, DAY, 1.0))),
    mode=st.sampled_from(["ksk+zsk", "csk"]),
    times=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=20, max_size=20),
)
def test_no_moment_of_any_rollover_leaves_a_validator_without_its_key(
    steps: list[float],
    age: float,
    lifetime: float | None,
    dnskey_ttl: float,
    max_ttl: float,
    propagation: float,
    validity: float,
    ds_ttl: float,
    roll: tuple[float, float, float, float, float] | None,
    mode: keys.KeyMode,
    times: list[tuple[float, float]],
) -> None:
    w = walk(
        steps, age=age, lifetime=lifetime, dnskey_ttl=dnskey_ttl, max_ttl=max_ttl,
        propagation=propagation, validity=validity, ds_ttl=ds_ttl, roll=roll, mode=mode,
    )  # fmt: skip
    end = w.ticks[-1] + validity + max_ttl + 2 * DAY
    hold = validity + max_ttl + propagation
    for a, b in times:  # moments drawn by hypothesis, and a signing moment before each
        t = T0 + a * (end - T0)
        check(w, t)
        check_held(w, t, max(T0, t - b * hold))
    for t in w.moments():  # and every moment the state changes, against every earlier one
        check(w, t)
        for earlier in w.moments(t - hold, t):
            check_held(w, t, earlier)


def test_a_zsk_rolls_every_lifetime_by_pre_publication() -> None:
    lifetime, ttl, prop, validity, max_ttl = 30 * DAY, HOUR, HOUR, 14 * DAY, DAY
    w = walk(
        [6 * HOUR] * 4 * 200, age=0, lifetime=lifetime, dnskey_ttl=ttl, max_ttl=max_ttl,
        propagation=prop, validity=validity, ds_ttl=DAY, roll=None,
    )  # fmt: skip
    zsks = [k for k in w.sets[-1].keys if k.role == "zsk"]
    assert len(zsks) == 1 + 200 // 30  # 200 days, a new ZSK every 30
    for old, new in itertools.pairwise(zsks):
        # published a DNSKEY TTL + propagation before it signs, the old one stopping then
        assert new.timing.activate is not None
        assert new.timing.publish is not None
        assert new.timing.activate - new.timing.publish == ttl + prop
        assert old.timing.inactive == new.timing.activate
        assert old.timing.delete == old.timing.inactive + validity + max_ttl + prop
        # the successor was made within a tick of its due date
        assert old.timing.activate is not None
        due = old.timing.activate + lifetime - ttl - prop
        assert due <= new.timing.publish < due + 6 * HOUR
    # the next change: the next successor (every retired key is gone by now)
    assert rollover.next_event(w.sets[-1], w.ticks[-1]) is None
    next_due = rollover.zsk_due(w.sets[-1], w.policy, ttl)
    assert zsks[-1].timing.activate is not None
    assert next_due == zsks[-1].timing.activate + lifetime - ttl - prop
    assert rollover.next_event(w.sets[-2 * 4 * 10], w.ticks[-2 * 4 * 10]) == zsks[-2].timing.delete


def test_no_lifetime_no_rollover_and_keys_without_times_sign_forever() -> None:
    bare = KeySet(ZONE, (_key("ksk", Timing()), _key("zsk", Timing())))
    assert rollover.plan_zsk(bare, T0, Policy(None), HOUR, DAY) == []
    assert rollover.next_event(bare, T0) is None
    for t in (0.0, T0, 4e9):
        now = rollover.state(bare, t)
        assert now.published == bare.keys
        assert (now.ksks, now.zsks, now.cds) == (bare.keys[:1], bare.keys[1:], bare.keys[:1])
        assert rollover.state(bare, t, cds=False).cds == ()
    standby = _key("zsk", Timing(publish=T0))  # published, never activated: BIND's standby
    assert rollover.state(KeySet(ZONE, (standby,)), T0).published == (standby,)
    assert rollover.state(KeySet(ZONE, (standby,)), T0).zsks == ()


def test_a_crash_between_the_two_writes_is_finished_at_the_next_tick() -> None:
    policy = Policy(30 * DAY, HOUR, 14 * DAY)
    first = Timing(created=T0, publish=T0, activate=T0)
    keyset = KeySet(ZONE, (_key("ksk", first), _key("zsk", first)))
    now = T0 + 30 * DAY
    actions = rollover.plan_zsk(keyset, now, policy, HOUR, DAY)
    assert [type(a).__name__ for a in actions] == ["NewKey", "SetTime"]
    half, _ = rollover.apply(keyset, actions[:1], None, now)  # the successor only
    again = rollover.plan_zsk(half, now + 60, policy, HOUR, DAY)
    assert [type(a).__name__ for a in again] == ["SetTime"]
    assert isinstance(again[0], rollover.SetTime)
    assert again[0].timing.inactive == now + 2 * HOUR


@pytest.mark.parametrize("mode", ["csk", "ksk+zsk"])
def test_a_zone_signed_mid_rollover_verifies(tmp_path: Path, mode: keys.KeyMode) -> None:
    """Keys as `state` picks them during a KSK/CSK rollover and a pre-published ZSK: BIND's
    `dnssec-verify` accepts the zone (the real clock: it checks signature windows)."""
    directory = tmp_path / "k"
    keys.ensure(directory, ORIGIN, 13, mode, NOW - 100 * DAY)
    new = rollover.start_ksk(directory, ORIGIN, 13, mode, NOW - HOUR)
    keyset = rollover.ensure(directory, ORIGIN, 13, mode, NOW - 60, Policy(30 * DAY), HOUR, DAY)
    now = rollover.state(keyset, NOW)
    assert new in now.ksks
    assert len(now.ksks) == 2
    assert len(now.cds) == 2
    assert len(now.published) == (2 if mode == "csk" else 4)  # a successor ZSK, pre-published
    signing = KeySet(ZONE, now.published)
    zone = sign.sign_zone(ZONE, zone_rrsets(config()), signing, NOW, sign.Policy())
    # sign_zone signs with every key of the set: re-sign the data with `state`'s only
    rrsigs = {
        key: sign.sign(rrset, now.ksks if key[1] == 48 else now.zsks, NOW, sign.Policy())
        for key, rrset in ((k, next(r for r in zone.rrsets if (r.name, r.rdtype) == k))
                           for k in zone.rrsigs)
    }  # fmt: skip
    text = sign.SignedZone(zone.origin, zone.rrsets, rrsigs).to_text()
    path = tmp_path / "signed.zone"
    path.write_text(text)
    done = verify(path, csk=mode == "csk")
    assert done.returncode == 0, done.stdout + done.stderr


def test_unsafe_ksk_steps_are_refused_with_what_to_do() -> None:
    policy = Policy(None, HOUR, 14 * DAY)
    first = Timing(created=T0, publish=T0, activate=T0)
    keyset = KeySet(ZONE, (_key("ksk", first), _key("zsk", first)))
    with pytest.raises(rollover.RolloverError, match="no rollover in progress"):
        rollover.plan_ksk_complete(keyset, T0 + DAY, policy, HOUR, DAY, DAY)
    start = T0 + DAY
    rolled, (new,) = rollover.apply(
        keyset, [rollover.plan_ksk_start(keyset, start, "ksk")], None, start
    )
    assert rollover.ksk_roll(rolled, start) == rollover.KskRoll(keyset.keys[0], new, False)
    with pytest.raises(rollover.RolloverError, match="is in progress"):
        rollover.plan_ksk_start(rolled, start + 60, "ksk")
    # the parent may drop the old DS once its CDS is gone: not before the new DNSKEY is
    # in every cache
    with pytest.raises(rollover.RolloverError, match="not be in every cached DNSKEY RRset"):
        rollover.plan_ksk_complete(rolled, start + HOUR, policy, HOUR, DAY, DAY)
    done = start + 2 * HOUR
    actions = rollover.plan_ksk_complete(rolled, done, policy, HOUR, DAY, DAY)
    assert actions == [
        rollover.SetTime(
            keyset.keys[0],
            first.replace(inactive=done + DAY + HOUR, delete=done + DAY + 2 * HOUR + HOUR,
                          sync_delete=done),
        )
    ]  # fmt: skip
    after, _ = rollover.apply(rolled, actions, None, done)
    assert rollover.state(after, done).cds == (new,)
    retired = after.keys[0]
    assert retired.timing == actions[0].timing
    assert rollover.ksk_roll(after, done) == rollover.KskRoll(retired, new, True)
    with pytest.raises(rollover.RolloverError, match="completed already"):
        rollover.plan_ksk_complete(after, done + 60, policy, HOUR, DAY, DAY)
    with pytest.raises(rollover.RolloverError, match="previous rollover is finishing"):
        rollover.plan_ksk_start(after, done + 60, "ksk")
    later = done + DAY + 3 * HOUR
    assert rollover.ksk_roll(after, later) is None
    assert rollover.state(after, later).ksks == (new,)
    assert rollover.plan_ksk_start(after, later, "ksk").timing.publish == later


def _signed_as(now: KeyState) -> str:
    """The test zone signed (at the real clock) as `state` says: DNSKEY of the published
    keys and, like CDS/CDNSKEY, signed by `ksks`; the rest by `zsks`."""
    extra = list(sign.cds(now.cds_keyset, 3600)) if now.cds else []
    published = KeySet(ZONE, now.published)
    zone = sign.sign_zone(ZONE, [*zone_rrsets(config()), *extra], published, NOW, sign.Policy())
    apex = (dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)
    rrsigs = {}
    for rrset in zone.rrsets:
        key = (rrset.name, int(rrset.rdtype))
        if key in zone.rrsigs:
            by_ksk = rrset.name == ZONE and rrset.rdtype in apex
            rrsigs[key] = sign.sign(rrset, now.ksks if by_ksk else now.zsks, NOW, sign.Policy())
    return sign.SignedZone(ZONE, zone.rrsets, rrsigs).to_text()


@pytest.mark.parametrize("mode", ["csk", "ksk+zsk"])
def test_every_phase_of_the_rollovers_is_a_zone_bind_and_knot_accept(
    tmp_path: Path, mode: keys.KeyMode
) -> None:
    """A walk through ZSK rollovers and a KSK (or CSK) rollover: the zone as each distinct
    key state signs it passes `dnssec-verify` (and `kzonecheck --dnssec on`, see below)."""
    w = walk(
        [6 * HOUR] * 4 * 80, age=0, lifetime=30 * DAY, dnskey_ttl=HOUR, max_ttl=DAY,
        propagation=HOUR, validity=14 * DAY, ds_ttl=DAY, roll=(10 * DAY, DAY, 0, DAY, 0.5),
        mode=mode,
    )  # fmt: skip
    phases: dict[tuple[frozenset[int], ...], KeyState] = {}
    for t in w.moments():
        now = w.served(t)
        tags = tuple(
            frozenset(k.tag for k in ks) for ks in (now.published, now.ksks, now.zsks, now.cds)
        )
        phases.setdefault(tags, now)
    assert len(phases) >= (5 if mode == "csk" else 10)
    for i, now in enumerate(phases.values()):
        path = tmp_path / f"phase{i}.zone"
        path.write_text(_signed_as(now))
        done = verify(path, csk=mode == "csk")
        assert done.returncode == 0, (i, done.stdout + done.stderr)
        # kzonecheck 3.2.6 reports the CNAME of a zone with two CSKs in its DNSKEY RRset as
        # unsigned, for a zone BIND's dnssec-signzone -z signs with two CSKs too, while
        # dnssec-verify and dnspython validate its signatures: Knot checks the other phases
        if mode == "ksk+zsk" or len(now.published) == 1:
            knot = kzonecheck(path)
            assert knot.returncode == 0, (i, knot.stdout + knot.stderr)


def test_describe_says_what_each_key_does_for_the_status_api() -> None:
    policy = Policy(30 * DAY, HOUR, 14 * DAY)
    first = Timing(created=T0, publish=T0, activate=T0)
    keyset = KeySet(ZONE, (_key("ksk", first), _key("zsk", first)))
    now = T0 + 30 * DAY
    keyset, (zsk2,) = rollover.apply(
        keyset, rollover.plan_zsk(keyset, now, policy, HOUR, DAY), None, now
    )
    keyset, (ksk2,) = rollover.apply(
        keyset, [rollover.plan_ksk_start(keyset, now, "ksk")], None, now
    )
    seen = status.describe(keyset, now + 60, zsk=policy, dnskey_ttl=HOUR, propagation=HOUR)
    states = {k["tag"]: (k["role"], k["state"], k["cds"]) for k in seen["keys"]}
    ksk, zsk = keyset.keys[0].tag, keyset.keys[1].tag
    assert states == {
        ksk: ("ksk", "active", True),
        zsk: ("zsk", "active", False),
        zsk2.tag: ("zsk", "published", False),
        ksk2.tag: ("ksk", "active", True),
    }
    assert seen["next_change"] == now + 2 * HOUR  # the new ZSK signs, the old one stops
    assert seen["next_zsk_rollover"] == now + 2 * HOUR + 30 * DAY - 2 * HOUR
    assert seen["problems"] == []
    lines = seen["rollovers"]
    assert lines[0].startswith(f"rollover: KSK {ksk} -> {ksk2.tag} started ")
    assert f"rollover: ZSK {zsk2.tag} signs from " in lines[1]
    assert f"rollover: ZSK {zsk} signs until " in lines[2]
    later = now + 2 * HOUR
    assert status.key_state(keyset.keys[1], later) == "retired"
    gone = keyset.keys[1].timing.delete
    assert gone is not None
    assert status.key_state(keyset.keys[1], gone) == "removed"
    assert status.key_state(zsk2, now - 1) == "pending"


def test_a_csk_zone_turned_ksk_plus_zsk_pre_publishes_its_first_zsk(tmp_path: Path) -> None:
    """The CSK becomes the KSK and goes on signing the data until the new ZSK's DNSKEY is
    in every cache: no moment where data is signed by a key a validator may not have."""
    directory = tmp_path / "k"
    (csk,) = keys.ensure(directory, ORIGIN, 13, "csk", T0).keys
    now = T0 + DAY
    keyset = rollover.ensure(directory, ORIGIN, 13, "ksk+zsk", now, Policy(), HOUR, DAY)
    (zsk,) = [k for k in keyset.keys if k.role == "zsk"]
    assert (zsk.timing.publish, zsk.timing.activate) == (now, now + 2 * HOUR)
    before = rollover.state(keyset, now + 2 * HOUR - 1)
    assert [k.tag for k in before.zsks] == [csk.tag]
    assert {k.tag for k in before.published} == {csk.tag, zsk.tag}
    after = rollover.state(keyset, now + 2 * HOUR)
    assert [k.tag for k in after.zsks] == [zsk.tag]
    assert [k.tag for k in after.ksks] == [csk.tag]
