"""Explain pydantic `ValidationError`s in the words of the YAML the user wrote.

`explain()` turns each error's `loc` into the key path in the input (dropping the labels
pydantic adds for union branches) and its message into a short human one.  It knows nothing
about dnsfailover: it walks the types of whatever root model it is given.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from dnsfailover.config.yamlpos import Document, YamlPath, value_at
from dnsfailover.errors import Problem


def explain(error: ValidationError, root: type[BaseModel], data: Any) -> list[tuple[YamlPath, str]]:
    """(path, message) for each error of validating `data` as `root`, at most once each.

    For a union whose branches differ in shape (a mapping or a list of them) only the errors of
    the branch that the input looks like are kept, so one mistake is reported once.
    """
    found: dict[tuple[YamlPath, str], None] = {}
    for err in error.errors(include_url=False):
        if _counted_invalid_items(err):
            continue
        located = _locate(err["loc"], root, data)
        if located is None:
            continue  # an error from a union branch that the input does not look like
        path, parent, wrong_shape = located
        path = _trim(path, data)
        found[(path, wrong_shape) if wrong_shape else _message(err, path, parent)] = None
    return list(found)


def _trim(path: YamlPath, data: Any) -> YamlPath:
    """Stop at a plain value inside the path: `address` of an endpoint written as a string."""
    for end in range(1, len(path)):
        value = value_at(data, path[:end])
        if value is not None and not isinstance(value, dict | list):
            return path[:end]
    return path


def _counted_invalid_items(err: ErrorDetails) -> bool:
    """`too_short` for a list that is long enough: pydantic counts only the valid items."""
    value, minimum = err["input"], (err.get("ctx") or {}).get("min_length")
    too_short = err["type"] == "too_short" and isinstance(value, list | dict)
    return too_short and isinstance(minimum, int) and len(value) >= minimum


def _locate(
    loc: tuple[str | int, ...], root: type[BaseModel], data: Any
) -> tuple[YamlPath, Any, str | None] | None:
    """Walk `loc` through the schema types: (path, type holding the last key, shape error).

    Union branch labels (`'active-active'`, `'StaticRecord'`) are dropped from the path.  For a
    union whose branches differ in shape (a record or a list of records) only errors from the
    branch the input looks like are kept; returns None for the others.
    """
    tp: Any = root
    parent: Any = None
    path: list[str | int] = []
    parts = iter(loc)
    while True:
        members = _members(tp)
        if len(members) > 1:
            label = next(parts, None)
            if label is None:
                break  # a discriminator error: it belongs to the record itself
            branch = _branch(members, label)
            kinds = [_kind(m) for m in members]
            if len(set(kinds)) == len(kinds):
                value = value_at(data, tuple(path))
                wanted = _kind(type(value))
                if wanted not in kinds:
                    shapes = " or ".join(f"a {k}" for k in kinds)
                    return tuple(path), None, f"expected {shapes}, got {describe(value)}"
                if branch is not None and _kind(branch) != wanted:
                    return None
            tp = branch
            continue
        part = next(parts, None)
        if part is None:
            break
        parent = members[0]
        tp = _child(parent, part)
        if part != "[key]":  # a dict key's own error: the path already ends at the key
            path.append(part)
    return tuple(path), parent, None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(m) for m in get_args(tp) if m is not type(None)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _kind(tp: Any) -> str:
    if _is_model(tp) or tp is dict or get_origin(tp) is dict:
        return "mapping"
    if tp in (list, tuple) or get_origin(tp) in (list, tuple):
        return "list"
    return "value"


def _branch(members: list[Any], label: str | int) -> Any:
    """The union member pydantic labelled `label`: by tag value, class name or generic name."""
    for member in members:
        if _is_model(member):
            tags = [
                arg
                for info in member.model_fields.values()
                if get_origin(info.annotation) is Literal
                for arg in get_args(info.annotation)
            ]
            if label == member.__name__ or label in tags:
                return member
        elif isinstance(label, str) and label.startswith(
            f"{getattr(get_origin(member), '__name__', '')}["
        ):
            return member
    return None


def _child(tp: Any, part: str | int) -> Any:
    if _is_model(tp):
        info = tp.model_fields.get(part) if isinstance(part, str) else None
        return info.annotation if info is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[0] if part == "[key]" else args[1]
    if origin in (list, tuple) and args:
        return args[0]
    return None


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
    "greater_than": ("gt", "more than"),
    "less_than": ("lt", "less than"),
}


def _message(err: ErrorDetails, path: YamlPath, parent: Any) -> tuple[YamlPath, str]:
    """A short human message for one pydantic error, and the path it is best shown at."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err["input"]
    if kind == "missing":
        return path, "missing required key"
    if kind == "extra_forbidden":
        allowed = list(parent.model_fields) if _is_model(parent) else []
        return path, unknown("key", str(path[-1]), allowed, listed=True)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = str(ctx.get("discriminator", "")).strip("'")
        tags = [
            str(tag)
            for member in _members(_child(parent, path[-1]) if path else None)
            if _is_model(member) and key in member.model_fields
            for tag in get_args(member.model_fields[key].annotation)
        ]
        if kind == "union_tag_not_found":
            if typo := _misspelt(key, value, _members(_child(parent, path[-1]) if path else None)):
                return (*path, typo), unknown("key", typo, [key])
            return path, f"missing required key {key!r} ({' or '.join(tags)})"
        return (*path, key), unknown(key, str(ctx.get("tag")), tags, listed=True)
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"expected {ctx.get('expected')}, got {describe(value)}"
        close = (
            difflib.get_close_matches(str(value), options, n=1) if isinstance(value, str) else []
        )
        return path, message + (f"; did you mean {close[0]!r}?" if close else "")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return path, str(ctx["error"])
    if kind in _EXPECTED:
        return path, f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return path, f"must be {words} {ctx.get(key)}, got {describe(value)}"
    if kind in ("too_short", "too_long"):
        length = ctx.get("min_length" if kind == "too_short" else "max_length")
        if ctx.get("field_type") == "Value":
            return path, "must not be empty" if length == 1 else f"needs {length} characters"
        many = "at least" if kind == "too_short" else "at most"
        return path, f"needs {many} {length} item{'s' if length != 1 else ''}"
    msg = err["msg"]
    return path, msg[:1].lower() + msg[1:]


