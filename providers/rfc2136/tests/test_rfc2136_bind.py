"""Round trips against a real BIND 9 primary: what the provider writes, BIND serves."""

from __future__ import annotations

import logging

import pytest
from dnsfailover_rfc2136.testing import BindPrimary
from rfc2136_support import MARKER, ZONE, MakeProvider, converge, plan, rs

from dnsfailover.model import Soa, SteeredSet, ZoneContent
from dnsfailover.provider.contract import ProviderError
from dnsfailover.provider.plan import Safety, UnsafePlan
from dnsfailover.provider.sync import ZoneSync

WWW = f"www.{ZONE}"


async def test_create_is_served_with_its_marker(bind: BindPrimary, make: MakeProvider) -> None:
    p = make()
    await p.start()
    serial = bind.serial()
    result = await converge(
        p,
        [
            rs("www", "A", "192.0.2.1", "192.0.2.2"),
            rs("v6", "AAAA", "2001:db8::1"),
            rs("txt", "TXT", '"hello world"'),
            rs("alias", "CNAME", f"www.{ZONE}"),
            rs("mail", "MX", "10 mx.example.net."),
        ],
    )
    assert result.confirmed
    assert result.applied == 5
    assert result.calls == 1  # one UPDATE for everything
    assert bind.answer(WWW) == ("192.0.2.1", "192.0.2.2")
    assert bind.answer(f"v6.{ZONE}", "AAAA") == ("2001:db8::1",)
    assert bind.answer(f"txt.{ZONE}", "TXT") == ('"hello world"',)
    assert bind.answer(f"alias.{ZONE}", "CNAME") == (WWW,)
    assert bind.answer(f"mail.{ZONE}", "MX") == ("10 mx.example.net.",)
    assert bind.answer(f"_dnsfailover-a.{WWW}", "TXT") == (MARKER,)
    assert bind.query(WWW).answer[0].ttl == 60
    assert bind.serial() > serial


async def test_failover_update_then_second_plan_is_empty(
    bind: BindPrimary, make: MakeProvider
) -> None:
    p = make()
    await p.start()
    await converge(p, [rs("www", "A", "192.0.2.1", "192.0.2.2")])
    result = await converge(p, [rs("www", "A", "192.0.2.2", ttl=30)])
    assert result.detail.startswith("1 UPDATE(s)")
    assert bind.answer(WWW) == ("192.0.2.2",)
    assert bind.query(WWW).answer[0].ttl == 30
    again = await plan(p, [rs("www", "A", "192.0.2.2", ttl=30)])
    assert not again, [c.describe() for c in again.changes]
    assert p.calls["axfr"] >= 1


async def test_owned_name_no_longer_desired_is_deleted_with_its_marker(
    bind: BindPrimary, make: MakeProvider
) -> None:
    p = make()
    await p.start()
    await converge(p, [rs("www", "A", "192.0.2.1"), rs("old", "A", "192.0.2.9")])
    # another owner's claim on the same marker stays
    bind.update((f"_dnsfailover-a.old.{ZONE}", 300, "TXT", '"heritage=dnsfailover,owner=b"'))
    p2 = await plan(p, [rs("www", "A", "192.0.2.1")])
    assert [c.describe() for c in p2.changes] == [f"- old.{ZONE} A 192.0.2.9"]
    await p.apply(p2)
    assert bind.answer(f"old.{ZONE}") == ()
    assert bind.answer(f"_dnsfailover-a.old.{ZONE}", "TXT") == ('"heritage=dnsfailover,owner=b"',)
    assert bind.answer(WWW) == ("192.0.2.1",)


async def test_foreign_record_is_reported_and_left_alone(
    bind: BindPrimary, make: MakeProvider
) -> None:
    bind.update((WWW, 300, "A", "198.51.100.7"))
    p = make()
    await p.start()
    desired = [rs("www", "A", "192.0.2.1")]
    populated = await p.populate([(WWW, "A")])
    assert populated.foreign == {(WWW, "A")}
    assert populated.owned == frozenset()
    with pytest.raises(UnsafePlan, match="not owned by dnsfailover"):
        await converge(p, desired)
    assert bind.answer(WWW) == ("198.51.100.7",)
    # adopting takes it over and marks it ours
    await converge(p, desired, adopt=True)
    assert bind.answer(WWW) == ("192.0.2.1",)
    assert (await p.populate([(WWW, "A")])).owned == {(WWW, "A")}


async def test_concurrent_edit_is_detected_and_the_other_edit_kept(
    bind: BindPrimary, make: MakeProvider
) -> None:
    p = make()
    await p.start()
    await converge(p, [rs("www", "A", "192.0.2.1"), rs("api", "A", "192.0.2.5")])
    stale = await plan(p, [rs("www", "A", "192.0.2.2"), rs("api", "A", "192.0.2.6")])
    bind.update((WWW, 60, "A", "203.0.113.9"), deletes=[f"{WWW} A"])  # behind our back
    with pytest.raises(ProviderError) as e:
        await p.apply(stale)
    msg = str(e.value)
    assert f"concurrent edit detected: {WWW} A changed since it was read" in msg
    assert "NXRRSET" in msg
    assert "nothing was applied" in msg
    assert bind.answer(WWW) == ("203.0.113.9",)
    assert bind.answer(f"api.{ZONE}") == ("192.0.2.5",), "same UPDATE: not applied either"


