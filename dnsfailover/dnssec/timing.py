"""A DNSSEC key's timing metadata as BIND keeps it (`dnssec-keygen -P/-A/-I/-D`,
`dnssec-settime`): `Name: YYYYMMDDHHMMSS` (UTC) fields in the `.private` file, which BIND
reads, and `; Name: YYYYMMDDHHMMSS (date)` comments in the `.key` file, for people.

Pure values; `keys.py` reads and writes the files, `rollover.py` says what the times mean.
"""

from __future__ import annotations

import calendar
import dataclasses
import time
from dataclasses import dataclass

#: `Timing` field → BIND's name for it in `.private` files and `.key` comments
TIME_FIELDS = {
    "created": "Created",
    "publish": "Publish",
    "activate": "Activate",
    "inactive": "Inactive",
    "delete": "Delete",
    "sync_publish": "SyncPublish",
    "sync_delete": "SyncDelete",
}
#: the same names lower-cased, as a key file's fields are matched
TIME_NAMES = {bind.lower() for bind in TIME_FIELDS.values()}


@dataclass(frozen=True, slots=True)
class Timing:
    """A key's times as POSIX seconds, None when not set (`dnssec-settime -I none`).

    Publish: its DNSKEY enters the zone; Activate: it signs; Inactive: it stops signing;
    Delete: its DNSKEY leaves the zone; SyncPublish / SyncDelete: its CDS and CDNSKEY
    enter / leave the zone.  `rollover.state` says what an unset time means."""

    created: float | None = None
    publish: float | None = None
    activate: float | None = None
    inactive: float | None = None
    delete: float | None = None
    sync_publish: float | None = None
    sync_delete: float | None = None
    # the key this one replaces / that replaces it (tags), as `dnssec-keygen -S` records
    predecessor: int | None = None
    successor: int | None = None

    def replace(self, **changes: float | None) -> Timing:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def linked(self, predecessor: int | None = None, successor: int | None = None) -> Timing:
        """These times, with a predecessor or successor recorded."""
        return dataclasses.replace(
            self,
            predecessor=self.predecessor if predecessor is None else predecessor,
            successor=self.successor if successor is None else successor,
        )

    def items(self) -> list[tuple[str, float]]:
        """(BIND's name, time) of every time that is set, in BIND's order."""
        out = []
        for name, bind in TIME_FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                out.append((bind, value))
        return out

    def events(self) -> list[float]:
        """Every time that is set but Created (the moments the key's state may change)."""
        return [t for name, t in self.items() if name != "Created"]

    def whole_seconds(self) -> Timing:
        """The times as the files keep them (BIND's format has no fraction of a second)."""
        changes: dict[str, float | None] = {}
        for name in TIME_FIELDS:
            value = getattr(self, name)
            changes[name] = None if value is None else float(int(value))
        return self.replace(**changes)

    def private_fields(self) -> str:
        """The lines of a `.private` file that hold the times (and the links)."""
        links = [("Predecessor", self.predecessor), ("Successor", self.successor)]
        return "".join(f"{name}: {bind_time(t)}\n" for name, t in self.items()) + "".join(
            f"{name}: {tag}\n" for name, tag in links if tag is not None
        )

    def key_comments(self) -> str:
        """The comment lines of a `.key` file that show the times."""
        return "".join(
            f"; {name}: {bind_time(t)} ({time.asctime(time.gmtime(t))})\n"
            for name, t in self.items()
        )


def bind_time(when: float) -> str:
    """`when` as BIND writes key times: YYYYMMDDHHMMSS, UTC."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(when))


def parse_bind_time(text: str) -> float:
    """BIND's YYYYMMDDHHMMSS (UTC) as POSIX seconds; what follows it is ignored.

    :raises ValueError: not 14 digits of a valid date and time.
    """
    words = text.split()
    word = words[0] if words else ""
    if len(word) != 14 or not word.isdigit():
        raise ValueError(word)
    return float(calendar.timegm(time.strptime(word, "%Y%m%d%H%M%S")))


def from_fields(fields: dict[str, str]) -> Timing:
    """The times among a key file's `name: value` fields (names lower-cased).

    :raises ValueError: with BIND's name of a time that is not in BIND's format.
    """
    times: dict[str, float | None] = {}
    for name, bind in TIME_FIELDS.items():
        value = fields.get(bind.lower())
        if value is None:
            continue
        try:
            times[name] = parse_bind_time(value)
        except ValueError:
            raise ValueError(bind) from None
    links: dict[str, int] = {}
    for name in ("predecessor", "successor"):
        words = fields.get(name, "").split()
        if words and words[0].isdigit() and int(words[0]) < 65536:
            links[name] = int(words[0])
    return Timing().replace(**times).linked(**links)
