"""Publish a zone's record sets to an RFC 2136 primary (BIND, Knot, PowerDNS) by signed UPDATEs.

start reads the TSIG secret and checks that the primary serves the zone and accepts the key;
populate reads the zone by AXFR when the primary allows it to our key, else asks per name (see
`records`); apply sends the plan as atomic UPDATE batches with prerequisites (see `updates`),
retrying transient errors within `deadline` (see `transport`), then queries the primary until
the SOA serial went up and the new answers are served.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Sequence
from typing import ClassVar

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig

from dnsfailover.backoff import Backoff
from dnsfailover.provider.contract import ApplyResult, BaseProvider, ProviderError, ProviderOptions
from dnsfailover.provider.ownership import check_reserved, marker_name
from dnsfailover.provider.plan import Change, Key, Plan, Populated, summarize
from dnsfailover_rfc2136.options import Rfc2136Options, read_secret
from dnsfailover_rfc2136.records import Found, ZoneView, normalise_name
from dnsfailover_rfc2136.transport import (
    PREREQ_RCODES,
    RCODE_MEANING,
    Primary,
    SendError,
)
from dnsfailover_rfc2136.updates import BadValue, canonical, describe_keys, groups, message, split

#: concurrent queries when reading names one by one
QUERY_CONCURRENCY = 16


def _answer(response: dns.message.Message, name: str, rtype: str) -> Found | None:
    qname = dns.name.from_text(name)
    for rrset in response.answer:
        if rrset.name == qname and rrset.rdtype == dns.rdatatype.from_text(rtype):
            return Found.of(rrset)
    return None


def _serial_after(new: int, old: int) -> bool:
    """RFC 1982 serial number arithmetic: `new` is later than `old`."""
    return 0 < (new - old) % 2**32 < 2**31


class Rfc2136Provider(BaseProvider):
    """A zone whose record sets live on a primary that takes TSIG-signed dynamic updates."""

    SUPPORTS: ClassVar[frozenset[str]] = frozenset(
        {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR"}
    )
    Options: ClassVar[type[ProviderOptions]] = Rfc2136Options

    def __init__(self, zone: str, options: ProviderOptions) -> None:
        if not isinstance(options, Rfc2136Options):
            raise ProviderError(f"rfc2136 needs Rfc2136Options, got {type(options).__name__}")
        super().__init__(normalise_name(zone), options)
        self.opts = options
        self._backoff = Backoff(options.backoff_base, options.backoff_max)
        self._primary: Primary | None = None
        self._view: ZoneView | None = None
        #: whether the primary gives us AXFR; None until tried
        self._axfr: bool | None = None
        #: keys seen ours or written by us, asked about too when AXFR is not allowed
        self._known: set[Key] = set()

    @property
    def calls(self) -> Counter[str]:
        """Messages sent so far, by operation (query, axfr, update), retries included."""
        return self._primary.calls if self._primary else Counter()

    def _require(self) -> Primary:
        if self._primary is None:
            raise ProviderError(f"{self.zone}: rfc2136 provider used before start()")
        return self._primary

    def _deadline(self) -> float:
        return time.monotonic() + self.opts.deadline

    async def start(self) -> None:
        """Read the secret; check that the primary is authoritative for the zone and takes
        our key (a signed SOA query)."""
        if self._primary is not None:
            return
        try:
            secret = read_secret(self.opts)
        except ProviderError as e:
            raise ProviderError(f"{self.zone}: start: {e}") from None
        key = dns.tsig.Key(self.opts.key_name, secret, self.opts.algorithm_name)
        primary = Primary(self.opts, key, self.log, self._backoff)
        try:
            serial = await self._serial(primary, self._deadline())
        except SendError as e:
            raise ProviderError(f"{self.zone}: start: {primary.where}: {e}") from e
        self._primary = primary
        self.log.info(
            "start: zone=%s primary=%s key=%s serial=%d",
            self.zone,
            primary.where,
            self.opts.key_name,
            serial,
        )

    async def _serial(self, primary: Primary, deadline_at: float) -> int:
        response = await primary.query(self.zone, "SOA", deadline_at=deadline_at)
        found = _answer(response, self.zone, "SOA")
        if found is None or not response.flags & dns.flags.AA:
            raise SendError(
                "query SOA",
                f"{self.zone} is not a zone this server is authoritative for",
                attempts=1,
                maybe_applied=False,
            )
        return int(found.values[0].split()[2])

    async def populate(self, keys: Collection[Key]) -> Populated:
        """What exists for `keys` and for every key marked as ours (by AXFR when allowed;
        without it, only keys asked about or seen ours before are found)."""
        primary = self._require()
        check_reserved(self.zone, keys)
        started = time.monotonic()
        deadline_at = self._deadline()
        try:
            rrsets: dict[Key, Found] | None = None
            if self._axfr is not False:
                rrsets = await self._transfer(primary, deadline_at)
            if rrsets is None:
                rrsets = await self._ask(primary, set(keys) | self._known, deadline_at)
        except SendError as e:
            raise ProviderError(f"{self.zone}: populate: {primary.where}: {e}") from e
        self._view = ZoneView(rrsets, self.opts.owner_id, self.SUPPORTS)
        populated = self._view.populated(keys, self.log)
        self._known |= populated.owned
        self.log.debug(
            "populate: zone=%s via=%s record_sets=%d asked=%d owned=%d foreign=%d in %.2fs",
            self.zone,
            "axfr" if self._axfr else "queries",
            len(rrsets),
            len(keys),
            len(populated.owned),
            len(populated.foreign),
            time.monotonic() - started,
        )
        return populated

    async def populate_keys(self, keys: Collection[Key]) -> Populated:
        """Ask for `keys` and their markers one by one (a CNAME at a name is noted too),
        not the whole zone by AXFR."""
        primary = self._require()
        check_reserved(self.zone, keys)
        try:
            rrsets = await self._ask(primary, set(keys), self._deadline())
        except SendError as e:
            raise ProviderError(f"{self.zone}: populate: {primary.where}: {e}") from e
        self._view = ZoneView(rrsets, self.opts.owner_id, self.SUPPORTS)
        populated = self._view.populated(keys, self.log)
        self._known |= populated.owned
        return populated

    async def _transfer(self, primary: Primary, deadline_at: float) -> dict[Key, Found] | None:
        zone = await primary.axfr(self.zone, deadline_at=deadline_at)
        if zone is None:
            self._axfr = False
            self.log.info(
                "populate: zone=%s AXFR refused to key %s; reading names one by one",
                self.zone,
                self.opts.key_name,
            )
            return None
        self._axfr = True
        return {
            (normalise_name(name), dns.rdatatype.to_text(rds.rdtype)): Found.of(rds)
            for name, rds in zone.iterate_rdatasets()
        }

    async def _ask(
        self, primary: Primary, keys: Collection[Key], deadline_at: float
    ) -> dict[Key, Found]:
        """Each key and its marker by query; a CNAME at a name is noted too."""
        found: dict[Key, Found] = {}
        limit = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def ask(name: str, rtype: str) -> None:
            async with limit:
                response = await primary.query(name, rtype, deadline_at=deadline_at)
            for t in {rtype, "CNAME"}:
                rs = _answer(response, name, t)
                if rs is not None:
                    found[(name, t)] = rs

        async with asyncio.TaskGroup() as tg:
            for key in sorted(keys):
                tg.create_task(ask(*key))
                tg.create_task(ask(marker_name(key), "TXT"))
        return found

    async def apply(self, plan: Plan) -> ApplyResult:
        """Send the plan as atomic UPDATEs with prerequisites, then confirm on the primary."""
        primary = self._require()
        if normalise_name(plan.zone) != self.zone:
            raise ProviderError(f"{self.zone}: apply: the plan is for {plan.zone}")
        if not plan.changes:
            return ApplyResult(self.zone, 0, 0, True, "no changes")
        view, self._view = self._view, None  # stale once we write, whatever happens
        batches = split(groups(plan), self.opts.max_batch_records)
        messages = self._messages(plan, view, batches, primary.key)
        deadline_at = self._deadline()
        before = primary.calls["update"]
        try:
            serial = await self._serial(primary, deadline_at)
        except SendError as e:
            raise ProviderError(f"{self.zone}: apply: nothing sent: {e}") from e
        total = len(batches)
        for i, (batch, msg) in enumerate(zip(batches, messages, strict=True), 1):
            self.log.info("apply: zone=%s batch=%d/%d changes=%d", self.zone, i, total, len(batch))
            await self._send(primary, i, total, batch, msg, deadline_at)
            self._known |= {c.key for c in batch if c.new is not None}
            self._known -= {c.key for c in batch if c.new is None}
        calls = primary.calls["update"] - before
        waited = await self._confirm(primary, plan.changes, serial)
        return ApplyResult(
            self.zone,
            len(plan.changes),
            calls,
            True,
            f"{total} UPDATE(s) in {calls} message(s), served after {waited:.2f}s",
        )

    def _messages(
        self,
        plan: Plan,
        view: ZoneView | None,
        batches: Sequence[Sequence[Change]],
        key: dns.tsig.Key,
    ) -> list[dns.message.Message]:
        """Every UPDATE, built before any is sent; refuses what must not be written."""
        problems = [
            f"{c.key[0]} {c.key[1]}: rfc2136 does not publish {c.key[1]} records"
            for c in plan.changes
            if c.key[1] not in self.SUPPORTS
        ]
        in_the_way: dict[Key, list[str]] = {}
        if view is not None:
            problems += [
                r
                for c in plan.changes
                if c.key not in plan.replace and (r := view.conflict(c.key)) is not None
            ]
            in_the_way = {k: view.in_the_way(k) for k in plan.replace}
        messages: list[dns.message.Message] = []
        if not problems:
            owner = self.opts.owner_id
            try:
                messages = [message(self.zone, b, owner, key, in_the_way) for b in batches]
            except BadValue as e:
                problems.append(str(e))
        if problems:
            raise ProviderError(
                f"{self.zone}: apply: refused, nothing sent: {len(problems)} problem(s): "
                + summarize(problems)
            )
        return messages

    async def _send(
        self,
        primary: Primary,
        i: int,
        total: int,
        batch: Sequence[Change],
        msg: dns.message.Message,
        deadline_at: float,
    ) -> None:
        context = f"zone={self.zone} batch={i}/{total}"
        try:
            answer, maybe_applied = await primary.update(
                msg, deadline_at=deadline_at, context=context
            )
        except SendError as e:
            raise ProviderError(self._failed(i, total, f"failed: {e.detail}")) from e
        rcode = answer.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode not in PREREQ_RCODES:
            meaning = RCODE_MEANING.get(rcode, dns.rcode.to_text(rcode))
            raise ProviderError(self._failed(i, total, f"rejected: {meaning}"))
        changed, applied = await self._culprits(primary, batch, deadline_at)
        if maybe_applied and applied:
            self.log.info("apply: %s: an unanswered earlier attempt had applied it", context)
            return
        keys = (
            describe_keys(changed) if changed else f"one of {describe_keys(c.key for c in batch)}"
        )
        raise ProviderError(
            self._failed(
                i,
                total,
                f"concurrent edit detected: {keys} changed since it was read "
                f"({dns.rcode.to_text(rcode)}: a prerequisite failed; the other edit was kept)",
            )
        )

    def _failed(self, i: int, total: int, what: str) -> str:
        if i == 1:
            outcome = "nothing was applied"
        else:
            done = "batch 1" if i == 2 else f"batches 1-{i - 1}"
            rest = f"batch {i}" if i == total else f"batches {i}-{total}"
            outcome = f"{done} stayed applied, each one whole; {rest} not applied"
        return f"{self.zone}: batch {i}/{total} {what}; {outcome} (the next plan re-reads)"

    async def _current(
        self, primary: Primary, key: Key, deadline_at: float
    ) -> tuple[str, ...] | None:
        response = await primary.query(key[0], key[1], deadline_at=deadline_at)
        found = _answer(response, *key)
        return None if found is None else found.values

    async def _culprits(
        self, primary: Primary, batch: Sequence[Change], deadline_at: float
    ) -> tuple[list[Key], bool]:
        """After a failed prerequisite: the keys that no longer hold what was read, and whether
        the primary already holds every new value (an unanswered attempt went through)."""
        changed: list[Key] = []
        applied = True
        for c in batch:
            try:
                now = await self._current(primary, c.key, deadline_at)
            except SendError:
                return [], False
            old = canonical(self.zone, c.key[1], c.old.values) if c.old else None
            new = canonical(self.zone, c.key[1], c.new.values) if c.new else None
            if now != old:
                changed.append(c.key)
            if now != new:
                applied = False
        return changed, applied

    async def _confirm(self, primary: Primary, changes: Sequence[Change], serial: int) -> float:
        """Query the primary until the serial went up and every change is served."""
        started = time.monotonic()
        deadline_at = started + self.opts.confirm_timeout
        interval = 0.02
        expected = {
            c.key: canonical(self.zone, c.key[1], c.new.values) if c.new else None for c in changes
        }
        waiting: list[str] = []
        while True:
            try:
                now = await self._serial(primary, deadline_at)
                waiting = [] if _serial_after(now, serial) else [f"SOA serial still {now}"]
                for key, want in expected.items():
                    got = await self._current(primary, key, deadline_at)
                    if got != want:
                        waiting.append(f"{key[0]} {key[1]} serves {' '.join(got or ('nothing',))}")
            except SendError as e:
                waiting = [str(e)]
            if not waiting:
                took = time.monotonic() - started
                self.log.info("confirm: zone=%s served after %.2fs", self.zone, took)
                return took
            remaining = deadline_at - time.monotonic()
            if remaining <= 0:
                raise ProviderError(
                    f"{self.zone}: the updates were accepted but not confirmed within "
                    f"{self.opts.confirm_timeout:g}s: " + "; ".join(waiting[:5])
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 2, 1.0)

    async def close(self) -> None:
        """Forget the key and what was read (connections are per message)."""
        self._primary = None
        self._view = None
