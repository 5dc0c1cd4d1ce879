"""The same provider against every RFC 2136 primary it names: BIND 9, Knot DNS and PowerDNS,
each a real server on 127.0.0.1 (issue 15, items 8-10)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from dnsfailover_rfc2136.testing import RunningPrimary
from dnsfailover_rfc2136.testing_primaries import start_knot_primary, start_pdns_primary
from rfc2136_support import MARKER, ZONE, MakeProvider, converge, plan, rs

from dnsfailover.model import RecordSet
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.plan import Safety
from dnsfailover.provider.sync import SyncEvent, ZoneSync

MakeFor = Callable[[RunningPrimary], MakeProvider]
N = 12
BAD = f"n0.{ZONE}"


async def test_create_update_delete_on_every_primary(
    primary: RunningPrimary, make_for: MakeFor
) -> None:
    p = make_for(primary)()
    await p.start()
    serial = primary.serial()
    result = await converge(p, [rs("www", "A", "192.0.2.1"), rs("old", "A", "192.0.2.3")])
    assert result.confirmed
    assert primary.answer(f"www.{ZONE}") == ("192.0.2.1",)
    assert primary.answer(f"_dnsfailover-a.www.{ZONE}", "TXT") == (MARKER,)
    assert primary.serial() > serial
    # a failover, and a name no longer managed (deleted: the core allows it when forced)
    await p.apply(await plan(p, [rs("www", "A", "198.51.100.7", "198.51.100.8")]))
    assert primary.answer(f"www.{ZONE}") == ("198.51.100.7", "198.51.100.8")
    assert primary.answer(f"old.{ZONE}") == ()
    assert primary.answer(f"_dnsfailover-a.old.{ZONE}", "TXT") == ()


def failover() -> tuple[RecordSet, ...]:
    return tuple(rs(f"n{i}", "A", "198.51.100.7") for i in range(N))


async def test_a_foreign_cname_holds_one_name_until_it_is_gone(
    primary: RunningPrimary, make_for: MakeFor
) -> None:
    make = make_for(primary)
    first = make()
    await first.start()
    await converge(first, [rs(f"n{i}", "A", "192.0.2.1") for i in range(N)])
    primary.update((BAD, 300, "CNAME", f"elsewhere.{ZONE}"), deletes=[f"{BAD} A"])
    events: list[SyncEvent] = []
    sync = ZoneSync(make(), Safety(), on_event=events.append, backoff_first=0.05, backoff_max=0.2)
    sync.start()
    sync.submit(failover())
    await asyncio.wait_for(sync.wait_idle(), 10)
    moved = [i for i in range(N) if primary.answer(f"n{i}.{ZONE}") == ("198.51.100.7",)]
    assert moved == list(range(1, N)), "every other name failed over"
    assert primary.answer(BAD, "CNAME") == (f"elsewhere.{ZONE}",), "the CNAME is intact"
    assert "is a CNAME" in sync.status.held[f"{BAD} A"]
    assert [e.kind for e in events] == ["applied", "refused"]

    primary.update(deletes=[f"{BAD} CNAME"])  # removed by hand: applied on the re-check timer
    for _ in range(200):
        if sync.status.in_sync:
            break
        await asyncio.sleep(0.05)
    assert primary.answer(BAD) == ("198.51.100.7",)
    assert sync.status.held == {}
    assert [e.kind for e in events] == ["applied", "refused", "applied"]
    await sync.stop()


async def test_adopt_replaces_a_foreign_cname(primary: RunningPrimary, make_for: MakeFor) -> None:
    primary.update((BAD, 300, "CNAME", f"elsewhere.{ZONE}"))
    sync = ZoneSync(make_for(primary)(), Safety(adopt=True))
    await sync.converge(failover())
    assert primary.answer(BAD, "CNAME") == ()
    assert primary.answer(BAD) == ("198.51.100.7",)
    assert primary.answer(f"_dnsfailover-a.{BAD}", "TXT") == (MARKER,)
    assert sync.status.in_sync


async def test_knot_least_privilege_update_only_key_works(
    tmp_path: Path, make_for: MakeFor
) -> None:
    """Knot denies the transfer with NOTAUTH + BADKEY: the provider reads per name."""
    knot = start_knot_primary(tmp_path / "knot", ZONE, transfer=False)
    try:
        p = make_for(knot)()
        await p.start()
        result = await converge(p, [rs("www", "A", "192.0.2.1")])
        assert result.confirmed
        assert p.calls["axfr"] == 1
        assert knot.answer(f"www.{ZONE}") == ("192.0.2.1",)
        await converge(p, [rs("www", "A", "192.0.2.2")])
        assert knot.answer(f"www.{ZONE}") == ("192.0.2.2",)
        assert p.calls["axfr"] == 1, "transfer not asked again"
    finally:
        knot.stop()


async def test_knot_acl_denial_is_not_called_an_unknown_key(
    tmp_path: Path, make_for: MakeFor
) -> None:
    knot = start_knot_primary(tmp_path / "knot", ZONE)
    try:
        other = knot.directory / "other.key"
        other.write_text(knot.other_key.block())
        p = make_for(knot)(key_name=knot.other_key.name, secret_file=str(other))
        await p.start()  # Knot answers queries signed with a key its acl names
        with pytest.raises(ProviderError) as e:
            await converge(p, [rs("api", "A", "192.0.2.1")])
        msg = str(e.value)
        assert f"will not let key {knot.other_key.name}. update the zone" in msg
        assert "action: update" in msg
        assert "does not know" not in msg
        assert knot.other_key.secret not in msg
        assert knot.answer(f"api.{ZONE}") == ()
    finally:
        knot.stop()


async def test_pdns_wrong_secret_or_unknown_key_is_named(tmp_path: Path, make_for: MakeFor) -> None:
    pdns = start_pdns_primary(tmp_path / "pdns", ZONE)
    try:
        wrong = pdns.directory / "wrong.key"
        wrong.write_text(pdns.other_key.block().replace(pdns.other_key.name, pdns.key.name))
        unknown = pdns.directory / "unknown.key"
        unknown.write_text(pdns.other_key.block().replace(pdns.other_key.name, "nobody"))
        for options in (
            {"secret_file": str(wrong)},
            {"key_name": "nobody", "secret_file": str(unknown)},
        ):
            with pytest.raises(ProviderError) as e:
                await make_for(pdns)(**options).start()
            msg = str(e.value)
            assert "answered without a signature" in msg
            assert "FormError" not in msg
            assert pdns.other_key.secret not in msg
    finally:
        pdns.stop()


async def test_pdns_without_dnsupdate_is_refused_with_its_settings_named(
    tmp_path: Path, make_for: MakeFor
) -> None:
    pdns = start_pdns_primary(tmp_path / "pdns", ZONE, dnsupdate=False)
    try:
        p = make_for(pdns)()
        await p.start()
        with pytest.raises(ProviderError) as e:
            await converge(p, [rs("www", "A", "192.0.2.1")])
        msg = str(e.value)
        assert "REFUSED" in msg
        assert "dnsupdate=yes" in msg
        assert "allow-dnsupdate-from" in msg
        assert "TSIG-ALLOW-DNSUPDATE" in msg
        assert "action: update" in msg  # Knot's setting too
    finally:
        pdns.stop()
