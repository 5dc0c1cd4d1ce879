"""Publish a zone's record sets to an Amazon Route 53 hosted zone.

populate lists the whole hosted zone and reads it through the ownership markers (see
`records`); apply sends the plan as few atomic ChangeResourceRecordSets batches (see
`batching`), retrying transient errors within `deadline` (see `retry`), then polls GetChange
until Route 53 reports every change INSYNC.  boto3 is blocking, so every call runs in a worker
thread.  Steered names whose places are countries and continents become geolocation record
sets (see `records`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, ClassVar, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from dnsfailover.backoff import Backoff
from dnsfailover.provider.contract import (
    ApplyResult,
    BaseProvider,
    ProviderError,
    ProviderOptions,
    unpublishable,
)
from dnsfailover.provider.ownership import check_reserved, marker_name
from dnsfailover.provider.plan import Key, Plan, Populated, summarize
from dnsfailover_route53.batching import Translator, split
from dnsfailover_route53.options import Route53Options
from dnsfailover_route53.records import GEO_PLACES, ZoneSnapshot, geo_location, normalise_name
from dnsfailover_route53.retry import Caller, CallError, describe

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import (
        HostedZoneTypeDef,
        ListHostedZonesByNameRequestTypeDef,
        ListResourceRecordSetsRequestTypeDef,
        ResourceRecordSetOutputTypeDef,
    )

T = TypeVar("T")


NAME_PAGE = 20  # record sets asked per call when reading one name


def _short_id(value: str) -> str:
    """`/hostedzone/Z1` → `Z1`, `/change/C2` → `C2`."""
    return value.rsplit("/", 1)[-1]


def _private(zone: HostedZoneTypeDef) -> bool:
    return bool(zone.get("Config", {}).get("PrivateZone", False))


class Route53Provider(BaseProvider):
    """A zone whose record sets live in a Route 53 hosted zone.

    :param client: a ready boto3 Route 53 client to use instead of building one in `start`
        (tests pass one wrapped by botocore's Stubber); the caller keeps ownership of it.
    """

    SUPPORTS: ClassVar[frozenset[str]] = frozenset(
        {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR"}
    )
    Options: ClassVar[type[ProviderOptions]] = Route53Options
    GEO_PLACES: ClassVar[frozenset[str]] = GEO_PLACES

    def __init__(
        self, zone: str, options: ProviderOptions, *, client: Route53Client | None = None
    ) -> None:
        if not isinstance(options, Route53Options):
            raise ProviderError(f"route53 needs Route53Options, got {type(options).__name__}")
        super().__init__(normalise_name(zone), options)
        self.opts = options
        self._client = client
        self._owns_client = client is None
        self.hosted_zone_id: str | None = None
        self._snapshot: ZoneSnapshot | None = None
        self._caller = Caller(Backoff(options.backoff_base, options.backoff_max), self.log)

    @property
    def calls(self) -> Counter[str]:
        """Route 53 API calls sent so far, by operation, retries included."""
        return self._caller.calls

    def _make_client(self) -> Route53Client:
        o = self.opts
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # ours are the only retries
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            user_agent_extra="dnsfailover-route53",
        )
        try:
            session = boto3.session.Session(profile_name=o.profile, region_name=o.region)
            return session.client("route53", endpoint_url=o.endpoint_url, config=config)
        except BotoCoreError as e:
            raise ProviderError(
                f"{self.zone}: start: cannot build a Route 53 client: {describe(e)}"
            ) from e

    def _require(self) -> tuple[Route53Client, str]:
        if self._client is None or self.hosted_zone_id is None:
            raise ProviderError(f"{self.zone}: route53 provider used before start()")
        return self._client, self.hosted_zone_id

    async def _call(self, op: str, fn: Callable[[], T], deadline_at: float, budget: float) -> T:
        return await self._caller(
            op, fn, deadline_at=deadline_at, budget=budget, context=f"zone={self.zone}"
        )

    async def start(self) -> None:
        """Build the client and find the hosted zone (by id if given, else by name)."""
        if self.hosted_zone_id is not None:
            return
        if self._client is None:
            self._client = await asyncio.to_thread(self._make_client)
        client = self._client
        budget = self.opts.deadline
        deadline_at = time.monotonic() + budget
        try:
            if self.opts.hosted_zone_id is not None:
                zone_id = await self._check_zone(client, self.opts.hosted_zone_id, deadline_at)
            else:
                zone_id = await self._find_zone(client, deadline_at)
        except CallError as e:
            raise ProviderError(f"{self.zone}: start: {e}") from e
        self.hosted_zone_id = zone_id
        self.log.info("start: zone=%s hosted_zone=%s", self.zone, zone_id)

    async def _check_zone(self, client: Route53Client, zone_id: str, deadline_at: float) -> str:
        get = partial(client.get_hosted_zone, Id=zone_id)
        resp = await self._call("GetHostedZone", get, deadline_at, self.opts.deadline)
        name = normalise_name(resp["HostedZone"]["Name"])
        if name != self.zone:
            raise ProviderError(f"{self.zone}: hosted zone {zone_id} is {name}, not {self.zone}")
        return zone_id

    async def _find_zone(self, client: Route53Client, deadline_at: float) -> str:
        matches: list[HostedZoneTypeDef] = []
        params: ListHostedZonesByNameRequestTypeDef = {"DNSName": self.zone, "MaxItems": "100"}
        while True:
            find = partial(client.list_hosted_zones_by_name, **params)
            resp = await self._call("ListHostedZonesByName", find, deadline_at, self.opts.deadline)
            zones = resp.get("HostedZones", [])
            matches += [z for z in zones if normalise_name(z["Name"]) == self.zone]
            # the list is sorted by name: past our name, nothing more can match
            if (
                not resp.get("IsTruncated")
                or not zones
                or normalise_name(zones[-1]["Name"]) != self.zone
            ):
                break
            params = {
                "DNSName": resp["NextDNSName"],
                "HostedZoneId": resp["NextHostedZoneId"],
                "MaxItems": "100",
            }
        if not matches:
            raise ProviderError(
                f"{self.zone}: no Route 53 hosted zone is named {self.zone}; "
                "create it, or set hosted_zone_id"
            )
        if len(matches) > 1:
            found = ", ".join(
                f"{_short_id(z['Id'])} ({'private' if _private(z) else 'public'})" for z in matches
            )
            raise ProviderError(
                f"{self.zone}: {len(matches)} hosted zones are named {self.zone}: {found}; "
                "set hosted_zone_id to the one dnsfailover should manage"
            )
        return _short_id(matches[0]["Id"])

    async def populate(self, keys: Collection[Key]) -> Populated:
        """List the whole hosted zone and report `keys` and every key marked as ours."""
        self._require()
        check_reserved(self.zone, keys)
        started = time.monotonic()
        rrsets = await self._list_record_sets()
        self._snapshot = ZoneSnapshot(rrsets, self.opts.owner_id, self.SUPPORTS)
        populated = self._snapshot.populated(keys, self.log)
        self.log.debug(
            "populate: zone=%s record_sets=%d asked=%d owned=%d foreign=%d in %.2fs",
            self.zone,
            len(rrsets),
            len(keys),
            len(populated.owned),
            len(populated.foreign),
            time.monotonic() - started,
        )
        return populated

    async def populate_keys(self, keys: Collection[Key]) -> Populated:
        """Read only the names of `keys` and their markers (ListResourceRecordSets from
        each name: a call or two per name, not a listing of the whole hosted zone)."""
        self._require()
        check_reserved(self.zone, keys)
        started = time.monotonic()
        deadline_at = time.monotonic() + self.opts.deadline
        names = sorted({name for name, _ in keys} | {marker_name(k) for k in keys})
        rrsets: list[ResourceRecordSetOutputTypeDef] = []
        for name in names:
            rrsets += await self._list_name(name, deadline_at)
        self._snapshot = ZoneSnapshot(rrsets, self.opts.owner_id, self.SUPPORTS)
        populated = self._snapshot.populated(keys, self.log)
        self.log.debug(
            "populate: zone=%s names=%d record_sets=%d in %.2fs",
            self.zone,
            len(names),
            len(rrsets),
            time.monotonic() - started,
        )
        return populated

    async def _list_name(
        self, name: str, deadline_at: float
    ) -> list[ResourceRecordSetOutputTypeDef]:
        """Every record set at exactly `name` (pages followed while they stay at it; a page
        that brings nothing new stops the reading with an error rather than looping)."""
        client, zone_id = self._require()
        params: ListResourceRecordSetsRequestTypeDef = {
            "HostedZoneId": zone_id,
            "StartRecordName": name,
            "MaxItems": str(NAME_PAGE),
        }
        found: dict[tuple[str, str, str | None], ResourceRecordSetOutputTypeDef] = {}
        try:
            while True:
                list_page = partial(client.list_resource_record_sets, **params)
                resp = await self._call(
                    "ListResourceRecordSets", list_page, deadline_at, self.opts.deadline
                )
                page = resp.get("ResourceRecordSets", [])
                here = [r for r in page if normalise_name(r["Name"]) == name]
                new = 0
                for rrset in here:
                    ident = (rrset["Name"], rrset["Type"], rrset.get("SetIdentifier"))
                    new += ident not in found
                    found.setdefault(ident, rrset)
                if len(here) < len(page) or not resp.get("IsTruncated") or not here:
                    return list(found.values())
                if not new:
                    raise ProviderError(
                        f"{self.zone}: populate: ListResourceRecordSets brought nothing new "
                        f"at {resp.get('NextRecordName')} {resp.get('NextRecordType')}"
                    )
                params = {
                    "HostedZoneId": zone_id,
                    "MaxItems": str(NAME_PAGE),
                    "StartRecordName": resp["NextRecordName"],
                    "StartRecordType": resp["NextRecordType"],
                }
                if resp.get("NextRecordIdentifier"):
                    params["StartRecordIdentifier"] = resp["NextRecordIdentifier"]
        except CallError as e:
            raise ProviderError(f"{self.zone}: populate: {e}") from e

    async def _list_record_sets(self) -> list[ResourceRecordSetOutputTypeDef]:
        """Every record set of the hosted zone, following Route 53's pages.

        Pages are followed by hand from NextRecordName/Type/Identifier (the boto3 paginator
        gives up on a page boundary inside a weighted set when no identifier comes back, as
        with moto); a record set seen twice is kept once, and a page that brings nothing new
        stops the listing with an error rather than looping.
        """
        client, zone_id = self._require()
        budget = self.opts.deadline
        deadline_at = time.monotonic() + budget
        seen: dict[tuple[str, str, str | None], ResourceRecordSetOutputTypeDef] = {}
        page = str(self.opts.page_size)
        params: ListResourceRecordSetsRequestTypeDef = {"HostedZoneId": zone_id, "MaxItems": page}
        try:
            while True:
                list_page = partial(client.list_resource_record_sets, **params)
                resp = await self._call("ListResourceRecordSets", list_page, deadline_at, budget)
                new = 0
                for rrset in resp.get("ResourceRecordSets", []):
                    ident = (rrset["Name"], rrset["Type"], rrset.get("SetIdentifier"))
                    if ident not in seen:
                        seen[ident] = rrset
                        new += 1
                if not resp.get("IsTruncated"):
                    return list(seen.values())
                if not new:
                    raise ProviderError(
                        f"{self.zone}: populate: ListResourceRecordSets brought nothing new at "
                        f"{resp.get('NextRecordName')} {resp.get('NextRecordType')}"
                    )
                params = {
                    "HostedZoneId": zone_id,
                    "MaxItems": page,
                    "StartRecordName": resp["NextRecordName"],
                    "StartRecordType": resp["NextRecordType"],
                }
                if resp.get("NextRecordIdentifier"):
                    params["StartRecordIdentifier"] = resp["NextRecordIdentifier"]
        except CallError as e:
            raise ProviderError(f"{self.zone}: populate: {e}") from e

    async def apply(self, plan: Plan) -> ApplyResult:
        """Send the plan in atomic batches, retrying transient errors, then confirm INSYNC."""
        client, zone_id = self._require()
        if normalise_name(plan.zone) != self.zone:
            raise ProviderError(f"{self.zone}: apply: the plan is for {plan.zone}")
        if not plan.changes:
            return ApplyResult(self.zone, 0, 0, True, "no changes")
        snapshot, self._snapshot = self._snapshot, None  # stale once we write, whatever happens
        self._check(plan, snapshot)
        batches = split(
            Translator(snapshot, self.opts.owner_id).groups(plan),
            self.opts.max_batch_records,
            self.opts.max_batch_chars,
        )
        budget = self.opts.deadline
        deadline_at = time.monotonic() + budget
        before = self.calls["ChangeResourceRecordSets"]
        change_ids: list[str] = []
        total = len(batches)
        for i, batch in enumerate(batches, 1):
            self.log.info("apply: zone=%s batch=%d/%d changes=%d", self.zone, i, total, len(batch))
            comment = f"dnsfailover owner={self.opts.owner_id} batch {i}/{total}"
            try:
                send = partial(
                    client.change_resource_record_sets,
                    HostedZoneId=zone_id,
                    ChangeBatch={"Comment": comment, "Changes": batch},
                )
                resp = await self._caller(
                    "ChangeResourceRecordSets",
                    send,
                    deadline_at=deadline_at,
                    budget=budget,
                    context=f"zone={self.zone} batch={i}/{total}",
                )
            except CallError as e:
                raise ProviderError(self._batch_failed(e, i, total, change_ids)) from e
            change_ids.append(_short_id(resp["ChangeInfo"]["Id"]))
        calls = self.calls["ChangeResourceRecordSets"] - before
        waited = await self._confirm(change_ids)
        return ApplyResult(
            self.zone,
            len(plan.changes),
            calls,
            True,
            f"{total} batch(es) in {calls} call(s), INSYNC after {waited:.1f}s: "
            + ", ".join(dict.fromkeys(change_ids)),
        )

    def _check(self, plan: Plan, snapshot: ZoneSnapshot | None) -> None:
        """Refuse, before any write, changes Route 53 could not take or we must not make."""
        problems = [
            f"{c.key[0]} {c.key[1]}: route53 does not publish {c.key[1]} records"
            for c in plan.changes
            if c.key[1] not in self.SUPPORTS
        ]
        placed = [c.geo_key for c in plan.changes if c.place]
        bad = unpublishable(self.GEO_PLACES, placed)
        problems += bad
        for name, rtype, place in [] if bad else placed:
            try:
                geo_location(place)
            except ProviderError as e:
                problems.append(f"{name} {rtype}: {e}")
        if snapshot is not None:
            problems += [
                r
                for c in plan.changes
                if c.key not in plan.replace and (r := snapshot.conflict(c.key)) is not None
            ]
        if problems:
            raise ProviderError(
                f"{self.zone}: apply: refused, nothing sent: {len(problems)} problem(s): "
                + summarize(problems)
            )

    def _batch_failed(self, e: CallError, i: int, total: int, change_ids: list[str]) -> str:
        verb = "rejected" if e.rejected else "failed"
        if i == 1:
            outcome = "nothing was applied"
        else:
            done = "batch 1" if i == 2 else f"batches 1-{i - 1}"
            rest = f"batch {i}" if i == total else f"batches {i}-{total}"
            ids = ", ".join(change_ids)
            outcome = f"{done} stayed applied, each one whole ({ids}); {rest} not applied"
        text = f"{self.zone}: batch {i}/{total} {verb}: {e.detail}; {outcome}"
        if e.maybe_applied:
            text += (
                f" (an earlier attempt of batch {i} got no answer and may have been applied; "
                "the next plan will converge)"
            )
        return text

    async def _confirm(self, change_ids: list[str]) -> float:
        """Poll GetChange for each change until INSYNC; the seconds it took."""
        client, _ = self._require()
        budget = self.opts.confirm_timeout
        started = time.monotonic()
        deadline_at = started + budget
        interval = self.opts.poll_interval
        for change_id in dict.fromkeys(change_ids):  # moto gives every change the same id
            while True:
                try:
                    get = partial(client.get_change, Id=change_id)
                    resp = await self._call("GetChange", get, deadline_at, budget)
                except CallError as e:
                    raise ProviderError(
                        f"{self.zone}: confirm: change {change_id}: {e.detail}; "
                        "the changes were sent but are not confirmed INSYNC"
                    ) from e
                status = resp["ChangeInfo"]["Status"]
                if status == "INSYNC":
                    self.log.info(
                        "confirm: zone=%s change=%s INSYNC after %.1fs",
                        self.zone,
                        change_id,
                        time.monotonic() - started,
                    )
                    break
                remaining = deadline_at - time.monotonic()
                if remaining <= 0:
                    raise ProviderError(
                        f"{self.zone}: not confirmed INSYNC after {budget:g}s; change "
                        f"{change_id} is {status} (the next plan will check again)"
                    )
                await asyncio.sleep(min(interval, remaining))
                interval = min(interval * 2, self.opts.poll_max)
        return time.monotonic() - started

    async def close(self) -> None:
        """Close the client built by `start` (one passed in stays open)."""
        self.hosted_zone_id = None
        self._snapshot = None
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
