"""Static records from a standard master file (RFC 1035 §5): `zone_file:` of a zone.

Zones with many static records keep them where DNS operators already do, in a zone file
exported from BIND, Knot or a registrar.  Supported: `$ORIGIN`, `$TTL` (seconds or BIND
units such as `1h30m`), `$INCLUDE file [origin]` (relative to the including file), `@`,
relative and absolute owners, a blank owner (the previous one), TTL and class in either
order, parentheses across lines, `;` comments, quoted strings with escapes.  The record types
are those `records:` takes.  A `SOA` line is skipped (the zone's `soa:` is served); apex `NS`
lines must match the zone's `nameservers`.

Every problem names the file and line, like the YAML's; reading stops at none of them, so
one pass shows them all.  Values are checked later by the same rdata parser as `records:`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dnsfailover.config.files import MAX_ZONE_FILE_BYTES, read_text_bounded
from dnsfailover.errors import Problem

TYPES = frozenset({"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR"})
MAX_INCLUDE_DEPTH = 8
MAX_TTL = 2_147_483_647
# Which field of the value is a domain name (made absolute against $ORIGIN).
_NAME_FIELD = {"CNAME": 0, "NS": 0, "PTR": 0, "MX": 1, "SRV": 3}
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TTL = re.compile(r"^(?:\d+[smhdw])+$|^\d+$", re.IGNORECASE)
_CLASSES = frozenset({"IN", "CH", "HS", "CS", "ANY"})


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One record line: owner and value absolute, the value in presentation format."""

    file: str
    line: int
    name: str
    ttl: int
    rtype: str
    value: str


