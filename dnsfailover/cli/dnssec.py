"""`dnsfailover dnssec ds|keys|rollover CONFIG ZONE`: a signed zone's keys, the DS records
its parent publishes, and the KSK/CSK rollover an operator starts and completes.

The keys are the ones the node signs with: `key_files:` when the zone lists them, else
those generated into the state directory beside `--state` (`<state>.keys/<zone>/`, made on
first need here as by the node, in BIND's format).  Only public data is printed: DS
records on stdout (so `> ds.txt` keeps them), what was generated and where on stderr.

Exit codes: 0 done; 1 a key cannot be read or made; 2 a bad config, an unknown zone, a
zone without `dnssec:`, or a rollover step refused as unsafe (the message says why).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dnsfailover.cli.args import EXIT_OK, EXIT_USAGE, config_argument

if TYPE_CHECKING:
    from dnsfailover.config.dnssec import DnssecConfig
    from dnsfailover.config.schema import ZoneConfig
    from dnsfailover.dnssec.keys import KeySet, SigningKey


def _section(args: argparse.Namespace) -> tuple[str, ZoneConfig, DnssecConfig] | None:
    """The zone's origin, config and `dnssec:` section, or None after printing why not."""
    from dnsfailover.config.load import load
    from dnsfailover.fields import absolute_name

    config = load(args.config)
    origin = absolute_name(args.zone, ".")
    zone = config.zones.get(origin)
    if zone is None:
        print(
            f"error: {origin} is not a zone of {args.config} ({', '.join(config.zones)})",
            file=sys.stderr,
        )
        return None
    if zone.dnssec is None:
        print(f"error: zone {origin} has no dnssec: section (docs/dnssec.md)", file=sys.stderr)
        return None
    return origin, zone, zone.dnssec


def _keyset(args: argparse.Namespace) -> tuple[DnssecConfig, KeySet] | None:
    """The zone's `dnssec:` section and keys (generated into the state directory when
    missing), or None after printing why there are none."""
    from dnsfailover.dnssec import keys

    found = _section(args)
    if found is None:
        return None
    origin, _zone, section = found
    if section.key_paths:
        return section, keys.load(section.key_paths, origin, section.algorithm, section.keys)
    directory = keys.keys_directory(args.state, origin)
    lead = section.dnskey_ttl + section.propagation_delay
    made = keys.ensure(directory, origin, section.algorithm, section.keys, lead=lead)
    for key in made.keys:
        files = key.files
        if files is not None and files[0] in made.generated:
            print(
                f"dnssec: generated {key.role.upper()} {key.tag} "
                f"({keys.ALGORITHMS[key.algorithm]}) for {origin}: {files[0]}, {files[1]}",
                file=sys.stderr,
            )
    return section, made


def _ds_line(key: SigningKey) -> str:
    ds = key.ds()
    digest = ds.digest.hex().upper()
    return f"{key.zone} IN DS {ds.key_tag} {ds.algorithm} {ds.digest_type} {digest}"


def cmd_ds(args: argparse.Namespace) -> int:
    loaded = _keyset(args)
    if loaded is None:
        return EXIT_USAGE
    _, found = loaded
    now = time.time()
    for key in found.ksks:  # the DS set the parent should hold: not the retired keys'
        if key.timing.inactive is None and (key.timing.delete is None or now < key.timing.delete):
            print(_ds_line(key))
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from dnsfailover.dnssec import rollover, status
    from dnsfailover.dnssec.keys import ALGORITHMS

    loaded = _keyset(args)
    if loaded is None:
        return EXIT_USAGE
    section, found = loaded
    now = time.time()
    print(f"{'TAG':>5}  {'ALGORITHM':<19} {'ROLE':<4} {'FLAGS':>5}  {'STATE':<9} CDS  FILES")
    for key in found.keys:
        algorithm = f"{key.algorithm} {ALGORITHMS[key.algorithm]}"
        files = ", ".join(str(f) for f in key.files) if key.files else "-"
        cds = "yes" if key in rollover.state(found, now, section.cds).cds else "no"
        print(
            f"{key.tag:>5}  {algorithm:<19} {key.role:<4} {key.flags:>5}  "
            f"{status.key_state(key, now):<9} {cds:<4} {files}"
        )
        t = key.timing
        print(
            f"{'':>7}published {rollover.when(t.publish)}, active {rollover.when(t.activate)}, "
            f"inactive {rollover.when(t.inactive)}, removed {rollover.when(t.delete)}"
        )
    lines = status.rollovers(
        found, now, section.zsk_rollover, section.dnskey_ttl, section.propagation_delay
    )
    for line in lines:
        print(line)
    return EXIT_OK


