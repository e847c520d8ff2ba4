"""Issue 13: the SDK's fields classified, markup edits, only defined fields sent, extra_params.

Runs the real CLI; API runs go through the real SDK to the strict stand-in server.
"""

from __future__ import annotations

from pathlib import Path

from fakeapi import FakeOpenAI
from PIL import Image
from test_run import by_task, invoke, make_project, manifest

from dalle_pipe.models import ParamIssue, check_markup, check_request, request_params

KEY = "sk-test-SECRET-13"

MARKUP_RECIPE = """\
version: 1
name: shots
model: gpt-image-2.5-flare
params: {size: 1024x1024, quality: low, moderation: low, complexity: high}
items: [{id: mug}]
steps:
  - id: hero
    generate: {prompt: "A mug on marble"}
  - id: strokes
    markup:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.25}}, {arrow: {from: [0.1, 0.1], to: [0.3, 0.3]}}]
      color: "#00ff00"
      width: 6
  - id: fix
    edit: {image: {step: hero}, markup: {step: strokes}, prompt: "turn the circled mug blue"}
"""


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url}


# -- the capability table -------------------------------------------------------------------------


def test_complexity_is_supported_on_gpt_models_and_refused_on_dalle() -> None:
    assert check_request("gpt-image-2", "generate", {"complexity": "high"}, prompt="p", official=True) == []
    assert check_request("gpt-image-2", "edit", {"complexity": "low"}, prompt="p", official=True,
                         api="responses") == []
    assert check_request("gpt-image-2", "generate", {"complexity": "max"}, prompt="p", official=True) == [
        ParamIssue("complexity", "complexity 'max' is not accepted by gpt-image-2", "use low, medium or high")]
    assert ParamIssue("complexity", "complexity is not accepted by dall-e-2",
                      "use a GPT image model such as gpt-image-2 for it") in check_request(
        "dall-e-2", "generate", {"complexity": "low"}, prompt="p", official=False)
    assert request_params("gpt-image-2", "edit", {"complexity": "medium"}) == {"n": 1, "complexity": "medium"}


def test_gif_svg_and_streaming_fields_are_refused_with_their_reason() -> None:
    issues = check_request("gpt-image-2", "generate", {"frame_count": 4, "svg": {"model": "x"}, "stream": True,
                                                      "partial_images": 2, "user": "u"},
                           prompt="p", official=True)
    assert [(i.param, i.message) for i in issues] == [
        ("frame_count", "frame_count is for GIF output; GIF and SVG output are previews this tool does not "
                        "produce yet"),
        ("partial_images", "partial_images is not supported: streaming only"),
        ("stream", "stream is not supported: streaming only"),
        ("svg", "svg is for SVG output; GIF and SVG output are previews this tool does not produce yet"),
        ("user", "user is the SDK's deprecated name for safety_identifier"),
    ]
    assert all(i.severity == "error" for i in issues)


def test_moderation_is_not_sent_on_edits_but_is_on_the_responses_tool() -> None:
    assert check_request("gpt-image-2", "edit", {"moderation": "low"}, prompt="p", official=True) == [
        ParamIssue("moderation", "moderation is not sent with edits", "gpt-image-2 takes it only for generations",
                   severity="warning")]
    assert request_params("gpt-image-2", "edit", {"moderation": "low"}) == {"n": 1}
    assert request_params("gpt-image-2", "edit", {"moderation": "low"}, api="responses") == {"moderation": "low"}


def test_extra_params_are_sent_as_given_and_may_not_name_known_fields() -> None:
    params = {"quality": "low", "extra_params": {"zeta": 1, "alpha": "a"}}
    assert request_params("gpt-image-2", "generate", params) == {"n": 1, "quality": "low", "alpha": "a", "zeta": 1}
    # a second pass (the Responses route's) keeps what the first flattened
    flat = request_params("gpt-image-2", "generate", params)
    assert request_params("gpt-image-2", "generate", flat, api="responses") == {"quality": "low", "alpha": "a",
                                                                               "zeta": 1}
    assert check_request("gpt-image-2", "generate", params, prompt="p", official=True) == [
        ParamIssue("extra_params", "extra_params sends alpha, zeta as given, unchecked",
                   "the capability table cannot check fields newer than dalle-pipe", severity="warning")]
    issues = check_request("gpt-image-2", "generate", {"extra_params": {"n": 4, "svg": {}}}, prompt="p",
                           official=True)
    assert [(i.message, i.severity) for i in issues] == [
        ("extra_params may not name 'n': dalle-pipe already knows that field", "error"),
        ("extra_params may not name 'svg': dalle-pipe already knows that field", "error"),
    ]


