"""A JSON codec for the frozen dataclasses nodes share through etcd.

It is driven by each dataclass's fields and type hints, not by hand-written
`to_dict`/`from_dict` pairs, because the engine's value types grow fields while nodes
of different versions share one etcd: unknown keys are ignored and missing keys take
the field's default, so an older node reads a newer node's decision and vice versa.
Values that do not match their declared type raise `CodecError` naming the path.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from dnsfailover.errors import DnsFailoverError

T = TypeVar("T")


class CodecError(DnsFailoverError):
    """Stored data does not match the type it is decoded as (the message names where)."""


def encode(obj: Any, *, compact: bool = False) -> Any:
    """Turn a value made of dataclasses, enums, tuples and mappings into JSON-able data.

    `compact` leaves out dataclass fields that hold their default (`decode` fills them in
    again): what goes to etcd for every changed name is then a few hundred bytes.
    """
    kind = type(obj)
    if kind is str or kind is int or kind is float or kind is bool or obj is None:
        return obj
    fields = _init_fields(kind)  # type: ignore[arg-type]  # any type hashes
    if fields is not None:
        # Only what the constructor takes: caches (init=False fields) are not the value.
        out = {}
        for name, default in fields:
            value = getattr(obj, name)
            if compact and default is not _NO_DEFAULT and value == default:
                continue
            out[name] = encode(value, compact=compact)
        return out
    if isinstance(obj, enum.Enum):
        return encode(obj.value)
    if isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, Mapping):
        return {_encode_key(k): encode(v, compact=compact) for k, v in obj.items()}
    if isinstance(obj, tuple | list | set | frozenset):
        items = [encode(v, compact=compact) for v in obj]
        # Sets have no order; sort so equal values encode to equal JSON.
        return sorted(items, key=repr) if isinstance(obj, set | frozenset) else items
    raise CodecError(f"cannot encode {type(obj).__name__}")


_NO_DEFAULT = object()


@functools.cache
def _init_fields(kind: Any) -> tuple[tuple[str, Any], ...] | None:
    """The constructor's fields of a dataclass type with their defaults (None for anything
    else)."""
    if not dataclasses.is_dataclass(kind):
        return None
    return tuple((f.name, _default(f)) for f in dataclasses.fields(kind) if f.init)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def _encode_key(key: Any) -> str:
    data = encode(key)
    if isinstance(data, str):
        return data
    if isinstance(data, int | float | list):  # JSON keys are strings; decode converts back
        return json.dumps(data)
    raise CodecError(f"mapping key {key!r} cannot be a JSON object key")


def decode(cls: type[T], data: Any) -> T:
    """Build a `cls` (a dataclass, or any type `encode` handles) from `encode`'s output."""
    return typing.cast(T, _decode(cls, data, "$"))


def dumps(obj: Any) -> bytes:
    """`encode` then compact JSON, as stored in etcd."""
    return json.dumps(encode(obj), separators=(",", ":"), sort_keys=True).encode()


def loads(cls: type[T], raw: bytes | str) -> T:
    """Parse stored JSON and `decode` it; malformed JSON is a `CodecError` too."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CodecError(f"not JSON: {e}") from e
    return decode(cls, data)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, data: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return data
    if tp is None or tp is type(None):
        if data is not None:
            raise CodecError(f"{path}: expected null, got {type(data).__name__}")
        return None
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return _decode_union(typing.get_args(tp), data, path)
    if origin is typing.Literal:
        if data not in typing.get_args(tp):
            raise CodecError(f"{path}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is not None:
        return _decode_generic(origin, typing.get_args(tp), data, path)
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return _decode_dataclass(tp, data, path)
        if issubclass(tp, enum.Enum):
            try:
                return tp(data)
            except ValueError as e:
                raise CodecError(f"{path}: {data!r} is not a {tp.__name__}") from e
        return _decode_scalar(tp, data, path)
    raise CodecError(f"{path}: unsupported type {tp!r}")


def _decode_union(args: tuple[Any, ...], data: Any, path: str) -> Any:
    if data is None and type(None) in args:
        return None
    errors: list[str] = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _decode(arg, data, path)
        except CodecError as e:
            errors.append(str(e))
    raise CodecError("; ".join(errors) or f"{path}: no type matches {data!r}")


def _decode_generic(origin: Any, args: tuple[Any, ...], data: Any, path: str) -> Any:
    if issubclass(origin, Mapping):
        if not isinstance(data, dict):
            raise CodecError(f"{path}: expected an object, got {type(data).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_decode_key(kt, k, path): _decode(vt, v, f"{path}.{k}") for k, v in data.items()}
    if issubclass(origin, tuple | list | set | frozenset):
        if not isinstance(data, list):
            raise CodecError(f"{path}: expected an array, got {type(data).__name__}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(data):
                raise CodecError(f"{path}: expected {len(args)} items, got {len(data)}")
            return tuple(
                _decode(t, v, f"{path}[{i}]")
                for i, (t, v) in enumerate(zip(args, data, strict=True))
            )
        et = args[0] if args else Any
        items = [_decode(et, v, f"{path}[{i}]") for i, v in enumerate(data)]
        return tuple(items) if origin is tuple else origin(items)
    raise CodecError(f"{path}: unsupported type {origin!r}")


def _decode_key(tp: Any, key: str, path: str) -> Any:
    if typing.get_origin(tp) is tuple:  # e.g. (name, type) keys, written as JSON arrays
        try:
            return _decode(tp, json.loads(key), f"{path}.{key}")
        except ValueError as e:
            raise CodecError(f"{path}: key {key!r} is not a JSON array") from e
    if tp in (int, float):
        try:
            return tp(json.loads(key))
        except (ValueError, TypeError) as e:
            raise CodecError(f"{path}: key {key!r} is not a {tp.__name__}") from e
    return _decode(tp, key, f"{path}.{key}")


def _decode_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise CodecError(f"{path}: expected an object for {cls.__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise CodecError(f"{path}: {cls.__name__} needs {f.name!r}")
    return cls(**kwargs)


def _decode_scalar(tp: type, data: Any, path: str) -> Any:
    if tp is bool:
        ok = isinstance(data, bool)
    elif tp is int:
        ok = isinstance(data, int) and not isinstance(data, bool)
    elif tp is float:
        ok = isinstance(data, int | float) and not isinstance(data, bool)
        if ok:
            return float(data)
    elif tp is str:
        ok = isinstance(data, str)
    else:
        raise CodecError(f"{path}: unsupported type {tp.__name__}")
    if not ok:
        raise CodecError(f"{path}: expected {tp.__name__}, got {type(data).__name__}")
    return data
