"""Test support: real Knot DNS and PowerDNS primaries in a temporary directory, beside BIND's
(`testing.start_bind_primary`); not used by the provider.

Each starts in the foreground on a free port of 127.0.0.1, as whoever runs the tests (no root
needed), takes UPDATEs signed with `key`, and knows `other_key` without letting it update.
They need Debian/Ubuntu's `knot` (`knotd`) and `pdns-server` + `pdns-backend-sqlite3`.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from dnsfailover_rfc2136.testing import (
    RunningPrimary,
    TsigKey,
    free_port,
    new_key,
    spawn,
    zone_lines,
)

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
PDNS_SERVER = shutil.which("pdns_server") or "/usr/sbin/pdns_server"
PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


class KnotPrimary(RunningPrimary):
    """A running `knotd`, primary for `zone`."""


class PowerDnsPrimary(RunningPrimary):
    """A running `pdns_server` with the gsqlite3 backend, primary for `zone`."""


def _keys(d: Path, key_name: str, algorithm: str) -> tuple[TsigKey, TsigKey, Path]:
    key, other = new_key(key_name, algorithm), new_key("other-" + key_name)
    key_file = d / "dnsfailover.key"
    key_file.write_text(key.block())
    return key, other, key_file


def _knot_conf(d: Path, zone: str, port: int, key: TsigKey, other: TsigKey, actions: str) -> str:
    bare = zone.rstrip(".")
    keys = "".join(
        f"  - id: {k.name}\n    algorithm: {k.algorithm}\n    secret: {k.secret}\n"
        for k in (key, other)
    )
    return f"""\
server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    udp-workers: 1
    tcp-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "{d}"
key:
{keys}acl:
  - id: ours
    key: {key.name}
    action: [{actions}]
  - id: other
    key: {other.name}
    action: [notify]
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: {bare}
    acl: [ours, other]
"""


def start_knot_primary(
    directory: Path,
    zone: str,
    *,
    key_name: str = "dnsfailover-test",
    algorithm: str = "hmac-sha256",
    records: Iterable[str] = (),
    transfer: bool = True,
    timeout: float = 10.0,
) -> KnotPrimary:
    """Start Knot as primary for `zone`; its ACL lets `key` update, and transfer unless
    `transfer` is False (least privilege: update only).  The caller must `stop()` it."""
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    key, other, key_file = _keys(d, key_name, algorithm)
    bare = zone.rstrip(".")
    (d / f"{bare}.zone").write_text("\n".join(zone_lines(zone, records)) + "\n")
    port = free_port()
    actions = "update, transfer" if transfer else "update"
    (d / "knot.conf").write_text(_knot_conf(d, zone, port, key, other, actions))
    log = d / "knotd.log"
    proc, log_file = spawn([KNOTD, "-c", str(d / "knot.conf")], d, log)
    primary = KnotPrimary(zone, port, key, other, d, proc, key_file, log, log_file)
    primary.wait_ready("knotd", timeout)
    return primary


def _pdns_database(
    path: Path, zone: str, records: Iterable[str], key: TsigKey, other: TsigKey
) -> None:
    """The gsqlite3 schema, the zone with its SOA and NS, both keys, and the metadata that lets
    `key` update and transfer the zone (pdnsutil would write the same rows)."""
    bare = zone.rstrip(".")
    db = sqlite3.connect(path)
    try:
        db.executescript(PDNS_SCHEMA.read_text())
        db.execute("INSERT INTO domains (id, name, type) VALUES (1, ?, 'NATIVE')", (bare,))
        rows = [
            (bare, "SOA", f"localhost. hostmaster.{zone} 1 3600 600 604800 30", 300),
            (bare, "NS", "localhost.", 300),
        ]
        for line in records:
            name, ttl, _cls, rtype, value = line.split(None, 4)
            fqdn = name.rstrip(".") if name.endswith(".") else f"{name}.{bare}"
            rows.append((fqdn.lower(), rtype.upper(), value, int(ttl)))
        db.executemany(
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (1, ?, ?, ?, ?, 0, 0, 1)",
            rows,
        )
        db.executemany(
            "INSERT INTO tsigkeys (name, algorithm, secret) VALUES (?, ?, ?)",
            [(k.name, k.algorithm, k.secret) for k in (key, other)],
        )
        db.executemany(
            "INSERT INTO domainmetadata (domain_id, kind, content) VALUES (1, ?, ?)",
            [("TSIG-ALLOW-DNSUPDATE", key.name), ("TSIG-ALLOW-AXFR", key.name)],
        )
        db.commit()
    finally:
        db.close()


def start_pdns_primary(
    directory: Path,
    zone: str,
    *,
    key_name: str = "dnsfailover-test",
    algorithm: str = "hmac-sha256",
    records: Iterable[str] = (),
    dnsupdate: bool = True,
    timeout: float = 15.0,
) -> PowerDnsPrimary:
    """Start PowerDNS (gsqlite3) as primary for `zone`; `records` are zone-file lines of the
    form `NAME TTL IN TYPE VALUE`.  Without `dnsupdate`, updates are refused (its default).
    The caller must `stop()` it."""
    d = directory.resolve()
    d.mkdir(parents=True, exist_ok=True)
    key, other, key_file = _keys(d, key_name, algorithm)
    _pdns_database(d / "pdns.sqlite3", zone, records, key, other)
    port = free_port()
    settings = {
        "launch": "gsqlite3",
        "gsqlite3-database": str(d / "pdns.sqlite3"),
        "local-address": "127.0.0.1",
        "local-port": str(port),
        "dnsupdate": "yes" if dnsupdate else "no",
        "allow-dnsupdate-from": "127.0.0.0/8",
        "allow-axfr-ips": "127.0.0.0/8",
        "socket-dir": str(d),
        "guardian": "no",
        "daemon": "no",
        "disable-syslog": "yes",
        "write-pid": "no",
        "security-poll-suffix": "",  # never asks the Internet about its version
        "loglevel": "6",
    }
    (d / "pdns.conf").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    log = d / "pdns.log"
    proc, log_file = spawn([PDNS_SERVER, f"--config-dir={d}"], d, log)
    primary = PowerDnsPrimary(zone, port, key, other, d, proc, key_file, log, log_file)
    primary.wait_ready("pdns_server", timeout)
    return primary
