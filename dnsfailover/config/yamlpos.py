"""A safe YAML loader that remembers where everything is.

PyYAML forgets line numbers once it has built plain dicts and lists, and silently keeps the
last of two equal mapping keys.  `parse()` builds the data straight from libyaml's event
stream (PyYAML's own parser when libyaml is missing), without a recursive walk, and records
as it goes the line of every mapping key and sequence item (`Document.line(path)`, paths like
`("zones", "example.test.", "records")`) and every duplicate key.  No node tree is built:
100,000 records load in about 2.5 s instead of 40.

Mapping keys are kept as written (`1:` in a reverse zone is `"1"`, `on:` is not `True`):
every key in a dnsfailover config is a name.  Scalars are resolved and built as PyYAML's
safe loader does, except numbers, which are read as YAML 1.2 writes them: an integer is
decimal digits (`017` is 17), a real has a decimal point (`1.5`, `2.5e3`, `.inf`, `.nan`);
YAML 1.1's other forms (`0x1F90`, `0o17`, `2:14:40`, `1_000`) stay strings, so a number
setting rejects them instead of taking a value nobody meant.  Anchors, aliases (which share
their anchor's value) and `<<` merges work.

Whatever the input, parsing is bounded (`DocumentLimit`): nesting deeper than `MAX_DEPTH`,
more than `MAX_NODES` values once aliases are expanded, a value of more than `MAX_SCALAR`
characters, aliases that expand to more than
`ALIAS_BASE` + `ALIAS_RATIO` times what the file writes (a "billion laughs"), and an alias
to the mapping or list it is inside are refused, at the line where the limit is crossed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

YamlPath = tuple[str | int, ...]
"""Mapping keys (always strings) and sequence indexes from the root."""

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_KEY_SHAPE = "a mapping key must be a plain name, not a list or mapping"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

MAX_DEPTH = 64  # a dnsfailover config needs about 10 levels
MAX_NODES = 1_000_000  # values (scalars, mappings, lists), aliases expanded; keys not counted
ALIAS_BASE = 10_000  # aliases may expand to this many values ...
ALIAS_RATIO = 10  # ... plus this many times the values the file writes itself
FALLBACK_CHARS = 1024 * 1024  # re-parse by PyYAML (for its messages) only up to this size
MAX_SCALAR = 1024 * 1024  # characters in one value (DNS data is at most 65,535 bytes)

_DECIMAL = re.compile(r"[-+]?[0-9]+")
_REAL = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SPECIAL = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf}
_SPECIAL |= {f"+{k}": v for k, v in _SPECIAL.items()} | {f"-{k}": -v for k, v in _SPECIAL.items()}
_SPECIAL |= {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
MAX_DIGITS = 100  # no number in a config needs more


class DocumentLimit(yaml.MarkedYAMLError):
    """Not a syntax error: the document is too big, too deep, or cannot be built as written.

    `parse` reports it as it is (no second parse for a better message)."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A mapping key written twice; PyYAML would have kept the later value."""

    path: YamlPath
    line: int
    first_line: int


class Lines:
    """Where the keys or items of one mapping or sequence are: key/index → (line, children)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: dict[str | int, tuple[int, Lines | None]] = {}


@dataclass(slots=True)
class Document:
    """Parsed data, the 1-based line of every key and item, and the duplicate keys."""

    data: Any
    root_line: int | None = None
    tree: Lines | None = None
    duplicates: list[Duplicate] = field(default_factory=list)

    def line(self, path: YamlPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that exists in the file."""
        found, node = self.root_line, self.tree
        for part in path:
            if node is None or (entry := node.at.get(part)) is None:
                break
            found, node = entry
        return found


class _MergeKey:
    """The `<<` key of a mapping: merged into it, never a key of its own."""


_MERGE: Any = _MergeKey()


class _Frame:
    """A mapping or sequence being built."""

    __slots__ = (
        "anchor",
        "firsts",
        "key",
        "key_line",
        "lines",
        "merges",
        "path",
        "size",
        "start_line",
        "value",
    )

    def __init__(self, value: dict[str, Any] | list[Any], path: YamlPath, start_line: int):
        self.value = value
        self.anchor: str | None = None
        self.size = 1  # values in it (itself included), aliases expanded
        self.path = path
        self.start_line = start_line
        self.lines = Lines()
        self.key: Any = None  # a mapping's key waiting for its value (None: expecting a key)
        self.key_line = 0
        self.merges: list[tuple[Any, Lines | None, Any]] = []  # (value, its lines, mark)
        self.firsts: dict[str, int] = {}  # first lines of keys written more than once