async def test_create_racing_a_concurrent_create_is_detected(
    bind: BindPrimary, make: MakeProvider
) -> None:
    p = make()
    await p.start()
    stale = await plan(p, [rs("www", "A", "192.0.2.2")])
    bind.update((WWW, 60, "A", "203.0.113.9"))
    with pytest.raises(ProviderError, match=r"concurrent edit detected.*YXRRSET"):
        await p.apply(stale)
    assert bind.answer(WWW) == ("203.0.113.9",)


async def test_batches_say_which_were_applied(bind: BindPrimary, make: MakeProvider) -> None:
    p = make(max_batch_records=8)  # three records per create: two names per UPDATE
    await p.start()
    names = [f"n{i}" for i in range(6)]
    stale = await plan(p, [rs(n, "A", "192.0.2.1") for n in names])
    bind.update((f"n4.{ZONE}", 60, "A", "203.0.113.9"))
    with pytest.raises(ProviderError) as e:
        await p.apply(stale)
    assert "batch 3/3" in str(e.value)
    assert "batches 1-2 stayed applied, each one whole; batch 3 not applied" in str(e.value)
    assert [bind.answer(f"{n}.{ZONE}") for n in names[:4]] == [("192.0.2.1",)] * 4
    assert bind.answer(f"n5.{ZONE}") == ()


async def test_wrong_secret_is_a_clear_error_without_the_secret(
    bind: BindPrimary, make: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQtaXM="
    env = "RFC2136_TEST_WRONG_SECRET"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(env, wrong)
        p = make(secret_file=None, secret_env=env)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(ProviderError) as e:
            await p.start()
    msg = str(e.value)
    assert "BADSIG" in msg
    assert f"wrong secret for key {bind.key.name}" in msg
    assert wrong not in msg
    assert bind.key.secret not in msg
    assert wrong not in caplog.text
    assert bind.key.secret not in caplog.text


async def test_unknown_key_is_badkey(bind: BindPrimary, make: MakeProvider) -> None:
    p = make(key_name="nobody-knows-me")
    with pytest.raises(
        ProviderError, match=r"start: .*BADKEY: the primary does not accept key nobody-knows-me"
    ):
        await p.start()
    assert bind.key.secret not in str(p.opts)


async def test_key_not_allowed_to_update_is_refused_and_reads_per_name(
    bind: BindPrimary, make: MakeProvider
) -> None:
    other = bind.directory / "other.key"
    other.write_text(bind.other_key.block())
    p = make(key_name=bind.other_key.name, secret_file=str(other))
    await p.start()
    bind.update((WWW, 300, "A", "198.51.100.7"))
    populated = await p.populate([(WWW, "A")])  # AXFR refused: asks per name
    assert p.calls["axfr"] == 1
    assert p.calls["query"] >= 2
    assert populated.foreign == {(WWW, "A")}
    with pytest.raises(ProviderError) as e:
        await converge(p, [rs("api", "A", "192.0.2.1")])
    assert "batch 1/1 rejected: REFUSED" in str(e.value)
    assert "nothing was applied" in str(e.value)
    assert bind.answer(f"api.{ZONE}") == ()


async def test_cname_at_a_managed_name_is_foreign(bind: BindPrimary, make: MakeProvider) -> None:
    bind.update((WWW, 300, "CNAME", f"elsewhere.{ZONE}"))
    p = make()
    await p.start()
    populated = await p.populate([(WWW, "A")])
    assert populated.foreign == {(WWW, "A")}
    p2 = await plan(p, [rs("www", "A", "192.0.2.1")])
    with pytest.raises(
        ProviderError, match=rf"refused, nothing sent: 1 problem\(s\): {WWW} is a CNAME"
    ):
        await p.apply(p2)


async def test_a_steered_name_publishes_its_default_group_only(
    bind: BindPrimary, make: MakeProvider
) -> None:
    """An RFC 2136 primary has no location records: a steered name's default group's answer
    (the zone's plain set, as zone transfers carry it) is published, the other groups not."""
    default = rs("www", "A", "198.51.100.10")
    europe = rs("www", "A", "192.0.2.10", "192.0.2.11")
    steered = SteeredSet(
        WWW,
        "A",
        "us,eu",
        {"eu,us": europe, "us,eu": default},
        {"eu,us": ("country:DE", "continent:EU"), "us,eu": ("*",)},
    )
    soa = Soa(f"ns1.{ZONE}", f"hostmaster.{ZONE}", 1, 3600, 600, 86400, 60, 60)
    content = ZoneContent(ZONE, soa, managed={(WWW, "A"): default}, steered={(WWW, "A"): steered})
    p = make()
    assert not p.GEO_PLACES
    sync = ZoneSync(p, Safety())
    applied = await sync.converge(content.records, content.steered)
    assert [c.describe() for c in applied.changes] == [f"+ {WWW} A 198.51.100.10"]
    assert bind.answer(WWW) == ("198.51.100.10",)
    assert bind.answer(f"_dnsfailover-a.{WWW}", "TXT") == (MARKER,)
    assert not await sync.plan(content.records, content.steered)
