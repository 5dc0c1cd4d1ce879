"""Key timing metadata as BIND keeps it, read back by BIND: the times `rollover.ensure`
writes on a node's ticks are the ones `dnssec-settime` reads; keys `dnssec-keygen -P/-A/-I/-D`
and `dnssec-keygen -S` make are published and sign as their files say."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.name
import pytest
from dnssec_support import ORIGIN, tool

from dnsfailover.dnssec import keys, rollover
from dnsfailover.dnssec.keys import KeySet, SigningKey
from dnsfailover.dnssec.rollover import Policy

DAY = 86400.0
HOUR = 3600.0
T0 = 1_900_000_000.0
ZONE = dns.name.from_text(ORIGIN)


def _settime(key: SigningKey) -> dict[str, str]:
    assert key.files is not None
    done = subprocess.run(
        [tool("dnssec-settime"), "-u", "-p", "all", str(key.files[0])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_the_walk_on_files_is_what_bind_reads(tmp_path: Path) -> None:
    """`rollover.ensure` on a node's ticks: the files it writes say, to BIND's
    `dnssec-settime`, the times the plan chose; `keys` reads back the same."""
    directory = tmp_path / "state.db.keys" / "example.test"
    policy = Policy(10 * DAY, HOUR, 7 * DAY)
    now = T0
    for _ in range(4 * 25):
        keyset = rollover.ensure(directory, ORIGIN, 13, "ksk+zsk", now, policy, HOUR, DAY)
        now += 6 * HOUR
    zsks = [k for k in keyset.keys if k.role == "zsk"]
    assert len(zsks) == 3  # day 0, ~10, ~20
    assert len(list(directory.glob("*.private"))) == 4
    for key in keyset.keys:
        bind = _settime(key)
        names = {"publish": "Publish", "activate": "Activate", "inactive": "Inactive",
                 "delete": "Delete"}  # fmt: skip
        for ours, theirs in names.items():
            value = getattr(key.timing, ours)
            assert bind[theirs] == ("UNSET" if value is None else str(int(value))), (ours, key)
        assert keys.read(key.files[0]).timing == key.timing  # type: ignore[index]


def test_bind_keys_with_times_are_read_and_obeyed(tmp_path: Path) -> None:
    """`dnssec-keygen -P/-A/-I/-D` and `dnssec-settime` set the times; we keep to them."""
    done = subprocess.run(
        [tool("dnssec-keygen"), "-q", "-a", "ECDSAP256SHA256", "-K", str(tmp_path),
         "-P", "20300101000000", "-A", "20300102000000", "-I", "20300201000000",
         "-D", "20300301000000", ORIGIN],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    zsk = keys.read(tmp_path / f"{done.stdout.strip()}.key")
    jan1 = 1893456000.0  # 2030-01-01 00:00:00 UTC
    assert zsk.timing.publish == jan1
    assert zsk.timing.activate == jan1 + DAY
    assert zsk.timing.inactive == jan1 + 31 * DAY
    assert zsk.timing.delete == jan1 + 59 * DAY
    alone = KeySet(ZONE, (zsk,))
    assert rollover.state(alone, jan1 - 1).published == ()
    assert rollover.state(alone, jan1).published == (zsk,)
    assert rollover.state(alone, jan1).zsks == ()
    assert rollover.state(alone, jan1 + DAY).zsks == (zsk,)
    assert rollover.state(alone, jan1 + 31 * DAY).zsks == ()
    assert rollover.state(alone, jan1 + 59 * DAY).published == ()
    assert rollover.next_event(alone, jan1) == jan1 + DAY
    assert rollover.next_event(alone, jan1 + 59 * DAY) is None
    # dnssec-settime changes them; the .private is what BIND and we read
    assert zsk.files is not None
    settime = [tool("dnssec-settime"), "-K", str(tmp_path), "-I", "none", "-D", "none"]
    done = subprocess.run([*settime, str(zsk.files[0])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    again = keys.read(zsk.files[0])
    assert (again.timing.inactive, again.timing.delete) == (None, None)
    assert again.timing.activate == jan1 + DAY
    text = zsk.files[1].read_text().replace("Activate: 20300102000000", "Activate: 2030-01-02")
    zsk.files[1].write_text(text)
    with pytest.raises(keys.KeyFileError, match=r"Activate is not a time as BIND writes it"):
        keys.read(zsk.files[0])


def test_a_successor_made_by_dnssec_keygen_is_followed(tmp_path: Path) -> None:
    """key_files roll by BIND's tools: `dnssec-keygen -S` makes a successor (its times and
    the Predecessor/Successor links in the files); we publish and sign as they say."""

    def bind(*args: str) -> str:
        done = subprocess.run([*args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    keygen = [tool("dnssec-keygen"), "-q", "-a", "ECDSAP256SHA256", "-f", "KSK"]
    old = bind(*keygen, "-P", "now-30d", "-A", "now-30d", "-I", "now+2d", "-D", "now+4d", ORIGIN)
    new = bind(tool("dnssec-keygen"), "-q", "-S", f"{old}.key", "-i", "1d")
    found = keys.load([tmp_path / old, tmp_path / new], ORIGIN, 13, "csk")
    first, second = found.keys
    assert second.timing.predecessor == first.tag
    assert first.timing.successor == second.tag
    assert rollover.state(found, time.time()).published == (first,)
    assert second.timing.publish is not None
    now = rollover.state(found, second.timing.publish)
    assert now.published == (first, second)  # pre-published a day before the old one ends
    assert now.ksks == (first,)
    roll = rollover.ksk_roll(found, second.timing.publish)
    assert roll == rollover.KskRoll(first, second, completed=True)
    assert second.timing.activate is not None
    later = rollover.state(found, second.timing.activate)
    assert later.ksks == later.zsks == (second,)