def test_markup_rules() -> None:
    assert check_markup("gpt-image-2.5-sunburst-2026-09-08", "edit") == []
    assert [i.message for i in check_markup("gpt-image-2", "edit", api="responses", has_mask=True)] == [
        "gpt-image-2 takes no markup",
        "the Responses API image_generation tool takes no markup",
        "markup cannot be combined with mask",
    ]


# -- validate ------------------------------------------------------------------------------------


def test_validate_reports_markup_problems_at_their_lines(tmp_path: Path) -> None:
    recipe = MARKUP_RECIPE.replace("model: gpt-image-2.5-flare", "model: gpt-image-2").replace(
        "markup: {step: strokes}, prompt", "markup: {step: strokes}, mask: {step: strokes}, prompt")
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 2, r.output
    assert r.output.splitlines()[1:] == [
        "recipe.yaml:16:41: steps[2].edit.markup: gpt-image-2 takes no markup (markup needs a GPT Image 2.5 model: "
        "gpt-image-2.5-sunburst, gpt-image-2.5-flare, gpt-image-2.5-sunburst-2026-09-08 or "
        "gpt-image-2.5-flare-2026-09-08)",
        "recipe.yaml:16:41: steps[2].edit.markup: markup cannot be combined with mask (drop the mask or the markup)",
    ]
    assert not (root / "out").exists()


def test_validate_checks_a_markup_file_against_the_first_image(tmp_path: Path) -> None:
    recipe = MARKUP_RECIPE.replace("image: {step: hero}, markup: {step: strokes}",
                                   "image: in.png, markup: strokes.png")
    root = make_project(tmp_path / "p", recipe)
    Image.new("RGB", (1024, 1024), (9, 9, 9)).save(root / "in.png")
    Image.new("RGB", (512, 512), (9, 9, 9)).save(root / "strokes.png")
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 2, r.output
    assert ("recipe.yaml:16:35: steps[2].edit.markup: row 1 (key 'mug'): markup has no transparent pixels "
            "(a markup is a transparent PNG with strokes on it; a markup step draws one)") in r.output
    assert ("recipe.yaml:16:35: steps[2].edit.markup: row 1 (key 'mug'): markup size 512x512 differs from the "
            "first input image's 1024x1024") in r.output


def test_a_recipe_level_moderation_warns_once_and_still_validates(tmp_path: Path) -> None:
    recipe = MARKUP_RECIPE + "  - id: fix2\n    edit: {image: {step: hero}, prompt: \"blue\"}\n"
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "validate", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "recipe.yaml:4:53: warning: params.moderation: moderation is not sent with edits "
        "(gpt-image-2.5-flare takes it only for generations)",
        "ok: 1 recipe(s), 1 unit(s), 4 task(s)",
    ]


# -- runs ------------------------------------------------------------------------------------------


