"""Zones read with dnspython: a master file (BIND's zone files), or a zone transfer (AXFR).

dnspython reads every record type, so the types dnsfailover does not serve reach `zone.build`
and are reported one by one instead of failing the whole file.  A TSIG secret is only ever
passed to dnspython: no message here holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.query
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from dnsfailover.importing.zone import ImportedZone, ImportFailed, SourceSet, build

_ZONE_NAME = re.compile(r"\.|([A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
ALGORITHMS = ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5")


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A TSIG key to sign the transfer with; `repr` leaves the secret out."""

    name: str
    algorithm: str
    secret: bytes

    def __repr__(self) -> str:
        return f"TsigKey({self.name!r}, {self.algorithm!r}, secret=...)"

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, f"{self.algorithm}.")


def from_file(path: Path, origin: str) -> ImportedZone:
    """The zone `origin` from the master file at `path` ($INCLUDE, $GENERATE, $TTL ... as
    dnspython reads them; an $INCLUDE path is relative to the working directory).

    :raises ImportFailed: when the file cannot be read or parsed (with its line).
    """
    try:
        zone = dns.zone.from_file(
            str(path), origin, relativize=False, check_origin=False, allow_include=True
        )
    except OSError as e:
        raise ImportFailed(f"cannot read zone file {path}: {e.strerror or e}") from None
    except (dns.exception.DNSException, UnicodeDecodeError, ValueError) as e:
        raise ImportFailed(f"cannot parse zone file {path}: {e}") from None
    return build(origin, _sets(zone))


def from_axfr(
    host: str, port: int, origin: str, key: TsigKey | None = None, timeout: float = 30.0
) -> ImportedZone:
    """The zone `origin` transferred (AXFR over TCP) from `host:port`, signed with `key`.

    :raises ImportFailed: when the server cannot be reached, refuses, or the TSIG fails.
    """
    zone = dns.zone.Zone(origin, relativize=False)
    keyring = None if key is None else key.key()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        query, _ = dns.xfr.make_query(zone, serial=None, keyring=keyring)
        dns.query.inbound_xfr(host, zone, query, port=port, timeout=timeout, lifetime=timeout)
    except dns.xfr.TransferError as e:
        raise ImportFailed(f"AXFR of {origin} from {where}: {e} (is the transfer allowed, "
                           "and for this key?)") from None  # fmt: skip
    except dns.tsig.PeerError as e:
        raise ImportFailed(f"AXFR of {origin} from {where}: the server refused the TSIG key "
                           f"({e})") from None  # fmt: skip
    except dns.exception.Timeout:
        raise ImportFailed(
            f"AXFR of {origin} from {where}: no answer within {timeout:g}s"
        ) from None
    except OSError as e:
        why = e.strerror or str(e)
        raise ImportFailed(f"AXFR of {origin} from {where}: {why}") from None
    except dns.exception.DNSException as e:
        raise ImportFailed(f"AXFR of {origin} from {where}: {e}") from None
    return build(origin, _sets(zone))


def _sets(zone: dns.zone.Zone) -> list[SourceSet]:
    return [
        SourceSet(
            name.to_text(),
            dns.rdatatype.to_text(rdataset.rdtype),
            rdataset.ttl,
            tuple(rd.to_text(origin=None, relativize=False) for rd in rdataset),
        )
        for name, rdataset in zone.iterate_rdatasets()
    ]


def absolute_origin(text: str) -> str:
    """`example.com` or `Example.COM.` → `example.com.`.

    :raises ImportFailed: when it is not a domain name.
    """
    if not _ZONE_NAME.fullmatch(text.strip()):
        raise ImportFailed(f"{text!r} is not a zone name such as example.com.")
    try:
        return dns.name.from_text(text.strip()).to_text().lower()
    except (dns.exception.DNSException, UnicodeError) as e:
        raise ImportFailed(f"{text!r} is not a zone name: {e}") from None