def _max_ttl(zone: ZoneConfig, origin: str, section: DnssecConfig) -> int:
    """The largest TTL the zone serves: its records', the SOA's, the DNSKEY's."""
    ttls = [section.dnskey_ttl, zone.ns_ttl, *(r.ttl for r in zone.static_records(origin))]
    if zone.soa is not None:
        ttls += [zone.soa.ttl, zone.soa.minimum]
    for record in zone.failover.values():
        ttls += [record.ttl, record.degraded_ttl or 0]
    return max(ttls)


def _parent(text: str) -> tuple[str, int]:
    """`--parent`'s HOST[:PORT] (an address; port 53 when left out)."""
    import ipaddress

    from dnsfailover.cli.args import parse_hostport

    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare)), 53
    except ValueError:
        pass
    return parse_hostport(text if text.rpartition(":")[2].isdigit() else f"{text}:53")


def _parent_ds(origin: str, key: SigningKey, server: tuple[str, int]) -> tuple[bool, int, str]:
    """Whether `server` (a server of the parent zone) serves the DS of `key`: (found, the
    DS RRset's TTL, what it serves, for the message).

    :raises OSError, dns.exception.DNSException: it cannot be asked.
    """
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(origin, dns.rdatatype.DS)
    query.flags &= ~0x0100  # no recursion: the parent's own data
    reply = dns.query.udp(query, server[0], port=server[1], timeout=5)
    if reply.flags & 0x0200:  # truncated
        reply = dns.query.tcp(query, server[0], port=server[1], timeout=5)
    found = [r for r in reply.answer if r.rdtype == dns.rdatatype.DS]
    served = sorted({int(ds.key_tag) for rrset in found for ds in rrset})
    for rrset in found:
        for ds in rrset:
            digest = {1: "SHA1", 2: "SHA256", 4: "SHA384"}.get(int(ds.digest_type))
            if digest and ds == key.ds(digest):
                return True, int(rrset.ttl), ", ".join(map(str, served))
    return False, 0, ", ".join(map(str, served)) or "none"


