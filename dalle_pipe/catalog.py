"""Catalog rows from csv/json/jsonl/yaml, their keys, `where`, and the matrix: units."""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Problem
from .templating import RenderError, compile_expression, compile_template, evaluate, render
from .yamlload import PathKey, format_path, load_text, read_text

MAX_CATALOG_BYTES = 64 * 1024 * 1024
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".yaml": "yaml", ".yml": "yaml"}
KEY_HINT = "keys become folder names: use letters, digits, '.', '_' and '-', starting with a letter or digit"
MAX_NAMED = 3  # units named in one grouped problem, then a count
MAX_GROUPS = 3  # distinct messages reported for one place, then one more problem for the rest
MAX_UNITS = 1_000_000  # units one recipe may expand to (rows x matrix combinations); --max-units changes it
UNITS_HINT = "--max-units N raises the ceiling; or split the catalog, or use `where` to keep fewer rows"

Where = Callable[[PathKey], tuple[str, int, int]]  # a recipe path -> (file, line, col)


@dataclass(frozen=True, slots=True)
class Row:
    """One catalog row: its 1-based number, where it starts, and its fields."""

    number: int
    file: str
    line: int
    col: int
    data: Mapping[str, Any]
    label: str = ""  # how a problem's path names it: "row 3", or "items[2]" for inline rows

    @property
    def path(self) -> str:
        return self.label or f"row {self.number}"


@dataclass(frozen=True, slots=True)
class Unit:
    """One row times one matrix combination."""

    key: str
    row: Row | None
    matrix: Mapping[str, Any]

    @property
    def item(self) -> Mapping[str, Any]:
        return self.row.data if self.row else {}

    def describe(self) -> str:
        """How a message names this unit: `row 3 (key 'mug')`; empty for the only unit of a recipe."""
        if self.row is not None:
            return f"row {self.row.number} (key {self.key!r})" if self.key else f"row {self.row.number}"
        return f"key {self.key!r}" if self.key else ""


class FailureLog:
    """Failures of templates for some units or rows, grouped: one problem per place and message.

    At most MAX_GROUPS distinct messages are kept per place; the others (an output path that
    differs for every unit, say) become one problem naming the first of them and a count.
    """

    def __init__(self, noun: str = "units") -> None:
        self.noun = noun
        self.groups: dict[tuple[str, int, int, str, str], tuple[list[str], str | None]] = {}
        self.counts: dict[tuple[str, int, int, str, str], int] = {}
        self.kinds: dict[tuple[str, int, int, str], int] = {}  # distinct messages per place
        self.overflow: dict[tuple[str, int, int, str], tuple[str, str, str | None, int]] = {}

    def add(self, at: tuple[str, int, int], path: str, who: str, message: str, hint: str | None = None) -> None:
        place = (*at, path)
        key = (*place, message)
        count = self.counts.get(key)
        if count is None:
            if self.kinds.get(place, 0) >= MAX_GROUPS:
                first = self.overflow.get(place)
                self.overflow[place] = (who, message, hint, 1) if first is None else (*first[:3], first[3] + 1)
                return
            self.kinds[place] = self.kinds.get(place, 0) + 1
            self.counts[key] = 1
            self.groups[key] = ([who], hint)
            return
        self.counts[key] = count + 1
        if count < MAX_NAMED:
            self.groups[key][0].append(who)

    def problems(self, total: int) -> list[Problem]:
        """One problem per group: `row 3 (key 'x'): msg`, `row 1, row 4 and 7 more units: msg`, `all 9 units: msg`."""
        out = []
        for key, (names, hint) in self.groups.items():
            file, line, col, path, message = key
            count = self.counts[key]
            if count == total and total > MAX_NAMED:
                who = f"all {total} {self.noun}"
            elif count > len(names):
                who = f"{', '.join(names)} and {count - len(names)} more {self.noun}"
            else:
                who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            out.append(Problem(file, line, col, path, f"{who}: {message}" if who else message, hint))
        for (file, line, col, path), (who, message, hint, count) in self.overflow.items():
            more = f" and {count - 1} more {self.noun}" if count > 1 else ""
            extra = f"as it is for the first of these {count} {self.noun}"
            out.append(Problem(file, line, col, path, f"{who}{more}: {message}",
                               f"{hint}; {extra}" if hint else extra))
        return out


# --------------------------------------------------------------------------- reading


def catalog_format(path: Path, fmt: str | None = None) -> str | None:
    """The format named, else the one the extension says; None when neither does."""
    fmt = fmt or FORMATS.get(path.suffix.lower())
    return fmt if fmt in ("csv", "json", "jsonl", "yaml") else None


