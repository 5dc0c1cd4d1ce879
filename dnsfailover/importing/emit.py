"""An `ImportedZone` as YAML: the zone's entry, indented to paste under `zones:`, or a whole
minimal config; either is checked with the loader `dnsfailover validate` uses before it is
written, and lists what was not imported as comments.
"""

from __future__ import annotations

from typing import Any

import yaml

from dnsfailover.config.load import loads
from dnsfailover.errors import ConfigError
from dnsfailover.importing.zone import ImportedSet, ImportedZone, ImportFailed

INDENT = "  "


def render(zone: ImportedZone, source: str, *, whole: bool) -> str:
    """The YAML text: `zones:` and the zone when `whole`, else the zone's entry alone,
    indented by two spaces so that it goes right under a config's `zones:` line.

    :raises ImportFailed: if the text would not validate (the problems listed).
    """
    entry = yaml.dump(
        {zone.origin: _body(zone)},
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),  # libyaml's: ~10x faster
        sort_keys=False,
        default_flow_style=None,
        width=1 << 16,
        allow_unicode=False,
    )
    entry = "".join(INDENT + line for line in entry.splitlines(keepends=True))
    head = [
        f"# imported by `dnsfailover import` from {source}: {zone.set_count} record set(s)"
        + (f", {len(zone.skipped)} not imported (listed at the end)" if zone.skipped else ""),
    ]
    head += [f"# warning: {note}" for note in zone.notes]
    if whole:
        head.append("# check it with: dnsfailover validate FILE")
        text = "\n".join(head) + "\nzones:\n" + entry
    else:
        head.append("# the zone's entry: paste it under the zones: of a config")
        text = "\n".join(INDENT + line for line in head) + "\n" + entry
    if zone.skipped:
        tail = ["# not imported (see the warnings):"]
        for s in zone.skipped:
            tail += [f"#   {line}" for line in s.lines()] + [f"#     ({s.why})"]
        text += "".join(INDENT + line + "\n" for line in tail)
    _check(text if whole else "zones:\n" + text)
    return text


def _body(zone: ImportedZone) -> dict[str, Any]:
    body: dict[str, Any] = {"soa": dict(zone.soa or {}), "nameservers": list(zone.nameservers)}
    body["ns_ttl"] = zone.ns_ttl
    body["records"] = {
        label: _record(sets[0]) if len(sets) == 1 else [_record(s) for s in sets]
        for label, sets in zone.records.items()
    }
    return body


def _record(s: ImportedSet) -> dict[str, Any]:
    return {"type": s.rtype, "ttl": s.ttl, "values": list(s.values)}


def _check(text: str) -> None:
    """Validate `text` as `dnsfailover validate` would (records, values, glue ...)."""
    try:
        loads(text, "<imported>")
    except ConfigError as e:
        problems = "\n".join(f"  {p}" for p in e.problems)
        raise ImportFailed(f"the imported zone does not validate:\n{problems}") from None
