"""The capability table: exact issues for the requests the API would refuse (or warn about)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from dalle_pipe.models import (
    MODELS,
    InputInfo,
    ParamIssue,
    check_inputs,
    check_request,
    extension,
    get_model,
    is_official_endpoint,
    known_models,
    output_format,
    output_size,
    request_params,
)

FREE_RULES = "WxH with both sides multiples of 16, aspect between 1:3 and 3:1, at most 3840x2160 pixels"
GPT_SIZES_HINT = "use 1536x1024, the nearest; or 1024x1024, 1024x1536 or auto"  # the nearest first
DALLE3_RETIRED = ParamIssue(
    "model", "model 'dall-e-3' was retired on 2026-05-12", "use a GPT image model such as gpt-image-2"
)
DALLE2_RETIRED = ParamIssue(
    "model", "model 'dall-e-2' was retired on 2026-05-12", "use a GPT image model such as gpt-image-2"
)


def _warn(issue: ParamIssue) -> ParamIssue:
    return ParamIssue(issue.param, issue.message, issue.hint, "warning")


CASES: list[tuple[str, str, str, Mapping[str, object], bool, list[ParamIssue]]] = [
    ("free-form ok", "gpt-image-2", "generate", {"size": "1536x864"}, True, []),
    ("max pixels ok", "gpt-image-2", "generate", {"size": "3840x2160"}, True, []),
    ("portrait max ok", "gpt-image-2.5-sunburst", "edit", {"size": "2160x3840"}, True, []),
    ("3:1 ok", "gpt-image-2", "generate", {"size": "3072x1024"}, True, []),
    (
        "not multiple of 16",
        "gpt-image-2",
        "generate",
        {"size": "1000x1000"},
        True,
        [
            ParamIssue(
                "size",
                "size '1000x1000' is not accepted by gpt-image-2: width and height must be multiples of 16",
                f"try 1008x1008, the nearest size it takes; sizes are {FREE_RULES}",
            )
        ],
    ),
    (
        "aspect over 3:1",
        "gpt-image-2",
        "generate",
        {"size": "3312x1088"},
        True,
        [
            ParamIssue(
                "size",
                "size '3312x1088' is not accepted by gpt-image-2: aspect ratio must be between 1:3 and 3:1",
                f"use 1536x1024, the nearest standard size, or any {FREE_RULES}",
            )
        ],
    ),
    (
        "4096x1024: aspect and side",
        "gpt-image-2",
        "generate",
        {"size": "4096x1024"},
        True,
        [
            ParamIssue(
                "size",
                "size '4096x1024' is not accepted by gpt-image-2: aspect ratio must be between 1:3 and 3:1; "
                "each side must be at most 3840",
                f"use 1536x1024, the nearest standard size, or any {FREE_RULES}",
            )
        ],
    ),
    (
        "over max pixels",
        "gpt-image-2",
        "generate",
        {"size": "3840x2176"},
        True,
        [
            ParamIssue(
                "size",
                "size '3840x2176' is not accepted by gpt-image-2: "
                "8355840 pixels is over the maximum of 8294400 (3840x2160)",
                f"use 1536x1024, the nearest standard size, or any {FREE_RULES}",
            )
        ],
    ),
    (
        "free-form refused on 2.6",
        "gpt-image-2.6-sunburst",
        "generate",
        {"size": "1536x864"},
        True,
        [ParamIssue("size", "size '1536x864' is not accepted by gpt-image-2.6-sunburst", GPT_SIZES_HINT)],
    ),
    (
        "dall-e size on GPT",
        "gpt-image-2.6-sunburst",
        "generate",
        {"size": "1792x1024"},
        True,
        [ParamIssue("size", "size '1792x1024' is not accepted by gpt-image-2.6-sunburst", GPT_SIZES_HINT)],
    ),
    (
        "free-form refused on chatgpt-image-latest",
        "chatgpt-image-latest",
        "edit",
        {"size": "1536x864"},
        True,
        [ParamIssue("size", "size '1536x864' is not accepted by chatgpt-image-latest", GPT_SIZES_HINT)],
    ),
    (
        "garbage size on free-form model",
        "gpt-image-2",
        "generate",
        {"size": "large"},
        True,
        [
            ParamIssue(
                "size",
                "size 'large' is not a size",
                "use 1024x1024, 1536x1024, 1024x1536, auto or WxH such as 1536x864",
            )
        ],
    ),
    ("xhigh on 2.5 snapshot", "gpt-image-2.5-flare-2026-09-08", "generate", {"quality": "xhigh"}, True, []),
    ("max on 2.5", "gpt-image-2.5-sunburst", "edit", {"quality": "max"}, True, []),
    (
        "xhigh refused on gpt-image-2",
        "gpt-image-2",
        "generate",
        {"quality": "xhigh"},
        True,
        [
            ParamIssue(
                "quality", "quality 'xhigh' is not accepted by gpt-image-2", "use low, medium, high or auto"
            )
        ],
    ),
    (
        "dall-e quality on GPT",
        "gpt-image-1.5",
        "generate",
        {"quality": "hd"},
        True,
        [
            ParamIssue(
                "quality", "quality 'hd' is not accepted by gpt-image-1.5", "use low, medium, high or auto"
            )
        ],
    ),
    (
        "transparent + jpeg",
        "gpt-image-2.5-flare",
        "generate",
        {"background": "transparent", "output_format": "jpeg"},
        True,
        [
            ParamIssue(
                "background",
                "background 'transparent' needs output_format png or webp",
                "jpeg has no alpha channel; use png or webp",
            )
        ],
    ),
    (
        "transparent + default png ok",
        "gpt-image-2.5-flare",
        "generate",
        {"background": "transparent"},
        True,
        [],
    ),
    (
        "transparent is a preview on gpt-image-2",
        "gpt-image-2",
        "generate",
        {"background": "transparent", "output_format": "webp"},
        True,
        [
            ParamIssue(
                "background",
                "background 'transparent' is a preview on gpt-image-2",
                "it may be refused unless your organization has access",
                "warning",
            )
        ],
    ),
    (
        "compression with explicit png",
        "gpt-image-2",
        "generate",
        {"output_format": "png", "output_compression": 80},
        True,
        [
            ParamIssue(
                "output_compression",
                "output_compression needs output_format jpeg or webp",
                "png output is not compressed; drop output_compression or set output_format: jpeg or webp",
            )
        ],
    ),
    (
        "compression with default png",
        "gpt-image-1-mini",
        "generate",
        {"output_compression": 80},
        True,
        [
            ParamIssue(
                "output_compression",
                "output_compression needs output_format jpeg or webp",
                "png output is not compressed; drop output_compression or set output_format: jpeg or webp",
            )
        ],
    ),
    (
        "compression with webp",
        "gpt-image-2",
        "generate",
        {"output_format": "webp", "output_compression": 0},
        True,
        [],
    ),
    (
        "compression out of range",
        "gpt-image-2",
        "generate",
        {"output_format": "jpeg", "output_compression": 101},
        True,
        [
            ParamIssue(
                "output_compression",
                "output_compression 101 is not an integer from 0 to 100",
                "use 0..100 (100 = least compression)",
            )
        ],
    ),
    (
        "gif is a preview",
        "gpt-image-2.6-flare",
        "generate",
        {"output_format": "gif"},
        True,
        [
            ParamIssue(
                "output_format",
                "output_format 'gif' is not supported yet",
                "gif and svg output are previews; use png, jpeg or webp",
            )
        ],
    ),
    (
        "svg is a preview",
        "gpt-image-2",
        "edit",
        {"output_format": "svg"},
        True,
        [
            ParamIssue(
                "output_format",
                "output_format 'svg' is not supported yet",
                "gif and svg output are previews; use png, jpeg or webp",
            )
        ],
    ),
    (
        "jpg spelled the file way",
        "gpt-image-2",
        "generate",
        {"output_format": "jpg"},
        True,
        [
            ParamIssue(
                "output_format",
                "output_format 'jpg' is not accepted by gpt-image-2",
                "use 'jpeg' (the API spells it that way)",
            )
        ],
    ),
    ("input_fidelity high on 1.5 edit", "gpt-image-1.5", "edit", {"input_fidelity": "high"}, True, []),
    ("input_fidelity low on 1-mini edit", "gpt-image-1-mini", "edit", {"input_fidelity": "low"}, True, []),
    (
        "input_fidelity high on 1-mini",
        "gpt-image-1-mini",
        "edit",
        {"input_fidelity": "high"},
        True,
        [
            ParamIssue(
                "input_fidelity", "input_fidelity 'high' is not accepted by gpt-image-1-mini", "use low"
            )
        ],
    ),
    (
        "input_fidelity on gpt-image-2",
        "gpt-image-2",
        "edit",
        {"input_fidelity": "low"},
        True,
        [
            ParamIssue(
                "input_fidelity",
                "input_fidelity is not accepted by gpt-image-2",
                "omit input_fidelity for gpt-image-2",
            )
        ],
    ),
    (
        "input_fidelity on a generation is not sent",
        "gpt-image-1.5",
        "generate",
        {"input_fidelity": "high"},
        True,
        [
            ParamIssue(
                "input_fidelity",
                "input_fidelity is not sent with generations",
                "gpt-image-1.5 takes it only for edits",
                "warning",
            )
        ],
    ),
    (
        "style on GPT",
        "gpt-image-2",
        "generate",
        {"style": "vivid"},
        True,
        [
            ParamIssue(
                "style", "style is not accepted by GPT image models", "describe the style in the prompt"
            )
        ],
    ),
    (
        "response_format on GPT",
        "gpt-image-2.6-sunburst",
        "generate",
        {"response_format": "b64_json"},
        True,
        [
            ParamIssue(
                "response_format",
                "response_format is not accepted by GPT image models",
                "GPT image models always return base64",
            )
        ],
    ),
    (
        "n=11 on GPT",
        "gpt-image-2",
        "generate",
        {"n": 11},
        True,
        [ParamIssue("n", "n=11 is not accepted by gpt-image-2", "use n between 1 and 10")],
    ),
    (
        "n not an int",
        "gpt-image-2",
        "generate",
        {"n": "2"},
        True,
        [ParamIssue("n", "n must be an integer, not '2'")],
    ),
    (
        "moderation value",
        "gpt-image-2",
        "generate",
        {"moderation": "high"},
        True,
        [ParamIssue("moderation", "moderation 'high' is not accepted by gpt-image-2", "use low or auto")],
    ),
    (
        "dall-e-3 n=2 (compatible server)",
        "dall-e-3",
        "generate",
        {"n": 2},
        False,
        [
            _warn(DALLE3_RETIRED),
            ParamIssue(
                "n", "n=2 is not accepted by dall-e-3", "dall-e-3 makes one image per request; use n: 1"
            ),
        ],
    ),
    ("dall-e-3 retired on api.openai.com", "dall-e-3", "generate", {}, True, [DALLE3_RETIRED]),
    ("dall-e-3 elsewhere: a warning", "dall-e-3", "generate", {}, False, [_warn(DALLE3_RETIRED)]),
    (
        "dall-e-3 full legacy request ok elsewhere",
        "dall-e-3",
        "generate",
        {"n": 1, "size": "1792x1024", "quality": "hd", "style": "natural", "response_format": "url"},
        False,
        [_warn(DALLE3_RETIRED)],
    ),
    (
        "gpt-image-1 retired",
        "gpt-image-1",
        "generate",
        {},
        True,
        [
            ParamIssue(
                "model",
                "model 'gpt-image-1' was retired on 2026-10-23",
                "use gpt-image-2.5-sunburst or gpt-image-2.5-flare",
            )
        ],
    ),
    (
        "dall-e-3 edits",
        "dall-e-3",
        "edit",
        {},
        False,
        [
            _warn(DALLE3_RETIRED),
            ParamIssue(
                "model",
                "dall-e-3 does not support edits",
                "edits need a GPT image model such as gpt-image-2",
            ),
        ],
    ),
    (
        "variation on GPT",
        "gpt-image-2",
        "variation",
        {},
        True,
        [
            ParamIssue(
                "model",
                "gpt-image-2 does not support variations",
                "only dall-e-2 makes variations, and it is retired: use an edit with a prompt and a GPT image model",
            )
        ],
    ),
    (
        "dall-e-2 output_format, style and auto size",
        "dall-e-2",
        "generate",
        {"output_format": "png", "style": "vivid", "size": "auto"},
        False,
        [
            _warn(DALLE2_RETIRED),
            ParamIssue(
                "size", "size 'auto' is not accepted by dall-e-2", "use 256x256, 512x512 or 1024x1024"
            ),
            ParamIssue(
                "output_format",
                "output_format is not accepted by dall-e-2",
                "dall-e models always return png",
            ),
            ParamIssue("style", "style is not accepted by dall-e-2", "describe the style in the prompt"),
        ],
    ),
    (
        "dall-e-2 variation: quality is not sent",
        "dall-e-2",
        "variation",
        {"quality": "standard", "size": "512x512"},
        False,
        [
            _warn(DALLE2_RETIRED),
            ParamIssue(
                "quality",
                "quality is not sent with variations",
                "dall-e-2 takes it only for generations or edits",
                "warning",
            ),
        ],
    ),
    (
        "unknown model: did you mean",
        "gpt-image-2.5-sunbrust",
        "generate",
        {},
        True,
        [
            ParamIssue(
                "model", "unknown model 'gpt-image-2.5-sunbrust'", "did you mean 'gpt-image-2.5-sunburst'?"
            )
        ],
    ),
    (
        "unknown model elsewhere: a warning",
        "my-local-model",
        "generate",
        {"quality": "ultra"},
        False,
        [
            ParamIssue(
                "model",
                "unknown model 'my-local-model'; its parameters are not checked",
                "known models: " + ", ".join(known_models()),
                "warning",
            )
        ],
    ),
    (
        "unknown parameter",
        "gpt-image-2",
        "generate",
        {"qualty": "high", "size": None},
        True,
        [ParamIssue("qualty", "unknown parameter 'qualty'", "did you mean 'quality'?")],
    ),
]


@pytest.mark.parametrize(
    ("model", "kind", "params", "official", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_check_request(
    model: str, kind: str, params: Mapping[str, object], official: bool, expected: list[ParamIssue]
) -> None:
    prompt = None if kind == "variation" else "a red apple"
    assert check_request(model, kind, params, prompt=prompt, official=official) == expected  # type: ignore[arg-type]


def test_prompt_too_long() -> None:
    assert check_request("dall-e-3", "generate", {}, prompt="x" * 4012, official=False) == [
        _warn(DALLE3_RETIRED),
        ParamIssue(
            "prompt", "prompt is 4012 characters; dall-e-3 accepts at most 4000", "shorten the prompt"
        ),
    ]
    assert check_request("dall-e-3", "generate", {}, prompt="x" * 4000, official=False) == [
        _warn(DALLE3_RETIRED)
    ]
    assert check_request("gpt-image-2", "edit", {}, prompt="x" * 32001, official=True) == [
        ParamIssue(
            "prompt", "prompt is 32001 characters; gpt-image-2 accepts at most 32000", "shorten the prompt"
        )
    ]
    assert check_request("gpt-image-2", "edit", {}, prompt="x" * 32000, official=True) == []


def test_empty_prompt_and_variation_prompt() -> None:
    assert check_request("gpt-image-2", "generate", {}, prompt="  ", official=True) == [
        ParamIssue("prompt", "prompt is empty", "describe the image to make")
    ]
    assert check_request("dall-e-2", "variation", {}, prompt="hi", official=False)[-1] == ParamIssue(
        "prompt", "variations take no prompt; it is not sent", None, "warning"
    )


def test_responses_api() -> None:
    assert (
        check_request(
            "gpt-image-2", "generate", {"quality": "high"}, prompt="p", official=True, api="responses"
        )
        == []
    )
    assert check_request(
        "dall-e-3", "generate", {"style": "vivid", "n": 2}, prompt="p", official=False, api="responses"
    ) == [
        _warn(DALLE3_RETIRED),
        ParamIssue(
            "model",
            "dall-e-3 cannot be the Responses API image_generation tool model",
            "use a GPT image model such as gpt-image-2",
        ),
        ParamIssue(
            "style",
            "style is not accepted by the Responses API image_generation tool",
            "describe the style in the prompt",
        ),
        ParamIssue("n", "n=2 is not accepted by dall-e-3", "dall-e-3 makes one image per request; use n: 1"),
    ]
    # n > 1 is n calls of one image each: the model's own range applies
    assert check_request("gpt-image-2", "generate", {"n": 4}, prompt="p", official=True, api="responses") == []
    assert [i.param for i in check_request("gpt-image-2", "generate", {"n": 11}, prompt="p", official=True,
                                           api="responses")] == ["n"]
    assert check_request("gpt-image-2", "edit", {"response_format": "b64_json"}, prompt="p", official=True,
                         api="responses")[0].param == "response_format"


def png(w: int = 1024, h: int = 1024, size: int = 1000, alpha: bool = True, fmt: str = "png") -> InputInfo:
    return InputInfo(format=fmt, width=w, height=h, bytes=size, has_alpha=alpha)


def test_check_inputs_ok() -> None:
    assert check_inputs("gpt-image-2", "edit", [png()] * 16, png()) == []
    assert (
        check_inputs("gpt-image-2", "edit", [png(1536, 1024, fmt="jpeg", alpha=False), png(fmt="webp")], None)
        == []
    )
    assert check_inputs("dall-e-2", "edit", [png(512, 512)], None) == []
    assert check_inputs("dall-e-2", "variation", [png(256, 256, alpha=False)], None) == []


def test_check_inputs_too_many() -> None:
    assert check_inputs("gpt-image-2", "edit", [png()] * 17, None) == [
        ParamIssue("image", "17 input images; gpt-image-2 accepts at most 16", "drop some reference images")
    ]


def test_check_inputs_gif_and_bytes() -> None:
    assert check_inputs(
        "gpt-image-1.5", "edit", [png(), png(fmt="gif"), png(size=50 * 1024 * 1024)], None
    ) == [
        ParamIssue(
            "image",
            "input image 2 of 3 is gif; gpt-image-1.5 accepts png, webp or jpeg",
            "convert it first (a convert step)",
        ),
        ParamIssue(
            "image",
            "input image 3 of 3 is 50.0 MB; gpt-image-1.5 accepts less than 50.0 MB",
            "resize it or save it with more compression",
        ),
    ]


def test_check_inputs_mask() -> None:
    assert check_inputs("gpt-image-2", "edit", [png(1536, 1024), png()], png(1024, 1024)) == [
        ParamIssue(
            "mask",
            "mask size 1024x1024 differs from the first input image's 1536x1024",
            "a mask must be the size of the first image; use fit: resize or a mask step with size_of",
        )
    ]
    assert check_inputs(
        "gpt-image-2", "edit", [png()], png(fmt="jpeg", alpha=False, size=4 * 1024 * 1024)
    ) == [
        ParamIssue("mask", "mask is jpeg; masks must be PNG", "save the mask as PNG"),
        ParamIssue(
            "mask",
            "mask is 4.0 MB; masks must be less than 4.0 MB",
            "save the mask with more compression or at a smaller size",
        ),
        ParamIssue(
            "mask",
            "mask has no alpha channel",
            "transparent pixels mark the area to edit; make the mask RGBA (a mask step does)",
        ),
    ]


def test_check_inputs_dalle2() -> None:
    assert check_inputs("dall-e-2", "edit", [png(1024, 768)], png(1024, 768)) == [
        ParamIssue(
            "image",
            "input image is 1024x768; dall-e-2 needs a square image",
            'crop or pad it to a square first (a pad step with aspect: "1:1")',
        )
    ]
    assert check_inputs("dall-e-2", "edit", [png(alpha=False)], None) == [
        ParamIssue(
            "mask",
            "dall-e-2 edits the transparent area of the image, and this one has none",
            "add a mask, or use an image with transparency",
        )
    ]
    assert check_inputs("dall-e-2", "variation", [png(fmt="webp"), png()], png()) == [
        ParamIssue("image", "2 input images; dall-e-2 accepts at most 1", "dall-e-2 edits one image"),
        ParamIssue(
            "image", "input image 1 of 2 is webp; dall-e-2 accepts png", "convert it first (a convert step)"
        ),
        ParamIssue("mask", "variations take no mask"),
    ]
    assert check_inputs("dall-e-2", "variation", [], None) == [
        ParamIssue("image", "a variation needs an input image")
    ]


def test_request_params() -> None:
    assert request_params("gpt-image-2", "generate", {}) == {"n": 1}
    assert request_params(
        "gpt-image-2", "generate", {"size": "1536x864", "quality": None, "input_fidelity": "low", "n": 3}
    ) == {"n": 3, "size": "1536x864"}
    assert request_params("gpt-image-1.5", "edit", {"input_fidelity": "high", "output_format": "webp"}) == {
        "n": 1,
        "output_format": "webp",
        "input_fidelity": "high",
    }
    assert request_params("dall-e-3", "generate", {"style": "vivid", "quality": "hd"}) == {
        "n": 1,
        "quality": "hd",
        "style": "vivid",
        "response_format": "b64_json",
    }
    assert request_params("dall-e-3", "generate", {"response_format": "url"}) == {
        "n": 1,
        "response_format": "url",
    }
    assert request_params(
        "dall-e-2", "variation", {"size": "512x512", "quality": "standard", "safety_identifier": "u1"}
    ) == {
        "n": 1,
        "size": "512x512",
        "user": "u1",
        "response_format": "b64_json",
    }
    assert request_params("gpt-image-2", "generate", {"n": 1, "quality": "high"}, api="responses") == {
        "quality": "high"
    }


def test_output_size_format_extension() -> None:
    assert output_size("gpt-image-2", {"size": "1536x864"}) == (1536, 864)
    assert output_size("gpt-image-2", {"size": "auto"}) == (1024, 1024)
    assert output_size("gpt-image-2", {}, (1536, 1024)) == (1536, 1024)
    assert output_size("gpt-image-2", {"size": "auto"}, (1536, 864)) == (1536, 864)
    assert output_size("gpt-image-1.5", {}, (1536, 864)) == (1024, 1024)
    assert output_size("gpt-image-2", {}, (1000, 1000)) == (1024, 1024)
    assert output_format("gpt-image-2", {"output_format": "webp"}) == "webp"
    assert output_format("gpt-image-2", {}) == "png"
    assert output_format("dall-e-3", {"output_format": "jpeg"}) == "png"
    assert [extension(f) for f in ("png", "jpeg", "webp")] == ["png", "jpg", "webp"]


def test_official_endpoint() -> None:
    assert is_official_endpoint(None)
    assert is_official_endpoint("")
    assert is_official_endpoint("https://api.openai.com/v1")
    assert is_official_endpoint("https://API.OpenAI.com")
    assert is_official_endpoint("api.openai.com/v1")
    assert not is_official_endpoint("http://localhost:8080/v1")
    assert not is_official_endpoint("https://api.openai.com.evil.example/v1")
    assert not is_official_endpoint("https://myres.openai.azure.com")


def test_table() -> None:
    current = [
        "gpt-image-1.5",
        "gpt-image-1-mini",
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-flare",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare-2026-09-08",
        "gpt-image-2.6-sunburst",
        "gpt-image-2.6-flare",
        "chatgpt-image-latest",
    ]
    assert known_models() == [*current, "gpt-image-1", "dall-e-3", "dall-e-2"]
    free = {name for name, spec in MODELS.items() if spec.free_size is not None}
    assert free == {
        n for n in current if n.startswith(("gpt-image-2-", "gpt-image-2.5")) or n == "gpt-image-2"
    }
    spec = get_model("dall-e-2")
    assert spec is not None and spec.kinds == {"generate", "edit", "variation"}
    assert get_model("dall-e-4") is None
    assert all(MODELS[n].responses_tool for n in current)


def test_hints_never_suggest_a_retired_model_on_api_openai_com() -> None:
    (issue,) = check_request("dall-e-4", "generate", {}, prompt=None, official=True)
    assert issue.hint == "known models: " + ", ".join(m for m in known_models() if m not in
                                                        ("gpt-image-1", "dall-e-3", "dall-e-2"))
    (elsewhere,) = check_request("dall-e-4", "generate", {}, prompt=None, official=False)
    assert elsewhere.hint == "did you mean 'dall-e-3'?"  # another server may still serve it
    retired, kind = check_request("dall-e-3", "edit", {}, prompt=None, official=True)
    assert (retired.hint, kind.hint) == ("use a GPT image model such as gpt-image-2",
                                         "edits need a GPT image model such as gpt-image-2")


def test_the_size_hint_puts_the_nearest_standard_size_first() -> None:
    (issue,) = check_request("dall-e-2", "generate", {"size": "1000x900"}, prompt=None, official=False)[1:]
    assert issue.hint == "use 1024x1024, the nearest; or 256x256 or 512x512"
    (portrait,) = check_request("gpt-image-1.5", "generate", {"size": "1000x1700"}, prompt=None, official=True)
    assert portrait.hint == "use 1024x1536, the nearest; or 1024x1024, 1536x1024 or auto"
    assert "(" not in str(portrait.hint)
