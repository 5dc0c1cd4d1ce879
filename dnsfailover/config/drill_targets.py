"""What a drill targets in a config: the active-passive record with that tier.

Apart from `config.drills` (the `drills:` section, which the schema embeds) because it reads
the whole `Config`.
"""

from __future__ import annotations

from typing import Any

from dnsfailover.config.drills import DrillConfig
from dnsfailover.config.schema import ActivePassive, Config
from dnsfailover.errors import UserError
from dnsfailover.fields import absolute_name


class DrillTargetError(UserError):
    """A drill names what is not there; the message says what is."""


def drill_target(
    config: Config, tier: str, name: str | None = None
) -> tuple[str, str, ActivePassive]:
    """(zone origin, absolute name, record) of the active-passive record whose tier `tier`
    a drill forces down; `name` picks one when several have such a tier.

    :raises DrillTargetError: nothing matches, or several do and `name` does not choose.
    """
    records = [(o, n, r) for o, n, r in config.managed() if isinstance(r, ActivePassive)]
    if name is not None:
        wanted = name.strip().lower()
        chosen = [
            (o, n, r)
            for o, n, r in records
            if n in (wanted, f"{wanted}.", absolute_name(wanted, o)) or n.split(".")[0] == wanted
        ]
        if not chosen:
            known = ", ".join(n for _o, n, _r in records) or "none"
            raise DrillTargetError(
                f"{name!r} is not an active-passive managed name (active-passive: {known})"
            )
        if len(chosen) > 1:
            listed = ", ".join(n for _o, n, _r in chosen)
            raise DrillTargetError(f"{name!r} is ambiguous: it could be {listed}")
        records = chosen
    having = [(o, n, r) for o, n, r in records if tier in (t.name for t in r.tiers)]
    if not having:
        tiers = ", ".join(sorted({f"{n} {t.name}" for _o, n, r in records for t in r.tiers}))
        where = f"{records[0][1]} has no tier" if name is not None else "no name has a tier"
        raise DrillTargetError(f"{where} {tier!r} (tiers: {tiers or 'none'})")
    if len(having) > 1:
        listed = ", ".join(n for _o, n, _r in having)
        raise DrillTargetError(f"several names have a tier {tier!r} ({listed}): pick one with name")
    return having[0]


def drill_problems(config: Config, drills: tuple[DrillConfig, ...]) -> list[tuple[Any, str]]:
    """What is wrong with `drills` against the rest of `config`, as (YAML path, message)
    for the loader's file:line problems."""
    found: list[tuple[Any, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, drill in enumerate(drills):
        found += [(("drills", i, key), message) for key, message in drill.problems()]
        try:
            _origin, name, _record = drill_target(config, drill.tier, drill.name)
        except DrillTargetError as e:
            found.append((("drills", i, "tier" if "tier" in str(e) else "name"), str(e)))
            continue
        if (name, drill.tier) in seen:
            first = seen[(name, drill.tier)]
            found.append((("drills", i), f"the same drill as drills[{first}]"))
        seen.setdefault((name, drill.tier), i)
    return found
