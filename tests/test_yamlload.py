"""Safe YAML with positions: plain data only, every failure a Problem with its place."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalle_pipe.errors import Problem
from dalle_pipe.yamlload import MAX_DEPTH, Document, format_path, load_file, load_text


def load(text: str) -> tuple[Document | None, list[str]]:
    doc, problems = load_text(text, "r.yaml")
    return doc, [p.format() for p in problems]


def ok(text: str) -> Document:
    doc, problems = load(text)
    assert problems == []
    assert doc is not None
    return doc


# --------------------------------------------------------------------------- positions

RECIPE = """\
version: 1
name: shots
steps:
  - id: hero
    generate:
      prompt: "a mug"
      size: 1024x1024
  - {id: beach, edit: {image: {step: hero}, prompt: x}}
"""


def test_values_are_at_their_first_character_1_based() -> None:
    pos = ok(RECIPE).positions
    assert pos.of(("version",)) == (1, 10)
    assert pos.of(("steps",)) == (4, 3)
    assert pos.of(("steps", 0)) == (4, 5)
    assert pos.of(("steps", 0, "generate", "prompt")) == (6, 15)
    assert pos.of(("steps", 1, "edit", "image", "step")) == (8, 38)


def test_keys_have_their_own_positions() -> None:
    pos = ok(RECIPE).positions
    assert pos.of(("steps", 0, "generate", "size"), at_key=True) == (7, 7)
    assert pos.of(("steps", 0, "generate", "size")) == (7, 13)
    assert pos.of(("steps", 1, "edit"), at_key=True) == (8, 17)


def test_a_missing_path_falls_back_to_its_nearest_ancestor() -> None:
    pos = ok(RECIPE).positions
    assert pos.of(("steps", 0, "generate", "quality")) == pos.of(("steps", 0, "generate"))
    assert pos.of(("nothing", "here")) == (1, 1)


def test_lines_of_a_literal_block_map_to_file_lines() -> None:
    doc = ok("a: 1\nprompt: |\n    first\n    second {{ x\n")
    assert doc.data["prompt"] == "first\nsecond {{ x\n"
    assert doc.positions.of_line(("prompt",), 2) == (4, 5)
    assert doc.positions.of_line(("prompt",), 1) == (3, 5)
    assert doc.positions.of_line(("a",), 3) == (1, 4)  # not a block: its start


def test_format_path() -> None:
    assert format_path(("steps", 1, "edit", "mask")) == "steps[1].edit.mask"
    assert format_path((2, "id")) == "[2].id"
    assert format_path(()) == ""


# --------------------------------------------------------------------------- plain data


def test_scalars_keep_their_yaml_types_but_dates_stay_text() -> None:
    data = ok("a: 1\nb: 1.5\nc: true\nd: ~\ne: 2026-12-02\nf: '007'\n").data
    assert data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "2026-12-02", "f": "007"}


def test_keys_are_kept_as_written() -> None:
    assert ok("on: 1\n1: x\nnull: y\n").data == {"on": 1, "1": "x", "null": "y"}


def test_an_empty_document_is_none() -> None:
    assert ok("").data is None
    assert ok("# just a comment\n").data is None


PLAIN = "(recipes and catalogs hold plain data only)"


@pytest.mark.parametrize(("text", "expected"), [
    ("a: 1\na: 2\n", "r.yaml:2:1: a: duplicate key 'a' (first defined at line 1)"),
    ("x: !!python/object/apply:os.system [ls]\n",
     "r.yaml:1:4: x: YAML tag '!!python/object/apply:os.system' is not allowed " + PLAIN),
    ("x: !!binary aGk=\n", "r.yaml:1:4: x: YAML tag '!!binary' is not allowed " + PLAIN),
    ("x: !custom 1\n", "r.yaml:1:4: x: YAML tag '!custom' is not allowed " + PLAIN),
    ("base: &b {a: 1}\nx:\n  <<: *b\n", "r.yaml:3:3: x: YAML merge keys ('<<') are not supported (write the keys out)"),
    ("? [1, 2]\n: x\n", "r.yaml:1:3: a mapping key must be a plain scalar "
                       "(a '?' key or a list/mapping used as a key is not supported)"),
    ("a: &a [1, *a]\n", "r.yaml:1:4: a[1]: recursive alias (an alias cannot refer to a node that contains it)"),
    ("n: " + "9" * 5000 + "\n", "r.yaml:1:4: n: cannot read '9999999999999999999999999999999999999999' as an "
                             "integer (quote it to make it a string)"),
])
def test_refused_constructs_are_problems_at_their_node(text: str, expected: str) -> None:
    _, problems = load(text)
    assert problems == [expected]


# Each common PyYAML complaint in plain words, at the line most likely wrong; never a parser token.
@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('steps:\n  - id: hero\n    generate:\n      prompt: x\n   size: 1\n',
                 'r.yaml:5:4: YAML error: this key is indented less than the mapping it belongs to (line it up '
                 'with the keys of its mapping: column 5)',
                 id='dedent_key'),
    pytest.param('a:\n    b: 1\n  c: 2\n',
                 'r.yaml:3:3: YAML error: this key is indented less than the mapping it belongs to (line it up '
                 'with the keys of its mapping: column 5 or 1)',
                 id='dedent_key2'),
    pytest.param('steps:\n  - id: a\n    generate:\n      prompt: x\n - id: b\n',
                 'r.yaml:5:2: YAML error: this list item is indented less than the list it belongs to (line its '
                 "'-' up with the items above)",
                 id='list_dedent'),
    pytest.param('a: 1\n  b: 2\n',
                 "r.yaml:2:3: YAML error: this key is indented under 'a', which already has a value (line it up "
                 "with 'a', or move the value of 'a' into keys of its own)",
                 id='over_indent'),
    pytest.param('name: foo\n  bar: 1\n',
                 "r.yaml:2:3: YAML error: this key is indented under 'name', which already has a value (line it "
                 "up with 'name', or move the value of 'name' into keys of its own)",
                 id='key_after_scalar'),
    pytest.param('steps:\n  - id: a\n     generate: x\n',
                 "r.yaml:3:6: YAML error: this key is indented under 'id', which already has a value (line it "
                 "up with 'id', or move the value of 'id' into keys of its own)",
                 id='indent_seq_item_map'),
    pytest.param('steps:\n  - id: x\n    generate: {}\n     - bad\n',
                 'r.yaml:4:6: YAML error: a list item where a key was expected (a mapping cannot also be a '
                 'list: put the list under a key of its own)',
                 id='over_indent_list'),
    pytest.param('a:\n  b: 1\n  - c\n',
                 'r.yaml:3:3: YAML error: a list item among the keys of a mapping (put the list under a key of '
                 "its own, indented, or make every entry 'key: value')",
                 id='list_in_map'),
    pytest.param('a:\n  - b\n  c: 1\n',
                 "r.yaml:3:3: YAML error: a key among the items of a list (start it with '- ' to make it an "
                 'item, or indent it under the item it belongs to)',
                 id='map_in_list'),
    pytest.param('version: 1\nname broken\nsteps: []\n',
                 "r.yaml:2:1: YAML error: this line is neither 'key: value' nor a list item, and is not part of "
                 "a text above it (add the missing ': ' after the key, or quote the text)",
                 id='missing_colon'),
    pytest.param('version: 1\nname:broken\nsteps: []\n',
                 "r.yaml:2:1: YAML error: 'name:broken' has no space after its ':', so it is text, not a key "
                 "(write 'name: broken')",
                 id='missing_space'),
    pytest.param('a:\n  b:1\n  c: 2\n',
                 "r.yaml:2:3: YAML error: 'b:1' has no space after its ':', so it is text, not a key (write 'b: 1')",
                 id='missing_space2'),
    pytest.param('a:\n  -b\n  -c: 1\n',
                 "r.yaml:2:3: YAML error: '-b' has no space after its '-', so it is text, not a list item "
                 "(write '- b')",
                 id='dash_no_space'),
    pytest.param('a: b: c\n',
                 "r.yaml:1:5: YAML error: a second ': ' on one line: a value cannot contain ': ' unquoted "
                 '(quote the value: key: "a: b")',
                 id='colon_in_value'),
    pytest.param('a: "open\nb: 2\n',
                 'r.yaml:1:4: YAML error: this quote is never closed (end the value with the same quote it '
                 'starts with)',
                 id='unclosed_dq'),
    pytest.param("a: 'open\nb: 2\n",
                 'r.yaml:1:4: YAML error: this quote is never closed (end the value with the same quote it '
                 'starts with)',
                 id='unclosed_sq'),
    pytest.param('a: [1, 2\nb: 3\n',
                 "r.yaml:1:4: YAML error: this '[' is never closed (close the list with ']' before the next "
                 "key; an unquoted '#' starts a comment)",
                 id='unclosed_bracket'),
    pytest.param('a: {x: 1\n',
                 "r.yaml:1:4: YAML error: this '{' is never closed (close the mapping with '}' before the next "
                 "key; an unquoted '#' starts a comment)",
                 id='unclosed_brace_eof'),
    pytest.param('a: 1 #ok\nb: x#y\nc: [1,#2]\n',
                 "r.yaml:4:1: YAML error: the file ends inside a '[...]' or '{...}' that is never closed (close "
                 "it; an unquoted '#' starts a comment, even inside brackets)",
                 id='hash_no_space'),
    pytest.param('a: {x: 1 y: 2}\n',
                 "r.yaml:1:11: YAML error: a ',' is missing between two items of this mapping (separate the "
                 "items with ', ', or quote a value that contains ': ')",
                 id='flow_missing_comma'),
    pytest.param('a: [1, 2]]\n',
                 "r.yaml:1:10: YAML error: ']' closes nothing (remove it, or check the brackets before it)",
                 id='unexpected_close2'),
    pytest.param('a: "x" y\n',
                 "r.yaml:1:8: YAML error: text after the end of a quoted value or a '[...]' / '{...}' (quote "
                 'the whole value, or move the closing quote or bracket to its end)',
                 id='quote_then_text'),
    pytest.param('prompt: {{ item.name }} on marble\n',
                 "r.yaml:1:9: YAML error: a value that starts with '{{' is read as a YAML mapping (quote the "
                 'whole template: prompt: "{{ item.name }} on marble")',
                 id='jinja_unquoted'),
    pytest.param('a:\n\tb: 1\n',
                 'r.yaml:2:1: YAML error: a tab character: YAML indents with spaces only (replace the tab with spaces)',
                 id='tab'),
    pytest.param('a: @foo\n',
                 'r.yaml:1:4: YAML error: a value cannot start with \'@\' (quote the value: "@...")',
                 id='at_start'),
    pytest.param('a: |x\n  b\n',
                 "r.yaml:1:5: YAML error: after '|' or '>' the text must start on the next line (put the text "
                 'on the following lines, indented, or quote the value instead)',
                 id='pipe_bad'),
    pytest.param('a: &\n',
                 "r.yaml:1:4: YAML error: '&' must be followed by a name (quote a value that starts with '&')",
                 id='anchor_bad'),
    pytest.param('a: "\\q"\n',
                 "r.yaml:1:6: YAML error: '\\q' is not an escape sequence inside double quotes (use single "
                 "quotes, or write '\\\\' for a backslash)",
                 id='bad_escape'),
    pytest.param('a: 1\n---\nb: 2\n',
                 "r.yaml:2:1: YAML error: a second document ('---') in one file (a recipe is one YAML document: "
                 "remove the '---')",
                 id='second_doc'),
    pytest.param('a: *nope\n',
                 "r.yaml:1:4: YAML error: '*nope' refers to no anchor (define '&nope' before it, or quote the value)",
                 id='undefined_alias'),
    pytest.param(': x\n',
                 "r.yaml:1:1: YAML error: a ':' with no key before it (write 'key: value')",
                 id='empty_key'),
    pytest.param('a: b\n- c\n',
                 'r.yaml:2:1: YAML error: a list item among the keys of a mapping (put the list under a key of '
                 "its own, indented, or make every entry 'key: value')",
                 id='list_after_value'),
    pytest.param('a: [1, ,]\n',
                 "r.yaml:1:8: YAML error: a value cannot start with ',' (quote the value)",
                 id='value_starts_with_comma'),
    pytest.param('version 1\nname: x\n',
                 "r.yaml:1:1: YAML error: this line is neither 'key: value' nor a list item, and is not part of "
                 "a text above it (add the missing ': ' after the key, or quote the text)",
                 id='text_then_key_at_top'),
    pytest.param('a: !<x\n',
                 "r.yaml:1:4: YAML error: '!' starts a YAML tag, and tags are not allowed (quote a value that "
                 "starts with '!')",
                 id='tag_unfinished'),
    pytest.param('%bad: 1\n',
                 "r.yaml:1:1: YAML error: a line that starts with '%' is a YAML directive (quote a value that "
                 "starts with '%')",
                 id='directive_in_text'),
    pytest.param('a: | text\n  more\n',
                 "r.yaml:1:6: YAML error: after '|' or '>' the text must start on the next line (put the text "
                 'on the following lines, indented, or quote the value instead)',
                 id='block_scalar_text'),
    pytest.param('a: [1], 2\n',
                 "r.yaml:1:7: YAML error: a ',' outside '[...]' or '{...}' (write the list as [a, b], or quote "
                 'the value)',
                 id='comma_outside_brackets'),
    pytest.param("a: \x07\n", "r.yaml:1:4: YAML error: character #x0007 is not allowed (is this a text file?)",
                 id="control_character"),
])
def test_syntax_errors_point_at_the_culprit(text: str, expected: str) -> None:
    doc, problems = load(text)
    assert doc is None
    assert problems == [expected]
    assert "<" not in expected.replace("<=", "")


def test_an_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    start = time.perf_counter()
    doc, problems = load("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 5
    assert doc is None
    assert len(problems) == 1 and "alias bombs are refused" in problems[0]


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 300) + "]\n"
    doc, problems = load(text)
    assert doc is None
    assert problems == ["r.yaml:2:805: YAML error: more than 200 aliases (alias bombs are refused)"]


def test_deep_nesting_is_refused_not_a_crash() -> None:
    doc, problems = load("[" * 5000)
    assert doc is None
    assert problems == [f"r.yaml:1:{MAX_DEPTH + 1}: YAML error: nested more than {MAX_DEPTH} levels deep"]


def test_shared_subtrees_are_fine_below_the_bound() -> None:
    doc = ok("a: &a {x: 1, y: [1, 2]}\nb: *a\nc: *a\n")
    assert doc.data["c"] == {"x": 1, "y": [1, 2]}


# --------------------------------------------------------------------------- files


def test_load_file_reads_utf8_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")
    doc, problems = load_file(path, "r.yaml")
    assert problems == [] and doc is not None and doc.data == {"name": "café"}


@pytest.mark.parametrize(("content", "expected"), [
    (b"a: 1\nb: \xff\n", "r.yaml:2:1: not UTF-8 text (byte 8) (save it as UTF-8)"),
    (None, "r.yaml:1:1: cannot read file: No such file or directory"),
    ("dir", "r.yaml:1:1: is a folder, not a file"),
])
def test_unreadable_files_are_problems(tmp_path: Path, content: bytes | str | None, expected: str) -> None:
    path = tmp_path / "r.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "dir":
        path.mkdir()
    doc, problems = load_file(path, "r.yaml")
    assert doc is None
    assert [p.format() for p in problems] == [expected]


# --------------------------------------------------------------------------- fuzzing

YAMLISH = st.lists(st.sampled_from([*"ab:- \n\t{}[],'\"&*!|>#%@`?~01.", "\u00e9", "<<", "!!", "  ", "\n- ",
                                    "k: ", "&x ", "*x", "!!python/object "]), max_size=40).map("".join)


def _check(text: str) -> None:
    doc, problems = load_text(text, "f.yaml")
    assert all(isinstance(p, Problem) for p in problems)
    assert doc is not None or problems


@settings(max_examples=300, deadline=None)
@given(YAMLISH)
def test_yamlish_text_gives_data_or_problems(text: str) -> None:
    _check(text)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_data_or_problems(raw: bytes) -> None:
    _check(raw.decode("utf-8", errors="replace"))
    _check(raw.decode("latin-1"))


_PUNCTUATION = st.sampled_from([" ", "\t", ":", "-", "[", "]", "{", "}", '"', "'", "#", "\n", "|", ">", "&", "*", "!",
                                "%", "@", "`", ",", "?"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(RECIPE)), st.booleans(), _PUNCTUATION), min_size=1, max_size=3))
def test_a_damaged_recipe_never_shows_a_parser_token(edits: list[tuple[int, bool, str]]) -> None:
    text = RECIPE
    for pos, insert, ch in edits:
        text = text[:pos] + ch + text[pos:] if insert else text[:pos] + text[pos + 1:]
    _, problems = load(text)
    for message in problems:
        assert not re.search(r"<[a-z ]+>", message), message
