"""`dalle-pipe plan` and `dalle-pipe clean` as users see them."""

from __future__ import annotations

import json
from pathlib import Path

from test_run import invoke, make_project


def test_plan_counts_and_costs_before_and_after_a_run(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    r = invoke(root, "plan", "--json", "recipe.yaml")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    (rec,) = doc["recipes"]
    assert rec["units"] == 2
    rows = {s["step"]: s for s in rec["steps"]}
    assert [rows[k]["requests"] for k in ("hero", "bg_mask", "beach")] == [2, 0, 2]
    assert [rows[k]["to_make"] for k in ("hero", "bg_mask", "beach")] == [2, 2, 2]
    assert rec["total"]["images"] == 6 and rec["total"]["up_to_date"] == 0
    assert rec["total"]["cost_usd"] > 0
    # through the Batch API, generations and GPT image edits (the JSON form) cost half
    assert abs(rows["hero"]["batch_cost_usd"] - rows["hero"]["cost_usd"] / 2) < 1e-6
    assert abs(rows["beach"]["batch_cost_usd"] - rows["beach"]["cost_usd"] / 2) < 1e-6
    assert abs(rec["total"]["batch_cost_usd"] - rec["total"]["cost_usd"] / 2) < 2e-6
    assert doc["prices_checked"] == "2026-12-02"
    assert not (root / "out").exists()  # planning writes nothing

    assert invoke(root, "run", "--offline", "recipe.yaml").exit_code == 0
    # an offline run's images do not satisfy the openai provider: to make; the size_of mask, whose size
    # the hero's params fix, stays up to date (the run reuses it)
    doc = json.loads(invoke(root, "plan", "--json", "recipe.yaml").output)
    rows = {s["step"]: s for s in doc["recipes"][0]["steps"]}
    assert [(rows[k]["up_to_date"], rows[k]["to_make"]) for k in ("hero", "bg_mask", "beach")] == [
        (0, 2), (2, 0), (0, 2)]
    r = invoke(root, "run", "--dry-run", "recipe.yaml")
    assert [ln.split()[2] for ln in r.output.splitlines() if "to make:" in ln] == [
        "hero@mug", "beach@mug", "hero@board", "beach@board"]
    doc = json.loads(invoke(root, "plan", "--json", "--offline", "recipe.yaml").output)
    total = doc["recipes"][0]["total"]
    assert (total["up_to_date"], total["to_make"], total["cost_usd"]) == (6, 0, 0.0)

    text = invoke(root, "plan", "recipe.yaml").output
    assert "shots (openai, 2 units)" in text
    assert "prices as checked on 2026-12-02" in text
    assert text.splitlines()[1].split() == ["step", "kind", "requests", "images", "up", "to", "date", "to", "make",
                                            "cost", "batch"]

    assert "placeholder" not in text  # gpt-image-2 has published prices


def test_plan_marks_costs_from_placeholder_prices(tmp_path: Path) -> None:
    from test_run import RECIPE

    root = make_project(tmp_path / "p", RECIPE.replace("model: gpt-image-2", "model: gpt-image-2.5-flare"))
    lines = invoke(root, "plan", "recipe.yaml").output.splitlines()
    marked = [line.split()[0] for line in lines if line.endswith("  placeholder")]
    assert marked == ["hero", "beach", "total"]


def test_clean_removes_free_outputs_no_recipe_produces(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert invoke(root, "run", "--offline", "recipe.yaml").exit_code == 0
    out = root / "out" / "shots"
    assert invoke(root, "run", "--offline", "--force", "--only", "hero", "recipe.yaml").exit_code == 0
    (root / "products.csv").write_text("sku,name,active\nmug,ceramic mug,yes\n")
    stray = out / "notes.txt"
    stray.write_text("keep me")
    r = invoke(root, "clean", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert r.output == "shots: moved 0 paid image(s) to history; removed 3 free file(s)\n"
    assert not (out / "board").exists()
    assert not (out / ".dalle-pipe" / "history").exists() or not any((out / ".dalle-pipe" / "history").rglob("*.png"))
    assert (out / "mug" / "hero.png").is_file() and (out / "mug" / "beach.png").is_file()
    assert stray.read_text() == "keep me"
