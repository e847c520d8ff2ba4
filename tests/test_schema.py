from __future__ import annotations

import copy
import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import referencing.exceptions
from jsonschema import Draft202012Validator

from dalle_pipe.schema import SchemaIssue, check, load_schema, registry, schema_text

ROOT = Path(__file__).resolve().parent.parent
STEP_KINDS = "generate, edit, variation, mask, resize, pad, crop, convert, composite"

# The recipe of SPEC.md, "A recipe".
SPEC_RECIPE: dict[str, Any] = {
    "version": 1,
    "name": "product-shots",
    "provider": "openai",
    "model": "gpt-image-2",
    "params": {"size": "1536x1024", "quality": "high"},
    "throttle": {
        "images_per_minute": 5,
        "requests_per_minute": 60,
        "concurrency": 4,
        "max_retries": 6,
        "timeout_s": 300,
    },
    "vars": {"lighting": "soft window light"},
    "catalog": {
        "path": "catalogs/products.csv",
        "key": "{{ item.sku }}",
        "where": "item.active == 'yes'",
    },
    "matrix": {"scene": ["beach", "studio"]},
    "output_dir": "../out/product-shots",
    "steps": [
        {
            "id": "hero",
            "generate": {
                "prompt": "A {{ item.name }} on marble, {{ vars.lighting }}, {{ matrix.scene }} mood",
            },
            "output": "{{ key }}/hero.{{ ext }}",
        },
        {
            "id": "bg_mask",
            "mask": {
                "size_of": {"step": "hero"},
                "shapes": [{"circle": {"center": [0.5, 0.5], "radius": 0.4}}],
                "invert": True,
            },
        },
        {
            "id": "beach",
            "edit": {
                "image": {"step": "hero"},
                "mask": {"step": "bg_mask"},
                "prompt": "Same product; {{ matrix.scene }} at sunset. "
                "Before: {{ steps.hero.revised_prompt or steps.hero.prompt }}",
                "quality": "medium",
            },
            "when": "item.category != 'apparel'",
        },
    ],
}

SPEC_PIPELINE: dict[str, Any] = {
    "version": 1,
    "recipes": ["recipes/product-shots.yaml", "recipes/banners.yaml"],
    "provider": "openai",
    "throttle": {"images_per_minute": 50, "concurrency": 8},
    "vars": {"brand": "Acme"},
}

# Every other key of docs/language.md, so the whole language is known to validate.
FULL_RECIPE: dict[str, Any] = {
    "version": 1,
    "name": "everything_1",
    "description": "every key",
    "provider": {"name": "openai", "api": "responses", "model": "gpt-5"},
    "model": "gpt-image-1.5",
    "params": {
        "n": 2,
        "size": "auto",
        "quality": "auto",
        "background": "transparent",
        "output_format": "webp",
        "output_compression": 80,
        "moderation": "low",
        "input_fidelity": "high",
        "style": "vivid",
        "response_format": "b64_json",
        "safety_identifier": "user-1234",
    },
    "items": [{"id": "mug", "name": "a ceramic mug"}, {"id": "wallet", "name": "a leather wallet"}],
    "steps": [
        {"id": "a", "generate": {"prompt_file": "prompts/a.j2", "model": "gpt-image-2", "size": "2048x1152"}},
        {
            "id": "b",
            "edit": {
                "image": [{"step": "a"}, "refs/{{ item.id }}.png"],
                "mask": "masks/m.png",
                "prompt": "x",
                "fit": "resize",
                "n": 1,
            },
            "description": "an edit with references",
        },
        {"id": "c", "variation": {"image": {"step": "a", "index": 1}, "model": "dall-e-2", "n": 3}},
        {
            "id": "d",
            "mask": {
                "from_alpha": {"step": "a", "index": 0},
                "shapes": [
                    {"ellipse": {"box": [0.1, 0.1, 0.9, 0.9]}},
                    {"rect": {"box": [0, 0, 0.5, 0.5]}},
                    {"polygon": {"points": [[0, 0], [1, 0], [0.5, 1]]}},
                ],
                "feather": 4,
            },
        },
        {
            "id": "e",
            "resize": {"image": {"step": "b"}, "size": "512x512", "fit": "cover", "color": "#000000"},
        },
        {"id": "f", "pad": {"image": {"step": "e"}, "aspect": "16:9", "color": "transparent"}},
        {"id": "g", "pad": {"image": {"step": "e"}, "size": "1024x576"}},
        {"id": "h", "crop": {"image": {"step": "f"}, "box": [0.25, 0.25, 0.75, 0.75]}},
        {"id": "i", "convert": {"image": {"step": "h"}, "format": "jpeg", "quality": 90}},
        {
            "id": "j",
            "composite": {
                "background": "bg.png",
                "image": {"step": "c", "index": 2},
                "position": [0.5, 0.6],
                "scale": 0.3,
            },
            "output": "{{ key }}/final.{{ ext }}",
        },
        {"id": "k", "mask": {"size": "1024x1024"}},
    ],
}

