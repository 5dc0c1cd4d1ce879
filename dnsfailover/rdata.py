"""Turn presentation-format record values into dnslib rdata, once, when a snapshot is built.

dnslib's own zone-file lexer mishandles ``\\DDD`` escapes in TXT strings, so character
strings (TXT, CAA) are tokenised here and packed as raw rdata; names and addresses use the
typed dnslib classes so that names inside rdata are compressed where the RFCs allow it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

import dns.exception
import dns.name
from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RD, SRV, A, DNSLabel

from dnsfailover.errors import DnsFailoverError

Labels = tuple[bytes, ...]
"""A domain name as its labels, left to right, without the root; lower-cased for keys."""

MAX_NAME_WIRE = 255
MAX_LABEL = 63


class ZoneBuildError(DnsFailoverError):
    """A zone cannot be served as given."""


@functools.lru_cache(maxsize=16_384)
def name_labels(name: str) -> Labels:
    """Parse an absolute name (``"www.example.test."``) into lower-case labels.

    Presentation escapes are read as RFC 1035 §5.1 says (``a\\.b`` is one label, ``z\\000``
    ends in a zero octet: RFC 2181 §11 allows any octet); non-ASCII text is IDNA-encoded.

    :raises ZoneBuildError: if the name is relative, has quotes or spaces, a bad escape, or
        exceeds the wire limits.
    """
    if '"' in name or any(c.isspace() for c in name):
        raise ZoneBuildError(f"name {name!r}: quotes and spaces are not allowed (use \\032)")
    if name == ".":
        return ()
    try:
        parsed = dns.name.from_text(name, origin=None)
    except dns.name.EmptyLabel as e:
        raise ZoneBuildError(f"name {name!r} has an empty label") from e
    except (dns.name.LabelTooLong, dns.name.NameTooLong):
        parsed = None  # reported below, with the limits
    except (dns.exception.DNSException, UnicodeError) as e:
        raise ZoneBuildError(f"name {name!r} is not a valid name: {e}") from e
    if parsed is None:
        check_labels(tuple(label.encode() for label in name[:-1].split(".")), name)
        raise ZoneBuildError(f"name {name!r} exceeds the wire limits")
    if not parsed.is_absolute():
        raise ZoneBuildError(f"name {name!r} is not absolute (no trailing dot)")
    labels = tuple(label.lower() for label in parsed.labels[:-1])
    check_labels(labels, name)
    return labels


def check_labels(labels: Labels, what: str) -> None:
    """Check label and total lengths against RFC 1035 limits."""
    if any(not 0 < len(label) <= MAX_LABEL for label in labels):
        raise ZoneBuildError(f"name {what!r} has an empty label or one longer than {MAX_LABEL}")
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME_WIRE:
        raise ZoneBuildError(f"name {what!r} is longer than {MAX_NAME_WIRE} bytes on the wire")


def tokenize(text: str) -> list[bytes]:
    """Split presentation text into character strings (RFC 1035 §5.1).

    Quoted strings may contain spaces; ``\\X`` stands for X and ``\\DDD`` for the byte DDD.
    Non-ASCII text is taken as UTF-8.
    """
    data = text.encode("utf-8")
    tokens: list[bytes] = []
    i, n = 0, len(data)
    while i < n:
        if data[i] in b" \t":
            i += 1
            continue
        quoted = data[i] == ord('"')
        i += 1 if quoted else 0
        out = bytearray()
        closed = not quoted
        while i < n:
            c = data[i]
            if quoted and c == ord('"'):
                i += 1
                closed = True
                break
            if not quoted and c in b" \t":
                break
            if c == ord("\\"):
                i = _unescape(data, i, out, text)
                continue
            out.append(c)
            i += 1
        if not closed:
            raise ZoneBuildError(f"unterminated quoted string in {text!r}")
        tokens.append(bytes(out))
    return tokens


def _unescape(data: bytes, i: int, out: bytearray, text: str) -> int:
    """Decode the escape that starts at ``data[i]`` into ``out``; return the next index."""
    if i + 1 >= len(data):
        raise ZoneBuildError(f"dangling backslash in {text!r}")
    nxt = data[i + 1 : i + 2]
    if not nxt.isdigit():
        out += nxt
        return i + 2
    digits = data[i + 1 : i + 4]
    if len(digits) != 3 or not digits.isdigit() or int(digits) > 255:
        raise ZoneBuildError(f"bad \\DDD escape in {text!r}")
    out.append(int(digits))
    return i + 4


def _fields(value: str, count: int, rtype: str) -> list[str]:
    parts = value.split()
    if len(parts) != count:
        raise ZoneBuildError(f"{rtype} value {value!r} needs {count} fields, has {len(parts)}")
    return parts


def _u16(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFF:
        raise ZoneBuildError(f"{what} {text!r} is not an integer 0-65535")
    return int(text)


def _label(text: str) -> DNSLabel:
    return DNSLabel(name_labels(text))


def _a(value: str) -> RD:
    try:
        return A(tuple(ipaddress.IPv4Address(value.strip()).packed))
    except ValueError as e:
        raise ZoneBuildError(f"A value {value!r} is not an IPv4 address") from e


def _aaaa(value: str) -> RD:
    try:
        return AAAA(tuple(ipaddress.IPv6Address(value.strip()).packed))
    except ValueError as e:
        raise ZoneBuildError(f"AAAA value {value!r} is not an IPv6 address") from e


def _cname(value: str) -> RD:
    return CNAME(_label(_fields(value, 1, "CNAME")[0]))


def _ns(value: str) -> RD:
    return NS(_label(_fields(value, 1, "NS")[0]))


def _ptr(value: str) -> RD:
    return PTR(_label(_fields(value, 1, "PTR")[0]))


def _mx(value: str) -> RD:
    pref, exchange = _fields(value, 2, "MX")
    return MX(_label(exchange), _u16(pref, "MX preference"))


def _srv(value: str) -> RD:
    prio, weight, port, target = _fields(value, 4, "SRV")
    return SRV(
        _u16(prio, "SRV priority"),
        _u16(weight, "SRV weight"),
        _u16(port, "SRV port"),
        _label(target),
    )


def _txt(value: str) -> RD:
    strings = tokenize(value)
    if not strings:
        raise ZoneBuildError("TXT value is empty")
    if any(len(s) > 255 for s in strings):
        raise ZoneBuildError(f"TXT value {value[:40]!r}… has a string longer than 255 bytes")
    return RD(b"".join(bytes([len(s)]) + s for s in strings))


def _caa(value: str) -> RD:
    tokens = tokenize(value)
    if len(tokens) != 3:
        raise ZoneBuildError(f"CAA value {value!r} needs flags, tag and value")
    flags, tag, data = tokens
    if not flags.isdigit() or int(flags) > 255:
        raise ZoneBuildError(f"CAA flags {flags!r} is not an integer 0-255")
    if not tag.isalnum() or not tag.isascii() or len(tag) > 255:
        raise ZoneBuildError(f"CAA tag {tag!r} must be 1-255 ASCII letters and digits")
    return RD(bytes([int(flags), len(tag)]) + tag + data)


def _ds(value: str) -> RD:
    """A delegation signer (RFC 4034 §5.3): key tag, algorithm, digest type, hex digest."""
    import dns.exception
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, value)
    except (dns.exception.DNSException, ValueError) as e:
        raise ZoneBuildError(
            f"DS value {value!r}: {e} (want: key-tag algorithm digest-type hex-digest)"
        ) from None
    return RD(rdata.to_wire())


PARSERS: dict[str, Callable[[str], RD]] = {
    "A": _a,
    "AAAA": _aaaa,
    "CNAME": _cname,
    "NS": _ns,
    "PTR": _ptr,
    "MX": _mx,
    "SRV": _srv,
    "TXT": _txt,
    "CAA": _caa,
    "DS": _ds,
}
"""Record types the embedded server can serve, and how to parse their values."""


def _parser(rtype: str) -> Callable[[str], RD]:
    parser = PARSERS.get(rtype.upper())
    if parser is None:
        raise ZoneBuildError(f"record type {rtype!r} is not supported (use {', '.join(PARSERS)})")
    return parser


def parse_rdata(rtype: str, value: str) -> RD:
    """Parse one value of a supported record type into a dnslib RD.

    :raises ZoneBuildError: for an unsupported type or an invalid value.
    """
    return _parser(rtype)(value)


def qtype_code(rtype: str) -> int:
    """The numeric type of a supported record type name (``"A"`` → 1).

    :raises ZoneBuildError: for an unsupported type.
    """
    _parser(rtype)
    return int(getattr(QTYPE, rtype.upper()))
