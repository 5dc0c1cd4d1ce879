"""Test support: a real BIND 9 primary in a temporary directory (not used by the provider);
Knot and PowerDNS primaries are in `testing_primaries`.

`start_bind_primary(directory, zone)` writes a named.conf, a zone file and TSIG keys, starts
`named -4 -g` on a free port of 127.0.0.1, and returns once it answers the zone's SOA.  The
provider's own tests and the core's conformance suite use it; it needs `named` (Debian/Ubuntu
package `bind9`).
"""

from __future__ import annotations

import base64
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

NAMED = shutil.which("named") or "/usr/sbin/named"


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str
    secret: str  # base64
    algorithm: str = "hmac-sha256"

    def block(self) -> str:
        return f'key "{self.name}" {{ algorithm {self.algorithm}; secret "{self.secret}"; }};\n'

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        name = dns.name.from_text(self.name)
        return {name: dns.tsig.Key(name, self.secret, self.algorithm)}


def new_key(name: str, algorithm: str = "hmac-sha256") -> TsigKey:
    """A fresh random key, as `tsig-keygen -a ALGORITHM NAME` would make."""
    size = 64 if algorithm == "hmac-sha512" else 32
    return TsigKey(name, base64.b64encode(secrets.token_bytes(size)).decode(), algorithm)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


@dataclass
class RunningPrimary:
    """A primary server process for `zone` on 127.0.0.1:`port`, which takes updates signed
    with `key` (whose block, as `tsig-keygen` prints it, is in `key_file`)."""

    zone: str
    port: int
    key: TsigKey
    other_key: TsigKey
    directory: Path
    proc: subprocess.Popen[bytes]
    key_file: Path
    log: Path
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    def query(self, name: str, rtype: str = "A") -> dns.message.Message:
        q = dns.message.make_query(name, rtype)
        return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=2)

    def answer(self, name: str, rtype: str = "A") -> tuple[str, ...]:
        """The values the server serves for `name` `rtype` (sorted; empty when none)."""
        r = self.query(name, rtype)
        want = dns.rdatatype.from_text(rtype)
        qname = dns.name.from_text(name)
        return tuple(
            sorted(
                rd.to_text()
                for rrset in r.answer
                if rrset.rdtype == want and rrset.name == qname
                for rd in rrset
            )
        )

    def serial(self) -> int:
        r = self.query(self.zone, "SOA")
        return int(r.answer[0][0].serial)

    def update(self, *adds: tuple[str, int, str, str], deletes: Iterable[str] = ()) -> None:
        """Edit the zone behind the provider's back: delete `NAME TYPE` RRsets, then add
        `(name, ttl, type, value)` records; signed with `key`."""
        u = dns.update.UpdateMessage(self.zone, keyring=self.key.keyring())
        for spec in deletes:
            name, rtype = spec.split()
            u.delete(name, rtype)
        for name, ttl, rtype, value in adds:
            u.add(name, ttl, rtype, value)
        r = dns.query.tcp(u, "127.0.0.1", port=self.port, timeout=2)
        if r.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"update failed: {dns.rcode.to_text(r.rcode())}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()

    def wait_ready(self, name: str, timeout: float) -> None:
        """Return once the server answers the zone's SOA; else stop it and raise."""
        started = time.monotonic()
        while True:
            try:
                if self.query(self.zone, "SOA").rcode() == dns.rcode.NOERROR:
                    return
            except (OSError, EOFError, dns.exception.DNSException):
                pass
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)


class BindPrimary(RunningPrimary):
    """A running `named`, primary for `zone`, which takes updates and transfers signed with
    `key`.  `other_key` is known to the server but may neither update nor transfer."""


def zone_lines(zone: str, records: Iterable[str]) -> list[str]:
    return [
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.{zone} 1 3600 600 604800 30",
        "@ IN NS localhost.",  # out of the zone: no in-zone name is taken
        *records,
    ]


def spawn(argv: list[str], d: Path, log: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log_file = log.open("wb")
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=d)
    return proc, log_file


def _named_conf(d: Path, zone: str, port: int, key: TsigKey) -> str:
    bare = zone.rstrip(".")
    return f"""\
include "{d}/keys.conf";
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{bare}" {{
    type primary;
    file "{d}/{bare}.zone";
    allow-update {{ key "{key.name}"; }};
    allow-transfer {{ key "{key.name}"; }};
}};
"""


def start_bind_primary(
    directory: Path,
    zone: str,
    *,
    key_name: str = "dnsfailover-test",
    algorithm: str = "hmac-sha256",
    records: Iterable[str] = (),
    timeout: float = 10.0,
) -> BindPrimary:
    """Start BIND as primary for `zone` in `directory`; `records` are extra zone-file lines.

    The caller must `stop()` it.  `key_file` holds the key block as `tsig-keygen` prints it.
    """
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    key, other = new_key(key_name, algorithm), new_key("other-" + key_name)
    key_file = d / "dnsfailover.key"
    key_file.write_text(key.block())
    (d / "keys.conf").write_text(key.block() + other.block())
    bare = zone.rstrip(".")
    (d / f"{bare}.zone").write_text("\n".join(zone_lines(zone, records)) + "\n")
    port = free_port()
    (d / "named.conf").write_text(_named_conf(d, zone, port, key))
    log = d / "named.log"
    proc, log_file = spawn([NAMED, "-4", "-g", "-c", str(d / "named.conf")], d, log)
    primary = BindPrimary(zone, port, key, other, d, proc, key_file, log, log_file)
    primary.wait_ready("named", timeout)
    return primary