FULL_PIPELINE: dict[str, Any] = {
    "version": 1,
    "recipes": ["recipes/a.yaml"],
    "provider": "offline",
    "model": "gpt-image-2",
    "params": {"quality": "low"},
    "throttle": {"requests_per_minute": 100, "max_retries": 0, "timeout_s": 12.5},
    "vars": {"brand": "Acme", "year": 2026},
    "output_root": "build",
}


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        ("recipe", SPEC_RECIPE),
        ("pipeline", SPEC_PIPELINE),
        ("recipe", FULL_RECIPE),
        ("pipeline", FULL_PIPELINE),
    ],
)
def test_valid_documents_pass(kind: Any, doc: dict[str, Any]) -> None:
    assert check(kind, doc) == []


Edit = Callable[[dict[str, Any]], object]


def _step(i: int, kind: str | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def get(d: dict[str, Any]) -> dict[str, Any]:
        step: dict[str, Any] = d["steps"][i]
        return step[kind] if kind else step

    return get


BROKEN: list[tuple[str, Edit, list[tuple[tuple[str | int, ...], str, str | None]]]] = [
    (
        "unknown top-level key",
        lambda d: d.update(stpes=[]),
        [(("stpes",), "unknown key 'stpes'", "did you mean 'steps'?")],
    ),
    (
        "unknown key without a close match",
        lambda d: d["throttle"].update(burst=3),
        [
            (
                ("throttle", "burst"),
                "unknown key 'burst'",
                "allowed: images_per_minute, requests_per_minute, concurrency, max_retries, timeout_s, max_wait_s",
            )
        ],
    ),
    (
        "unknown key in a step body",
        lambda d: _step(2, "edit")(d).update(maks={"step": "bg_mask"}),
        [(("steps", 2, "edit", "maks"), "unknown key 'maks'", "did you mean 'mask'?")],
    ),
    (
        "a body key at the step's level",
        lambda d: _step(0)(d).update(quality="low"),
        [(("steps", 0, "quality"), "unknown key 'quality'", "'quality' goes inside 'generate:'")],
    ),
    (
        "step with two kinds",
        lambda d: _step(0)(d).update(resize={"image": "a.png", "size": "10x10"}),
        [(("steps", 0), f"a step needs exactly one of {STEP_KINDS}", "found generate and resize")],
    ),
    (
        "step with no kind",
        lambda d: _step(0)(d).pop("generate"),
        [(("steps", 0), f"a step needs exactly one of {STEP_KINDS}", None)],
    ),
    (
        "misspelt kind: one issue, not two",
        lambda d: _step(0)(d).update(generat=_step(0)(d).pop("generate")),
        [(("steps", 0, "generat"), "unknown key 'generat'", "did you mean 'generate'?")],
    ),
    (
        "missing prompt",
        lambda d: _step(0, "generate")(d).pop("prompt"),
        [(("steps", 0, "generate"), "missing required key 'prompt'", "or 'prompt_file'")],
    ),
    (
        "prompt and prompt_file",
        lambda d: _step(2, "edit")(d).update(prompt_file="p.j2"),
        [
            (
                ("steps", 2, "edit", "prompt_file"),
                "'prompt' and 'prompt_file' cannot be used together",
                "use one of them",
            )
        ],
    ),
    (
        "missing required key",
        lambda d: _step(2, "edit")(d).pop("image"),
        [(("steps", 2, "edit"), "missing required key 'image'", None)],
    ),
    (
        "bad step id",
        lambda d: _step(0)(d).update(id="Hero"),
        [(("steps", 0, "id"), "'Hero' is not a valid step id", "use [a-z][a-z0-9_]*")],
    ),
    (
        "bad step reference",
        lambda d: _step(2, "edit")(d).update(image={"step": "Hero"}),
        [(("steps", 2, "edit", "image", "step"), "'Hero' is not a valid step id", "use [a-z][a-z0-9_]*")],
    ),
    (
        "bad name",
        lambda d: d.update(name="Product Shots"),
        [(("name",), "'Product Shots' is not a valid name", "use [a-z0-9][a-z0-9_-]*")],
    ),
    (
        "bad enum quality",
        lambda d: d["params"].update(quality="ultra"),
        [
            (
                ("params", "quality"),
                "'ultra' is not one of low, medium, high, xhigh, max, auto, standard, hd",
                None,
            )
        ],
    ),
    (
        "enum with a close match, in a step body",
        lambda d: _step(2, "edit")(d).update(quality="meduim"),
        [
            (
                ("steps", 2, "edit", "quality"),
                "'meduim' is not one of low, medium, high, xhigh, max, auto, standard, hd",
                "did you mean 'medium'?",
            )
        ],
    ),
    (
        "wrong type for n",
        lambda d: d["params"].update(n="2"),
        [(("params", "n"), "expected an integer, got a string", None)],
    ),
    (
        "n out of range",
        lambda d: _step(0, "generate")(d).update(n=11),
        [(("steps", 0, "generate", "n"), "must be at most 10, got 11", None)],
    ),
    (
        "catalog and items together",
        lambda d: d.update(items=[{"id": "a"}]),
        [(("items",), "'catalog' and 'items' cannot be used together", "use one of them")],
    ),
    (
        "shape with two kinds",
        lambda d: _step(1, "mask")(d)["shapes"][0].update(rect={"box": [0, 0, 1, 1]}),
        [
            (
                ("steps", 1, "mask", "shapes", 0),
                "a shape needs exactly one of circle, ellipse, rect, polygon",
                "found circle and rect",
            )
        ],
    ),
    (
        "bad size pattern",
        lambda d: d["params"].update(size="1024*1024"),
        [(("params", "size"), "'1024*1024' is not a valid size", "use WxH, e.g. 1024x1024, or auto")],
    ),
    (
        "mask size needs WxH, not auto",
        lambda d: _step(1, "mask")(d).update(size=_step(1, "mask")(d).pop("size_of") and "auto"),
        [(("steps", 1, "mask", "size"), "'auto' is not a valid size", "use WxH, e.g. 1024x1024")],
    ),
    (
        "IMAGE of the wrong type",
        lambda d: _step(2, "edit")(d).update(mask=["m.png"]),
        [
            (
                ("steps", 2, "edit", "mask"),
                "expected a string or a mapping, got a list",
                "write a path or {step: ID}",
            )
        ],
    ),
    (
        "IMAGE with an unknown key",
        lambda d: _step(2, "edit")(d).update(image={"step": "hero", "idx": 1}),
        [(("steps", 2, "edit", "image", "idx"), "unknown key 'idx'", "did you mean 'index'?")],
    ),
    (
        "box of the wrong length",
        lambda d: _step(1, "mask")(d)["shapes"].append({"rect": {"box": [0, 0, 1]}}),
        [
            (
                ("steps", 1, "mask", "shapes", 1, "rect", "box"),
                "expected 4 items, got 3",
                "write [x0, y0, x1, y1]",
            )
        ],
    ),
    (
        "provider typo",
        lambda d: d.update(provider="opneai"),
        [(("provider",), "'opneai' is not one of openai, offline, azure", "did you mean 'openai'?")],
    ),
    (
        "empty step body",
        lambda d: _step(0)(d).update(generate=None),
        [(("steps", 0, "generate"), "expected a mapping, got nothing", None)],
    ),
    (
        "bad variable name",
        lambda d: d["vars"].update({"my-var": 1}),
        [
            (
                ("vars", "my-var"),
                "'my-var' is not a valid variable name",
                "use letters, digits and _, not starting with a digit",
            )
        ],
    ),
    (
        "wrong version",
        lambda d: d.update(version=2),
        [(("version",), "expected 1, got 2", None)],
    ),
    (
        "no steps",
        lambda d: d.update(steps=[]),
        [(("steps",), "must not be empty", None)],
    ),
    (
        "several problems come back sorted",
        lambda d: (d.update(name="X"), d.pop("version"), _step(1)(d).update(id="1")),
        [
            ((), "missing required key 'version'", None),
            (("name",), "'X' is not a valid name", "use [a-z0-9][a-z0-9_-]*"),
            (("steps", 1, "id"), "'1' is not a valid step id", "use [a-z][a-z0-9_]*"),
        ],
    ),
]


@pytest.mark.parametrize(("label", "edit", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_recipes(
    label: str, edit: Edit, expected: list[tuple[tuple[str | int, ...], str, str | None]]
) -> None:
    doc = copy.deepcopy(SPEC_RECIPE)
    edit(doc)
    assert [(i.path, i.message, i.hint) for i in check("recipe", doc)] == expected


def test_unknown_and_conflicting_keys_point_at_the_key() -> None:
    doc = copy.deepcopy(SPEC_RECIPE)
    doc["stpes"] = []
    doc["items"] = [{"id": "a"}]
    doc["params"]["quality"] = "ultra"
    flags = {i.path: i.at_key for i in check("recipe", doc)}
    assert flags == {("stpes",): True, ("items",): True, ("params", "quality"): False}


def test_pipeline_problems() -> None:
    doc = {"version": 1, "recipes": ["a.yaml", "a.yaml"], "throttle": {"concurrency": 0}, "steps": []}
    assert check("pipeline", doc) == [
        SchemaIssue(("recipes",), "'a.yaml' is listed more than once"),
        SchemaIssue(
            ("steps",),
            "unknown key 'steps'",
            "allowed: version, recipes, provider, model, params, throttle, vars, output_root",
            at_key=True,
        ),
        SchemaIssue(("throttle", "concurrency"), "must be at least 1, got 0"),
    ]


def test_not_a_mapping() -> None:
    assert check("recipe", ["steps"]) == [SchemaIssue((), "expected a mapping, got a list")]
    assert check("pipeline", None) == [SchemaIssue((), "expected a mapping, got nothing")]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        check("recipes", {})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the files


def test_package_data_and_schemas_folder_are_identical() -> None:
    for kind in ("recipe", "pipeline"):
        shipped = ROOT / "dalle_pipe" / "data" / f"{kind}.schema.json"
        copy_ = ROOT / "schemas" / f"{kind}.schema.json"
        assert shipped.read_bytes() == copy_.read_bytes(), (
            f"schemas/{kind}.schema.json differs from package data"
        )
        assert schema_text(kind) == shipped.read_text(encoding="utf-8")


def test_load_schema_returns_a_copy() -> None:
    s = load_schema("recipe")
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] == "https://dalle-pipe.dev/schemas/recipe.schema.json"
    assert load_schema("pipeline")["$id"] == "https://dalle-pipe.dev/schemas/pipeline.schema.json"
    s["properties"].clear()
    assert load_schema("recipe")["properties"]


@pytest.mark.parametrize("kind", ["recipe", "pipeline"])
def test_schema_is_valid_2020_12(kind: Any) -> None:
    Draft202012Validator.check_schema(load_schema(kind))


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            if k not in ("examples", "default", "const", "enum"):
                yield from _walk(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}/{i}")


@pytest.mark.parametrize("kind", ["recipe", "pipeline"])
def test_every_property_has_a_description(kind: Any) -> None:
    missing = [
        f"{where}/properties/{name}"
        for where, node in _walk(load_schema(kind))
        for name, prop in (node.get("properties") or {}).items()
        if where.split("/")[-1] != "properties"  # a property *named* "properties" is not a schema map
        and not (isinstance(prop, dict) and isinstance(prop.get("description"), str) and prop["description"])
    ]
    assert missing == []


@pytest.mark.parametrize("kind", ["recipe", "pipeline"])
def test_every_object_is_closed(kind: Any) -> None:
    open_ = [
        where
        for where, node in _walk(load_schema(kind))
        if "properties" in node
        and where.split("/")[-1] != "properties"
        and node.get("additionalProperties") is not False
    ]
    assert open_ == []


_KEYWORDS = {
    # structure and annotations
    "$schema", "$id", "$defs", "$ref", "title", "description", "examples", "default",
    # what dalle_pipe.schema turns into messages
    "type", "enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "minLength", "maxLength", "uniqueItems", "required", "properties",
    "additionalProperties", "propertyNames", "items", "prefixItems", "oneOf", "anyOf", "not",
}  # fmt: skip


@pytest.mark.parametrize("kind", ["recipe", "pipeline"])
def test_only_keywords_with_human_messages(kind: Any) -> None:
    unknown = set()
    for where, node in _walk(load_schema(kind)):
        parent = where.split("/")[-1]
        if parent in ("properties", "$defs"):
            continue  # keys here are names, not keywords
        unknown |= set(node) - _KEYWORDS
    assert unknown == set()


@pytest.mark.parametrize("kind", ["recipe", "pipeline"])
def test_all_refs_are_local(kind: Any) -> None:
    refs = [node["$ref"] for _, node in _walk(load_schema(kind)) if isinstance(node.get("$ref"), str)]
    assert refs and all(r.startswith("#/$defs/") for r in refs)


# --------------------------------------------------------------------------- no network


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> Any:
        calls.append(repr(args[:1]))
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_a_remote_ref_is_never_fetched(no_network: list[str]) -> None:
    url = "https://example.com/evil.schema.json"
    with pytest.raises(referencing.exceptions.Unretrievable) as info:
        registry().get_or_retrieve(url)
    assert "refusing to fetch" in str(info.value.__cause__)
    validator = Draft202012Validator({"$ref": url}, registry=registry())
    with pytest.raises(referencing.exceptions.Unresolvable):
        validator.validate({})
    assert no_network == []


def test_documents_naming_remote_schemas_stay_offline(no_network: list[str]) -> None:
    doc = copy.deepcopy(SPEC_RECIPE)
    doc["$schema"] = "https://example.com/evil.schema.json"
    doc["steps"][0]["generate"]["$ref"] = "https://example.com/x.json"
    issues = check("recipe", doc)
    assert [(i.path, i.message) for i in issues] == [
        (("$schema",), "unknown key '$schema'"),
        (("steps", 0, "generate", "$ref"), "unknown key '$ref'"),
    ]
    assert no_network == []


def test_registry_holds_both_schemas() -> None:
    reg = registry()
    for kind in ("recipe", "pipeline"):
        uri = f"https://dalle-pipe.dev/schemas/{kind}.schema.json"
        assert reg[uri].contents == json.loads(schema_text(kind))
