"""A zone's `dnssec:` section (see `dnsfailover.dnssec` and docs/dnssec.md).

The field rules live in `DnssecConfig`; `dnssec_problems` holds the rules that read files
or need the zone: `key_files` (relative to the config file's directory) are read with the
loader the signer uses, so a missing file, a private key readable by others, a key of
another algorithm or zone, or a set without the roles `keys` asks for is reported at its
line, before anything is started; and only embedded zones are signed by us.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PrivateAttr, TypeAdapter, ValidationError

from dnsfailover.config.yamlpos import YamlPath
from dnsfailover.dnssec.denial import Denial
from dnsfailover.dnssec.keys import ALGORITHMS, KeyFileError, KeyMode, load
from dnsfailover.dnssec.sign import Policy
from dnsfailover.fields import Fqdn, Model, parse_duration

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
    _base: Path | None = PrivateAttr(default=None)

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


_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)


def dnssec_problems(
    zones: Mapping[str, tuple[str, DnssecConfig | None]], data: dict[str, Any], base: Path | None
) -> list[tuple[YamlPath, str]]:
    """Resolve each zone's `key_files` against `base`, then what is wrong with its
    `dnssec:` section as (setting, message); `zones`: origin → (provider, section)."""
    problems: list[tuple[YamlPath, str]] = []
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
