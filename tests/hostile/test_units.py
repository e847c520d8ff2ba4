"""Unit explosion: counted before anything is built, one clear problem with the count, never a MemoryError."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from front_util import KEY, invoke, tree, write

from dalle_pipe.catalog import MAX_UNITS, TooManyRows, parse_rows

HINT = "(--max-units N raises the ceiling; or split the catalog, or use `where` to keep fewer rows)"


def _matrix_recipe(dims: int, values: int) -> str:
    lines = [f"  d{d}: [{', '.join(f'v{d}x{v}' for v in range(values))}]" for d in range(dims)]
    return ("version: 1\nname: t\nmatrix:\n" + "\n".join(lines) +
            "\nsteps:\n  - id: hero\n    generate:\n      prompt: \"{{ matrix.d0 }}\"\n")


def test_a_small_recipe_whose_matrix_makes_millions_of_units_gets_the_count(tmp_path: Path, api: FakeOpenAI) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": _matrix_recipe(8, 10)})
    before = tree(root)
    tracemalloc.start()
    try:
        r = invoke(root, "run", "recipe.yaml", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (r.exit_code, r.stderr) == (2, f"recipe.yaml:4:3: matrix: the recipe expands to 100000000 units "
                                          f"(100000000 matrix combinations), more than the ceiling of "
                                          f"{MAX_UNITS} {HINT}\n")
    assert peak < 50 * 1024 * 1024  # nothing was expanded
    assert api.requests == [] and tree(root) == before


def test_rows_times_matrix_is_counted_and_max_units_moves_the_ceiling(tmp_path: Path) -> None:
    recipe = ("version: 1\nname: t\nitems: [{id: a}, {id: b}, {id: c}]\nmatrix:\n  color: [red, blue]\n"
              "steps:\n  - id: hero\n    generate:\n      prompt: \"{{ matrix.color }} {{ item.id }}\"\n")
    root = write(tmp_path / "p", {"recipe.yaml": recipe})
    r = invoke(root, "validate", "recipe.yaml", "--max-units", "5")
    assert (r.exit_code, r.stderr) == (2, "recipe.yaml:5:3: matrix: the recipe expands to 6 units (3 rows x 2 "
                                          f"matrix combinations), more than the ceiling of 5 {HINT}\n")
    r = invoke(root, "validate", "recipe.yaml", "--max-units", "6")
    assert (r.exit_code, r.stdout) == (0, "ok: 1 recipe(s), 6 unit(s), 6 task(s)\n")
    r = invoke(root, "plan", "--offline", "recipe.yaml", "--max-units", "5")
    assert r.exit_code == 2 and "more than the ceiling of 5" in r.stderr
    r = invoke(root, "run", "--offline", "--dry-run", "recipe.yaml", "--max-units", "5")
    assert r.exit_code == 2 and "more than the ceiling of 5" in r.stderr
    r = invoke(root, "validate", "recipe.yaml", "--max-units", "0")
    assert r.exit_code == 2 and "--max-units" in r.stderr


def test_a_four_million_row_csv_gets_the_count_not_a_memory_error(tmp_path: Path, api: FakeOpenAI) -> None:
    rows = "".join(f"{i}\n" for i in range(4_000_000))
    root = write(tmp_path / "p", {
        "recipe.yaml": "version: 1\nname: t\ncatalog: {path: rows.csv}\nsteps:\n  - id: hero\n    generate:\n"
                       "      prompt: \"{{ item.id }}\"\n",
        "rows.csv": "id\n" + rows,
    })
    del rows
    before = tree(root)
    r = invoke(root, "run", "recipe.yaml", env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url})
    assert (r.exit_code, r.stderr) == (2, f"recipe.yaml:3:17: catalog.path: catalog 'rows.csv' has 4000000 rows, "
                                          f"more than the ceiling of {MAX_UNITS} units {HINT}\n")
    assert api.requests == [] and tree(root) == before


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "yaml"])
def test_every_catalog_format_counts_before_building_rows(fmt: str) -> None:
    n = 50
    text = {
        "csv": "id\n" + "".join(f"r{i}\n" for i in range(n)),
        "json": json.dumps([{"id": f"r{i}"} for i in range(n)]),
        "jsonl": "".join(json.dumps({"id": f"r{i}"}) + "\n" for i in range(n)),
        "yaml": "".join(f"- {{id: r{i}}}\n" for i in range(n)),
    }[fmt]
    with pytest.raises(TooManyRows) as info:
        parse_rows(text, "c." + fmt, fmt, limit=10)
    assert (info.value.count, info.value.limit) == (n, 10)
    rows, problems = parse_rows(text, "c." + fmt, fmt, limit=n)
    assert len(rows) == n and problems == []
