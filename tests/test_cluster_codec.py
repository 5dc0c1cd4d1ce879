"""The cluster's JSON codec: round trips of the shared values, and mixed-version tolerance."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import pytest

from dnsfailover.cluster.codec import CodecError, decode, dumps, encode, loads
from dnsfailover.cluster.types import NameEntry, NodeBeat, RegionReport, SharedDecision
from dnsfailover.config.load import loads as load_config
from dnsfailover.engine.decide import decide
from dnsfailover.engine.values import EngineState, NameDecision, NameState
from dnsfailover.model import RecordSet, Soa, State, ZoneContent
from dnsfailover.runtime.shared import entries, pack, unpack

ZONE = ZoneContent(
    origin="example.test.",
    soa=Soa("ns1.example.test.", "hostmaster.example.test.", 2024010107, 3600, 600, 86400, 60,
            60),
    records=(
        RecordSet("example.test.", "NS", 3600, ("ns1.example.test.",)),
        RecordSet("www.example.test.", "A", 30, ("192.0.2.1", "192.0.2.2")),
    ),
)  # fmt: skip
NAME = NameDecision("www.example.test.", "example.test.", "active_passive", ("192.0.2.1",),
                    "primary", "healthy", "primary tier healthy")  # fmt: skip
ENGINE = EngineState(
    names={"www.example.test.": NameState("primary", {"primary": 1700000000.5}, ("192.0.2.1",))}
)


def test_shared_values_survive_a_json_round_trip() -> None:
    decision = SharedDecision(
        term=7,
        leader="node-a",
        at=1700000001.25,
        seq=42,
        serials={"example.test.": 2024010107},
        extra={"isolated": ["eu"]},
    )
    back = loads(SharedDecision, dumps(decision))
    assert back == decision
    assert back.serials["example.test."] == 2024010107
    state = ENGINE.names["www.example.test."]
    entry = NameEntry(42, encode(NAME, compact=True), encode(state, compact=True))
    again = loads(NameEntry, dumps(entry))
    assert decode(NameDecision, again.decision) == NAME
    assert decode(NameState, again.state) == state
    assert decode(EngineState, encode(ENGINE)) == ENGINE
    assert loads(ZoneContent, dumps(ZONE)) == ZONE
    assert decode(dict[str, NameDecision], {"w": encode(NAME)}) == {"w": NAME}
    report = RegionReport("http@[2001:db8::1]:443", "eu", "n1", State.DOWN, 12.5, "timeout")
    assert loads(RegionReport, dumps(report)) == report
    beat = NodeBeat("n1", "eu", 10.0, 9.5, leader=True)
    assert loads(NodeBeat, dumps(beat)) == beat


def test_enums_are_stored_as_their_value_and_tuples_as_arrays() -> None:
    data = json.loads(dumps(RegionReport("t", "us", "n", State.UP, 1.0, "ok")))
    assert data["state"] == "up"
    assert json.loads(dumps(ZONE))["static"][1]["values"] == ["192.0.2.1", "192.0.2.2"]


class Color(StrEnum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Newer:
    """A value as a newer version might define it: more fields, all with defaults."""

    name: str
    color: Color | None = None
    weights: Mapping[int, float] = field(default_factory=dict)
    pair: tuple[str, int] = ("x", 0)


def test_an_older_reader_ignores_new_keys_and_a_newer_one_defaults_missing_ones() -> None:
    from_newer = {**encode(NAME), "added_in_v2": {"anything": [1, 2]}}
    assert decode(NameDecision, from_newer) == NAME
    assert decode(Newer, {"name": "n"}) == Newer("n")
    full = Newer("n", Color.RED, {3: 0.5}, ("y", 2))
    assert decode(Newer, encode(full)) == full
    assert decode(Newer, json.loads(dumps(full))) == full  # int keys survive JSON's strings


def test_mismatched_data_is_refused_with_where() -> None:
    with pytest.raises(CodecError, match=r"\$\.soa\.serial: expected int, got str"):
        decode(ZoneContent, {**encode(ZONE), "soa": {**encode(ZONE.soa), "serial": "7"}})
    with pytest.raises(CodecError, match="needs 'term'"):
        decode(SharedDecision, {"leader": "a", "at": 1.0})
    with pytest.raises(CodecError, match="is not a Color"):
        decode(Newer, {"name": "n", "color": "blue"})
    with pytest.raises(CodecError, match="expected 2 items"):
        decode(Newer, {"name": "n", "pair": ["a"]})
    with pytest.raises(CodecError, match="not JSON"):
        loads(SharedDecision, b"{")


def test_floats_accept_json_integers_but_ints_refuse_booleans() -> None:
    assert decode(RegionReport, {**encode(RegionReport("t", "r", "n", State.UP, 1.0, "")),
                                 "since": 5}).since == 5.0  # fmt: skip
    assert isinstance(decode(float, 5), float)
    with pytest.raises(CodecError):
        decode(int, True)


def test_a_compact_entry_leaves_out_defaults_and_decodes_whole() -> None:
    """What goes to etcd per changed name is small: defaults are not written."""
    compact = encode(NAME, compact=True)
    assert "shadow" not in compact
    assert "loads" not in compact
    assert len(json.dumps(compact)) < len(json.dumps(encode(NAME)))
    assert decode(NameDecision, compact) == NAME


def test_a_name_entry_leaves_out_what_it_repeats_and_reads_back_the_same() -> None:
    """Every name's decision, state and transition along a run of health changes over
    active-active (weights, serve_none, fallback) and active-passive records: what `pack`
    writes for etcd reads back equal, and is smaller than the plain compact encoding."""
    config = load_config(
        """
