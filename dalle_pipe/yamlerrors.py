"""PyYAML's syntax errors in plain words, placed at the line that is most likely wrong.

PyYAML reports where its parser gave up (`expected <block end>, but found '<block mapping
start>'`), which is often a line after the mistake, in its own vocabulary. Here each common
scanner, parser and composer complaint becomes what a person did (a key indented too little,
a quote left open, a ':' with no space after it), with a hint on how to fix it. Anything not
recognised still never shows a parser token such as `<block end>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Explained:
    line: int  # 1-based
    col: int  # 1-based
    message: str
    hint: str | None = None


_TOKENS = (
    ("'<block mapping start>'", "a key"),
    ("'<block sequence start>'", "a list item"),
    ("'<block end>'", "the end of the block"),
    ("<block end>", "the end of the block"),
    ("'<scalar>'", "a value"),
    ("'<stream end>'", "the end of the file"),
    ("'<document start>'", "'---'"),
    ("'?'", "a key"),
    ("'-'", "a list item"),
    ("'<alias>'", "an alias (*name)"),
    ("'<anchor>'", "an anchor (&name)"),
    ("'<tag>'", "a tag (!name)"),
    ("'<document end>'", "'...'"),
    ("'<directive>'", "a directive (%...)"),
    ("'<stream start>'", "the start of the file"),
)

_KEY = re.compile(r"^(\s*)(?:-\s+)*([^\s#'\"{\[][^#]*?|\"[^\"]*\"|'[^']*'):(?:\s|$)")
_NO_SPACE_COLON = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):(\S.*)$")
_NO_SPACE_DASH = re.compile(r"^(\s*)-([^\s-].*)$")


_NO_COLON = "this line is neither 'key: value' nor a list item, and is not part of a text above it"


def plain(text: str) -> str:
    """A parser message with its tokens in words."""
    for token, words in _TOKENS:
        text = text.replace(token, words)
    return re.sub(r"'?<([a-z ]+)>'?", r"\1", text)  # any token not named above


def explain(exc: yaml.MarkedYAMLError, text: str) -> Explained:
    """Where the mistake most likely is, and what it is."""
    problem, context = str(exc.problem or ""), str(exc.context or "")
    pm, cm = exc.problem_mark, exc.context_mark
    p = (pm.line, pm.column) if pm is not None else (0, 0)
    c = (cm.line, cm.column) if cm is not None else None
    lines = text.split("\n")
    found = _explain(problem, context, p, c, lines)
    if found is not None:
        return found
    words = plain(f"{problem} {context}".strip() if context.startswith("while ") else
                  f"{context}: {problem}" if context else problem)
    return Explained(p[0] + 1, p[1] + 1, f"YAML error: {words or 'invalid YAML'}")


def _at(pos: tuple[int, int], message: str, hint: str | None = None) -> Explained:
    return Explained(pos[0] + 1, pos[1] + 1, f"YAML error: {message}", hint)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous(lines: list[str], row: int) -> int | None:
    """The nearest line above `row` with content (not blank, not only a comment)."""
    for i in range(min(row, len(lines)) - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _key_columns(lines: list[str], row: int, floor: int) -> list[int]:
    """The columns (0-based) where keys start in the lines above `row`, down to indentation `floor`."""
    cols: list[int] = []
    i = _previous(lines, row)
    while i is not None:
        m = _KEY.match(lines[i])
        if m:
            col = m.start(2)
            if col not in cols:
                cols.append(col)
        if _indent(lines[i]) <= floor:
            break
        i = _previous(lines, i)
    return cols


def _explain(problem: str, context: str, p: tuple[int, int], c: tuple[int, int] | None,
             lines: list[str]) -> Explained | None:
    line = lines[p[0]] if p[0] < len(lines) else ""
    if problem.startswith("expected <block end>, but found"):
        return _block_end(problem, p, c, lines, line)
    if problem.startswith("expected ',' or "):
        closer = problem[len("expected ',' or '")]
        opener = "[" if closer == "]" else "{"
        noun = "list" if closer == "]" else "mapping"
        if "<stream end>" in problem or (c is not None and c[0] != p[0]):
            where = c if c is not None else p
            return _at(where, f"this '{opener}' is never closed", f"close the {noun} with '{closer}' before the "
                       f"next key; an unquoted '#' starts a comment")
        return _at(p, f"a ',' is missing between two items of this {noun}",
                   "separate the items with ', ', or quote a value that contains ': '")
    if problem.startswith("expected the node content, but found '<stream end>'"):
        return _at(p, "the file ends inside a '[...]' or '{...}' that is never closed",
                   "close it; an unquoted '#' starts a comment, even inside brackets")
    if problem == "found unexpected end of stream" and "quoted scalar" in context and c is not None:
        return _at(c, "this quote is never closed", "end the value with the same quote it starts with")
    if problem == "mapping values are not allowed here":
        return _colon(p, lines, line)
    if problem == "could not find expected ':'" and c is not None:
        text = lines[c[0]] if c[0] < len(lines) else ""
        m = _NO_SPACE_COLON.match(text)
        if m:
            return _at(c, f"'{m.group(1)}:{m.group(2)[:20]}' has no space after its ':', so it is text, not a key",
                       f"write '{m.group(1)}: {m.group(2)[:20]}'")
        return _at(c, _NO_COLON, "add the missing ': ' after the key, or quote the text")
    if problem.startswith("found character '\\t'"):
        return _at(p, "a tab character: YAML indents with spaces only", "replace the tab with spaces")
    m = re.match(r"found character '(.)' that cannot start any token", problem)
    if m:
        ch = m.group(1)
        return _at(p, f"a value cannot start with '{ch}'", f"quote the value: \"{ch}...\"")
    if problem == "sequence entries are not allowed here":
        return _at(p, "a list item ('- ') cannot go here",
                   "put a list on its own lines under its key, or quote a value that starts with '-'")
    m = re.match(r"expected the node content, but found (.*)", problem)
    if m:
        found = m.group(1)
        if found == "'-'":
            return _at(p, "a '- ' list item inside '[...]' or '{...}'", "inside brackets, separate items with ', '")
        return _at(p, f"a value cannot start with {plain(found)}", "quote the value")
    if problem.startswith("expected '<document start>'"):
        prev = _previous(lines, p[0])
        above = f"line {prev + 1}" if prev is not None else "the line above"
        return _at(p, "this key follows a line that is not part of any mapping",
                   f"check {above}: a top-level line is 'key: value', with a space after the ':'")
    if "directive" in context:
        return _at(c or p, "a line that starts with '%' is a YAML directive", "quote a value that starts with '%'")
    if "while scanning a tag" in context or "while parsing a tag" in context:
        return _at(c or p, "'!' starts a YAML tag, and tags are not allowed", "quote a value that starts with '!'")
    if problem.startswith("expected a comment or a line break") and "block scalar" in context:
        return _at(p, "after '|' or '>' the text must start on the next line",
                   "put the text on the following lines, indented, or quote the value instead")
    if problem.startswith("expected chomping or indentation indicators"):
        return _at(p, "after '|' or '>' the text must start on the next line",
                   "put the text on the following lines, indented, or quote the value instead")
    if "while scanning an anchor" in context or "while scanning an alias" in context:
        sign = "&" if "anchor" in context else "*"
        return _at(c or p, f"'{sign}' must be followed by a name", f"quote a value that starts with '{sign}'")
    m = re.match(r"found unknown escape character '(.*)'", problem)
    if m:
        return _at(p, f"'\\{m.group(1)}' is not an escape sequence inside double quotes",
                   "use single quotes, or write '\\\\' for a backslash")
    if context == "expected a single document in the stream":
        return _at(p, "a second document ('---') in one file", "a recipe is one YAML document: remove the '---'")
    m = re.match(r"found undefined alias '(.*)'", problem)
    if m:
        return _at(p, f"'*{m.group(1)}' refers to no anchor", f"define '&{m.group(1)}' before it, or quote the value")
    if problem.startswith("found duplicate YAML directive"):
        return _at(p, "a YAML directive is given twice", "remove the second one")
    return None


def _block_end(problem: str, p: tuple[int, int], c: tuple[int, int] | None, lines: list[str],
               line: str) -> Explained:
    """The parser expected an indented block to end and found something else at `p`."""
    found = problem.split("but found ", 1)[1]
    prev = _previous(lines, p[0])
    above = _indent(lines[prev]) if prev is not None else 0
    floor = c[1] if c is not None else 0
    if found == "'<block mapping start>'":
        if p[1] < above:
            cols = [col for col in _key_columns(lines, p[0], floor) if col != p[1]]
            hint = _columns_hint(cols, p[1])
            return _at(p, "this key is indented less than the mapping it belongs to", hint)
        return _at(p, "this key is not lined up with the keys around it",
                   "keys of one mapping start in the same column")
    if found == "'<block sequence start>'":
        if p[1] < above:
            return _at(p, "this list item is indented less than the list it belongs to",
                       "line its '-' up with the items above")
        return _at(p, "a list item where a key was expected",
                   "a mapping cannot also be a list: put the list under a key of its own")
    if found == "'-'":
        return _at(p, "a list item among the keys of a mapping",
                   "put the list under a key of its own, indented, or make every entry 'key: value'")
    if found == "'?'":
        return _at(p, "a key among the items of a list",
                   "start it with '- ' to make it an item, or indent it under the item it belongs to")
    if found == "'<scalar>'":
        if "{{" in line:
            return _at((p[0], line.index("{{")), "a value that starts with '{{' is read as a YAML mapping",
                       "quote the whole template: prompt: \"{{ item.name }} on marble\"")
        return _at(p, "text after the end of a quoted value or a '[...]' / '{...}'",
                   "quote the whole value, or move the closing quote or bracket to its end")
    if found in ("']'", "'}'"):
        return _at(p, f"{found} closes nothing", "remove it, or check the brackets before it")
    if found == "':'":
        return _at(p, "a ':' with no key before it", "write 'key: value'")
    if found == "','":
        return _at(p, "a ',' outside '[...]' or '{...}'", "write the list as [a, b], or quote the value")
    if found in ("'['", "'{'"):
        return _at(p, "text after the end of a quoted value or a '[...]' / '{...}'",
                   "quote the whole value, or move the closing quote or bracket to its end")
    return _at(p, f"{plain(found)} cannot go here", "check the indentation of this line and the one above")


def _columns_hint(cols: list[int], at: int) -> str:
    above = sorted(col + 1 for col in cols if col > at)
    below = sorted((col + 1 for col in cols if col < at), reverse=True)
    options = [*above[:1], *below[:1]]
    if not options:
        return "line it up with the keys of the mapping it belongs to"
    where = " or ".join(str(o) for o in options)
    return f"line it up with the keys of its mapping: column {where}"


def _colon(p: tuple[int, int], lines: list[str], line: str) -> Explained:
    """'mapping values are not allowed here': a ':' where only a value (or text) could go."""
    prev = _previous(lines, p[0])
    m = _KEY.match(line)
    if m and p[1] >= m.end(0) - 1:
        return _at(p, "a second ': ' on one line: a value cannot contain ': ' unquoted",
                   "quote the value: key: \"a: b\"")
    if prev is not None:
        text = lines[prev]
        no_space = _NO_SPACE_COLON.match(text)
        if no_space and _indent(line) >= _indent(text):
            return _at((prev, _indent(text)), f"'{no_space.group(1)}:{no_space.group(2)[:20]}' has no space after "
                       "its ':', so it is text, not a key", f"write '{no_space.group(1)}: {no_space.group(2)[:20]}'")
        dash = _NO_SPACE_DASH.match(text)
        if dash and _indent(line) >= _indent(text):
            return _at((prev, _indent(text)), f"'-{dash.group(2)[:20]}' has no space after its '-', so it is text, "
                       "not a list item", f"write '- {dash.group(2)[:20]}'")
        if ":" not in text and not text.lstrip().startswith(("-", "#", "'", '"')) and _indent(text) == _indent(line):
            return _at((prev, _indent(text)), _NO_COLON, "add the missing ': ' after the key, or quote the text")
        key = _KEY.match(text)
        if key and text[key.end(0):].strip() and not text[key.end(0):].strip().startswith("#") \
                and _indent(line) > _indent(text):
            name = key.group(2).strip()
            return _at((p[0], _indent(line)), f"this key is indented under '{name}', which already has a value",
                       f"line it up with '{name}', or move the value of '{name}' into keys of its own")
    return _at(p, "a ':' where a value was expected", "quote a value that contains ': '")
