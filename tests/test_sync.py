"""ZoneSync: one change in flight per zone, latest state wins, failures retried."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ApplyResult, BaseProvider, ProviderError, ProviderOptions
from dnsfailover.provider.plan import Key, Plan, Populated, Safety
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


async def test_unsafe_plan_is_refused_and_reported_not_retried() -> None:
    provider = FakeProvider()
    provider.records[(f"www.{Z}", "A")] = www("192.0.2.1")[0]
    events: list[SyncEvent] = []
    sync = ZoneSync(provider, Safety(), on_event=events.append, backoff_first=0.01)
    sync.start()
    sync.submit(www())
    await asyncio.wait_for(sync.wait_idle(), 5)
    assert provider.applied == []
    assert [e.kind for e in events] == ["refused"]
    assert "removes every A answer" in sync.status.last_error
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
