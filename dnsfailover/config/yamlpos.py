"""A safe YAML loader that remembers where everything is.

PyYAML forgets line numbers once it has built plain dicts and lists, and silently keeps the
last of two equal mapping keys.  `parse()` composes the node tree first, records the line of
every mapping key and sequence item by its path (`("zones", "example.test.", "records")`),
notes duplicate keys, and only then builds the data with a `yaml.SafeLoader` subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

YamlPath = tuple[str | int, ...]
"""Mapping keys (always strings, see `PositionLoader`) and sequence indexes from the root."""

_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A mapping key written twice; PyYAML would have kept the later value."""

    path: YamlPath
    line: int
    first_line: int


@dataclass(slots=True)
class Document:
    """Parsed data plus the 1-based line of each key and item, by path (the root is `()`)."""

    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)

    def line(self, path: YamlPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that exists in the file."""
        for end in range(len(path), -1, -1):
            if (line := self.lines.get(path[:end])) is not None:
                return line
        return None


class PositionLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that tracks positions and keeps mapping keys as written.

    Every mapping key is the key's text as a `str` (so `1:` in a reverse zone is `"1"`, not an
    int, and `on:` is not `True`): every key in a dnsfailover config is a name.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[YamlPath, int] = {}
        self.duplicates: list[Duplicate] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(
                None, None, f"expected a mapping, found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            mapping[_key(key_node)] = self.construct_object(value_node, deep=deep)
        return mapping

    def record(self, node: Node, path: YamlPath = ()) -> None:
        """Record the lines below `node` (the document root) and any duplicate keys."""
        self.lines[path] = node.start_mark.line + 1
        self._walk(node, path, set())

    def _walk(self, node: Node, path: YamlPath, active: set[int]) -> None:
        if id(node) in active:  # a recursive alias; the data itself will be rejected later
            return
        active.add(id(node))
        if isinstance(node, MappingNode):
            self._walk_mapping(node, path, active, set(), report=True)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                self._walk(item, (*path, index), active)
        active.discard(id(node))

    def _walk_mapping(
        self, node: MappingNode, path: YamlPath, active: set[int], done: set[str], report: bool
    ) -> None:
        """Walk explicit keys, then `<<` merges; keys in `done` were set by an outer mapping.

        Duplicates inside a merged mapping are reported where it is defined, not per merge.
        """
        first: dict[str, int] = {}
        last: dict[str, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                continue  # construct_mapping reports it with its mark
            key, line = key_node.value, key_node.start_mark.line + 1
            if key not in first:
                first[key] = line
            elif report:
                self.duplicates.append(Duplicate((*path, key), line, first[key]))
            if key not in done:
                self.lines[(*path, key)] = line
                last[key] = value_node
        for key, value_node in last.items():
            self._walk(value_node, (*path, key), active)
        done = done | set(last)
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if isinstance(source, MappingNode) and id(source) not in active:
                    active.add(id(source))
                    self._walk_mapping(source, path, active, done, report=False)
                    active.discard(id(source))
                    done = done | {k.value for k, _ in source.value if isinstance(k, ScalarNode)}


def _key(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        raise ConstructorError(
            None, None, "a mapping key must be a plain name, not a list or mapping", node.start_mark
        )
    return str(node.value)


def parse(text: str) -> Document:
    """Parse one YAML document safely; raises `yaml.YAMLError` (with a mark) on bad syntax."""
    loader = PositionLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None)
        loader.record(node)
        data = loader.construct_document(node)
        return Document(data, loader.lines, loader.duplicates)
    finally:
        loader.dispose()


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
