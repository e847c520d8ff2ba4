"""Safe YAML loading that keeps every node's position.

Only plain data comes out: no tags, no merge keys, no duplicate keys, a bounded
number of aliases and nodes (no alias bombs), a bounded depth and file size.
Every failure is a Problem; nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_ALIASES = 200
MAX_NODES = 2_000_000
MAX_ALIAS_EXPANSION = 100_000  # nodes reachable again through aliases
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_SCALAR_CHARS = 1_000_000

PathKey = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_PLAIN_TAGS = {
    _STR,
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
    """Where each value (and each mapping key) of a document starts: 1-based (line, col).

    `literal` holds, for `|` block strings, where their first content line starts: a
    template error on line k of such a string is on line `literal[0] + k - 1` of the file.
    """

    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    literal: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

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

    def of_line(self, path: PathKey, line: int | None) -> tuple[int, int]:
        """Where line `line` (1-based) of the string at `path` is, when that can be known; else its start."""
        if path in self.literal and line:
            first, col = self.literal[path]
            return first + line - 1, col
        return self.of(path)


@dataclass
class Document:
    data: Any
    positions: Positions
    file: str  # as displayed in messages
    broken: set[PathKey] = field(default_factory=set)  # where a problem was found (its value is None)


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
    """SafeLoader whose composer counts aliases and depth (the bomb guards at parse time)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (alias bombs are refused)", event.start_mark
                )
        elif self.depth >= MAX_DEPTH and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                              event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _plain_constructors() -> dict[str, Callable[[yaml.ScalarNode], Any]]:
    c = yaml.SafeLoader("")
    table: dict[str, Callable[[yaml.ScalarNode], Any]] = {}
    for tag in ("int", "float", "bool", "null"):
        fn = yaml.SafeLoader.yaml_constructors[f"tag:yaml.org,2002:{tag}"]
        table[f"tag:yaml.org,2002:{tag}"] = (lambda f: lambda node: f(c, node))(fn)
    c.dispose()
    return table


_CONSTRUCT = _plain_constructors()


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
        self.broken: set[PathKey] = set()

    def size(self, node: yaml.Node) -> int:
        """Nodes in the subtree (memoised, so shared subtrees cost once; cycles count 1)."""
        todo: list[tuple[yaml.Node, bool]] = [(node, False)]
        while todo:
            n, done = todo.pop()
            key = id(n)
            if done:
                total = 1
                if isinstance(n, yaml.SequenceNode):
                    total += sum(self.sizes.get(id(c), 1) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    total += sum(self.sizes.get(id(k), 1) + self.sizes.get(id(v), 1) for k, v in n.value)
                self.sizes[key] = min(total, MAX_NODES + 1)
                continue
            if key in self.sizes:
                continue
            self.sizes[key] = 1  # provisional: a cycle counts once
            todo.append((n, True))
            if isinstance(n, yaml.SequenceNode):
                todo.extend((c, False) for c in n.value if id(c) not in self.sizes)
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    todo.extend((x, False) for x in (k, v) if id(x) not in self.sizes)
        return self.sizes[id(node)]

    def problem(self, node: yaml.Node, path: PathKey, message: str, hint: str | None = None, *,
                broken: bool = True) -> None:
        if broken:  # the value at `path` was dropped (None)
            self.broken.add(path)
        m = node.start_mark
        self.problems.append(Problem(self.file, m.line + 1, m.column + 1, format_path(path), message, hint))

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(node, path)
        if id(node) in self.stack:
            self.problem(node, path, "recursive alias", "an alias cannot refer to a node that contains it")
            return None
        if id(node) in self.built and not isinstance(node, yaml.ScalarNode):
            self.expanded += self.size(node)
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise _TooBig(node, path)
        self.built.add(id(node))
        self.positions.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if node.tag not in _PLAIN_TAGS:
            self.problem(node, path, f"YAML tag {_short_tag(node.tag)!r} is not allowed",
                         "recipes and catalogs hold plain data only")
            return None
        if isinstance(node, yaml.ScalarNode):
            if node.style == "|":
                self.positions.literal.setdefault(path, _literal_start(node))
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
        if len(node.value) > MAX_SCALAR_CHARS:
            self.problem(node, path, f"a value of {len(node.value)} characters; the limit is {MAX_SCALAR_CHARS}")
            return None
        if node.tag in (_STR, "tag:yaml.org,2002:timestamp"):
            return node.value  # dates stay text: a catalog column is not a datetime
        try:
            return _CONSTRUCT[node.tag](node)
        except (ValueError, ArithmeticError, yaml.YAMLError):
            noun = {"int": "an integer", "float": "a number", "bool": "a boolean"}.get(
                node.tag.rsplit(":", 1)[-1], "a value")
            self.problem(node, path, f"cannot read {node.value[:40]!r} as {noun}", "quote it to make it a string")
            return None

    def mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, path, "YAML merge keys ('<<') are not supported", "write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be a plain scalar",
                             "a '?' key or a list/mapping used as a key is not supported")
                continue
            if key_node.tag not in _PLAIN_TAGS:
                self.problem(key_node, path, f"YAML tag {_short_tag(key_node.tag)!r} is not allowed",
                             "recipes and catalogs hold plain data only")
                continue
            key = key_node.value  # as written: `on:` is the key 'on', `1:` the key '1'
            if key in seen:
                first = seen[key].start_mark
                self.problem(key_node, (*path, key), f"duplicate key {key!r}",
                             f"first defined at line {first.line + 1}", broken=False)
                continue
            seen[key] = key_node
            self.positions.keys[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, (*path, key))
        return out


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _literal_start(node: yaml.ScalarNode) -> tuple[int, int]:
    """Line and column of the first content line of a `|` block (1-based)."""
    mark = node.start_mark
    line, col = mark.line + 2, 1
    buffer = mark.buffer
    if isinstance(buffer, str):
        i = buffer.find("\n", mark.pointer)
        while 0 <= i < len(buffer) - 1:
            j = buffer.find("\n", i + 1)
            text = buffer[i + 1:j if j >= 0 else len(buffer)].rstrip("\0")
            if text.strip():
                return line, len(text) - len(text.lstrip(" ")) + 1
            if j < 0:
                break
            i, line = j, line + 1
    return mark.line + 2, col


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, path: PathKey) -> None:
        self.node = node
        self.path = path