def cmd_rollover(args: argparse.Namespace) -> int:
    import dns.exception

    from dnsfailover.dnssec import keys, rollover

    found = _section(args)
    if found is None:
        return EXIT_USAGE
    origin, zone, section = found
    role = "csk" if section.keys == "csk" else "ksk"
    asked = "csk" if args.csk else "ksk" if args.ksk else role
    if asked != role:
        print(
            f"error: {origin} has keys: {section.keys}: its {role.upper()} rolls "
            f"(--{role}), not a {asked.upper()}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if section.key_files:
        print(
            f"error: {origin}'s keys are key_files: roll them with BIND's tools (dnssec-keygen "
            "-S KEY makes the successor, dnssec-settime sets the old key's times), then list "
            "the new files in key_files on every node (docs/dnssec.md#rollovers)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    directory = keys.keys_directory(args.state, origin)
    if not directory.is_dir() or not keys.scan(directory, origin):
        print(
            f"error: {origin} has no keys in {directory} yet: nothing to roll "
            f"(`dnsfailover dnssec ds` or the node makes them)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    now = time.time()
    try:
        if not args.complete:
            new = rollover.start_ksk(directory, origin, section.algorithm, section.keys, now)
            ready = (new.timing.publish or now) + section.dnskey_ttl + section.propagation_delay
            print(_ds_line(new))
            files = ", ".join(str(f) for f in new.files or ())
            print(
                f"dnssec: new {role.upper()} {new.tag} for {origin} is published beside the "
                f"old one, with its CDS and CDNSKEY ({files}). Add its DS (above) at the "
                "parent, keeping the old DS until the rollover completes; once the parent "
                f"serves it, and not before {rollover.when(ready)}, run: dnsfailover dnssec "
                f"rollover {args.config} {origin} --complete --parent PARENT-SERVER",
                file=sys.stderr,
            )
            return EXIT_OK
        keyset = keys.ensure(directory, origin, section.algorithm, section.keys, now)
        roll = rollover.ksk_roll(keyset, now)
        ds_ttl = section.parent_ds_ttl
        max_ttl = _max_ttl(zone, origin, section)
        # what the keys allow first (refusals that need no parent), then the parent
        rollover.plan_ksk_complete(
            keyset, now, section.rollover, section.dnskey_ttl, max_ttl, ds_ttl
        )
        if roll is not None and not roll.completed:
            if args.parent is None and not args.force:
                print(
                    f"error: is the DS of {roll.new.tag} at the parent? Give --parent "
                    "HOST[:PORT] (a server of the parent zone) to check it, or --force once "
                    f"you have seen it there (dig +norec @PARENT-SERVER {origin} DS)",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            if args.parent is not None:
                served, ds_ttl, tags = _parent_ds(origin, roll.new, args.parent)
                if not served:
                    print(
                        f"error: the parent's server {args.parent[0]} port {args.parent[1]} "
                        f"does not serve the DS of key {roll.new.tag} for {origin} (it serves: "
                        f"{tags}): add it there, wait until it is published, and run this again",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
        after = rollover.complete_ksk(
            directory, origin, section.algorithm, section.keys, now, section.rollover,
            section.dnskey_ttl, max_ttl, ds_ttl,
        )  # fmt: skip
    except rollover.RolloverError as e:
        print(f"error: {origin}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, EOFError, ValueError, dns.exception.DNSException) as e:
        host, port = args.parent
        print(
            f"error: cannot ask the parent's server {host} port {port} for the DS: "
            f"{e or type(e).__name__}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    done = rollover.ksk_roll(after, now)
    assert done is not None
    old = done.old.timing
    print(_ds_line(done.new))
    print(
        f"dnssec: {origin}: key {done.old.tag}'s CDS and CDNSKEY are withdrawn; it signs until "
        f"{rollover.when(old.inactive)} and is removed at {rollover.when(old.delete)}; "
        f"{done.new.tag} (DS above) signs on. The parent may drop the old DS now.",
        file=sys.stderr,
    )
    return EXIT_OK


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    default_state: str,
) -> None:
    """Add `dnssec ds` and `dnssec keys` to the `dnsfailover` parser."""
    about = "a signed zone's keys and the DS records for its parent (docs/dnssec.md)"
    group = subparsers.add_parser("dnssec", help=about, description=about, parents=list(parents))
    actions = group.add_subparsers(dest="dnssec_command", required=True, metavar="ACTION")
    for name, func, what in (
        ("ds", cmd_ds, "print the DS records (SHA-256) of the zone's KSK or CSK for its parent, "
         "generating the keys into the state directory when missing"),
        ("keys", cmd_keys, "list the zone's keys: tag, algorithm, role, state and times, files "
         "(no private material), and the rollovers in progress"),
        ("rollover", cmd_rollover, "roll the zone's KSK or CSK (double-KSK with CDS): make "
         "the successor and print its DS for the parent; with --complete, once the parent "
         "has the new DS, retire the old key"),
    ):  # fmt: skip
        sp = actions.add_parser(name, help=what, description=what, parents=list(parents))
        config_argument(sp)
        sp.add_argument("zone", metavar="ZONE", help="the zone's origin (example.com.)")
        sp.add_argument(
            "--state",
            default=default_state,
            metavar="PATH",
            help=f"the node's state store: keys are in PATH.keys/ (default ./{default_state})",
        )
        if name == "rollover":
            _rollover_arguments(sp)
        sp.set_defaults(func=func)


def _rollover_arguments(sp: argparse.ArgumentParser) -> None:
    which = sp.add_mutually_exclusive_group()
    which.add_argument("--ksk", action="store_true", help="roll the KSK (keys: ksk+zsk)")
    which.add_argument("--csk", action="store_true", help="roll the CSK (keys: csk)")
    sp.add_argument(
        "--complete",
        action="store_true",
        help="the parent serves the new DS: retire the old key (its CDS now, its signatures "
        "once no resolver can hold the old DS set, its DNSKEY after that)",
    )
    sp.add_argument(
        "--parent",
        type=_parent,
        metavar="HOST[:PORT]",
        help="with --complete: a server of the parent zone, asked for the zone's DS first",
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="with --complete and no --parent: you have checked that the parent serves the new DS",
    )
