"""Load a YAML config into a frozen `Config`, or raise `ConfigError` listing every problem.

Three passes, each adding `Problem`s located by file, line and key path:

1. YAML (`yamlpos`): syntax, duplicate keys;
2. the pydantic schema (`schema`): types and per-object rules, with pydantic's `loc` mapped
   back to the key path the user wrote;
3. cross-references that span objects (`crosscheck`): unknown checks, names outside their
   zone, record conflicts, repeated endpoints, record values, providers; with each zone's
   `zone_file` read (`zonefile`), its problems located by that file's name and line.

Loading is bounded whatever the input (`files`, `yamlpos`): only a regular file of at most
`MAX_CONFIG_BYTES` is read, YAML past its nesting, size and alias limits is refused, and any
other exception while loading becomes a problem too, never a traceback.

Paths read like `zones["example.test."].failover.www.endpoints[1].address`: plain keys are
dotted, keys that are not plain words are quoted in brackets, list items are `[index]`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from dnsfailover.config.crosscheck import cross_check
from dnsfailover.config.dnssec import dnssec_problems
from dnsfailover.config.drill_targets import drill_problems
from dnsfailover.config.extras import extra_problems
from dnsfailover.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_bounded
from dnsfailover.config.geocheck import geo_problems
from dnsfailover.config.problems import Where, describe, explain
from dnsfailover.config.schema import Config
from dnsfailover.config.secrets import token_problems
from dnsfailover.config.yamlpos import DocumentLimit, parse
from dnsfailover.config.zonefile import ZoneFile, read_zone_file
from dnsfailover.errors import ConfigError, Problem
from dnsfailover.fields import Fqdn

__all__ = ["load", "loads"]

_FQDN: TypeAdapter[str] = TypeAdapter(Fqdn)
DEFAULT_FILE_TTL = 3600  # for zone-file records before any $TTL, as `records:` default


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at `path`.

    :raises ConfigError: listing every problem found, each as `FILE:LINE: key.path: message`.
    """
    filename = os.fspath(path)
    try:
        raw = read_bounded(filename, MAX_CONFIG_BYTES)
    except UnreadableFile as e:
        raise ConfigError([Problem(filename, None, "", f"cannot read: {e}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([Problem(filename, line, "", "not valid UTF-8 text")]) from None
    return loads(text, filename)


def loads(text: str, filename: str = "<string>") -> Config:
    """Validate config `text`; `filename` is only used in problems.

    :raises ConfigError: listing every problem found.
    """
    try:
        return _loads(text, filename)
    except ConfigError:
        raise
    except Exception as e:  # a bug's, or an unforeseen limit's: still a problem, not a crash
        why = f"{type(e).__name__}: {e}"
        message = f"cannot load this config ({why[:200]}); please report it as a bug"
        raise ConfigError([Problem(filename, None, "", message)]) from e


def _loads(text: str, filename: str) -> Config:
    try:
        doc = parse(text)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(filename, text, e)]) from None
    at = Where(filename, doc)
    if doc.data is None:
        raise ConfigError(
            [Problem(filename, None, "", "empty config; expected a mapping with zones")]
        )
    if not isinstance(doc.data, dict):
        got = describe(doc.data)
        raise ConfigError([at.problem((), f"expected a mapping with zones at the top, got {got}")])
    problems = [
        at.problem(d.path, f"duplicate key (first on line {d.first_line})") for d in doc.duplicates
    ]
    config: Config | None = None
    try:
        config = Config.model_validate(doc.data)
    except ValidationError as e:
        problems += [at.problem(path, message) for path, message in explain(e, Config, doc.data)]
    files = _read_zone_files(doc.data, Path(filename).parent if filename != "<string>" else None)
    problems += cross_check(doc.data, at, files)
    if config is not None:
        config.geo.resolve(Path(filename).parent if filename != "<string>" else None)
        problems += geo_problems(config, doc.data, at)
        problems += [at.problem(p, m) for p, m in drill_problems(config, config.drills)]
        problems += [at.problem(p, m) for p, m in token_problems(config)]
        problems += [at.problem(p, m) for p, m in extra_problems(config)]
        signing = {o: (z.provider, z.dnssec) for o, z in config.zones.items()}
        base = Path(filename).parent if filename != "<string>" else None
        problems += [at.problem(p, m) for p, m in dnssec_problems(signing, doc.data, base)]
        for origin, file in files.items():
            if origin in config.zones:
                config.zones[origin].attach_file_records(origin, tuple(file.records))
    if problems:
        unique = dict.fromkeys(problems)
        raise ConfigError(sorted(unique, key=lambda p: (p.line or 0, p.path)))
    assert config is not None  # no problems means the schema validated
    return config


def _yaml_problem(filename: str, text: str, e: yaml.YAMLError) -> Problem:
    if isinstance(e, DocumentLimit):  # valid YAML, but past a limit: no "invalid YAML"
        mark = e.problem_mark
        return Problem(filename, mark.line + 1 if mark else None, "", str(e.problem))
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML cannot hold
        line = text[: e.position].count("\n") + 1
        return Problem(filename, line, "", f"invalid YAML: character {e.character!r} not allowed")
    if not isinstance(e, yaml.MarkedYAMLError):
        return Problem(filename, None, "", f"invalid YAML: {e}")
    mark = e.problem_mark or e.context_mark
    message = e.problem or e.context or "syntax error"
    if e.problem and e.context and e.context_mark and mark:
        if not e.context.startswith("while "):  # "expected a single document", "but found ..."
            message = f"{e.context}, {e.problem}"
        elif e.context_mark.line != mark.line:
            message += f" ({e.context} that starts on line {e.context_mark.line + 1})"
    if "'@'" in message:
        message += '; quote names that start with @, e.g. "@"'
    elif "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    return Problem(filename, mark.line + 1 if mark else None, "", f"invalid YAML: {message}")


def _read_zone_files(data: dict[str, Any], base: Path | None) -> dict[str, ZoneFile]:
    """Each zone's `zone_file`, read (relative to the config file's directory)."""
    files: dict[str, ZoneFile] = {}
    raw_zones = data.get("zones")
    for key, raw in raw_zones.items() if isinstance(raw_zones, dict) else ():
        name = raw.get("zone_file") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name.strip():
            continue  # absent, or reported by the schema pass
        try:
            origin = _FQDN.validate_python(key)
        except ValidationError:
            continue
        path = Path(name).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        files[origin] = read_zone_file(path, origin, DEFAULT_FILE_TTL)
    return files
