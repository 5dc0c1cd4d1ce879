"""A zone's content (`model.ZoneContent`, what a decision publishes) as dnspython RRsets,
the signer's input: the SOA and every non-empty record set, names absolute."""

from __future__ import annotations

import dns.name
import dns.rrset

from dnsfailover.model import RecordSet, Soa, ZoneContent


def soa_rrset(origin: str, soa: Soa) -> dns.rrset.RRset:
    text = (
        f"{soa.mname} {soa.rname} {soa.serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}"
    )
    return dns.rrset.from_text(origin, soa.ttl, "IN", "SOA", text)


def rrset(origin: dns.name.Name, rs: RecordSet) -> dns.rrset.RRset:
    """One record set (every value: a weighted set's answer is signed as a whole here)."""
    return dns.rrset.from_text_list(
        rs.name, rs.ttl, "IN", rs.rtype, list(rs.values), origin=origin, relativize=False
    )


def rrsets(content: ZoneContent) -> list[dns.rrset.RRset]:
    """The SOA and every non-empty record set of `content` (an empty set is NODATA)."""
    origin = dns.name.from_text(content.origin)
    return [soa_rrset(content.origin, content.soa)] + [
        rrset(origin, rs) for rs in content.records if rs.values
    ]
