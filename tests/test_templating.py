"""The sandboxed Jinja environment: strict names, refused tricks, bounded work, user-facing errors."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalle_pipe.templating import (
    MAX_LOOP,
    Compiled,
    RenderError,
    compile_expression,
    compile_template,
    evaluate,
    render,
    render_string,
    truth,
)

CTX: dict[str, Any] = {
    "item": {"name": "mug", "items": "three", "price": 1234567, "tags": ["a", "b"]},
    "vars": {"brand": "Acme"},
    "key": "mug",
    "matrix": {"scene": "beach"},
    "recipe": {"name": "shots"},
    "step": "hero",
    "steps": {"hero": {"path": "mug/hero.png", "prompt": "a mug"}},
}


def error(source: str, ctx: dict[str, Any] | None = None) -> RenderError:
    with pytest.raises(RenderError) as info:
        render_string(source, CTX if ctx is None else ctx)
    return info.value


# --------------------------------------------------------------------------- rendering


def test_renders_the_context() -> None:
    assert render_string("{{ item.name }} by {{ vars.brand }} at the {{ matrix.scene }}", CTX) == \
        "mug by Acme at the beach"


def test_a_rows_field_wins_over_a_mapping_method() -> None:
    assert render_string("{{ item.items }}", CTX) == "three"


def test_ordinary_filters_and_methods_work() -> None:
    assert render_string("{{ '{:,}'.format(item.price) }} {{ item.tags|join('+') }} {{ item.name|upper }}",
                         CTX) == "1,234,567 a+b MUG"
    assert render_string("{% for t in item.tags %}[{{ loop.index }}{{ t }}]{% endfor %}", CTX) == "[1a][2b]"
    assert render_string("{{ range(3)|list }} {{ dict(a=1) }}", CTX) == "[0, 1, 2] {'a': 1}"


@pytest.mark.parametrize(("source", "message", "hint"), [
    ("{{ item.nme }}", "undefined variable 'item.nme'", "did you mean 'item.name'?"),
    ("{{ itme.name }}", "undefined variable 'itme'", "did you mean 'item'?"),
    ("{{ vars.brnad }}", "undefined variable 'vars.brnad'", "did you mean 'vars.brand'?"),
    ("{{ vars.colour }}", "undefined variable 'vars.colour'", "set it under vars: or with --var colour=..."),
    ("{{ steps.beach.path }}", "undefined variable 'steps.beach'",
     "only earlier steps of the same unit are available"),
    ("{{ item.name.foo }}", "a string has no attribute 'foo'", None),
])
def test_undefined_names_say_which_and_suggest(source: str, message: str, hint: str | None) -> None:
    exc = error(source)
    assert (exc.message, exc.hint, exc.line) == (message, hint, 1)


def test_default_and_defined_still_work_under_strict_undefined() -> None:
    assert render_string("{{ vars.colour|default('red') }} {{ 'y' if item.x is defined else 'n' }}", CTX) == "red n"


def test_the_line_of_a_render_error_is_the_templates() -> None:
    assert error("line one\n\n{{ item.nope }}").line == 3


@pytest.mark.parametrize(("source", "message", "hint"), [
    ("{{ x", "template syntax error: unexpected end of template, expected 'end of print statement'", None),
    ("{{ x|uper }}", "template error: unknown filter 'uper'", "did you mean 'upper'?"),
    ("{% if x %}", "template syntax error: Unexpected end of template. Jinja was looking for the following "
                   "tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'", None),
])
def test_syntax_errors(source: str, message: str, hint: str | None) -> None:
    with pytest.raises(RenderError) as info:
        compile_template(source)
    assert (info.value.message, info.value.hint, info.value.line) == (message, hint, 1)


def test_compiled_templates_know_their_names_and_attribute_references() -> None:
    c = compile_template("{{ item.name }}\n{{ steps.hero.prompt }} {{ steps['bg'] }} {% set x = 1 %}{{ x }}")
    assert c.names == frozenset({"item", "steps"})
    assert c.uses("steps") and not c.uses("vars")
    assert c.attributes("steps") == [("bg", 2), ("hero", 2)]
    assert c.attributes("item") == [("name", 1)]


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(("text", "expected"), [
    ("", False), ("false", False), (" No ", False), ("0", False), ("off", False), ("None", False),
    ("yes", True), ("1", True), ("anything", True),
])
def test_truth_words(text: str, expected: bool) -> None:
    assert truth(text) is expected


@pytest.mark.parametrize(("source", "expected"), [
    ("item.name == 'mug'", True),
    ("item.name != 'mug'", False),
    ("'a' in item.tags", True),
    ("{{ item.name == 'cup' }}", False),
    ("{{ 'no' }}", False),
    ("{% if item.price > 10 %}yes{% endif %}", True),
])
def test_expressions_and_templates_as_conditions(source: str, expected: bool) -> None:
    assert evaluate(compile_expression(source), CTX) is expected


def test_expression_syntax_error() -> None:
    with pytest.raises(RenderError) as info:
        compile_expression("item.category !== 'apparel'")
    assert info.value.message == "expression syntax error: unexpected '='"


def test_an_expression_cannot_break_out_of_its_wrapping() -> None:
    with pytest.raises(RenderError):
        compile_expression("1) }}{{ ''.__class__ }}{{ (1")


# --------------------------------------------------------------------------- the sandbox

REFUSED = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template error: attribute '__class__' is not allowed"),
    ("{{ cycler.__init__.__globals__.os }}", "template error: attribute '__init__' is not allowed"),
    ("{{ item['__class__'] }}", "template error: attribute '__class__' is not allowed"),
    ("{{ item|attr('__class__') }}", "template error: attribute '__class__' is not allowed"),
    ("{{ item._private }}", "template error: attribute '_private' is not allowed"),
    ("{% include 'x.txt' %}", "template error: include is not available in a recipe's templates"),
    ("{% import 'x' as y %}", "template error: import is not available in a recipe's templates"),
    ("{% extends 'x' %}", "template error: extends is not available in a recipe's templates"),
    ("{% for x in [1] recursive %}{{ loop(x) }}{% endfor %}", "template error: recursive loops are not allowed"),
]


@pytest.mark.parametrize(("source", "message"), REFUSED)
def test_attribute_tricks_are_refused_when_compiled(source: str, message: str) -> None:
    with pytest.raises(RenderError) as info:
        compile_template(source)
    assert info.value.message == message


BOUNDED = [
    "{{ 'x' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 'x'|center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=10**9) }}",
    "{{ (10**99)**100 }}",
    "{% set ns = namespace(x=10) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "{% set l = [1] * 100000 %}{% set a = [l, l, l, l, l, l] %}{{ a|tojson|length }}",
    "{% set s = 'x' * 100000 %}{{ s.replace('', s)|length }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}",
    "{% for c in 'x' * 50000 %}{% for d in 'y' * 50000 %}{% endfor %}{% endfor %}",
    "{{ 'a\n'|indent(99999) * 3 }}{{ ('a\n' * 1000)|indent(99999) }}",
    "{{ 'x'|wordwrap(10**9) }}",
    "{{ range(10)|batch(10**9)|list }}",
]


@pytest.mark.parametrize("source", BOUNDED)
def test_work_and_values_are_bounded(source: str) -> None:
    start = time.perf_counter()
    exc = error(source)
    assert time.perf_counter() - start < 2
    assert exc.message.startswith("template error: ")
    assert exc.hint == "templates run sandboxed, with bounded loops and values"


def test_a_template_that_ran_out_of_loops_fails_at_once_afterwards() -> None:
    c = compile_template("{% for i in item.tags %}{% for j in range(1999) %}{% endfor %}{% endfor %}")
    with pytest.raises(RenderError) as first:
        render(c, CTX)
    assert first.value.message == f"template error: loops ran more than {MAX_LOOP} times"
    start = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(RenderError):
            render(c, {**CTX, "item": {"tags": []}})
    assert time.perf_counter() - start < 1


def test_output_is_bounded() -> None:
    assert error("{% for i in range(2000) %}{{ 'x' * 99 }}{% endfor %}").message == \
        "template output exceeds 100000 characters"


def test_the_globals_are_only_the_harmless_ones() -> None:
    for name in ("lipsum", "cycler", "joiner"):
        assert error(f"{{{{ {name}() }}}}").message == f"undefined variable {name!r}"
    assert error("{{ [1, 2]|random }}").message.startswith("template error: unknown filter 'random'")


def test_python_errors_inside_a_template_become_render_errors() -> None:
    assert error("{{ 1 / 0 }}").message == "template error: ZeroDivisionError: division by zero"
    assert error("{{ item.name|int + 'x' }}").message.startswith("template error: TypeError:")
    assert error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").message == \
        "template error: macro calls nested more than 50 deep"  # the render's budget, before Python's limit


def test_a_huge_template_is_refused() -> None:
    with pytest.raises(RenderError) as info:
        compile_template("x" * 100_001)
    assert info.value.message == "template is 100001 characters; the limit is 100000"


# --------------------------------------------------------------------------- fuzzing

PIECES = ["{{ ", " }}", "{% ", " %}", "item", ".name", ".__class__", "vars", "|upper", "|join", "(", ")", "[",
          "]", "'x'", "*", "**", "9", " for i in range(9)", "endfor", " if ", "else", "endif", "~", "+", "%",
          "set ns = namespace(a=1)", "ns.a", "loop.index", ",", "\n", "text", "{#", "#}", "-", "|attr('_')"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=25).map("".join))
def test_any_template_text_renders_or_fails_as_a_render_error(source: str) -> None:
    try:
        render_string(source, CTX)
    except RenderError as exc:
        assert exc.message


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_expression_text_evaluates_or_fails_as_a_render_error(source: str) -> None:
    try:
        evaluate(compile_expression(source), CTX)
    except RenderError as exc:
        assert exc.message


def test_none_renders_as_empty_text_never_as_the_word_none() -> None:
    from dalle_pipe.templating import render_string

    ctx = {"steps": {"hero": {"revised_prompt": None, "prompt": "a mug"}}}
    assert render_string("{{ steps.hero.revised_prompt }} from the side", ctx) == " from the side"
    assert render_string("{{ steps.hero.revised_prompt or steps.hero.prompt }}", ctx) == "a mug"


# --------------------------------------------------------------------------- shortcuts
# Plain look-ups and `field == value` conditions skip Jinja when every value is a row's string;
# the text, the truth and every message must be exactly the sandbox's.

_SHORT_TEMPLATES = ["product {{ item.name }} on a table", "{{ key }}/{{ item.name }}", "{{ item.items }}",
                    "{{ item.missing }}", "{{ vars.brand }} {# note #}{{ item.name }}\n", "{{ self }}",
                    "{% raw %}{{ item.name }}{% endraw %}", "a beach behind it", "{{ range }}", ""]
_SHORT_CONDITIONS = ["item.name == 'mug'", "item.name != 'mug'", "item.price == 3", "item.missing == 'x'",
                     "key == 'mug'", "item.items == none", "item.flag == true"]
_VALUES = st.one_of(st.text(max_size=5), st.integers(-3, 3), st.none(), st.booleans(), st.lists(st.text(max_size=2)))


def _through_jinja(c: Compiled) -> Compiled:
    return Compiled(c.source, c.names, c.template, c.refs)  # no shortcut: the sandbox itself


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RenderError as exc:
        return exc.message, exc.line, exc.hint


@settings(max_examples=200, deadline=None)
@given(row=st.dictionaries(st.sampled_from(["name", "items", "price", "flag", "missing"]), _VALUES),
       key=st.one_of(st.text(max_size=4), st.integers(0, 3)))
def test_shortcuts_render_what_the_sandbox_renders(row: dict[str, Any], key: Any) -> None:
    ctx = {**CTX, "item": row, "key": key}
    for source in _SHORT_TEMPLATES:
        c = compile_template(source)
        assert _outcome(render, c, ctx) == _outcome(render, _through_jinja(c), ctx), source
    for source in _SHORT_CONDITIONS:
        c = compile_expression(source)
        assert _outcome(evaluate, c, ctx) == _outcome(evaluate, _through_jinja(c), ctx), source


def test_shortcuts_apply_to_the_common_shapes() -> None:
    assert compile_template("product {{ item.name }} on a table").pieces is not None
    assert compile_template("{{ item.name | title }}").pieces is None
    assert compile_expression("item.active == 'yes'").test == ("item", "active", "eq", "yes")
    assert render(compile_template("product {{ item.name }}"), {"item": {"name": "mug"}}) == "product mug"
    assert render(compile_template("n={{ item.n }}"), {"item": {"n": 3}}) == "n=3"  # not a string: Jinja
    assert evaluate(compile_expression("item.active == 'yes'"), {"item": {"active": "yes"}}) is True