@dataclass(slots=True)
class ZoneFile:
    """What a zone file held: its records and the problems found, each with file:line."""

    records: list[FileRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    apex_ns: list[FileRecord] = field(default_factory=list)


def parse_ttl(text: str) -> int | None:
    """Seconds from `300` or `1h30m`; None when it is no TTL."""
    if not _TTL.match(text):
        return None
    if text.isdigit():
        return int(text)
    total = 0
    for number, unit in re.findall(r"(\d+)([smhdw])", text.lower()):
        total += int(number) * _TTL_UNITS[unit]
    return total


def absolute(name: str, origin: str) -> str:
    """`@` → origin; `www` → `www.<origin>`; absolute names stay.  Lower case."""
    if name == "@":
        return origin
    if name.endswith(".") and not name.endswith("\\."):
        return name.lower()
    return f"{name}.{origin}".lower() if origin != "." else f"{name}.".lower()


def read_zone_file(path: str | Path, origin: str, default_ttl: int) -> ZoneFile:
    """Read `path` (and what it includes) as the zone `origin`'s static records."""
    out = ZoneFile()
    _read(Path(path), origin, default_ttl, out, [], None)
    return out


def _read(
    path: Path,
    origin: str,
    ttl: int,
    out: ZoneFile,
    stack: list[Path],
    include: tuple[str, int] | None,
) -> None:
    where = str(path)
    try:
        resolved = path.resolve()
        if resolved in stack:
            raise OSError("it includes itself")
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise OSError(f"$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}")
        text = read_text_bounded(path, MAX_ZONE_FILE_BYTES)  # a regular file, bounded
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        file, line = include if include is not None else (where, None)
        out.problems.append(Problem(file, line, "", f"cannot read zone file {where}: {why}"))
        return
    stack.append(resolved)
    owner: str | None = None
    for line, tokens, rest in _logical_lines(text, where, out):
        try:
            if tokens[0].startswith("$"):
                origin, ttl = _directive(tokens, path, line, origin, ttl, out, stack)
                continue
            owner = _record(tokens, rest, where, line, origin, ttl, owner, out)
        except _LineError as e:
            out.problems.append(Problem(where, line, "", str(e)))
    stack.pop()


class _LineError(Exception):
    """One line is wrong; the message says how (the caller adds file:line)."""


def _directive(
    tokens: list[str],
    path: Path,
    line: int,
    origin: str,
    ttl: int,
    out: ZoneFile,
    stack: list[Path],
) -> tuple[str, int]:
    word = tokens[0].upper()
    if word == "$ORIGIN" and len(tokens) == 2:
        return absolute(tokens[1], origin), ttl
    if word == "$TTL" and len(tokens) == 2:
        seconds = parse_ttl(tokens[1])
        if seconds is None or seconds > MAX_TTL:
            raise _LineError(f"$TTL {tokens[1]!r} is not a TTL (seconds, or units such as 1h)")
        return origin, seconds
    if word == "$INCLUDE" and len(tokens) in (2, 3):
        target = Path(tokens[1])
        if not target.is_absolute():
            target = path.parent / target
        inner = absolute(tokens[2], origin) if len(tokens) == 3 else origin
        _read(target, inner, ttl, out, stack, (str(path), line))
        return origin, ttl  # the including file's origin and TTL go on (RFC 1035 §5.1)
    if word in ("$ORIGIN", "$TTL", "$INCLUDE"):
        raise _LineError(f"{word} takes {'one or two arguments' if word == '$INCLUDE' else 'one'}")
    raise _LineError(f"{tokens[0]} is not supported ($ORIGIN, $TTL and $INCLUDE are)")


def _record(
    tokens: list[str],
    rest: list[str],
    where: str,
    line: int,
    origin: str,
    default_ttl: int,
    owner: str | None,
    out: ZoneFile,
) -> str | None:
    """Parse one record line; returns the owner for the next blank-owner line."""
    if tokens[0]:  # the line starts with an owner; otherwise the previous owner goes on
        owner = absolute(tokens[0], origin)
    i = 1
    if owner is None:
        raise _LineError("the first record has no owner name")
    ttl: int | None = None
    while i < len(tokens) - 1:  # TTL and class, in either order, both optional
        word = tokens[i]
        if ttl is None and (seconds := parse_ttl(word)) is not None:
            if seconds > MAX_TTL:
                raise _LineError(f"TTL {word} is larger than {MAX_TTL}")
            ttl = seconds
        elif word.upper() in _CLASSES:
            if word.upper() != "IN":
                raise _LineError(f"class {word} is not served (only IN)")
        else:
            break
        i += 1
    if i >= len(tokens):
        raise _LineError("the record has no type")
    rtype = tokens[i].upper()
    value = rest[i + 1].strip() if i + 1 < len(rest) else ""
    if rtype == "SOA":
        return owner  # the zone's `soa:` is what is served
    if rtype not in TYPES:
        supported = ", ".join(sorted(TYPES))
        raise _LineError(f"type {tokens[i]} is not supported in zone files ({supported})")
    if not value:
        raise _LineError(f"{rtype} record without a value")
    record = FileRecord(
        where,
        line,
        owner,
        default_ttl if ttl is None else ttl,
        rtype,
        _absolute(rtype, value, origin),
    )
    if rtype == "NS" and owner == origin:
        out.apex_ns.append(record)
    else:
        out.records.append(record)
    return owner


def _absolute(rtype: str, value: str, origin: str) -> str:
    index = _NAME_FIELD.get(rtype)
    if index is None:
        return value
    parts = value.split()
    if index < len(parts):
        parts[index] = absolute(parts[index], origin)
    return " ".join(parts)


def _logical_lines(text: str, where: str, out: ZoneFile) -> list[tuple[int, list[str], list[str]]]:
    """(first line number, tokens, raw rest) of each record, parentheses joined.

    `rest[i]` is the text from token i on (so a value keeps its quoting and escapes);
    a line that starts with white space has no owner: its first token is `""`.
    """
    found: list[tuple[int, list[str], list[str]]] = []
    tokens: list[str] = []
    starts: list[int] = []  # where each token starts within `joined`
    joined = ""
    first = depth = 0
    for number, physical in enumerate(text.splitlines(), start=1):
        raw = _uncommented(physical)
        if depth == 0:
            tokens, starts, joined, first = [], [], "", number
            if raw[:1] in (" ", "\t") and raw.strip():
                tokens, starts = [""], [0]
        base = len(joined) + 1 if joined else 0
        joined = f"{joined} {raw}" if joined else raw
        try:
            depth = _tokens(raw, base, tokens, starts, depth)
        except _LineError as e:
            out.problems.append(Problem(where, number, "", str(e)))
            depth = 0
            continue
        if depth == 0 and [tok for tok in tokens if tok]:
            found.append((first, tokens, [_unparenthesised(joined[s:]) for s in starts]))
    if depth:
        out.problems.append(Problem(where, first, "", "a parenthesis opened here is never closed"))
    return found


def _uncommented(line: str) -> str:
    """`line` without its `;` comment (a `;` inside quotes or escaped is text)."""
    quoted = escaped = False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return line[:i]
    return line


def _unparenthesised(text: str) -> str:
    """The raw value with grouping parentheses (outside quotes) as spaces."""
    result = []
    quoted = escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c in "()" and not quoted:
            c = " "
        result.append(c)
    return "".join(result)


def _tokens(raw: str, base: int, tokens: list[str], starts: list[int], depth: int) -> int:
    """Append the tokens of one physical line; returns the parenthesis depth after it."""
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c in " \t\r":
            i += 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            if depth == 0:
                raise _LineError("')' without a '('")
            depth -= 1
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and raw[j] != '"':
                j += 2 if raw[j] == "\\" else 1
            if j >= n:
                raise _LineError("a quoted string is not closed on its line")
            starts.append(base + i)
            tokens.append(raw[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < n and raw[j] not in ' \t\r()"':
                j += 2 if raw[j] == "\\" else 1
            starts.append(base + i)
            tokens.append(raw[i:j])
            i = j
    return depth