def test_offline_markup_run_draws_strokes_and_uses_them(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", MARKUP_RECIPE)
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    strokes = Image.open(root / "out/shots/mug/strokes.png")
    assert strokes.mode == "RGBA" and strokes.size == (1024, 1024)
    assert strokes.getpixel((0, 1023)) == (0, 0, 0, 0)  # transparent away from the strokes
    assert strokes.getpixel((512 + 256 - 3, 512)) == (0, 255, 0, 255)  # on the circle's outline
    assert strokes.getpixel((512, 512)) == (0, 0, 0, 0)  # not filled
    fix = Image.open(root / "out/shots/mug/fix.png").convert("RGB")
    g = fix.getpixel((512 + 256 - 3, 512))
    assert g[1] > g[0] and g[1] > g[2]  # the stroke shows through (green dominates)
    entry = by_task(manifest(root))["fix@mug#0"]
    assert [i["role"] for i in entry["inputs"]] == ["image", "markup"]
    assert entry["revised_prompt"] is None  # the Images route: none, as GPT image models return
    assert "moderation" not in entry["params"] and entry["params"]["complexity"] == "high"
    again = invoke(root, "run", "--offline", "recipe.yaml")
    assert "0 generated, 3 up to date" in again.output


def test_markup_edit_over_the_sdk_sends_the_markup_part_and_no_moderation(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", MARKUP_RECIPE)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    gen, edit = api.image_requests
    assert gen.json is not None and gen.json["moderation"] == "low" and gen.json["complexity"] == "high"
    assert "moderation" not in edit.fields and edit.fields["complexity"] == ["high"]
    markup = next(f for f in edit.files if f.name == "markup")
    assert markup.data == (root / "out/shots/mug/strokes.png").read_bytes()
    api.clear()
    assert "0 generated, 3 up to date" in invoke(root, "run", "recipe.yaml", env=env(api)).output
    assert api.image_requests == []


def test_extra_params_reach_the_server_and_change_the_fingerprint(tmp_path: Path, api: FakeOpenAI) -> None:
    api.strict = False  # a server that knows a field newer than the SDK
    recipe = MARKUP_RECIPE.split("  - id: strokes")[0].replace(
        'generate: {prompt: "A mug on marble"}', 'generate: {prompt: "A mug on marble", extra_params: {glow: 2}}')
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    assert "warning: steps[0].generate.extra_params: extra_params sends glow as given, unchecked" in r.output
    assert api.last.json is not None and api.last.json["glow"] == 2
    fp = by_task(manifest(root))["hero@mug#0"]["fingerprint"]
    (root / "recipe.yaml").write_text(recipe.replace("glow: 2", "glow: 3"))
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert "1 generated" in r.output
    assert by_task(manifest(root))["hero@mug#0"]["fingerprint"] != fp


def test_a_strict_server_refuses_extra_params_like_the_real_api(tmp_path: Path, api: FakeOpenAI) -> None:
    recipe = MARKUP_RECIPE.split("  - id: strokes")[0].replace("complexity: high", "extra_params: {glow: 2}")
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 1, r.output
    assert "Unknown parameter: 'glow'" in r.output
    assert api.last.status == 400


def test_offline_responses_route_returns_a_marked_revised_prompt(tmp_path: Path) -> None:
    recipe = MARKUP_RECIPE.split("  - id: strokes")[0].replace(
        "model: gpt-image-2.5-flare", "model: gpt-image-2\nprovider: {name: offline, api: responses, model: gpt-5.1}")
    root = make_project(tmp_path / "p", recipe)
    r = invoke(root, "run", "recipe.yaml")
    assert r.exit_code == 0, r.output
    entry = by_task(manifest(root))["hero@mug#0"]
    assert entry["revised_prompt"] == "[offline] A mug on marble"
    assert entry["mainline_model"] == "gpt-5.1"


def test_markup_command(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (1, 2, 3)).save(tmp_path / "in.png")
    r = invoke(tmp_path, "markup", "in.png", "-o", "m.png", "--rect", "0.1,0.1,0.5,0.5", "--arrow", "0,0,1,1",
               "--color", "#0000ff", "--width", "4")
    assert r.exit_code == 0, r.output
    assert r.output == "wrote m.png (300x200)\n"
    img = Image.open(tmp_path / "m.png")
    assert img.size == (300, 200) and img.getpixel((31, 60)) == (0, 0, 255, 255)
    assert img.getpixel((299, 0)) == (0, 0, 0, 0)
    bad = invoke(tmp_path, "markup", "in.png", "-o", "m.jpg", "--circle", "0.5,0.5,0.2")
    assert bad.exit_code == 2
    assert "a markup is a PNG (it needs an alpha channel)" in bad.output
    assert not (tmp_path / "m.jpg").exists()
    far = invoke(tmp_path, "markup", "in.png", "-o", "m2.png", "--circle", "512,512,400")
    assert far.exit_code == 2 and "far outside the image" in far.output


def test_offline_flag_keeps_the_responses_route_of_the_shipped_example(tmp_path: Path) -> None:
    import shutil

    repo = Path(__file__).resolve().parent.parent
    root = tmp_path / "p"
    shutil.copytree(repo / "recipes", root / "recipes")
    shutil.copytree(repo / "schemas", root / "schemas")
    r = invoke(root, "run", "--offline", "recipes/product-shots.yaml")
    assert r.exit_code == 0, r.output
    entry = by_task(manifest(root / "recipes", "product-shots"))["shot@mug#0"]
    assert entry["revised_prompt"] == ("[offline] a ceramic mug with steam rising, cozy kitchen background, "
                                       "warm tones")
    assert entry["mainline_model"] == "gpt-5.1"