checks:
  tcp: {type: tcp, port: 80}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records: {ns1: {type: A, value: 127.0.0.1}}
    failover:
      aa: {policy: active-active, check: tcp, endpoints: [192.0.2.1, 192.0.2.2, 192.0.2.3]}
      w: {policy: active-active, check: tcp,
          endpoints: [{address: 192.0.2.1, weight: 3}, {address: 192.0.2.2}]}
      none: {policy: active-active, check: tcp, all_down: serve_none, endpoints: [192.0.2.4]}
      fb: {policy: active-active, check: tcp, all_down: fallback, fallback: [198.51.100.1],
           endpoints: [192.0.2.5]}
      ap: {policy: active-passive, check: tcp, hold_down: 0s,
           tiers: [{name: a, endpoints: [192.0.2.1]}, {name: b, endpoints: [192.0.2.6]}]}
"""
    )
    keys = sorted(config.targets())
    rng = random.Random(5)
    health = {k: State.UP for k in keys}
    decision = decide(config, health, EngineState(), 1000.0)
    packed_bytes = plain_bytes = 0
    for step in range(60):
        health[rng.choice(keys)] = rng.choice([State.UP, State.DOWN])
        decision = decide(config, health, decision.state, 1001.0 + step)
        transitions = {t.name: t for t in decision.transitions}
        for name, nd in decision.names.items():
            ns, t = decision.state.names[name], transitions.get(name)
            data, state, change = pack(name, nd, ns, t)
            entry = loads_entry(dumps(NameEntry(1, data, state, change)))
            assert unpack(name, entry) == (nd, ns, t)
            packed_bytes += len(dumps(entry))
            plain = NameEntry(1, encode(nd, compact=True), encode(ns, compact=True),
                              None if t is None else encode(t, compact=True))  # fmt: skip
            plain_bytes += len(dumps(plain))
            assert unpack(name, plain) == (nd, ns, t)  # entries of the earlier layout
    assert packed_bytes < 0.8 * plain_bytes


def loads_entry(raw: bytes) -> NameEntry:
    return loads(NameEntry, raw)


def test_a_failed_publishs_names_are_written_again_with_their_current_decision() -> None:
    """The leader's publish failed (etcd away): the next publish writes those names again
    even when its decision did not re-decide them (etcd may never have got them), with the
    current decision, not the failed one; other names equal to etcd's are left out."""
    config = load_config(
        """
checks:
  tcp: {type: tcp, port: 80}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records: {ns1: {type: A, value: 127.0.0.1}}
    failover:
      a: {policy: active-active, check: tcp, endpoints: [192.0.2.1, 192.0.2.2]}
      b: {policy: active-active, check: tcp, endpoints: [192.0.2.3, 192.0.2.4]}
"""
    )
    health = dict.fromkeys(config.targets(), State.UP)
    first = decide(config, health, EngineState(), 1000.0)
    in_etcd = entries(first, 1, {})  # what etcd serves
    assert set(in_etcd) == {"a.example.test.", "b.example.test."}
    health[next(k for k in health if "192.0.2.1" in k)] = State.DOWN
    failed = decide(config, health, first.state, 1001.0)
    unsent = set(entries(failed, 2, in_etcd))  # this publish failed
    assert "a.example.test." in unsent  # (b too: its first decision's reason changed)
    later = decide(config, health, failed.state, 1002.0)
    later = replace(later, changed=frozenset())  # nothing re-decided (an incremental one)
    assert entries(later, 2, in_etcd) == {}
    again = entries(later, 2, in_etcd, also=unsent)
    assert set(again) == unsent
    assert again["a.example.test."].decision["answer"] == ["192.0.2.2"]
