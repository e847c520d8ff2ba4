"""The price table and the cost of a request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dalle_pipe.errors import UsageError
from dalle_pipe.models import known_models
from dalle_pipe.prices import cost_from_usage, estimate_request, load_prices

TABLE = load_prices()


def test_packaged_table_metadata() -> None:
    assert TABLE.checked == "2026-12-02"
    assert "--prices FILE" in TABLE.note
    assert "verify against your invoice" in TABLE.note
    assert TABLE.path is None
    assert set(TABLE.models) == set(known_models())
    assert TABLE.models["gpt-image-1"].placeholder is False
    # published figures: checked; only models with no public figure stay placeholders
    for model in ("gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1.5", "gpt-image-1-mini"):
        assert TABLE.models[model].placeholder is False, model
        assert not TABLE.is_placeholder(model)
    assert TABLE.is_placeholder("gpt-image-2.5-sunburst")
    assert not TABLE.is_placeholder("no-such-model")


def test_gpt_image_2_published_prices() -> None:
    for model in ("gpt-image-2", "gpt-image-2-2026-04-21"):
        got = [estimate_request(TABLE, model, "generate", {"quality": q, "size": "1024x1024"})
               for q in ("low", "medium", "high")]
        assert got == [0.006, 0.053, 0.211]
        tokens = TABLE.models[model].tokens
        assert tokens is not None
        assert (tokens.text_input, tokens.text_input_cached, tokens.image_input, tokens.image_input_cached,
                tokens.image_output) == (5.0, 1.25, 8.0, 2.0, 30.0)


@pytest.mark.parametrize(
    ("model", "kind", "params", "expected"),
    [
        ("gpt-image-1", "generate", {"quality": "low", "size": "1024x1024"}, 0.011),
        ("gpt-image-1", "generate", {"quality": "medium", "size": "1536x1024", "n": 3}, 0.189),
        ("gpt-image-1", "generate", {"quality": "high", "size": "1024x1536"}, 0.25),
        ("gpt-image-1", "generate", {"quality": "auto", "size": "1024x1024"}, 0.167),  # auto = high
        ("gpt-image-1", "generate", {}, 0.25),  # no quality = high, no size = auto = dearest size
        ("gpt-image-1", "generate", {"quality": "low", "size": "auto", "n": 2}, 0.032),
        ("dall-e-3", "generate", {}, 0.04),
        ("dall-e-3", "generate", {"quality": "hd", "size": "1792x1024"}, 0.12),
        ("dall-e-3", "generate", {"quality": "standard", "size": "1024x1792"}, 0.08),
        ("dall-e-3", "generate", {"quality": "hd"}, 0.08),
        ("dall-e-2", "variation", {"size": "256x256", "n": 4}, 0.064),
        ("dall-e-2", "generate", {"size": "512x512"}, 0.018),
        ("dall-e-2", "edit", {}, 0.02),
        # free-form: the 1024x1024 price scaled by pixel count
        ("gpt-image-2", "generate", {"quality": "low", "size": "2048x2048"}, 0.024),
        ("gpt-image-2", "generate", {"quality": "low", "size": "1536x864"}, 0.007594),
        ("no-such-model", "generate", {}, None),
        ("dall-e-3", "generate", {"quality": "ultra"}, None),
        ("gpt-image-2", "generate", {"size": "big"}, None),
        ("gpt-image-1", "generate", {"n": 0}, None),
    ],
)
def test_estimates(model: str, kind: str, params: dict[str, object], expected: float | None) -> None:
    assert estimate_request(TABLE, model, kind, params) == expected


def test_higher_qualities_cost_more() -> None:
    for model in ("gpt-image-2.5-sunburst", "gpt-image-2.5-flare-2026-09-08"):
        costs = [
            estimate_request(TABLE, model, "generate", {"quality": q, "size": "1024x1024"})
            for q in ("low", "medium", "high", "xhigh", "max")
        ]
        known = [c for c in costs if c is not None]
        assert len(known) == 5 and known == sorted(known) and len(set(known)) == 5


def test_batch_is_half() -> None:
    assert (
        estimate_request(
            TABLE, "gpt-image-1", "generate", {"quality": "high", "size": "1024x1024"}, batch=True
        )
        == 0.0835
    )
    assert estimate_request(TABLE, "dall-e-3", "generate", {"quality": "hd"}, batch=True) == 0.04


def test_estimate_edit_inputs_and_prompt() -> None:
    base = {"quality": "low", "size": "1024x1024"}
    # 2 inputs x 1000 tokens x $10/1M = 0.02 ; + 1 prompt token... 8 chars = 2 tokens x $5/1M = 0.00001
    assert estimate_request(TABLE, "gpt-image-1", "edit", base, input_images=2) == 0.031
    assert estimate_request(TABLE, "gpt-image-1", "edit", base, input_images=2, prompt="12345678") == 0.03101
    high = {**base, "input_fidelity": "high"}
    assert estimate_request(TABLE, "gpt-image-1", "edit", high, input_images=1) == 0.08340
    # dall-e is billed per image only
    assert estimate_request(TABLE, "dall-e-2", "edit", {}, input_images=1, prompt="x" * 400) == 0.02


USAGE = {
    "input_tokens": 1050,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 1000},
    "output_tokens": 4160,
    "total_tokens": 5210,
}


def test_cost_from_usage() -> None:
    # 50 x 5 + 1000 x 10 + 4160 x 40 = 250 + 10000 + 166400 = 176650 -> $0.17665
    assert cost_from_usage(TABLE, "gpt-image-1", USAGE, {}) == 0.17665
    assert cost_from_usage(TABLE, "gpt-image-1", USAGE, {}, batch=True) == 0.088325
    # output text tokens: gpt-image-2 publishes no text output price, so the image output price (the worst case)
    usage = {**USAGE, "output_tokens_details": {"image_tokens": 4000, "text_tokens": 160}}
    # 50 x 5 + 1000 x 8 + 4000 x 30 + 160 x 30 = 250 + 8000 + 120000 + 4800 = 133050
    assert cost_from_usage(TABLE, "gpt-image-2", usage, {}) == 0.13305
    # the Responses API's tool usage
    assert cost_from_usage(TABLE, "gpt-image-1", {"tool_usage": {"image_gen": USAGE}}, {}) == 0.17665


def test_responses_route_cost() -> None:
    mainline = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200}, "output_tokens": 300}
    both = {"usage": mainline, "tool_usage": {"image_gen": USAGE}}
    # image: 0.17665 (gpt-image-1, as above); gpt-5.1: (1000 x 1.25 + 200 x 0.125 + 300 x 10) / 1M = 0.004275
    assert cost_from_usage(TABLE, "gpt-image-1", both, {}, mainline_model="gpt-5.1") == 0.180925
    assert cost_from_usage(TABLE, "gpt-image-1", both, {}) == 0.17665  # no mainline model named
    # a mainline model the table does not price: the image part only
    assert cost_from_usage(TABLE, "gpt-image-1", both, {}, mainline_model="my-model") == 0.17665
    # no tool_usage.image_gen: the image model's estimate, never $0
    params = {"quality": "low", "size": "1024x1024"}
    assert cost_from_usage(TABLE, "gpt-image-2", {"usage": mainline}, params) == 0.006
    assert cost_from_usage(TABLE, "gpt-image-2", {"usage": mainline}, params,
                           mainline_model="gpt-5.1") == 0.010275
    assert TABLE.text_models["gpt-5-mini"].output == 2.0


def test_cost_without_usage_falls_back() -> None:
    params = {"quality": "medium", "size": "1024x1024", "n": 2}
    assert cost_from_usage(TABLE, "gpt-image-1", None, params) == 0.084
    assert cost_from_usage(TABLE, "dall-e-3", {"input_tokens": 10}, {"quality": "hd"}) == 0.08
    assert cost_from_usage(TABLE, "gpt-image-1", {"input_tokens": "lots"}, params) == 0.084
    assert cost_from_usage(TABLE, "no-such-model", USAGE, params) is None


def test_override_file(tmp_path: Path) -> None:
    doc = {
        "checked": "2027-01-02",
        "source": "my invoice",
        "batch_multiplier": 0.4,
        "models": {
            "gpt-image-2": {
                "default_quality": "high",
                "default_size": "auto",
                "per_image": {"high": {"1024x1024": 0.1, "1536x1024": 0.15}},
                "tokens": {"text_input": 1, "image_input": 2, "image_output": 3},
            }
        },
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    table = load_prices(path)
    assert (table.checked, table.source, table.path) == ("2027-01-02", "my invoice", str(path))
    assert estimate_request(table, "gpt-image-2", "generate", {"size": "1024x1024", "n": 2}) == 0.2
    assert estimate_request(table, "gpt-image-2", "generate", {}, batch=True) == 0.06
    assert estimate_request(table, "gpt-image-1", "generate", {}) is None  # the file replaces the table
    assert cost_from_usage(table, "gpt-image-2", USAGE, {}) == round((50 * 1 + 1000 * 2 + 4160 * 3) / 1e6, 6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON (line 1 column 2: Expecting property name enclosed in double quotes)"),
        ("[]", "the top level must be an object"),
        ('{"checked": "2026-01-01"}', "models must be an object"),
        ('{"checked": "2026-01-01", "models": {}}', "models is empty"),
        (
            '{"models": {"m": {"per_image": {"high": {"1024x1024": 1}}}}}',
            "checked must be a non-empty string",
        ),
        (
            '{"checked": "x", "models": {"m": {"per_image": {"high": {"1024x1024": "cheap"}}}}}',
            'models.m.per_image.high.1024x1024 must be a number >= 0, not "cheap"',
        ),
        (
            '{"checked": "x", "models": {"m": {"per_image": {"high": {"1024x1024": -1}}}}}',
            "models.m.per_image.high.1024x1024 must be a number >= 0, not -1",
        ),
        (
            '{"checked": "x", "models": {"m": {"default_quality": "auto", '
            '"per_image": {"high": {"1024x1024": 1}}}}}',
            "models.m.default_quality 'auto' has no per_image prices",
        ),
        (
            '{"checked": "x", "models": {"m": {"per_image": {"high": {"1024x1024": 1}}, '
            '"tokens": {"text_input": 1}}}}',
            "models.m.tokens.image_input must be a number >= 0, not null",
        ),
    ],
)
def test_bad_override_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_prices(path)
    assert info.value.message == f"price table {path}: {message}"
    assert info.value.hint is not None and "prices.json" in info.value.hint


def test_missing_override_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(UsageError) as info:
        load_prices(path)
    assert info.value.message == f"cannot read price table {path}: No such file or directory"
