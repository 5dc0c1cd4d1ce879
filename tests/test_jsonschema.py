"""The config's JSON Schema: generated from the models, kept in docs/, named by every example
config's yaml-language-server modeline, and agreeing with the loader on what a config is."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, BeforeValidator

from dnsfailover.config.json_schema import DRAFT, UnknownShorthand, _Generator, schema_text
from dnsfailover.config.load import loads
from dnsfailover.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CHECKED_IN = ROOT / "docs" / "config.schema.json"
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))
BIN = Path(sys.executable).parent / "dnsfailover"
MODELINE = "# yaml-language-server: $schema="


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = yaml.safe_load(schema_text())  # JSON is YAML: the text, as an editor reads it
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_checked_in_schema_is_the_generated_one() -> None:
    out = subprocess.run([str(BIN), "schema"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == schema_text()
    assert CHECKED_IN.read_text() == out.stdout, (
        "docs/config.schema.json is stale: dnsfailover schema -o docs/config.schema.json"
    )
    assert out.stdout.startswith('{\n  "$schema": "' + DRAFT)


def test_every_example_config_names_the_schema_and_validates(
    validator: jsonschema.Draft7Validator,
) -> None:
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        text = path.read_text()
        first = text.splitlines()[0]
        assert first.startswith(MODELINE), f"{path.name}: no yaml-language-server modeline"
        assert (path.parent / first.removeprefix(MODELINE)).resolve() == CHECKED_IN
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(
            yaml.safe_load(text))]  # fmt: skip
        assert errors == [], path.name
        loads(text, str(path))  # and the loader takes it, of course


def _example() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _typo(data: dict[str, Any], path: list[str], new: str) -> None:
    """Rename the key at `path` to `new` (a typo of it)."""
    node = data
    for key in path[:-1]:
        node = node[key]
    node[new] = node.pop(path[-1])


TYPOS = [
    (["zones", "example.test.", "failover", "www", "policy"], "polcy"),
    (["zones", "example.test.", "nameservers"], "namservers"),
    (["checks", "web", "interval"], "intervall"),
    (["zones", "example.test.", "soa", "mname"], "mnmae"),
    (["zones", "example.test.", "failover", "api", "tiers"], "teirs"),
    (["zones"], "zone"),
]


@pytest.mark.parametrize(("path", "typo"), TYPOS, ids=[t for _, t in TYPOS])
def test_a_typo_is_rejected_by_the_schema_as_by_the_loader(
    validator: jsonschema.Draft7Validator, path: list[str], typo: str
) -> None:
    data = _example()
    assert list(validator.iter_errors(data)) == []
    broken = copy.deepcopy(data)
    _typo(broken, path, typo)
    errors = list(validator.iter_errors(broken))
    assert errors, f"the schema took {typo!r}"
    # the editor's message names the unknown key (in a union: in one of its branches)
    messages = [e.message for e in errors] + [
        c.message for e in errors for c in e.context or () if typo in c.message
    ]
    assert any(f"'{typo}' was unexpected" in m for m in messages), messages
    with pytest.raises(ConfigError):
        loads(yaml.safe_dump(broken))


BAD_VALUES = [
    (["checks", "web", "interval"], "1 sec"),
    (["checks", "web", "expect_status"], ["20x"]),
    (["zones", "example.test.", "failover", "www", "all_down"], "serve_some"),
    (["zones", "example.test.", "failover", "www", "ttl"], -1),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES, ids=[str(v) for _, v in BAD_VALUES])
def test_a_bad_value_is_rejected_by_both(
    validator: jsonschema.Draft7Validator, path: list[str], value: object
) -> None:
    data = _example()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(validator.iter_errors(data)), f"the schema took {value!r}"
    with pytest.raises(ConfigError):
        loads(yaml.safe_dump(data))


SHORTHANDS = """\
regions: [us, eu]
checks:
  web:
    type: http
    port: 8080
    interval: 1s
    expect_status: [200, 2xx, 300-304]
    quorum: 60%
  tcp:
    type: tcp
    port: 22
    interval: 1.5
    timeout: 500ms
    quorum: all
tsig_keys:
  xfr: {secret_env: DNSFAILOVER_TEST_TSIG}
policy:
  damping: true
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    allow_transfer: [10.0.0.0/8, {address: 127.0.0.1, key: xfr}]
    also_notify: ["[::1]:5353", 127.0.0.2, {address: 127.0.0.3, port: 53}]
    records:
      ns1: {type: A, value: 192.0.2.53}
      mail: [{type: A, values: [192.0.2.25]}, {type: AAAA, value: "2001:db8::25"}]
    failover:
      www:
        policy: active-active
        check: web
        damping: off
        quorum: 2
        endpoints: [127.0.0.11, {address: 127.0.0.12, weight: 2}]
      api:
        policy: active-passive
        check: tcp
        failback: staged
        hold_down: 2m
        staged: {share: 25%, hold: 30}
        damping: {penalty: 500, half_life: 5m}
        tiers:
          - {name: us, endpoints: [127.0.0.21]}
          - {name: eu, endpoints: [127.0.0.31]}
drills:
  - {name: api, tier: us, every: 7d, for: 5m, at: "03:00"}
"""


def test_every_shorthand_the_loader_takes_the_schema_takes(
    validator: jsonschema.Draft7Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DNSFAILOVER_TEST_TSIG", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0")
    loads(SHORTHANDS)
    data = yaml.safe_load(SHORTHANDS)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)] == []
    # and a value and values together is one too many, for both
    data["zones"]["example.test."]["records"]["ns1"]["values"] = ["192.0.2.54"]
    assert list(validator.iter_errors(data))
    with pytest.raises(ConfigError):
        loads(yaml.safe_dump(data))


def test_a_new_shorthand_must_say_what_it_accepts() -> None:
    """A before-validator the schema knows nothing about stops the generation: otherwise
    the schema would refuse what the loader takes (`1s` where the model says float)."""

    def _celsius(value: object) -> object:
        return value

    class Probe(BaseModel):
        temperature: Annotated[float, BeforeValidator(_celsius)]

    with pytest.raises(UnknownShorthand, match="_celsius"):
        Probe.model_json_schema(schema_generator=_Generator)
