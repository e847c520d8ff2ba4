"""Catalog rows (csv/json/jsonl/yaml) with their places, keys, `where`, the matrix, and grouped failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalle_pipe.catalog import FailureLog, KeySpec, Row, Unit, expand_units, inline_rows, parse_rows, read_rows
from dalle_pipe.errors import Problem


def rows_of(text: str, fmt: str) -> tuple[list[Row], list[str]]:
    rows, problems = parse_rows(text, "c." + fmt, fmt)
    return rows, [p.format() for p in problems]


def places(rows: list[Row]) -> list[tuple[int, int, int]]:
    return [(r.number, r.line, r.col) for r in rows]


# --------------------------------------------------------------------------- CSV


def test_csv_quoting_doubled_quotes_and_embedded_newlines() -> None:
    text = 'id,name,note\nmug,"ceramic mug, white","the ""heritage"" one"\nboard,"cutting\nboard",x\nwallet,w,y\n'
    rows, problems = rows_of(text, "csv")
    assert problems == []
    assert [dict(r.data) for r in rows] == [
        {"id": "mug", "name": "ceramic mug, white", "note": 'the "heritage" one'},
        {"id": "board", "name": "cutting\nboard", "note": "x"},
        {"id": "wallet", "name": "w", "note": "y"},
    ]
    assert places(rows) == [(1, 2, 1), (2, 3, 1), (3, 5, 1)]  # a row's line is where it starts


def test_csv_bom_header_spaces_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbfid , name\r\nmug,Mug\r\n\r\nboard,Board\r\n")
    rows, problems = read_rows(path, "c.csv")
    assert problems == []
    assert [dict(r.data) for r in rows] == [{"id": "mug", "name": "Mug"}, {"id": "board", "name": "Board"}]
    assert places(rows) == [(1, 2, 1), (2, 4, 1)]


def test_csv_problems() -> None:
    text = "id,name,,name\nmug,a,b,c\nboard,a,b\nwallet,a,b,c,d\n"
    rows, problems = rows_of(text, "csv")
    assert [r.number for r in rows] == [1]
    assert problems == [
        "c.csv:1:1: column 3 of the header has no name",
        "c.csv:1:1: duplicate column 'name'",
        "c.csv:3:1: row 2: has 3 fields; the header has 4 (quote fields that contain commas)",
        "c.csv:4:1: row 3: has 5 fields; the header has 4 (quote fields that contain commas)",
    ]


def test_an_empty_csv_has_no_rows() -> None:
    assert rows_of("", "csv") == ([], [])
    assert rows_of("id,name\n", "csv") == ([], [])


def test_binary_is_refused() -> None:
    assert rows_of("id\nm\x00g\n", "csv") == ([], ["c.csv:2:1: catalog contains a NUL byte (is it a binary file?)"])


def test_unreadable_catalogs(tmp_path: Path) -> None:
    bad = tmp_path / "c.csv"
    bad.write_bytes(b"id\n\xff\n")
    assert [p.format() for p in read_rows(bad, "c.csv")[1]] == ["c.csv:2:1: not UTF-8 text (byte 3) (save it as UTF-8)"]
    odd = tmp_path / "c.txt"
    odd.write_text("id\nm\n")
    assert [p.format() for p in read_rows(odd, "c.txt")[1]] == [
        "c.txt:1:1: unknown catalog format '.txt' (use .csv, .json, .jsonl or .yaml, or set catalog.format)"]
    assert read_rows(odd, "c.txt", "csv")[0][0].data == {"id": "m"}  # the format given: read as CSV


# --------------------------------------------------------------------------- JSON, JSONL, YAML


def test_json_rows_know_where_they_start() -> None:
    text = '[\n  {"id": "mug", "n": 1},\n  {"id": "board",\n   "tags": ["a", "b"]}, {"id": "w"}\n]\n'
    rows, problems = rows_of(text, "json")
    assert problems == []
    assert places(rows) == [(1, 2, 3), (2, 3, 3), (3, 4, 25)]
    assert rows[1].data == {"id": "board", "tags": ["a", "b"]}


@pytest.mark.parametrize(("text", "expected"), [
    ('{"id": 1}', ["c.json:1:1: a catalog must be a list of objects"]),
    ('[{"id": 1}, 2, "x"]', ["c.json:1:13: row 2: each row must be an object",
                            "c.json:1:16: row 3: each row must be an object"]),
    ('[\n {"id": 1},\n {"id": 2,}\n]', ["c.json:3:11: JSON error: Expecting property name enclosed in double quotes"]),
    ('[{"id": 1, "id": 2}]', ["c.json:1:2: JSON error: duplicate key 'id'"]),
    ('[{"id": 1}] [', ["c.json:1:13: JSON error: extra data after the list"]),
    ('[{"id": 1} {"id": 2}]', ["c.json:1:12: JSON error: expected ',' or ']'"]),
    ("  ", []),
    ("[]", []),
])
def test_json_problems(text: str, expected: list[str]) -> None:
    assert rows_of(text, "json")[1] == expected


def test_jsonl_rows_are_numbered_by_line_of_data() -> None:
    text = '{"id": "mug"}\n\n["x"]\n{"id": "board"\n  {"id": "wallet"}\n'
    rows, problems = rows_of(text, "jsonl")
    assert places(rows) == [(1, 1, 1), (4, 5, 3)]
    assert problems == ["c.jsonl:3:1: row 2: each line must be a JSON object",
                        "c.jsonl:4:15: row 3: JSON error: Expecting ',' delimiter"]


def test_yaml_rows_and_their_problems() -> None:
    text = "- id: mug\n  name: mug\n- just text\n- {id: board, id: board-2}\n"
    rows, problems = rows_of(text, "yaml")
    assert places(rows) == [(1, 1, 3), (3, 4, 3)]
    assert rows[1].data == {"id": "board"}
    assert problems == ["c.yaml:4:15: row 3.id: duplicate key 'id' (first defined at line 4)",
                        "c.yaml:3:3: row 2: each row must be a mapping"]
    assert rows_of("a: 1\n", "yaml")[1] == ["c.yaml:1:1: a catalog must be a list of objects"]


def test_inline_items_are_named_by_their_recipe_path() -> None:
    rows, problems = inline_rows([{"id": "a"}, "b"], "r.yaml", lambda i: (10 + i, 5))
    assert [(r.path, r.line) for r in rows] == [("items[0]", 10)]
    assert [p.format() for p in problems] == ["r.yaml:11:5: items[1]: each row must be a mapping"]


# --------------------------------------------------------------------------- keys, where, matrix

NO_SPEC = KeySpec(None, ("r.yaml", 5, 8), None, ("r.yaml", 6, 10))


def at(path: tuple[str | int, ...]) -> tuple[str, int, int]:
    return ("r.yaml", 20, len(path))


def units(rows: list[Row] | None, spec: KeySpec = NO_SPEC, matrix: dict[str, list[Any]] | None = None,
          ) -> tuple[list[Unit], list[str]]:
    found, problems = expand_units(rows, spec, matrix or {}, at, {"vars": {"v": "x"}})
    return found, [p.format() for p in problems]


def csv_rows(text: str) -> list[Row]:
    return rows_of(text, "csv")[0]


def test_keys_default_to_the_id_column_else_the_row_number() -> None:
    assert [u.key for u in units(csv_rows("id,name\nmug,a\n,b\nboard,c\n"))[0]] == ["mug", "2", "board"]
    assert [u.key for u in units(csv_rows("name\na\nb\n"))[0]] == ["1", "2"]


def test_a_key_template_and_where() -> None:
    spec = KeySpec("{{ item.sku }}-{{ vars.v }}", NO_SPEC.key_at, "item.active == 'yes'", NO_SPEC.where_at)
    found, problems = units(csv_rows("sku,active\nmug,yes\nboard,no\nwallet,yes\n"), spec)
    assert problems == []
    assert [(u.key, u.row.number if u.row else 0) for u in found] == [("mug-x", 1), ("wallet-x", 3)]


def test_where_as_a_template_read_as_a_boolean() -> None:
    spec = KeySpec(None, NO_SPEC.key_at, "{{ item.active }}", NO_SPEC.where_at)
    found, _ = units(csv_rows("id,active\na,yes\nb,no\nc,0\nd,\ne,1\n"), spec)
    assert [u.key for u in found] == ["a", "e"]


def test_duplicate_and_unsafe_keys_name_their_row() -> None:
    found, problems = units(csv_rows("id\nmug\na/b\n..\nMUG\nmug\nx..y\n"))
    assert [u.key for u in found] == ["mug"]
    hint = ("keys become folder names: use letters, digits, '.', '_' and '-', starting with a letter or digit")
    assert problems == [
        f"c.csv:3:1: row 2: key 'a/b' is not path-safe ({hint})",
        f"c.csv:4:1: row 3: key '..' is not path-safe ({hint})",
        "c.csv:5:1: row 4: duplicate key 'MUG' (row 1 has 'mug'; keys are compared case-insensitively)",
        "c.csv:6:1: row 5: duplicate key 'mug' (row 1 has it too)",
        f"c.csv:7:1: row 6: key 'x..y' is not path-safe ({hint})",
    ]


def test_a_where_that_fails_for_every_row_is_one_problem() -> None:
    spec = KeySpec(None, NO_SPEC.key_at, "item.actve == 'yes'", NO_SPEC.where_at)
    text = "id,active\n" + "".join(f"r{i},yes\n" for i in range(10))
    found, problems = units(csv_rows(text), spec)
    assert found == []
    assert problems == ["r.yaml:6:10: catalog.where: all 10 rows: undefined variable 'item.actve' "
                        "(did you mean 'item.active'?)"]


def test_key_and_where_syntax_errors() -> None:
    bad_key = KeySpec("{{ item.sku", NO_SPEC.key_at, None, NO_SPEC.where_at)
    assert units(csv_rows("sku\na\n"), bad_key)[1] == [
        "r.yaml:5:8: catalog.key: template syntax error: unexpected end of template, expected 'end of print "
        "statement'"]
    bad_where = KeySpec(None, NO_SPEC.key_at, "item.a ==", NO_SPEC.where_at)
    assert units(csv_rows("sku\na\n"), bad_where)[1] == ["r.yaml:6:10: catalog.where: expression syntax error: "
                                                         "unexpected ')'"]


def test_matrix_expansion_order_and_keys() -> None:
    rows = csv_rows("id\nmug\nboard\n")
    found, problems = units(rows, matrix={"scene": ["beach", "studio"], "light": ["warm", "cold"]})
    assert problems == []
    assert [u.key for u in found] == [
        "mug/beach/warm", "mug/beach/cold", "mug/studio/warm", "mug/studio/cold",
        "board/beach/warm", "board/beach/cold", "board/studio/warm", "board/studio/cold",
    ]
    assert found[1].matrix == {"scene": "beach", "light": "cold"}
    assert found[1].describe() == "row 1 (key 'mug/beach/cold')"


def test_only_a_matrix_or_neither() -> None:
    found, _ = units(None, matrix={"scene": ["beach", "studio"], "n": [1, True]})
    assert [u.key for u in found] == ["beach/1", "beach/true", "studio/1", "studio/true"]
    assert found[0].describe() == "key 'beach/1'"
    assert found[0].item == {}
    alone, problems = units(None)
    assert [(u.key, u.row, dict(u.matrix)) for u in alone] == [("", None, {})]
    assert alone[0].describe() == "" and problems == []
    assert units([])[0] == []  # a catalog with no rows: no units


def test_matrix_values_must_be_path_safe_and_distinct() -> None:
    _, problems = units(None, matrix={"scene": ["beach", "../x", "Beach", "beach"]})
    assert problems == [
        "r.yaml:20:3: matrix.scene[1]: value '../x' is not path-safe (matrix values become folder names)",
        "r.yaml:20:3: matrix.scene[2]: value 'Beach' is listed twice (matrix.scene[0] is 'beach'; values are "
        "compared case-insensitively)",
        "r.yaml:20:3: matrix.scene[3]: value 'beach' is listed twice (also at matrix.scene[0])",
    ]


# --------------------------------------------------------------------------- grouped failures


def test_failure_log_groups_by_place_and_message() -> None:
    log = FailureLog("units")
    place = ("r.yaml", 7, 15)
    for i in range(1, 8):
        log.add(place, "steps[0].generate.prompt", f"row {i} (key 'k{i}')", "undefined variable 'item.x'", "h")
    log.add(place, "steps[0].generate.prompt", "row 9 (key 'k9')", "something else")
    log.add(("r.yaml", 9, 1), "steps[1].output", "row 1 (key 'k1')", "bad")
    log.add(("r.yaml", 9, 1), "steps[1].output", "row 2 (key 'k2')", "bad")
    assert [p.format() for p in log.problems(10)] == [
        "r.yaml:7:15: steps[0].generate.prompt: row 1 (key 'k1'), row 2 (key 'k2'), row 3 (key 'k3') and 4 more "
        "units: undefined variable 'item.x' (h)",
        "r.yaml:7:15: steps[0].generate.prompt: row 9 (key 'k9'): something else",
        "r.yaml:9:1: steps[1].output: row 1 (key 'k1') and row 2 (key 'k2'): bad",
    ]
    assert log.problems(7)[0].message == "all 7 units: undefined variable 'item.x'"


def test_the_only_unit_is_not_named() -> None:
    log = FailureLog()
    log.add(("r.yaml", 1, 1), "p", "", "undefined variable 'x'")
    assert log.problems(1) == [Problem("r.yaml", 1, 1, "p", "undefined variable 'x'")]


# --------------------------------------------------------------------------- fuzzing

CSVISH = st.lists(st.sampled_from([*'ab,"\n\r ', "\ufeff", "\x00", "id", "\"\"", ",,"]), max_size=40).map("".join)
JSONISH = st.lists(st.sampled_from([*'[]{}:,"\n 1a', "null", "true", '"id"', "NaN", "-"]), max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(CSVISH, JSONISH)
def test_catalog_text_gives_rows_or_problems(csvish: str, jsonish: str) -> None:
    for text, formats in ((csvish, ("csv", "jsonl", "yaml")), (jsonish, ("json", "jsonl", "yaml"))):
        for fmt in formats:
            rows, problems = parse_rows(text, "c", fmt)
            assert all(isinstance(r.data, dict) for r in rows)
            assert all(isinstance(p, Problem) for p in problems)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=120))
def test_random_files_give_rows_or_problems(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for suffix in (".csv", ".json", ".jsonl", ".yaml"):
        path = folder / f"c{suffix}"
        path.write_bytes(raw)
        _, problems = read_rows(path, path.name)
        assert all(isinstance(p, Problem) for p in problems)


def test_failure_log_keeps_a_few_messages_per_place_then_one_for_the_rest() -> None:
    log = FailureLog("units")
    for i in range(1, 11):
        log.add(("r.yaml", 3, 5), "steps[0].output", f"row {i}", f"output path 'k{i}/x' is reserved", "h")
    assert [p.format() for p in log.problems(10)] == [
        "r.yaml:3:5: steps[0].output: row 1: output path 'k1/x' is reserved (h)",
        "r.yaml:3:5: steps[0].output: row 2: output path 'k2/x' is reserved (h)",
        "r.yaml:3:5: steps[0].output: row 3: output path 'k3/x' is reserved (h)",
        "r.yaml:3:5: steps[0].output: row 4 and 6 more units: output path 'k4/x' is reserved "
        "(h; as it is for the first of these 7 units)",
    ]


def test_deeply_nested_json_is_a_problem_not_a_crash() -> None:
    assert rows_of("[" * 100_000, "json")[1] == ["c.json:1:2: row 1: JSON error: nested too deeply"]
    assert rows_of("{\"a\": " * 100_000, "json")[1] == ["c.json:1:1: JSON error: nested too deeply"]
    assert rows_of("[" * 100_000, "jsonl")[1] == ["c.jsonl:1:1: row 1: JSON error: nested too deeply"]


def test_long_and_empty_keys() -> None:
    found, problems = units(csv_rows("id,k\na," + "x" * 200 + "\nb, \n"), KeySpec("{{ item.k }}", NO_SPEC.key_at,
                                                                                  None, NO_SPEC.where_at))
    hint = "keys become folder names: use letters, digits, '.', '_' and '-', starting with a letter or digit"
    assert found == []
    assert problems == [f"c.csv:2:1: row 1: key 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is 200 characters; "
                        f"the limit is 128 ({hint})", f"c.csv:3:1: row 2: key is empty ({hint})"]


@pytest.mark.parametrize(("text", "expected"), [
    ('id,name\nmug,"ceramic mug\nboard,board\n',
     "c.csv:2:1: row 1: CSV error: a quoted field is not closed before the end of the file (is a quote left open?)"),
    ('id,name\nmug,ok\nboard,"cutting" board\n',
     "c.csv:3:1: row 2: CSV error: text follows a closing quote (write a quote inside a quoted field as \"\")"),
    ("id,name\nmug," + "x" * 200_000 + "\n",
     "c.csv:2:1: row 1: CSV error: a field is longer than 131072 characters (is a quote left open?)"),
])
def test_malformed_csv_says_where_the_row_starts(text: str, expected: str) -> None:
    assert rows_of(text, "csv")[1] == [expected]
