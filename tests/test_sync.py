"""ZoneSync: one change in flight per zone, latest state wins, failures retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import pytest

from dnsfailover.model import RecordSet, SteeredSet
from dnsfailover.provider.contract import ApplyResult, BaseProvider, ProviderError, ProviderOptions
from dnsfailover.provider.plan import GeoKey, Key, Plan, Populated, Safety
from dnsfailover.provider.sync import SyncEvent, ZoneSync

Z = "example.test."


class FakeProvider(BaseProvider):
    """An in-memory zone whose applies can be slowed down or made to fail."""

    def __init__(self) -> None:
        super().__init__(Z, ProviderOptions())
        self.records: dict[Key, RecordSet] = {}
        self.applied: list[Plan] = []
        self.fail_next = 0
        self.gate: asyncio.Event | None = None

    async def populate(self, keys: Collection[Key]) -> Populated:
        return Populated(tuple(self.records.values()), owned=frozenset(self.records))

    async def apply(self, plan: Plan) -> ApplyResult:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise ProviderError("Throttling: Rate exceeded")
        for c in plan.changes:
            if c.new is None:
                self.records.pop(c.key, None)
            else:
                self.records[c.key] = c.new
        self.applied.append(plan)
        return ApplyResult(Z, len(plan.changes), 1, True)


def www(*values: str) -> tuple[RecordSet, ...]:
    return (RecordSet(f"www.{Z}", "A", 30, values),)


async def test_changes_arriving_during_an_apply_are_coalesced() -> None:
    provider = FakeProvider()
    provider.gate = asyncio.Event()
    sync = ZoneSync(provider, Safety())
    sync.start()
    sync.submit(www("192.0.2.1"))
    await asyncio.sleep(0.05)  # the first apply is now in flight, held at the gate
    for i in range(2, 6):
        sync.submit(www(f"192.0.2.{i}"))
    provider.gate.set()
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert [p.changes[0].new.values for p in provider.applied if p.changes[0].new] == [
        ("192.0.2.1",),
        ("192.0.2.5",),
    ], "two applies: the in-flight one and the latest"
    await sync.stop()


async def test_failures_are_retried_with_the_latest_state() -> None:
    provider = FakeProvider()
    provider.fail_next = 2
    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, backoff_first=0.01)
    sync.start()
    sync.submit(www("192.0.2.1"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.records[(f"www.{Z}", "A")].values == ("192.0.2.1",)
    assert [e.kind for e in events] == ["failed", "failed", "applied"]
    assert sync.status.in_sync
    assert sync.status.failures == 2
    await sync.stop()


async def test_a_name_that_would_lose_every_answer_is_held_and_reported_once() -> None:
    provider = FakeProvider()
    provider.records[(f"www.{Z}", "A")] = www("192.0.2.1")[0]
    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, backoff_first=0.01)
    sync.start()
    sync.submit((*www(), RecordSet(f"api.{Z}", "A", 30, ("192.0.2.7",))))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert [c.key for p in provider.applied for c in p.changes] == [(f"api.{Z}", "A")]
    assert "removes every A answer" in sync.status.last_error
    assert list(sync.status.held) == [f"www.{Z} A"]
    assert not sync.status.in_sync
    plans = sync.status.plans
    for _ in range(500):  # re-checked on a timer while held ...
        if sync.status.plans >= plans + 3:
            break
        await asyncio.sleep(0.01)
    assert sync.status.plans >= plans + 3
    assert [e.kind for e in events] == ["applied", "refused"], "... but reported once"
    assert provider.records[(f"www.{Z}", "A")].values == ("192.0.2.1",)
    await sync.stop()


class ConflictProvider(FakeProvider):
    """A zone where someone else's record set sits in the way of one key."""

    def __init__(self) -> None:
        super().__init__()
        self.in_the_way: set[Key] = set()
        self.populates = 0
        self.by_name = 0  # keys read one by one

    async def populate(self, keys: Collection[Key]) -> Populated:
        self.populates += 1
        ours = {k: r for k, r in self.records.items() if k not in self.in_the_way}
        why = {k: f"{k[0]} {k[1]} has routing-policy or alias record sets" for k in keys}
        return Populated(
            tuple(ours.values()),
            foreign=frozenset(self.in_the_way & set(keys)),
            owned=frozenset(ours),
            conflicts={k: why[k] for k in self.in_the_way if k in why},
        )

    async def populate_keys(self, keys: Collection[Key]) -> Populated:
        self.by_name += len(keys)
        return await self.populate(keys)


