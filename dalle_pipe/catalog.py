"""Catalog rows from csv/json/jsonl/yaml, their keys, `where`, and the matrix: units."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Problem
from .templating import RenderError, compile_expression, compile_template, evaluate, render
from .yamlload import load_text

MAX_CATALOG_BYTES = 64 * 1024 * 1024
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".yaml": "yaml", ".yml": "yaml"}


@dataclass(frozen=True)
class Row:
    """One catalog row: its 1-based number, where it starts, and its fields."""

    number: int
    file: str
    line: int
    col: int
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Unit:
    """One row times one matrix combination."""

    key: str
    row: Row | None
    matrix: Mapping[str, Any]

    @property
    def item(self) -> Mapping[str, Any]:
        return self.row.data if self.row else {}

    def describe(self) -> str:
        """How a message names this unit: `row 3 (key 'mug')`."""
        parts = []
        if self.row is not None:
            parts.append(f"row {self.row.number}")
        if self.key:
            parts.append(f"key {self.key!r}")
        if not parts:
            return "the unit"
        return parts[0] + (f" ({parts[1]})" if len(parts) > 1 else "")


def read_rows(path: Path, file: str, fmt: str | None = None) -> tuple[list[Row], list[Problem]]:
    """Rows of a catalog file; problems carry the catalog file's own line numbers."""
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        return [], [Problem(file, 1, 1, "", f"unknown catalog format {path.suffix!r}",
                            "use .csv, .json, .jsonl or .yaml, or set catalog.format")]
    try:
        size = path.stat().st_size
        if size > MAX_CATALOG_BYTES:
            return [], [Problem(file, 1, 1, "", f"catalog is {size} bytes; the limit is {MAX_CATALOG_BYTES}")]
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem(file, 1, 1, "", f"catalog is not UTF-8 text (byte {exc.start})")]
    except OSError as exc:
        return [], [Problem(file, 1, 1, "", f"cannot read catalog: {exc.strerror or exc}")]
    reader = {"csv": _csv_rows, "json": _json_rows, "jsonl": _jsonl_rows, "yaml": _yaml_rows}[fmt]
    return reader(text, file)


def _csv_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        return [], [Problem(file, 1, 1, "", f"CSV error: {exc}")]
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            problems.append(Problem(file, 1, 1, "", f"column {i + 1} has no name"))
        elif name in seen:
            problems.append(Problem(file, 1, 1, "", f"duplicate column {name!r}"))
        seen.add(name)
    line = reader.line_num + 1
    number = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(file, line, 1, "", f"CSV error: {exc}"))
            break
        start, line = line, reader.line_num + 1
        if not fields or fields == [""]:
            continue
        number += 1
        if len(fields) != len(header):
            problems.append(Problem(file, start, 1, "", f"row {number} has {len(fields)} fields; "
                                    f"the header has {len(header)}", "quote fields that contain commas"))
            continue
        rows.append(Row(number, file, start, 1, dict(zip(header, fields, strict=True))))
    return rows, problems


def _json_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [Problem(file, exc.lineno, exc.colno, "", f"JSON error: {exc.msg}")]
    doc, _ = load_text(text, file)  # JSON is YAML: borrow its positions when it parses
    positions = doc.positions if doc else None
    return _rows_from_list(data, file, lambda i: positions.of((i,)) if positions else (1, 1))


def _jsonl_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, lineno, exc.colno, "", f"JSON error: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(file, lineno, 1, "", "each line must be a JSON object"))
            continue
        rows.append(Row(len(rows) + 1, file, lineno, 1, obj))
    return rows, problems


def _yaml_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    doc, problems = load_text(text, file)
    if doc is None or problems:
        return [], problems
    return _rows_from_list(doc.data, file, lambda i: doc.positions.of((i,)))