class TooManyRows(Exception):
    """A catalog holds more rows than the unit ceiling: counted before any row is built."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the catalog has {count} rows, more than the ceiling of {limit} units")
        self.count = count
        self.limit = limit


def read_rows(path: Path, file: str, fmt: str | None = None, *,
              limit: int | None = None) -> tuple[list[Row], list[Problem]]:
    """Rows of a catalog file; problems carry the catalog file's own line numbers.

    Raises TooManyRows, before building any row, when there are more than `limit`."""
    fmt = catalog_format(path, fmt)
    if fmt is None:
        return [], [Problem(file, 1, 1, "", f"unknown catalog format {path.suffix or fmt!r}",
                            "use .csv, .json, .jsonl or .yaml, or set catalog.format")]
    text, problems = read_text(path, file, MAX_CATALOG_BYTES)
    if text is None:
        return [], problems
    return parse_rows(text, file, fmt, limit=limit)


def parse_rows(text: str, file: str, fmt: str, *, limit: int | None = None) -> tuple[list[Row], list[Problem]]:
    """Rows of catalog text in one of the four formats (TooManyRows past `limit`)."""
    if limit is not None and fmt in ("csv", "jsonl") and len(text) > 2 * limit:
        count = _count_rows(text, fmt, limit)  # a row takes two characters at least: else no need
        if count > limit:
            raise TooManyRows(count, limit)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return [], [Problem(file, line, 1, "", "catalog contains a NUL byte", "is it a binary file?")]
    if fmt == "json":
        return _json_rows(text, file, limit)
    reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "yaml": _yaml_rows}[fmt]
    rows, problems = reader(text, file)
    if limit is not None and len(rows) > limit:
        raise TooManyRows(len(rows), limit)
    return rows, problems


_LINE = re.compile(r"^[ \t\r]*\S", re.MULTILINE)


def _count_rows(text: str, fmt: str, limit: int) -> int:
    """How many rows the text holds, counted without building them (a malformed one counts too)."""
    if fmt == "jsonl":
        return sum(1 for _ in _LINE.finditer(text))
    count = -1  # the header
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for fields in reader:
            if fields and fields != [""]:
                count += 1
    except csv.Error:
        pass  # reported when the rows are read
    return count


def _csv_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        return [], [Problem(file, 1, 1, "", *_csv_message(exc))]
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            problems.append(Problem(file, 1, 1, "", f"column {i + 1} of the header has no name"))
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
            problems.append(Problem(file, line, 1, f"row {number + 1}", *_csv_message(exc)))
            break
        start, line = line, reader.line_num + 1
        if not fields or fields == [""]:
            continue
        number += 1
        if len(fields) != len(header):
            problems.append(Problem(file, start, 1, f"row {number}", f"has {len(fields)} fields; the header "
                                    f"has {len(header)}", "quote fields that contain commas"))
            continue
        rows.append(Row(number, file, start, 1, dict(zip(header, fields, strict=True))))
    return rows, problems


def _csv_message(exc: csv.Error) -> tuple[str, str | None]:
    text = str(exc)
    if "unexpected end of data" in text:
        return "CSV error: a quoted field is not closed before the end of the file", "is a quote left open?"
    if "expected after" in text:
        return "CSV error: text follows a closing quote", 'write a quote inside a quoted field as ""'
    if "field larger than field limit" in text:
        return "CSV error: a field is longer than 131072 characters", "is a quote left open?"
    return f"CSV error: {text}", None


class _LineIndex:
    """Offsets -> 1-based (line, col)."""

    def __init__(self, text: str) -> None:
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def at(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)
_SPACE = re.compile(r"[ \t\n\r]*")


def _count_json(text: str, pos: int, counted: int) -> int:
    """The elements of a JSON list from `pos` on, each decoded and dropped: no row is kept."""
    while True:
        try:
            _, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return counted
        counted += 1
        pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] != ",":
            return counted
        pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]


def _json_rows(text: str, file: str, limit: int | None = None) -> tuple[list[Row], list[Problem]]:
    """A JSON array of objects, read element by element so each row knows where it starts."""
    lines = _LineIndex(text)
    pos = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if pos == len(text):
        return [], []
    if text[pos] != "[":
        try:
            _DECODER.decode(text)
        except ValueError as exc:
            return [], [_json_problem(file, lines, exc, pos)]
        except RecursionError:
            return [], [Problem(file, *lines.at(pos), "", "JSON error: nested too deeply")]
        return [], [Problem(file, *lines.at(pos), "", "a catalog must be a list of objects")]
    rows: list[Row] = []
    problems: list[Problem] = []
    pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
    index = 0
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            try:
                obj, end = _DECODER.raw_decode(text, pos)
            except ValueError as exc:
                return rows, [*problems, _json_problem(file, lines, exc, pos)]
            except RecursionError:
                return rows, [*problems, Problem(file, *lines.at(pos), f"row {index + 1}",
                                                 "JSON error: nested too deeply")]
            if limit is not None and index >= limit:
                raise TooManyRows(_count_json(text, pos, index), limit)
            line, col = lines.at(pos)
            if isinstance(obj, dict):
                rows.append(Row(index + 1, file, line, col, obj))
            else:
                problems.append(Problem(file, line, col, f"row {index + 1}", "each row must be an object"))
            index += 1
            pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if pos < len(text) and text[pos] == ",":
                pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            return rows, [*problems, Problem(file, *lines.at(pos), "", "JSON error: expected ',' or ']'")]
    pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
    if pos < len(text):
        problems.append(Problem(file, *lines.at(pos), "", "JSON error: extra data after the list"))
    return rows, problems


def _json_problem(file: str, lines: _LineIndex, exc: ValueError, pos: int) -> Problem:
    if isinstance(exc, json.JSONDecodeError):
        return Problem(file, exc.lineno, exc.colno, "", f"JSON error: {exc.msg}")
    return Problem(file, *lines.at(pos), "", f"JSON error: {exc}")  # a duplicate key, from the hook


def _jsonl_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    number = 0
    for lineno, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        number += 1
        try:
            obj = _DECODER.decode(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, lineno, exc.colno, f"row {number}", f"JSON error: {exc.msg}"))
            continue
        except ValueError as exc:
            problems.append(Problem(file, lineno, 1, f"row {number}", f"JSON error: {exc}"))
            continue
        except RecursionError:
            problems.append(Problem(file, lineno, 1, f"row {number}", "JSON error: nested too deeply"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(file, lineno, 1, f"row {number}", "each line must be a JSON object"))
            continue
        col = len(raw) - len(raw.lstrip()) + 1
        rows.append(Row(number, file, lineno, col, obj))
    return rows, problems


def _yaml_rows(text: str, file: str) -> tuple[list[Row], list[Problem]]:
    doc, problems = load_text(text, file)
    problems = [_row_path(p) for p in problems]
    if doc is None:
        return [], problems
    data = doc.data
    if data is None:
        return [], problems
    if not isinstance(data, list):
        return [], [*problems, Problem(file, *doc.positions.of(()), "", "a catalog must be a list of objects")]
    rows, found = _rows_from_list(data, file, lambda i: doc.positions.of((i,)), inline=False)
    return rows, [*problems, *found]


def _row_path(p: Problem) -> Problem:
    """`[2].id` -> `row 3.id`: catalog rows are named by number, from 1."""
    m = re.match(r"^\[(\d+)\]", p.path)
    if not m:
        return p
    return dataclasses.replace(p, path=f"row {int(m.group(1)) + 1}{p.path[m.end():]}")


def _rows_from_list(data: list[Any], file: str, where: Callable[[int], tuple[int, int]], *,
                    inline: bool) -> tuple[list[Row], list[Problem]]:
    rows: list[Row] = []
    problems: list[Problem] = []
    for i, obj in enumerate(data):
        line, col = where(i)
        label = f"items[{i}]" if inline else ""
        if not isinstance(obj, dict):
            problems.append(Problem(file, line, col, label or f"row {i + 1}", "each row must be a mapping"))
            continue
        rows.append(Row(i + 1, file, line, col, obj, label))
    return rows, problems


def inline_rows(items: Sequence[Any], file: str, where: Callable[[int], tuple[int, int]]
                ) -> tuple[list[Row], list[Problem]]:
    """Rows given inline under `items:`; positions come from the recipe."""
    return _rows_from_list(list(items), file, where, inline=True)


# --------------------------------------------------------------------------- units


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
    at: Where,
    base_context: Mapping[str, Any],
    *,
    limit: int | None = None,
    limit_at: PathKey = ("matrix",),
) -> tuple[list[Unit], list[Problem]]:
    """Apply `where`, compute keys, cross with the matrix: units in a deterministic order.

    `at` gives the place of a recipe path (for the matrix's values). More units than `limit`
    is one problem at `limit_at`, counted before any unit is built.
    """
    problems: list[Problem] = []
    kept: list[tuple[str, Row]] = []
    if rows is not None:
        kept, found = _keyed_rows(rows, spec, base_context)
        problems += found
    names = list(matrix)
    for name in names:
        seen: dict[str, tuple[int, str]] = {}
        for i, value in enumerate(matrix[name]):
            text = _matrix_text(value)
            bad = _unsafe(text)
            where = ("matrix", name, i)
            if bad:
                problems.append(Problem(*at(where), format_path(where), f"value {bad}",
                                        "matrix values become folder names"))
            elif text.lower() in seen:
                j, first = seen[text.lower()]
                problems.append(Problem(*at(where), format_path(where), f"value {text!r} is listed twice",
                                        f"also at matrix.{name}[{j}]" if first == text else
                                        f"matrix.{name}[{j}] is {first!r}; values are compared case-insensitively"))
            seen.setdefault(text.lower(), (i, text))
    if limit is not None:
        per_row = math.prod(len(matrix[n]) for n in names)
        total = (len(kept) if rows is not None else 1) * per_row
        if total > limit:
            made = f"{len(kept)} rows x {per_row} matrix combinations" if rows is not None and names else \
                f"{len(kept)} rows" if rows is not None else f"{per_row} matrix combinations"
            problems.append(Problem(*at(limit_at), format_path(limit_at),
                                    f"the recipe expands to {total} units ({made}), more than the ceiling "
                                    f"of {limit}", UNITS_HINT))
            return [], problems
    combos: list[dict[str, Any]] = [dict(zip(names, values, strict=True))
                                    for values in itertools.product(*(matrix[n] for n in names))]
    texts = [[_matrix_text(c[n]) for n in names] for c in combos]
    units: list[Unit] = []
    row_list: list[tuple[str, Row | None]] = list(kept) if rows is not None else [("", None)]
    for key, row in row_list:
        for combo, parts in zip(combos, texts, strict=True):
            units.append(Unit("/".join([key, *parts]) if key else "/".join(parts), row, combo))
    return units, problems


def _keyed_rows(rows: list[Row], spec: KeySpec, base_context: Mapping[str, Any]
                ) -> tuple[list[tuple[str, Row]], list[Problem]]:
    problems: list[Problem] = []
    try:
        key_tpl = compile_template(spec.key) if spec.key else None
    except RenderError as exc:
        return [], [Problem(*_offset(spec.key_at, exc.line), "catalog.key", exc.message, exc.hint)]
    try:
        where_tpl = compile_expression(spec.where) if spec.where else None
    except RenderError as exc:
        return [], [Problem(*_offset(spec.where_at, exc.line), "catalog.where", exc.message, exc.hint)]
    failures = FailureLog("rows")
    kept: list[tuple[str, Row]] = []
    seen: dict[str, Row] = {}
    ctx = dict(base_context)
    for row in rows:
        ctx["item"] = row.data
        if where_tpl is not None:
            try:
                if not evaluate(where_tpl, ctx):
                    continue
            except RenderError as exc:
                failures.add(spec.where_at, "catalog.where", f"row {row.number}", exc.message, exc.hint)
                continue
        if key_tpl is not None:
            try:
                key = render(key_tpl, ctx).strip()
            except RenderError as exc:
                failures.add(spec.key_at, "catalog.key", f"row {row.number}", exc.message, exc.hint)
                continue
        elif "id" in row.data and row.data["id"] not in (None, ""):
            key = str(row.data["id"]).strip()
        else:
            key = str(row.number)
        bad = _unsafe(key)
        if bad:
            problems.append(Problem(row.file, row.line, row.col, row.path, f"key {bad}", KEY_HINT))
            continue
        folded = key.lower()
        if folded in seen:
            first = seen[folded]
            other = _key_of(kept, first)
            problems.append(Problem(row.file, row.line, row.col, row.path, f"duplicate key {key!r}",
                                    f"{first.path} has it too" if other == key else
                                    f"{first.path} has {other!r}; keys are compared case-insensitively"))
            continue
        seen[folded] = row
        kept.append((key, row))
    problems += failures.problems(len(rows))
    return kept, problems


def _key_of(kept: list[tuple[str, Row]], row: Row) -> str:
    return next((k for k, r in kept if r is row), "")


def _offset(at: tuple[str, int, int], line: int | None) -> tuple[str, int, int]:
    if line and line > 1:
        return at[0], at[1] + line - 1, 1
    return at


def _matrix_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unsafe(key: str) -> str | None:
    """Why a key (or matrix value) cannot name a folder, as the end of a sentence; None when it can."""
    if not key:
        return "is empty"
    if len(key) > 128:
        return f"{show(key)} is {len(key)} characters; the limit is 128"
    if not KEY_RE.match(key) or ".." in key:
        return f"{show(key)} is not path-safe"
    return None


def show(text: str, limit: int = 40) -> str:
    """A value quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