async def test_held_keys_are_applied_once_the_conflict_is_gone_without_a_new_decision() -> None:
    provider = ConflictProvider()
    bad = (f"n0.{Z}", "A")
    provider.in_the_way.add(bad)
    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, backoff_first=0.01)
    sync.start()
    desired = tuple(RecordSet(f"n{i}.{Z}", "A", 30, ("192.0.2.2",)) for i in range(999))
    sync.submit(desired)
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert len(provider.records) == 998
    assert bad not in provider.records
    assert sync.status.held == {f"n0.{Z} A": sync.status.held[f"n0.{Z} A"]}
    assert "adopt: true" in sync.status.held[f"n0.{Z} A"]
    assert [e.kind for e in events] == ["applied", "refused"]
    provider.in_the_way.clear()  # someone removed the weighted set by hand
    for _ in range(500):
        if bad in provider.records:
            break
        await asyncio.sleep(0.01)
    assert provider.records[bad].values == ("192.0.2.2",), "applied on the re-check timer"
    assert sync.status.in_sync
    assert sync.status.held == {}
    assert [e.kind for e in events] == ["applied", "refused", "applied"]
    await sync.stop()


async def test_a_reload_and_a_resync_re_plan_at_once() -> None:
    provider = ConflictProvider()
    bad = (f"n0.{Z}", "A")
    provider.in_the_way.add(bad)
    sync = ZoneSync(provider, Safety(), backoff_first=60, backoff_max=600)  # no timer soon
    sync.start()
    sync.submit((RecordSet(f"n0.{Z}", "A", 30, ("192.0.2.2",)),))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert bad not in provider.records
    sync.safety = Safety(adopt=True)  # what a reload that sets adopt does, then read_all
    status = await asyncio.wait_for(sync.resync(), 5)
    assert provider.records[bad].values == ("192.0.2.2",)
    assert status.in_sync
    assert status.held == {}
    before = provider.populates
    sync.read_all()
    for _ in range(500):
        if provider.populates > before:
            break
        await asyncio.sleep(0.01)
    assert provider.populates == before + 1, "a reload re-reads the zone without a decision"
    await sync.stop()