def _misspelt(key: str, value: Any, members: list[Any]) -> str | None:
    """The key of `value` that is a typo of the missing discriminator `key` (`polcy` for
    `policy`): one no member knows and close to `key`; None if there is none."""
    if not isinstance(value, dict):
        return None
    known = {f for m in members if _is_model(m) for f in m.model_fields}
    strays = [k for k in value if isinstance(k, str) and k not in known]
    return next((k for k in strays if difflib.get_close_matches(k, [key], n=1)), None)


def unknown(what: str, got: str, known: list[str], *, listed: bool = False) -> str:
    """`unknown key 'prot'; did you mean 'port'?`, else the known names when `listed`."""
    close = difflib.get_close_matches(got, known, n=1)
    if close:
        return f"unknown {what} {got!r}; did you mean {close[0]!r}?"
    if listed and known:
        return f"unknown {what} {got!r}; expected one of: {', '.join(known)}"
    return f"unknown {what} {got!r}"


def describe(value: Any) -> str:
    """A YAML value as a message shows it: `a mapping`, `a list`, `nothing`, `'text'`, `5`."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class Where:
    """Turns paths into problems with a line number and a readable key path."""

    def __init__(self, filename: str, doc: Document) -> None:
        self.filename = filename
        self.doc = doc

    def problem(self, path: YamlPath, message: str) -> Problem:
        return Problem(self.filename, self.doc.line(path), _format_path(path), message)

    def line(self, path: YamlPath) -> int | None:
        return self.doc.line(path)

    def raw(self, path: YamlPath) -> Any:
        return value_at(self.doc.data, path)


def _format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out
