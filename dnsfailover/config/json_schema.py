"""The config's JSON Schema, generated from the pydantic models (`dnsfailover schema`).

Editors validate and complete YAML with it: yaml-language-server (VS Code's YAML extension,
Neovim, Helix ...) reads it from a first line `# yaml-language-server: $schema=PATH`.  That
server speaks JSON Schema draft-07, so pydantic's 2020-12 output is written as draft-07
(`definitions`, tuple `items`).

The config accepts more than its models' types say: `1s` for a duration, an address alone
for an endpoint, `value:` for `values:`, `regions: [us, eu]`...  Each of these shorthands
is a before-validator, and `INPUTS` says what it accepts; a before-validator missing there
stops the generation (a test runs it), so the schema never refuses what the loader takes.
Rules the schema cannot hold (cross-references, record values) stay `validate`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from dnsfailover.config.schema import Config

DRAFT = "http://json-schema.org/draft-07/schema#"
Shape = Callable[[JsonSchemaValue], JsonSchemaValue]

_NUMBER = r"\d+(\.\d+)?"
DURATION: JsonSchemaValue = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*(ms|s|m|h)?\s*$"},
    ],
    "description": "seconds, or a duration such as 500ms, 1s, 5m, 1h",
}
PERIOD: JsonSchemaValue = {
    "anyOf": [*DURATION["anyOf"], {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*(d|w)\s*$"}],
    "description": "a period such as 12h, 1d or 7d",
}


def _either(*more: JsonSchemaValue) -> Shape:
    """The validated type, or one of `more` (a shorthand)."""
    return lambda inner: {"anyOf": [inner, *more]}


def _instead(shape: JsonSchemaValue) -> Shape:
    """`shape`, whatever the validated type (a parsed string such as a duration)."""
    return lambda _inner: dict(shape)


def _same(inner: JsonSchemaValue) -> JsonSchemaValue:
    return inner


def _value_or_values(inner: JsonSchemaValue) -> JsonSchemaValue:
    """A static record takes `value: X` for `values: [X]`: one of the two is required."""
    shape = json.loads(json.dumps(inner))
    shape["properties"]["value"] = {"type": "string", "title": "Value"}
    shape["required"] = [key for key in shape.get("required", []) if key != "values"]
    shape["oneOf"] = [{"required": ["values"]}, {"required": ["value"]}]
    return dict(shape)


_SWITCH = {"enum": [True, False, "on", "off", "true", "false"]}

#: what each before-validator accepts (by module and qualified name)
INPUTS: dict[str, Shape] = {
    "dnsfailover.fields.parse_duration": _instead(DURATION),
    "dnsfailover.config.drills.parse_period": _instead(PERIOD),
    "dnsfailover.config.drills.parse_clock": _instead(
        {"type": "string", "pattern": r"^\s*\d{1,2}:\d{2}\s*$", "description": 'UTC, "03:00"'}
    ),
    "dnsfailover.config.checks._status_range": _instead(
        {
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": r"^\s*([1-5]xx|\d{3}\s*(-\s*\d{3})?)\s*$"},
            ],
            "description": "a status code (200), a range (200-299) or a class (2xx)",
        }
    ),
    "dnsfailover.config.checks._quorum": _instead(
        {
            "anyOf": [
                {"enum": ["majority", "any", "all"]},
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": r"^\s*(\d+|\d{1,3}\s*%)\s*$"},
            ],
            "description": "majority, any, all, a number of regions or a percentage (60%)",
        }
    ),
    "dnsfailover.config.policy._percent": _instead(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*%?\s*$"},
            ],
            "description": "a share such as 25%",
        }
    ),
    "dnsfailover.config.policy._switch": _either(_SWITCH),
    "dnsfailover.config.policy.DampingConfig._off": _either(_SWITCH),
    "dnsfailover.config.checks.CheckConfig._default_timeout": _same,
    "dnsfailover.config.schema.Endpoint._shorthand": _either(
        {"type": "string", "description": "the endpoint's address alone"}
    ),
    "dnsfailover.config.schema.TransferPeer._shorthand": _either(
        {"type": "string", "description": "an address or network alone"}
    ),
    "dnsfailover.config.schema.NotifyTarget._shorthand": _either(
        {"type": "string", "description": "ADDRESS, ADDRESS:PORT or [IPv6]:PORT"}
    ),
    "dnsfailover.config.schema.StaticRecord._single_value": _value_or_values,
    "dnsfailover.config.dnssec._algorithm": _instead(
        {
            "enum": [13, 15, "13", "15", "ECDSAP256SHA256", "ED25519"],
            "description": "13 (ECDSAP256SHA256) or 15 (ED25519)",
        }
    ),
    "dnsfailover.config.dnssec._days": _instead(
        {
            "anyOf": [*DURATION["anyOf"], {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*d\s*$"}],
            "description": "a duration such as 1h or 14d",
        }
    ),
    "dnsfailover.config.cluster.regions_shorthand": _either(
        {"type": "array", "items": {"type": "string"}, "description": "region names alone"}
    ),
}


class UnknownShorthand(Exception):
    """A before-validator has no entry in `INPUTS`: say what it accepts there."""


class _Generator(GenerateJsonSchema):
    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema["function"]["function"]
        key = f"{function.__module__}.{function.__qualname__}"
        shape = INPUTS.get(key)
        if shape is None:
            raise UnknownShorthand(f"{key}: add what it accepts to json_schema.INPUTS")
        return shape(super().function_before_schema(schema))


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a config file."""
    generated = Config.model_json_schema(
        ref_template="#/definitions/{model}", schema_generator=_Generator
    )
    definitions = generated.pop("$defs", {})
    top = {
        "$schema": DRAFT,
        **generated,
        "title": "dnsfailover config",
        "definitions": definitions,
    }
    result: dict[str, Any] = _draft07(top)
    return result


def schema_text() -> str:
    """`config_schema()` as the text `dnsfailover schema` prints (and docs/ keeps)."""
    return json.dumps(config_schema(), indent=2, sort_keys=False) + "\n"


def _draft07(node: Any) -> Any:
    """2020-12 keywords pydantic writes, in their draft-07 form; `discriminator` (OpenAPI's)
    dropped; a model's `additionalProperties` moved onto its object form."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _draft07(value) for key, value in node.items() if key != "discriminator"}
    if "anyOf" in out and "additionalProperties" in out:
        # a model with a shorthand: pydantic puts the model's `extra="forbid"` beside the
        # anyOf, where it would forbid every key of the object form too
        closed = out.pop("additionalProperties")
        for option in out["anyOf"]:
            if option.get("type") == "object":
                option["additionalProperties"] = closed
    if "prefixItems" in out:
        out["items"] = out.pop("prefixItems")
        out["additionalItems"] = False
    return out