def _rows_from_list(data: Any, file: str, where: Any) -> tuple[list[Row], list[Problem]]:
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], [Problem(file, 1, 1, "", "a catalog must be a list of objects")]
    rows: list[Row] = []
    problems: list[Problem] = []
    for i, obj in enumerate(data):
        line, col = where(i)
        if not isinstance(obj, dict):
            problems.append(Problem(file, line, col, f"[{i}]", "each row must be an object"))
            continue
        rows.append(Row(i + 1, file, line, col, obj))
    return rows, problems


def inline_rows(items: Sequence[Any], file: str, where: Any) -> tuple[list[Row], list[Problem]]:
    """Rows given inline under `items:`; positions come from the recipe."""
    return _rows_from_list(list(items), file, where)


@dataclass(frozen=True)
class KeySpec:
    """How keys and filters are computed, and where to blame problems."""

    key: str | None
    key_at: tuple[str, int, int]
    where: str | None
    where_at: tuple[str, int, int]


def expand_units(
    rows: list[Row] | None,
    spec: KeySpec,
    matrix: Mapping[str, Sequence[Any]],
    matrix_at: tuple[str, int, int],
    base_context: Mapping[str, Any],
) -> tuple[list[Unit], list[Problem]]:
    """Apply `where`, compute keys, cross with the matrix: units in a deterministic order."""
    problems: list[Problem] = []
    kept: list[tuple[str, Row]] = []
    if rows is not None:
        key_tpl = where_tpl = None
        try:
            key_tpl = compile_template(spec.key) if spec.key else None
        except RenderError as exc:
            problems.append(Problem(*spec.key_at, "catalog.key", exc.message))
            return [], problems
        try:
            where_tpl = compile_expression(spec.where) if spec.where else None
        except RenderError as exc:
            problems.append(Problem(*spec.where_at, "catalog.where", exc.message))
            return [], problems
        seen: dict[str, Row] = {}
        for row in rows:
            ctx = {**base_context, "item": row.data}
            if where_tpl is not None:
                try:
                    if not evaluate(where_tpl, ctx):
                        continue
                except RenderError as exc:
                    problems.append(Problem(*spec.where_at, "catalog.where", f"row {row.number}: {exc.message}"))
                    continue
            if key_tpl is not None:
                try:
                    key = render(key_tpl, ctx).strip()
                except RenderError as exc:
                    problems.append(Problem(*spec.key_at, "catalog.key", f"row {row.number}: {exc.message}"))
                    continue
            elif "id" in row.data and row.data["id"] not in (None, ""):
                key = str(row.data["id"]).strip()
            else:
                key = str(row.number)
            bad = _unsafe(key)
            if bad:
                problems.append(Problem(row.file, row.line, row.col, f"row {row.number}",
                                        f"key {key!r} {bad}", "keys become folder names: use letters, "
                                        "digits, '.', '_' and '-', starting with a letter or digit"))
                continue
            folded = key.lower()
            if folded in seen:
                first = seen[folded]
                problems.append(Problem(row.file, row.line, row.col, f"row {row.number}",
                                        f"duplicate key {key!r}", f"row {first.number} has it too"))
                continue
            seen[folded] = row
            kept.append((key, row))
    names = list(matrix)
    combos: list[dict[str, Any]] = [dict(zip(names, values, strict=True))
                                    for values in itertools.product(*(matrix[n] for n in names))]
    for name in names:
        for value in matrix[name]:
            bad = _unsafe(str(value))
            if bad:
                problems.append(Problem(*matrix_at, f"matrix.{name}", f"value {value!r} {bad}",
                                        "matrix values become folder names"))
    units: list[Unit] = []
    row_list: list[tuple[str, Row | None]] = list(kept) if rows is not None else [("", None)]
    for key, row in row_list:
        for combo in combos:
            parts = [key] if key else []
            parts += [str(combo[n]) for n in names]
            units.append(Unit("/".join(parts), row, combo))
    return units, problems


def _unsafe(key: str) -> str | None:
    if not key:
        return "is empty"
    if not KEY_RE.match(key):
        return "is not path-safe"
    if key in {".", ".."} or ".." in key:
        return "is not path-safe"
    return None
