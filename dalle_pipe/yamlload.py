"""Safe YAML loading that keeps every node's position.

Only plain data comes out: no tags, no merge keys, no duplicate keys, a bounded
number of aliases and nodes (no alias bombs), a bounded file size.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_ALIASES = 200
MAX_NODES = 2_000_000
MAX_ALIAS_EXPANSION = 100_000  # nodes reachable again through aliases

PathKey = tuple[str | int, ...]

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:timestamp",
}


@dataclass
class Positions:
    """Where each value (and each mapping key) of a document starts: 1-based (line, col)."""

    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: PathKey, *, at_key: bool = False) -> tuple[int, int]:
        """The position of `path`, or of its nearest ancestor that has one."""
        if at_key and path in self.keys:
            return self.keys[path]
        p = tuple(path)
        while p:
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))


@dataclass
class Document:
    data: Any
    positions: Positions
    file: str  # as displayed in messages


def format_path(path: PathKey) -> str:
    """('steps', 1, 'edit', 'mask') -> 'steps[1].edit.mask'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer counts aliases (the bomb guard at parse time)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases", event.start_mark
                )
        return super().compose_node(parent, index)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.positions = Positions()
        self.nodes = 0
        self.expanded = 0
        self.stack: set[int] = set()
        self.built: set[int] = set()
        self.sizes: dict[int, int] = {}

    def size(self, node: yaml.Node) -> int:
        """Nodes in the subtree (memoised, so shared subtrees cost once; cycles count 1)."""
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        self.sizes[key] = 1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(self.size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(self.size(k) + self.size(v) for k, v in node.value)
        self.sizes[key] = min(total, MAX_NODES + 1)
        return self.sizes[key]

    def problem(self, node: yaml.Node, path: PathKey, message: str, hint: str | None = None) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.file, m.line + 1, m.column + 1, format_path(path), message, hint))

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(node)
        if id(node) in self.stack:
            self.problem(node, path, "recursive alias")
            return None
        if id(node) in self.built and not isinstance(node, yaml.ScalarNode):
            self.expanded += self.size(node)
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise _TooBig(node)
        self.built.add(id(node))
        self.positions.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if node.tag not in _PLAIN_TAGS:
            self.problem(node, path, f"YAML tag {node.tag!r} is not allowed", "recipes hold plain data only")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, path)
        finally:
            self.stack.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: PathKey) -> Any:
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # dates stay text: a catalog column is not a datetime
        value = _CONSTRUCTOR.construct_object(node, deep=True)
        if isinstance(value, dt.date):
            return node.value
        return value

    def mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, path, "YAML merge keys ('<<') are not supported", "write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be a plain scalar")
                continue
            key = self.scalar(key_node, path)
            key = "null" if key is None else str(key) if not isinstance(key, str) else key
            if key in seen:
                first = seen[key].start_mark
                self.problem(
                    key_node, (*path, key), f"duplicate key {key!r}",
                    f"first defined at line {first.line + 1}",
                )
                continue
            seen[key] = key_node
            self.positions.keys[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, (*path, key))
        return out


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


_CONSTRUCTOR = yaml.SafeLoader("")


def load_text(text: str, file: str) -> tuple[Document | None, list[Problem]]:
    """Parse YAML text; returns the document (None when unparseable) and every problem found."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = str(exc.problem or exc.context or "invalid YAML")
        return None, [Problem(file, line, col, "", f"YAML error: {msg}")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 1, 1, "", f"YAML error: {exc}")]
    builder = _Builder(file)
    if root is None:
        return Document(None, builder.positions, file), []
    try:
        data = builder.build(root, ())
    except _TooBig as big:
        m = big.node.start_mark
        return None, [Problem(file, m.line + 1, m.column + 1, "", "document too large after alias expansion",
                              "alias bombs are refused")]
    return Document(data, builder.positions, file), builder.problems


def load_file(path: Path, file: str) -> tuple[Document | None, list[Problem]]:
    """Read and parse a YAML file with the size bound; unreadable files become problems."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, [Problem(file, 1, 1, "", f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")]
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(file, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [Problem(file, 1, 1, "", f"not UTF-8 text (byte {exc.start})")]
    return load_text(text, file)