def load_text(text: str, file: str) -> tuple[Document | None, list[Problem]]:
    """Parse YAML text; returns the document (None when unparseable) and every problem found."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        from .yamlerrors import explain  # loaded only for a file that does not parse

        said = explain(exc, text)
        return None, [Problem(file, said.line, said.col, "", said.message, said.hint)]
    except yaml.reader.ReaderError as exc:
        before = text[: max(exc.position, 0)]
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return None, [Problem(file, line, col, "", f"YAML error: character {what} is not allowed",
                              "is this a text file?")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, 1, 1, "", f"YAML error: {str(exc).splitlines()[0]}")]
    except RecursionError:
        return None, [Problem(file, 1, 1, "", f"YAML error: nested too deeply (more than {MAX_DEPTH} levels)")]
    builder = _Builder(file)
    if root is None:
        return Document(None, builder.positions, file), []
    try:
        data = builder.build(root, ())
    except _TooBig as big:
        m = big.node.start_mark
        return None, [Problem(file, m.line + 1, m.column + 1, format_path(big.path),
                              "document too large after alias expansion", "alias bombs are refused")]
    except RecursionError:
        return None, [Problem(file, 1, 1, "", f"YAML error: nested too deeply (more than {MAX_DEPTH} levels)")]
    return Document(data, builder.positions, file, builder.broken), builder.problems


def load_file(path: Path, file: str) -> tuple[Document | None, list[Problem]]:
    """Read and parse a YAML file with the size bound; unreadable files become problems."""
    raw, problems = read_text(path, file, MAX_FILE_BYTES)
    if raw is None:
        return None, problems
    return load_text(raw, file)


def read_text(path: Path, file: str, limit: int) -> tuple[str | None, list[Problem]]:
    """A UTF-8 text file (a BOM is fine) of at most `limit` bytes, or the problem reading it."""
    raw, problems = read_bounded(path, file, limit)
    if raw is None:
        return None, problems
    return decode_text(raw, file)


def read_bounded(path: Path, file: str, limit: int) -> tuple[bytes | None, list[Problem]]:
    """A file's bytes, at most `limit` of them, or the problem reading it."""
    try:
        size = path.stat().st_size
        if size > limit:
            return None, [Problem(file, 1, 1, "", f"file is {size} bytes; the limit is {limit}")]
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except IsADirectoryError:
        return None, [Problem(file, 1, 1, "", "is a folder, not a file")]
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [Problem(file, 1, 1, "", f"cannot read file: {reason}")]
    if len(raw) > limit:
        return None, [Problem(file, 1, 1, "", f"file is over {limit} bytes")]
    return raw, []


def decode_text(raw: bytes, file: str) -> tuple[str | None, list[Problem]]:
    """UTF-8 (with or without a BOM) text, or the problem decoding it."""
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Problem(file, line, 1, "", f"not UTF-8 text (byte {exc.start})", "save it as UTF-8")]