_constructor = SafeConstructor()
_resolver = Resolver()


def _scalar(event: Any) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        value = event.value
        if not event.implicit[0]:  # quoted: a string
            return value
        if _DECIMAL.fullmatch(value):
            if len(value) > MAX_DIGITS:
                raise DocumentLimit(
                    None, None, f"a number of {len(value):,} digits; at most {MAX_DIGITS}",
                    event.start_mark,
                )  # fmt: skip
            return int(value)
        if _REAL.fullmatch(value):
            if len(value) > MAX_DIGITS:
                raise DocumentLimit(
                    None, None, f"a number of {len(value):,} characters; at most {MAX_DIGITS}",
                    event.start_mark,
                )  # fmt: skip
            return float(value)
        if value in _SPECIAL:
            return _SPECIAL[value]
        tag = _resolver.resolve(ScalarNode, value, event.implicit)  # type: ignore[no-untyped-call]
        if tag in (_INT, _FLOAT):  # a YAML 1.1 form only (0x1F90, 2:14:40, 1_000): text
            return value
    if tag == _STR:
        return event.value
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return _constructor.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as e:  # an explicit tag's value it cannot build: !!int 0x..., !!binary
        message = f"cannot read {tag} {_short(event.value)}: {_short(str(e))}"
        raise DocumentLimit(None, None, message, event.start_mark) from None


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


class _Builder:
    def __init__(self) -> None:
        self.doc = Document(None)
        # anchor → (value, its lines, values in it; None while it is being built)
        self.anchors: dict[str, tuple[Any, Lines | None, int | None]] = {}
        self.stack: list[_Frame] = []
        self.root: list[Any] = []
        self.first_document: Any = None
        self.written = 0  # values the file writes
        self.aliased = 0  # values its aliases add

    def count(self, written: int, aliased: int, mark: Any) -> None:
        """Count values, and refuse a document past the limits."""
        self.written += written
        self.aliased += aliased
        if self.aliased > ALIAS_BASE + ALIAS_RATIO * self.written:
            message = (
                f"aliases expand to {self.aliased:,} values, more than "
                f"{ALIAS_RATIO} times what the file writes ({self.written:,}); "
                "is it an alias bomb?"
            )
            raise DocumentLimit(None, None, message, mark)
        if self.written + self.aliased > MAX_NODES:
            message = (
                f"more than {MAX_NODES:,} values (aliases expanded); "
                "put large record sets in a zone_file"
            )
            raise DocumentLimit(None, None, message, mark)

    def feed(self, event: Any) -> bool:
        """Take one event; False at the end of the stream."""
        if isinstance(event, ScalarEvent):
            self.scalar(event)
        elif isinstance(event, MappingStartEvent | SequenceStartEvent):
            self.start(event, isinstance(event, MappingStartEvent))
        elif isinstance(event, MappingEndEvent | SequenceEndEvent):
            frame = self.stack.pop()
            if frame.merges:
                _merge(frame)
            if frame.anchor is not None:
                self.anchors[frame.anchor] = (frame.value, frame.lines, frame.size)
            self.attach(frame.value, frame.start_line, frame.lines, event, frame.size)
        elif isinstance(event, AliasEvent):
            mark: Any = event.start_mark
            if event.anchor not in self.anchors:
                message = f"found undefined alias {event.anchor!r}"
                raise ComposerError(None, None, message, mark)
            value, lines, size = self.anchors[event.anchor]
            if size is None:
                message = f"alias {event.anchor!r} refers to a mapping or list it is inside"
                raise DocumentLimit(None, None, message, mark)
            self.count(0, size, mark)
            self.attach(value, mark.line + 1, lines, event, size)
        elif isinstance(event, DocumentStartEvent):
            start: Any = event.start_mark
            if self.first_document is not None:
                raise ComposerError(
                    "expected a single document in the stream",
                    self.first_document,
                    "but found another document",
                    start,
                )
            self.first_document = start
        return not isinstance(event, StreamEndEvent)

    def scalar(self, event: Any) -> None:
        if len(event.value) > MAX_SCALAR:
            message = f"a value of {len(event.value):,} characters; at most {MAX_SCALAR:,}"
            raise DocumentLimit(None, None, message, event.start_mark)
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            # A key: its text as written, or the merge marker.
            merge = event.value == "<<" and event.implicit[0] and event.tag is None
            top.key = _MERGE if merge else str(event.value)
            top.key_line = event.start_mark.line + 1
            return
        value = _scalar(event)
        self.count(1, 0, event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, None, 1)
        self.attach(value, event.start_mark.line + 1, None, event, 1)

    def start(self, event: Any, is_map: bool) -> None:
        if event.tag not in (None, "!", _MAP if is_map else _SEQ):
            message = f"could not determine a constructor for the tag {event.tag!r}"
            raise ConstructorError(None, None, message, event.start_mark)
        path: YamlPath = ()
        if self.stack:
            top = self.stack[-1]
            if isinstance(top.value, list):
                path = (*top.path, len(top.value))
            elif top.key is None:
                raise ConstructorError(None, None, _KEY_SHAPE, event.start_mark)
            elif top.key is not _MERGE:
                path = (*top.path, top.key)
        if len(self.stack) >= MAX_DEPTH:
            message = f"nested deeper than {MAX_DEPTH} levels"
            raise DocumentLimit(None, None, message, event.start_mark)
        self.count(1, 0, event.start_mark)
        frame = _Frame({} if is_map else [], path, event.start_mark.line + 1)
        if event.anchor is not None:  # known from its end on; an alias inside it is refused
            frame.anchor = event.anchor
            self.anchors[event.anchor] = (frame.value, frame.lines, None)
        self.stack.append(frame)

    def attach(self, value: Any, line: int, lines: Lines | None, event: Any, size: int) -> None:
        if not self.stack:
            self.root.append(value)
            self.doc.root_line, self.doc.tree = line, lines
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            top.lines.at[len(top.value)] = (line, lines)
            top.value.append(value)
            return
        if top.key is None:
            raise ConstructorError(None, None, _KEY_SHAPE, event.start_mark)
        key, top.key = top.key, None
        if key is _MERGE:
            top.merges.append((value, lines, event.start_mark))
            return
        if key in top.value:  # PyYAML keeps the later value: so do its line and children
            first = top.firsts.setdefault(key, top.lines.at[key][0])
            self.doc.duplicates.append(Duplicate((*top.path, key), top.key_line, first))
        top.lines.at[key] = (top.key_line, lines)
        top.value[key] = value