async def test_a_fenced_out_leader_never_writes() -> None:
    """In a cluster the fence is asked right before each write; False stops the write."""
    provider = FakeProvider()
    leader = True
    asked: list[bool] = []

    async def fence() -> bool:
        asked.append(leader)
        return leader

    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, fence=fence)
    sync.start()
    sync.submit(www("192.0.2.1"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.records[(f"www.{Z}", "A")].values == ("192.0.2.1",)
    leader = False  # e.g. this node was paused and another took over
    sync.submit(www("192.0.2.9"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.records[(f"www.{Z}", "A")].values == ("192.0.2.1",)
    assert len(provider.applied) == 1
    assert [e.kind for e in events] == ["applied", "fenced"]
    assert asked == [True, False]
    await sync.stop()


async def test_500_held_names_are_one_short_error_line_and_re_read_in_one_listing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = ConflictProvider()
    provider.in_the_way |= {(f"n{i}.{Z}", "A") for i in range(500)}
    sync = ZoneSync(provider, Safety(), backoff_first=0.01, backoff_max=0.02)
    sync.start()
    with caplog.at_level(logging.ERROR, logger="dnsfailover.sync"):
        sync.submit(tuple(RecordSet(f"n{i}.{Z}", "A", 30, ("192.0.2.2",)) for i in range(510)))
        await asyncio.wait_for(sync.wait_idle(), 5)
        populates = provider.populates
        for _ in range(500):
            if provider.populates >= populates + 3:
                break
            await asyncio.sleep(0.01)
    assert len(provider.records) == 10
    assert len(sync.status.held) == 500
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "reported once, however often re-checked"
    assert "500 record set(s) held back, 10 other change(s) applied" in errors[0]
    assert "and 495 more" in errors[0]
    assert len(errors[0]) < 1500
    assert provider.populates >= populates + 3
    assert provider.by_name == 0, "500 held keys are re-read in full reads, not name by name"
    await sync.stop()


async def test_a_resync_cuts_a_failure_backoff_short() -> None:
    provider = FakeProvider()
    provider.fail_next = 1
    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, backoff_first=1000)
    sync.start()
    sync.submit(www("192.0.2.1"))
    for _ in range(500):
        if events:
            break
        await asyncio.sleep(0.01)
    assert [e.kind for e in events] == ["failed"]  # now backing off for up to 1000 s
    status = await asyncio.wait_for(sync.resync(), 5)
    assert status.in_sync
    assert provider.records[(f"www.{Z}", "A")].values == ("192.0.2.1",)
    await sync.stop()


class GeoProvider(FakeProvider):
    """An in-memory zone that publishes steered names one record set per place."""

    GEO_PLACES = frozenset({"country", "continent"})

    def __init__(self) -> None:
        super().__init__()
        self.placed: dict[GeoKey, RecordSet] = {}
        self.read_keys: list[list[Key]] = []

    async def populate(self, keys: Collection[Key]) -> Populated:
        owned = set(self.records) | {k[:2] for k in self.placed}
        return Populated(tuple(self.records.values()), owned=frozenset(owned), placed=self.placed)

    async def populate_keys(self, keys: Collection[Key]) -> Populated:
        self.read_keys.append(sorted(keys))
        return await self.populate(keys)

    async def apply(self, plan: Plan) -> ApplyResult:
        for c in plan.changes:
            sets: dict[Any, RecordSet] = self.placed if c.place else self.records
            key = c.geo_key if c.place else c.key
            if c.new is None:
                sets.pop(key, None)
            else:
                sets[key] = c.new
        self.applied.append(plan)
        return ApplyResult(Z, len(plan.changes), 1, True)


def steered(
    eu: str, us: str, eu_places: tuple[str, ...] = ("country:DE", "continent:EU")
) -> tuple[tuple[RecordSet, ...], dict[Key, SteeredSet]]:
    """www steered: the desired plain sets (the default group's answer) and the steering."""
    answers = {"eu,us": www(eu)[0], "us,eu": www(us)[0]}
    s = SteeredSet(f"www.{Z}", "A", "us,eu", answers, {"eu,us": eu_places})
    return (answers["us,eu"],), {(s.name, s.rtype): s}


async def test_a_change_of_a_non_default_group_is_re_read_and_applied() -> None:
    """The default group's answer (the plain set) stays the same on an EU failover; the
    worker still sees the name changed, re-reads it alone and writes only the EU places."""
    provider = GeoProvider()
    sync = ZoneSync(provider, Safety())
    sync.start()
    sync.submit(*steered("192.0.2.10", "192.0.2.20"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert set(provider.placed) == {
        (f"www.{Z}", "A", p) for p in ("country:DE", "continent:EU", "*")
    }
    assert provider.records == {}, "no plain set beside the places"
    sync.submit(*steered("192.0.2.20", "192.0.2.20"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.read_keys == [[(f"www.{Z}", "A")]]
    assert [(c.kind, c.place) for c in provider.applied[-1].changes] == [
        ("update", "continent:EU"),
        ("update", "country:DE"),
    ]
    assert sync.reads == 1

    # a place dropped from the rule: the name stays ours (the worker remembers), so once
    # it is no longer desired its last places are deleted too
    sync.submit(*steered("192.0.2.20", "192.0.2.20", ("country:DE",)))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert [(c.kind, c.place) for c in provider.applied[-1].changes] == [("delete", "continent:EU")]
    sync.safety = Safety(empty_ok=frozenset({f"www.{Z}"}))
    sync.submit(())
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.placed == {}
    assert sync.reads == 1
    await sync.stop()


async def test_a_provider_without_location_support_gets_the_default_answer_only() -> None:
    provider = FakeProvider()
    sync = ZoneSync(provider, Safety())
    sync.start()
    sync.submit(*steered("192.0.2.10", "192.0.2.20"))
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert list(provider.records.values()) == list(www("192.0.2.20"))
    assert all(not c.place for p in provider.applied for c in p.changes)
    await sync.stop()


async def test_many_touched_names_are_re_read_in_one_listing_a_few_name_by_name() -> None:
    """A regional outage flips every name of the region: one listing of the zone costs a
    few calls, reading each name (and its marker) two calls a name against the rate limit."""
    provider = ConflictProvider()
    sync = ZoneSync(provider, Safety())
    names = [f"n{i}.{Z}" for i in range(30)]
    await sync.converge(tuple(RecordSet(n, "A", 30, ("192.0.2.1",)) for n in names))
    assert (sync.reads, provider.by_name) == (1, 0)
    flipped = tuple(RecordSet(n, "A", 30, ("192.0.2.2",)) for n in names)
    plan = await sync.converge(flipped)
    assert len(plan.changes) == 30
    assert (sync.reads, provider.by_name) == (2, 0)
    one = (RecordSet(names[0], "A", 30, ("192.0.2.3",)), *flipped[1:])
    plan = await sync.converge(one)
    assert len(plan.changes) == 1
    assert (sync.reads, provider.by_name) == (2, 1)
