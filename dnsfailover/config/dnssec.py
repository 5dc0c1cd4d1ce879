"""A zone's `dnssec:` section (see `dnsfailover.dnssec` and docs/dnssec.md).

The field rules live in `DnssecConfig`; `dnssec_problems` holds the rules that read files
or need the zone: `key_files` (relative to the config file's directory) are read with the
loader the signer uses, so a missing file, a private key readable by others, a key of
another algorithm or zone, or a set without the roles `keys` asks for is reported at its
line, before anything is started; and only embedded zones are signed by us.  In a cluster,
a zone's keys must be listed in `key_files` (the same files on every node): keys generated
by each node would differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from dnsfailover.config.yamlpos import YamlPath
from dnsfailover.dnssec.denial import Denial
from dnsfailover.dnssec.keys import ALGORITHMS, KeyFileError, KeyMode, load
from dnsfailover.dnssec.rollover import Policy as RollPolicy
from dnsfailover.dnssec.sign import Policy
from dnsfailover.fields import Fqdn, Model, Ttl, parse_duration

_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*d\s*$")
_NAMES = {name.lower(): number for number, name in ALGORITHMS.items()}
MIN_VALIDITY = 3600.0  # an hour: below that, clock skew and caching eat the whole window


def _algorithm(value: Any) -> int:
    """13 or 15, by number or BIND's mnemonic (`ECDSAP256SHA256`, `ED25519`)."""
    if isinstance(value, str) and value.strip().lower() in _NAMES:
        return _NAMES[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in ALGORITHMS:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) in ALGORITHMS:
        return int(value)
    known = ", ".join(f"{n} ({name})" for n, name in ALGORITHMS.items())
    raise ValueError(f"unknown algorithm {value!r}: use one of {known}")


def _days(value: Any) -> float:
    """A duration that may also be in days (`14d`)."""
    if isinstance(value, str) and (m := _DAYS.match(value)):
        value = float(m.group(1)) * 86400
    return parse_duration(value)


Algorithm = Annotated[int, BeforeValidator(_algorithm)]
LongDuration = Annotated[float, BeforeValidator(_days)]


class DnssecConfig(Model):
    """How the embedded server signs one zone."""

    algorithm: Algorithm = 13
    keys: KeyMode = "csk"
    key_files: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    denial: Denial = "nsec"
    signature_validity: Annotated[LongDuration, Field(ge=MIN_VALIDITY)] = 14 * 86400.0
    refresh: Annotated[float, Field(gt=0, lt=1)] = 0.25
    inception_offset: LongDuration = 3600.0
    # key lifecycle (dnssec/rollover.py): BIND's dnssec-policy names and defaults
    dnskey_ttl: Ttl = 3600
    zsk_lifetime: Annotated[LongDuration, Field(ge=0)] | None = 90 * 86400.0  # 0/null: never
    propagation_delay: Annotated[LongDuration, Field(ge=0)] = 3600.0
    parent_ds_ttl: Annotated[LongDuration, Field(ge=0)] = 86400.0
    cds: bool = True
    _base: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _lifetime(self) -> DnssecConfig:
        lead = self.dnskey_ttl + self.propagation_delay
        if self.zsk_lifetime and self.zsk_lifetime <= lead:
            raise ValueError(
                f"zsk_lifetime ({self.zsk_lifetime:g}s) must be longer than dnskey_ttl + "
                f"propagation_delay ({lead:g}s): a new ZSK is published that long before "
                "it signs (0 or null: no automatic ZSK rollover)"
            )
        return self

    def resolve(self, base: Path | None) -> None:
        """Resolve `key_files` against the config file's directory (the loader calls it)."""
        self._base = base

    @property
    def key_paths(self) -> tuple[Path, ...]:
        out = []
        for name in self.key_files:
            path = Path(name).expanduser()
            out.append(self._base / path if not path.is_absolute() and self._base else path)
        return tuple(out)

    @property
    def policy(self) -> Policy:
        return Policy(self.signature_validity, self.refresh, self.inception_offset)

    @property
    def rollover(self) -> RollPolicy:
        """How this zone's keys roll (`zsk_lifetime` None: never)."""
        return RollPolicy(
            self.zsk_lifetime or None, self.propagation_delay, self.signature_validity
        )

    @property
    def zsk_rollover(self) -> RollPolicy | None:
        """The policy for `rollover.ensure`: None when no ZSK rolls automatically (`keys:
        csk`, no `zsk_lifetime`, or `key_files`, whose times are the files' own)."""
        if self.key_files or self.keys != "ksk+zsk" or not self.zsk_lifetime:
            return None
        return self.rollover


_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)


def dnssec_problems(
    zones: Mapping[str, tuple[str, DnssecConfig | None]], data: dict[str, Any], base: Path | None
) -> list[tuple[YamlPath, str]]:
    """Resolve each zone's `key_files` against `base`, then what is wrong with its
    `dnssec:` section as (setting, message); `zones`: origin → (provider, section)."""
    problems: list[tuple[YamlPath, str]] = []
    clustered = data.get("cluster") is not None
    raw_zones = data.get("zones")
    for key in raw_zones if isinstance(raw_zones, dict) else ():
        try:
            origin = _FQDN.validate_python(key)
        except ValidationError:
            continue
        provider, section = zones.get(origin, ("", None))
        if section is None:
            continue
        section.resolve(base)
        path: YamlPath = ("zones", key, "dnssec")
        if provider != "embedded":
            problems.append(
                (
                    path,
                    f"provider {provider!r} publishes this zone: their platform signs "
                    "it, not dnsfailover; turn DNSSEC on there (see docs/dnssec.md)",
                )
            )
            continue
        if clustered and not section.key_files:
            problems.append(
                (
                    path,
                    "in a cluster every node must sign with the same keys: generate them once "
                    "(dnsfailover dnssec keys ... or dnssec-keygen) and list them in key_files "
                    "on every node",
                )
            )
        problems += _key_file_problems(origin, section, path)
    return problems


def _key_file_problems(
    origin: str, section: DnssecConfig, path: YamlPath
) -> list[tuple[YamlPath, str]]:
    problems: list[tuple[YamlPath, str]] = []
    paths = section.key_paths
    for index, file in enumerate(paths):
        try:
            load([file], origin, section.algorithm, "csk")
        except KeyFileError as e:
            problems.append(((*path, "key_files", index), str(e)))
    if paths and not problems:
        try:
            load(paths, origin, section.algorithm, section.keys)
        except KeyFileError as e:
            problems.append(((*path, "key_files"), str(e)))
    return problems
