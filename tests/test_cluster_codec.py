"""The cluster's JSON codec: round trips of the shared values, and mixed-version tolerance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pytest

from dnsfailover.cluster.codec import CodecError, decode, dumps, encode, loads
from dnsfailover.cluster.types import NameEntry, NodeBeat, RegionReport, SharedDecision
from dnsfailover.engine.values import EngineState, NameDecision, NameState
from dnsfailover.model import RecordSet, Soa, State, ZoneContent

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