def _merge(frame: _Frame) -> None:
    """Add the keys of the `<<` mappings that the mapping does not set itself (the first
    merge that sets a key wins), with the lines where they are defined."""
    assert isinstance(frame.value, dict)
    for value, lines, mark in frame.merges:
        if isinstance(value, list):
            items = lines.at if lines is not None else {}
            sources = [(v, items[i][1] if i in items else None) for i, v in enumerate(value)]
        else:
            sources = [(value, lines)]
        for source, source_lines in sources:
            if not isinstance(source, dict):
                message = "a << merge needs a mapping or a list of mappings"
                raise ConstructorError(None, None, message, mark)
            for key, item in source.items():
                if key not in frame.value:
                    frame.value[key] = item
                    if source_lines is not None and key in source_lines.at:
                        frame.lines.at[key] = source_lines.at[key]


def parse(text: str) -> Document:
    """Parse one YAML document safely; raises `yaml.YAMLError` (with a mark) on bad syntax.

    Syntax errors are reported as PyYAML's own parser words them (it names the character at
    fault, libyaml does not): a document (up to `FALLBACK_CHARS`) that libyaml rejects is
    parsed again by it.  A document past the limits raises `DocumentLimit`.
    """
    try:
        return _parse(text, _LOADER)
    except DocumentLimit:
        raise
    except yaml.MarkedYAMLError:
        # PyYAML's parser is slow (quadratic in flow nesting): only for a small document.
        if _LOADER is yaml.SafeLoader or len(text) > FALLBACK_CHARS:
            raise
    return _parse(text, yaml.SafeLoader)


def _parse(text: str, loader_class: Any) -> Document:
    builder = _Builder()
    loader = loader_class(text)
    try:
        while builder.feed(loader.get_event()):
            pass
    finally:
        loader.dispose()
    builder.doc.data = builder.root[0] if builder.root else None
    return builder.doc


def value_at(data: Any, path: YamlPath) -> Any:
    """The value at `path` in parsed data, or None when it is not there."""
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data
