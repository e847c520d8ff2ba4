"""One decision, one estimate: the cost `--max-cost` gates on is the cost `plan` shows."""

from __future__ import annotations

import json
from pathlib import Path

from fakeapi import FakeOpenAI
from test_run import invoke, make_project

from dalle_pipe.prices import load_prices

ENV = {"DALLE_PIPE_NO_REPORT": "1"}


def env(api: FakeOpenAI) -> dict[str, str]:
    return {**ENV, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url}


def planned(root: Path) -> float:
    r = invoke(root, "plan", "--json", "recipe.yaml")
    assert r.exit_code == 0, r.output
    cost = json.loads(r.output)["total"]["cost_usd"]
    assert isinstance(cost, float)
    return cost


def test_the_gate_passes_at_the_planned_cost_and_stops_just_below_it(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p")
    cost = planned(root)
    below = invoke(root, "run", "recipe.yaml", "--max-cost", f"{cost - 0.000001:.6f}", env=env(api))
    assert below.exit_code == 2, below.output
    assert f"error: estimated cost ${cost:.2f} exceeds --max-cost" in below.output
    assert api.image_requests == []
    at = invoke(root, "run", "recipe.yaml", "--max-cost", f"{cost:.6f}", env=env(api))
    assert at.exit_code == 0, at.output
    assert len(api.image_requests) == 4


def test_an_edit_is_estimated_with_its_prompt_and_input_images(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    doc = json.loads(invoke(root, "plan", "--json", "recipe.yaml").output)
    rows = {s["step"]: s for s in doc["recipes"][0]["steps"]}
    table = load_prices(None)
    per_image = table.models["gpt-image-2"].per_image["low"]["1024x1024"]
    price = table.models["gpt-image-2"].tokens
    assert price is not None
    prompt = "a tropical beach at sunset as background"
    one_input = table.input_image_tokens * price.image_input / 1e6
    text = -(-len(prompt) // 4) * price.text_input / 1e6
    assert rows["beach"]["cost_usd"] == round(2 * (per_image + one_input + text), 6)
    assert rows["hero"]["cost_usd"] > 2 * per_image  # the generation counts its prompt too


def test_an_unknown_price_stops_the_gate_with_a_message(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    table = json.loads((Path(__file__).parent.parent / "dalle_pipe" / "data" / "prices.json").read_text())
    del table["models"]["gpt-image-2"]
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(table))
    r = invoke(root, "run", "--offline", "recipe.yaml", "--prices", str(prices), "--max-cost", "1")
    assert r.exit_code == 0, r.output  # offline costs nothing: nothing unknown
    (root / "out").rename(root / "old")
    r = invoke(root, "run", "recipe.yaml", "--prices", str(prices), "--max-cost", "100",
               env={**ENV, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9"})
    assert r.exit_code == 2, r.output
    assert ("error: the price of hero@mug (gpt-image-2, generate) is not known, so --max-cost cannot be "
            "checked (add its price with --prices FILE, or run without --max-cost)") in r.output
    assert not (root / "out").exists()
