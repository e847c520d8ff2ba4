"""Templates that try to take the machine down: each stops on its budget, at its place, naming the row."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from front_util import KEY, invoke, tree, write

from dalle_pipe import templating
from dalle_pipe.app import load
from dalle_pipe.recipe import Overrides
from dalle_pipe.templating import (
    MAX_CALLS,
    MAX_DEPTH,
    MAX_VALIDATION_WORK,
    RenderError,
    compile_template,
    render,
    render_string,
    validation_budget,
)

SANDBOX = "templates run sandboxed, with bounded loops and values"
DOUBLING = "{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"

RECIPE = """version: 1
name: t
items: [{{id: mug}}, {{id: cup}}]
steps:
  - id: hero
    generate:
      prompt: "{prompt}"
"""


def error(source: str, context: dict[str, object] | None = None) -> RenderError:
    with pytest.raises(RenderError) as info:
        render_string(source, context or {})
    return info.value


def test_a_macro_calling_itself_twice_per_level_stops_at_the_depth_limit() -> None:
    exc = error(DOUBLING)
    assert (exc.message, exc.line, exc.hint) == (
        f"template error: macro calls nested more than {MAX_DEPTH} deep", 1, SANDBOX)


def test_a_shallow_macro_tree_of_two_to_the_forty_calls_stops_at_the_call_budget() -> None:
    exc = error("{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}\n{{ f(0) }}")
    assert exc.message == f"template error: calls ran more than {MAX_CALLS} times (macros, functions, methods, filters)"


def test_caller_recursion_is_bounded_too() -> None:
    exc = error("{% macro f() %}{{ caller() }}{{ caller() }}{% endmacro %}"
                "{% macro g() %}{% call f() %}{{ g() }}{% endcall %}{% endmacro %}{{ g() }}")
    assert exc.message == f"template error: macro calls nested more than {MAX_DEPTH} deep"


@pytest.mark.parametrize(("source", "message"), [
    ("{{ 'x'.encode() * 10**9 }}", "repetition would build a value that is too large"),
    ("{{ 10**9 * 'x'.encode() }}", "repetition would build a value that is too large"),
    ("{{ ('x' * 100000).join('y' * 100000) }}", "join() would build more than 100000 characters"),
    ("{{ ('x' * 99999).join(range(2000)|map('string')) }}", "join() would build more than 100000 characters"),
    ("{{ range(2000)|join('x' * 99999) }}", "join() would build more than 100000 characters"),
    ("{{ ('x' * 1000).translate({120: 'y' * 1000}) }}", "translate() would build more than 100000 characters"),
    ("{{ ('x' * 1000).encode().replace('x'.encode(), 'y'.encode() * 1000) }}",
     "replace() would build more than 100000 characters"),
    ("{% set a = namespace(x='y' * 90000) %}{% set b = namespace(p=a, q=a) %}{{ b }}",
     "a namespace() result of more than 100000 characters or items"),
    ("{% set a = namespace(x='y' * 90000) %}{% set b = namespace() %}{% set b.p = a %}{% set b.q = a %}{{ b }}",
     "output of a value of more than 100000 characters or items"),
    ("{% set a = namespace(x='y' * 90000) %}{% set b = namespace() %}{% set b.p = a %}{% set b.q = a %}"
     "{{ b|string }}", "string() of a value of more than 100000 characters or items"),
    ("{% set a = namespace(x='y' * 90000) %}{% set b = namespace() %}{% set b.p = a %}{% set b.q = a %}"
     "{{ '%s' % b }}", "% of a value of more than 100000 characters or items"),
    ("{{ 'x'.center(10**9) }}", "center() with a number over 100000"),
    ("{{ '{:>999999999}'.format(1) }}", "a format whose widths add up to more than 100000"),
    ("{{ range(10**9) }}", "range() of more than 2000 numbers"),
    ("{{ [[1] * 1000] * 1000 }}", "repetition would build a value that is too large"),
    ("{{ range(2000)|map('string')|map('list')|sum(start=[]) }}",
     "sum() of more than 100 values that are not numbers"),
    ("{% for i in range(1000) %}{{ ''.ljust(99999)|length }}{% endfor %}",
     "the values it built add up to more than 1000000 characters or items"),
])
def test_value_building_the_sandbox_missed_is_refused_before_it_is_built(source: str, message: str) -> None:
    exc = error(source)
    assert exc.message == f"template error: {message}"
    assert exc.line == 1


def test_the_budgets_are_counted_in_work_so_every_run_ends_the_same_way() -> None:
    c = compile_template("{% macro f(n) %}{% if n < 30 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                         "{{ f(0) }}")
    seen = set()
    for _ in range(3):
        with pytest.raises(RenderError) as info:
            render(c, {})
        seen.add(info.value.message)
    assert seen == {f"template error: calls ran more than {MAX_CALLS} times (macros, functions, methods, filters)"}


def test_a_validation_shares_one_budget_across_rows() -> None:
    c = compile_template("{% for i in range(1000) %}{% endfor %}ok")
    with validation_budget(2500) as budget:
        assert render(c, {}) == "ok"
        assert render(c, {}) == "ok"
        with pytest.raises(RenderError) as info:
            render(c, {})
    assert info.value.message == ("template error: this validation's templates ran more than 2500 loop "
                                  "iterations and calls in all")
    assert budget.left < 0
    assert render(c, {}) == "ok"  # outside the validation, only the render's own budget applies


def test_ordinary_templates_stay_far_inside_the_validation_budget() -> None:
    prompt = compile_template("{{ item.name | title }} on a {{ item.color }} table"
                              "{% if item.big == '1' %}, wide{% endif %} {{ vars.style|default('') }}")
    output = compile_template("{{ key }}/{{ item.name|replace(' ', '-') }}.{{ ext }}")
    with validation_budget() as budget:
        for i in range(1000):
            ctx = {"item": {"name": f"product {i}", "color": "red", "big": str(i % 2)}, "key": f"p{i}",
                   "ext": "png", "vars": {}}
            render(prompt, ctx)
            render(output, ctx)
    per_row = budget.spent / 1000
    assert per_row * 100_000 < MAX_VALIDATION_WORK / 10  # a 100,000-row catalog uses under a tenth


def test_a_template_like_catalog_value_is_data_never_rendered(tmp_path: Path) -> None:
    bomb = DOUBLING.replace("{{", "{{ ").replace('"', "'")
    root = write(tmp_path / "p", {
        "recipe.yaml": "version: 1\nname: t\ncatalog: {path: rows.csv}\nsteps:\n  - id: hero\n"
                       "    generate:\n      prompt: \"{{ item.text }} / {{ item.text|upper|length }}\"\n",
        "rows.csv": f'id,text\nmug,"{bomb}"\n',
    })
    r = invoke(root, "run", "--dry-run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    loaded = load([root / "recipe.yaml"], Overrides(provider="offline"))
    assert loaded.plans[0].tasks[0].prompt == f"{bomb} / {len(bomb)}"


@pytest.mark.parametrize("command", [["validate"], ["run"], ["run", "--check"], ["plan"]])
def test_a_recursive_macro_is_a_problem_at_its_place_naming_the_rows_and_nothing_is_sent(
        tmp_path: Path, api: FakeOpenAI, command: list[str]) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": RECIPE.format(prompt=DOUBLING)})
    before = tree(root)
    r = invoke(root, *command, "recipe.yaml", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
    assert r.exit_code == 2
    assert r.stderr == (f"recipe.yaml:7:15: steps[0].generate.prompt: row 1 (key 'mug') and row 2 (key 'cup'): "
                        f"template error: macro calls nested more than {MAX_DEPTH} deep ({SANDBOX})\n")
    assert api.requests == []
    assert tree(root) == before


def test_the_validation_budget_stops_a_catalog_of_heavy_rows(tmp_path: Path, api: FakeOpenAI,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "MAX_VALIDATION_WORK", 5_000)
    rows = "".join(f"  - {{id: r{i}}}\n" for i in range(10))
    root = write(tmp_path / "p", {"recipe.yaml": "version: 1\nname: t\nitems:\n" + rows + "steps:\n"
                                  "  - id: hero\n    generate:\n"
                                  "      prompt: \"{% for i in range(1500) %}{% endfor %}{{ item.id }}\"\n"})
    before = tree(root)
    r = invoke(root, "run", "recipe.yaml", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
    assert r.exit_code == 2
    assert r.stderr == ("recipe.yaml:17:15: steps[0].generate.prompt: row 4 (key 'r3'), row 5 (key 'r4'), "
                        "row 6 (key 'r5') and 4 more units: template error: this validation's templates ran "
                        "more than 5000 loop iterations and calls in all (every template of one validation "
                        "shares one budget of work; simplify the templates)\n")
    assert api.requests == []
    assert tree(root) == before
