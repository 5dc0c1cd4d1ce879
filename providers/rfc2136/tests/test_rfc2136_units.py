"""Options, secrets, UPDATE building and retries, without BIND."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pydantic
import pytest
from dnsfailover_rfc2136.options import Rfc2136Options, read_secret
from dnsfailover_rfc2136.testing import free_port, new_key
from dnsfailover_rfc2136.updates import groups, message, split
from rfc2136_support import FAST, MARKER, ZONE, rs

from dnsfailover.provider.contract import ProviderError, create_provider
from dnsfailover.provider.ownership import managed_key, marker_name, marker_owners
from dnsfailover.provider.plan import Change, Plan

KEY = new_key("k")
SECRET = KEY.secret


def opts(**extra: Any) -> Rfc2136Options:
    base: dict[str, Any] = {"server": "127.0.0.1", "key_name": "k", "secret_env": "RFC_SECRET"}
    return Rfc2136Options.model_validate(base | extra)


def test_options_defaults_and_key_name() -> None:
    o = opts(key_name="Update-Key")
    assert (o.port, o.algorithm, o.tcp, o.owner_id) == (53, "hmac-sha256", True, "dnsfailover")
    assert o.key_name == "update-key."
    assert opts(deadline="2m", confirm_timeout="500ms").deadline == 120


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"secret": SECRET}, "Extra inputs are not permitted"),
        ({"secret_file": "/x"}, "exactly one of secret_file and secret_env"),
        ({"secret_env": None}, "exactly one of secret_file and secret_env"),
        ({"algorithm": "hmac-md5"}, "algorithm"),
        ({"server": "primary.example."}, "server"),
    ],
)
def test_bad_options(extra: dict[str, Any], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match) as e:
        opts(**extra)
    assert SECRET not in str(e.value) or "secret" in extra


def test_secret_from_env_bare_file_and_key_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFC_SECRET", SECRET)
    raw = read_secret(opts())
    bare = tmp_path / "bare"
    bare.write_text(SECRET + "\n")
    block = tmp_path / "block"
    block.write_text(f'key "k" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    assert read_secret(opts(secret_env=None, secret_file=str(bare))) == raw
    assert read_secret(opts(secret_env=None, secret_file=str(block))) == raw


def test_secret_errors_never_show_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "not*base64*" + SECRET
    monkeypatch.setenv("RFC_SECRET", bad)
    with pytest.raises(ProviderError, match="secret_env RFC_SECRET: the secret is not valid") as e:
        read_secret(opts())
    assert SECRET not in str(e.value)
    assert e.value.__cause__ is None
    monkeypatch.delenv("RFC_SECRET")
    with pytest.raises(ProviderError, match="RFC_SECRET: the variable is not set"):
        read_secret(opts())
    with pytest.raises(ProviderError, match="cannot read it: FileNotFoundError"):
        read_secret(opts(secret_env=None, secret_file=str(tmp_path / "missing")))


def test_markers() -> None:
    assert marker_name((f"www.{ZONE}", "AAAA")) == f"_dnsfailover-aaaa.www.{ZONE}"
    assert managed_key(f"_dnsfailover-a.www.{ZONE}") == (f"www.{ZONE}", "A")
    assert managed_key(f"www.{ZONE}") is None
    assert marker_owners([MARKER, '"heritage=dnsfailover,owner=b"', '"x"']) == {"dnsfailover", "b"}


def test_update_message_has_prerequisites_then_deletes_then_adds() -> None:
    plan = Plan(
        ZONE,
        (
            Change("create", None, rs("www", "CNAME", "web.example.net.")),
            Change("delete", rs("www", "A", "192.0.2.1"), None),
            Change("update", rs("api", "A", "192.0.2.5"), rs("api", "A", "192.0.2.6", ttl=30)),
        ),
        2,
    )
    key = new_key("k").keyring()
    (tsig_key,) = key.values()
    msg = message(ZONE, plan.changes, "dnsfailover", tsig_key)
    prereq = [r.to_text() for r in msg.prerequisite]
    assert prereq == [
        f"www.{ZONE} NONE CNAME",
        f"www.{ZONE} 0 IN A 192.0.2.1",
        f"api.{ZONE} 0 IN A 192.0.2.5",
    ]
    update = [r.to_text() for r in msg.update]
    assert update == [
        f"www.{ZONE} ANY A",
        f"_dnsfailover-a.www.{ZONE} 0 NONE TXT {MARKER}",
        f"api.{ZONE} ANY A",
        f"www.{ZONE} 60 IN CNAME web.example.net.",
        f"_dnsfailover-cname.www.{ZONE} 300 IN TXT {MARKER}",
        f"api.{ZONE} 30 IN A 192.0.2.6",
        f"_dnsfailover-a.api.{ZONE} 300 IN TXT {MARKER}",
    ]
    assert msg.keyname == tsig_key.name  # signed when sent


def test_split_never_splits_a_name() -> None:
    changes = tuple(Change("create", None, rs(f"n{i}", "A", "192.0.2.1")) for i in range(5))
    changes += (Change("create", None, rs("n4", "AAAA", "2001:db8::1")),)
    batches = split(groups(Plan(ZONE, changes, 0)), 8)  # three records per create
    assert [len(b) for b in batches] == [2, 2, 2]
    assert {c.key[0] for c in batches[2]} == {f"n4.{ZONE}"}


@pytest.fixture
def servfail_server() -> Iterator[int]:
    """A TCP DNS server that answers SERVFAIL to everything."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                size = int.from_bytes(conn.recv(2), "big")
                query = dns.message.from_wire(conn.recv(size), keyring=KEY.keyring())
                reply = dns.message.make_response(query)
                reply.set_rcode(dns.rcode.SERVFAIL)
                wire = reply.to_wire()
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield int(sock.getsockname()[1])
    stop.set()
    t.join(timeout=5)
    sock.close()


@pytest.mark.parametrize("scenario", ["nothing listens", "servfail"])
async def test_transient_errors_are_retried_until_the_deadline(
    scenario: str, servfail_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFC_SECRET", SECRET)
    port = free_port() if scenario == "nothing listens" else servfail_server
    p = create_provider(
        "rfc2136",
        ZONE,
        {
            "server": "127.0.0.1",
            "port": port,
            "key_name": "k",
            "secret_env": "RFC_SECRET",
            **FAST,
            "deadline": 0.3,
        },
    )
    with pytest.raises(ProviderError, match=r"start: 127\.0\.0\.1:\d+: query: gave up after") as e:
        await p.start()
    assert ("SERVFAIL" in str(e.value)) == (scenario == "servfail")
    assert SECRET not in str(e.value)
