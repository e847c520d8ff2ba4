"""The capability table: everything the tool knows about each image model, as data.

One frozen `ModelSpec` per model in `MODELS`. The checks below read the table and
never test a model's name: a new model is a new row, not a new `if`.

Sources: the `openai` SDK 3.x types (`image_generate_params.py`,
`image_edit_params.py`, `image_create_variation_params.py`, `image_model.py`,
`responses/tool_param.py`) and SPEC.md "The API it drives" (state of 2026-11).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Kind = Literal["generate", "edit", "variation"]
Api = Literal["images", "responses"]
Family = Literal["gpt-image", "dall-e-3", "dall-e-2"]

KINDS: tuple[Kind, ...] = ("generate", "edit", "variation")
KIND_NOUN: dict[str, str] = {"generate": "generations", "edit": "edits", "variation": "variations"}

# Every request parameter a recipe may set (docs/language.md, PARAMS), in the order they are sent.
KNOWN_PARAMS: tuple[str, ...] = (
    "n",
    "size",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "input_fidelity",
    "complexity",
    "style",
    "response_format",
    "safety_identifier",
)
# Parameters whose value is one of a list (checked against ModelSpec.values).
ENUM_PARAMS: tuple[str, ...] = (
    "quality",
    "background",
    "output_format",
    "moderation",
    "input_fidelity",
    "complexity",
    "style",
    "response_format",
)
# Parameters sent under another name on one kind: the legacy variations endpoint only knows `user`.
SENT_AS: dict[tuple[Kind, str], str] = {("variation", "safety_identifier"): "user"}
# Fields newer than the tool, sent as given: `extra_params:` on a step or under the recipe's params.
EXTRA_PARAMS = "extra_params"

# ---------------------------------------------------------------------------------------------
# Every field the installed SDK defines, classified (tests/test_sdk_drift.py reads the SDK's
# TypedDicts and fails on a field or model literal that is in none of these).
# ---------------------------------------------------------------------------------------------

Endpoint = Literal["generate", "edit", "variation", "responses"]
GIF_SVG = "GIF and SVG output are previews this tool does not produce yet"
# Fields a recipe may not set, with the reason and what to do instead.
REFUSED_FIELDS: dict[str, tuple[str, str]] = {
    "frame_count": (f"frame_count is for GIF output; {GIF_SVG}", "use output_format png, jpeg or webp"),
    "frame_duration_ms": (f"frame_duration_ms is for GIF output; {GIF_SVG}", "use output_format png, jpeg or webp"),
    "svg": (f"svg is for SVG output; {GIF_SVG}", "use output_format png, jpeg or webp"),
    "partial_images": ("partial_images is not supported: streaming only", "dalle-pipe waits for whole images"),
    "stream": ("stream is not supported: streaming only", "dalle-pipe waits for whole images"),
    "user": ("user is the SDK's deprecated name for safety_identifier", "use safety_identifier"),
}
# Fields the tool fills in from the step itself (prompt, inputs, model) or sets on its own.
STRUCTURAL_FIELDS: dict[str, str] = {
    "prompt": "the step's prompt or prompt_file",
    "image": "the step's image",
    "mask": "the step's mask",
    "markup": "the edit step's markup",
    "input_image_mask": "the step's mask (Responses route)",
    "model": "the step's or recipe's model",
    "type": "always image_generation (set by the tool)",
    "action": "generate or edit, from the step's kind (set by the tool)",
}
# Endpoint -> the SDK fields it defines and how each is handled: "param" (a recipe parameter,
# checked per model), "input" / "tool" (STRUCTURAL_FIELDS) or "refused" (REFUSED_FIELDS).
_IMAGE_COMMON = {
    "prompt": "input", "model": "input", "background": "param", "complexity": "param",
    "frame_count": "refused", "frame_duration_ms": "refused", "n": "param", "output_compression": "param",
    "output_format": "param", "partial_images": "refused", "quality": "param", "response_format": "param",
    "safety_identifier": "param", "size": "param", "svg": "refused", "user": "refused", "stream": "refused",
}
SDK_FIELDS: dict[Endpoint, dict[str, str]] = {
    "generate": {**_IMAGE_COMMON, "moderation": "param", "style": "param"},
    "edit": {**_IMAGE_COMMON, "image": "input", "input_fidelity": "param", "markup": "input", "mask": "input"},
    "variation": {
        "image": "input", "model": "input", "n": "param", "response_format": "param", "size": "param",
        "user": "param",  # safety_identifier is sent under this name (SENT_AS)
    },
    "responses": {
        "type": "tool", "action": "tool", "model": "input", "input_image_mask": "input",
        "background": "param", "complexity": "param", "frame_count": "refused", "frame_duration_ms": "refused",
        "input_fidelity": "param", "moderation": "param", "output_compression": "param",
        "output_format": "param", "partial_images": "refused", "quality": "param", "size": "param",
        "svg": "refused",
    },
}
# Model literals in the SDK this tool deliberately does not run (none today: every one has a row).
UNSUPPORTED_MODELS: dict[str, str] = {}
# What extra_params may not name: everything the tool already knows.
TOOL_FIELDS: frozenset[str] = frozenset(
    {*KNOWN_PARAMS, *REFUSED_FIELDS, *STRUCTURAL_FIELDS, *(f for e in SDK_FIELDS.values() for f in e)}
)

MB = 1024 * 1024
PREVIEW_FORMAT_HINT = "gif and svg output are previews; use png, jpeg or webp"
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp", "gif": "gif"}
FORMAT_ALIASES: dict[str, str] = {"jpg": "jpeg"}
DEFAULT_SIZE = (1024, 1024)


@dataclass(frozen=True)
class ParamIssue:
    """One problem with a request: which parameter, what is wrong, what to do instead."""

    param: str | None  # "size", "quality", "n", "model", "prompt", "image", "mask", ... or None
    message: str
    hint: str | None = None
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class InputInfo:
    """What the checks need to know about one input image or mask file."""

    format: str  # png | jpeg | webp | gif | ...
    width: int
    height: int
    bytes: int
    has_alpha: bool


@dataclass(frozen=True)
class FreeSize:
    """Free-form `WxH` sizes: both sides multiples of `multiple`, aspect within bounds, pixel cap."""

    multiple: int = 16
    max_aspect: int = 3  # long side / short side <= max_aspect (1:3 .. 3:1)
    max_pixels: int = 3840 * 2160
    max_side: int = 3840

    def reasons(self, w: int, h: int) -> list[str]:
        """Why WxH breaks these rules (empty when it does not)."""
        if w <= 0 or h <= 0:
            return ["width and height must be positive"]
        out: list[str] = []
        if w % self.multiple or h % self.multiple:
            out.append(f"width and height must be multiples of {self.multiple}")
        if max(w, h) > self.max_aspect * min(w, h):
            out.append(f"aspect ratio must be between 1:{self.max_aspect} and {self.max_aspect}:1")
        if max(w, h) > self.max_side:
            out.append(f"each side must be at most {self.max_side}")
        if w * h > self.max_pixels:
            out.append(f"{w * h} pixels is over the maximum of {self.max_pixels} (3840x2160)")
        return out

    def summary(self) -> str:
        return (
            f"WxH with both sides multiples of {self.multiple}, aspect between 1:{self.max_aspect} "
            f"and {self.max_aspect}:1, at most 3840x2160 pixels"
        )


@dataclass(frozen=True)
class InputRules:
    """What an edit or variation accepts as input files."""

    max_images: int
    formats: tuple[str, ...]
    max_bytes: int  # each image must be smaller than this
    square: bool = False
    mask_allowed: bool = True
    mask_max_bytes: int = 4 * MB
    alpha_without_mask: bool = False  # dall-e-2 edits: no mask -> the image's transparency is the mask
    markup_allowed: bool = False  # a `markup` PNG guiding the edit (GPT Image 2.5 models)


@dataclass(frozen=True)
class ModelSpec:
    """One model's capabilities. Everything a check needs is here."""

    name: str
    family: Family
    kinds: frozenset[Kind]
    responses_tool: bool  # usable as the Responses API image_generation tool's model
    n_min: int
    n_max: int
    sizes: tuple[str, ...]  # fixed sizes
    auto_size: bool
    free_size: FreeSize | None
    values: Mapping[str, tuple[str, ...]]  # allowed values of the enum parameters this model takes
    accepts: Mapping[Kind, frozenset[str]]  # parameters sent, per kind
    rejected: Mapping[str, tuple[str, str]]  # parameter -> (message, hint) when the model refuses it
    max_prompt: int
    edit_inputs: InputRules | None = None
    variation_inputs: InputRules | None = None
    preview_formats: tuple[str, ...] = ()  # output formats the API knows but we refuse for now
    preview_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # allowed, with a warning
    transparent_formats: tuple[str, ...] = ()  # output formats that can carry background: transparent
    compression_formats: tuple[str, ...] = ()  # output formats output_compression applies to
    default_format: str = "png"
    default_response_format: str | None = None  # sent when the user set none (dall-e: b64_json)
    retired: str | None = None  # ISO date it was retired on api.openai.com
    replacement: str | None = None  # hint when retired


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536")
GPT_QUALITIES = ("low", "medium", "high", "auto")
GPT_QUALITIES_25 = ("low", "medium", "high", "xhigh", "max", "auto")
GPT_FORMATS = ("png", "jpeg", "webp")
GPT_COMMON = frozenset(
    {
        "n",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "complexity",
        "safety_identifier",
    }
)
GPT_EDIT_INPUTS = InputRules(max_images=16, formats=("png", "webp", "jpeg"), max_bytes=50 * MB)
GPT_EDIT_INPUTS_MARKUP = InputRules(
    max_images=16, formats=("png", "webp", "jpeg"), max_bytes=50 * MB, markup_allowed=True
)
DALLE2_EDIT_INPUTS = InputRules(
    max_images=1, formats=("png",), max_bytes=4 * MB, square=True, alpha_without_mask=True
)
DALLE2_VARIATION_INPUTS = InputRules(
    max_images=1, formats=("png",), max_bytes=4 * MB, square=True, mask_allowed=False
)
FREE = FreeSize()

GPT_REJECTED: dict[str, tuple[str, str]] = {
    "style": ("style is not accepted by GPT image models", "describe the style in the prompt"),
    "response_format": (
        "response_format is not accepted by GPT image models",
        "GPT image models always return base64",
    ),
}


def _dalle_rejected(name: str) -> dict[str, tuple[str, str]]:
    gpt_only = "use a GPT image model such as gpt-image-2 for it"
    return {
        "output_format": (f"output_format is not accepted by {name}", "dall-e models always return png"),
        "output_compression": (
            f"output_compression is not accepted by {name}",
            "dall-e models always return png",
        ),
        "background": (f"background is not accepted by {name}", gpt_only),
        "moderation": (f"moderation is not accepted by {name}", gpt_only),
        "input_fidelity": (f"input_fidelity is not accepted by {name}", gpt_only),
        "complexity": (f"complexity is not accepted by {name}", gpt_only),
    }


def _gpt(
    name: str,
    *,
    free: bool = False,
    qualities: tuple[str, ...] = GPT_QUALITIES,
    fidelity: tuple[str, ...] | None = None,
    transparent_preview: bool = False,
    markup: bool = False,
    retired: str | None = None,
    replacement: str | None = None,
) -> ModelSpec:
    values: dict[str, tuple[str, ...]] = {
        "quality": qualities,
        "background": ("transparent", "opaque", "auto"),
        "output_format": GPT_FORMATS,
        "moderation": ("low", "auto"),
        "complexity": ("low", "medium", "high"),
    }
    rejected = dict(GPT_REJECTED)
    edit = set(GPT_COMMON) - {"moderation"}  # moderation is not an edit field (ImageEditParams)
    if fidelity:
        values["input_fidelity"] = fidelity
        edit.add("input_fidelity")
    else:
        rejected["input_fidelity"] = (
            f"input_fidelity is not accepted by {name}",
            f"omit input_fidelity for {name}",
        )
    return ModelSpec(
        name=name,
        family="gpt-image",
        kinds=frozenset({"generate", "edit"}),
        responses_tool=True,
        n_min=1,
        n_max=10,
        sizes=GPT_SIZES,
        auto_size=True,
        free_size=FREE if free else None,
        values=values,
        accepts={"generate": GPT_COMMON, "edit": frozenset(edit)},
        rejected=rejected,
        max_prompt=32000,
        edit_inputs=GPT_EDIT_INPUTS_MARKUP if markup else GPT_EDIT_INPUTS,
        preview_formats=("gif", "svg"),
        preview_values={"background": ("transparent",)} if transparent_preview else {},
        transparent_formats=("png", "webp"),
        compression_formats=("jpeg", "webp"),
        retired=retired,
        replacement=replacement,
    )


_DALLE_RETIRED = "2026-05-12"
_DALLE_REPLACEMENT = "use a GPT image model such as gpt-image-2"

_SPECS: tuple[ModelSpec, ...] = (
    _gpt("gpt-image-1.5", fidelity=("high", "low")),
    _gpt("gpt-image-1-mini", fidelity=("low",)),
    _gpt("gpt-image-2", free=True, transparent_preview=True),
    _gpt("gpt-image-2-2026-04-21", free=True, transparent_preview=True),
    _gpt("gpt-image-2.5-sunburst", free=True, qualities=GPT_QUALITIES_25, markup=True),
    _gpt("gpt-image-2.5-flare", free=True, qualities=GPT_QUALITIES_25, markup=True),
    _gpt("gpt-image-2.5-sunburst-2026-09-08", free=True, qualities=GPT_QUALITIES_25, markup=True),
    _gpt("gpt-image-2.5-flare-2026-09-08", free=True, qualities=GPT_QUALITIES_25, markup=True),
    _gpt("gpt-image-2.6-sunburst"),
    _gpt("gpt-image-2.6-flare"),
    _gpt("chatgpt-image-latest"),
    _gpt(
        "gpt-image-1",
        fidelity=("high", "low"),
        retired="2026-10-23",
        replacement="use gpt-image-2.5-sunburst or gpt-image-2.5-flare",
    ),
    ModelSpec(
        name="dall-e-3",
        family="dall-e-3",
        kinds=frozenset({"generate"}),
        responses_tool=False,
        n_min=1,
        n_max=1,
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        auto_size=False,
        free_size=None,
        values={
            "quality": ("standard", "hd"),
            "style": ("vivid", "natural"),
            "response_format": ("url", "b64_json"),
        },
        accepts={
            "generate": frozenset({"n", "size", "quality", "style", "response_format", "safety_identifier"}),
        },
        rejected=_dalle_rejected("dall-e-3"),
        max_prompt=4000,
        default_response_format="b64_json",
        retired=_DALLE_RETIRED,
        replacement=_DALLE_REPLACEMENT,
    ),
    ModelSpec(
        name="dall-e-2",
        family="dall-e-2",
        kinds=frozenset({"generate", "edit", "variation"}),
        responses_tool=False,
        n_min=1,
        n_max=10,
        sizes=("256x256", "512x512", "1024x1024"),
        auto_size=False,
        free_size=None,
        values={"quality": ("standard",), "response_format": ("url", "b64_json")},
        accepts={
            "generate": frozenset({"n", "size", "quality", "response_format", "safety_identifier"}),
            "edit": frozenset({"n", "size", "quality", "response_format", "safety_identifier"}),
            "variation": frozenset({"n", "size", "response_format", "safety_identifier"}),
        },
        rejected={
            **_dalle_rejected("dall-e-2"),
            "style": ("style is not accepted by dall-e-2", "describe the style in the prompt"),
        },
        max_prompt=1000,
        edit_inputs=DALLE2_EDIT_INPUTS,
        variation_inputs=DALLE2_VARIATION_INPUTS,
        default_response_format="b64_json",
        retired=_DALLE_RETIRED,
        replacement=_DALLE_REPLACEMENT,
    ),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}

# What a kind needs when the model lacks it, and what the Responses API tool refuses.
KIND_HINTS: dict[str, str] = {
    "variation": "variations need dall-e-2; with a GPT image model, use an edit with a prompt",
    "edit": "edits need a GPT image model such as gpt-image-2",
    "generate": "use a model that generates images",
}
RESPONSES_REJECTED: dict[str, tuple[str, str]] = {
    "response_format": (
        "response_format is not accepted by the Responses API image_generation tool",
        "the tool always returns base64",
    ),
    "style": (
        "style is not accepted by the Responses API image_generation tool",
        "describe the style in the prompt",
    ),
}
RESPONSES_PARAMS = frozenset(
    {
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "input_fidelity",
        "complexity",
        "safety_identifier",
    }
)
# Responses-route parameters sent with responses.create itself, not in the tool's settings.
RESPONSES_TOP_LEVEL = frozenset({"safety_identifier"})
# Parameters the tool takes on every action, though the Images API takes them on generations only.
RESPONSES_EVERY_KIND = frozenset({"moderation"})


# ---------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------


def get_model(name: str) -> ModelSpec | None:
    """The capability row of a model, or None when the table does not know it."""
    return MODELS.get(name)


def known_models() -> list[str]:
    """Every model in the table, current ones first, in table order."""
    return [s.name for s in _SPECS if s.retired is None] + [s.name for s in _SPECS if s.retired]


def is_official_endpoint(base_url: str | None) -> bool:
    """True for api.openai.com (and its regional *.api.openai.com hosts) or no base URL at all."""
    if not base_url or not base_url.strip():
        return True
    url = base_url.strip()
    if "://" not in url:
        url = "https://" + url
    host = (urlsplit(url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".api.openai.com")


def parse_size(value: object) -> tuple[int, int] | None:
    """`"1536x864"` -> (1536, 864); anything else -> None."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", value)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _join_or(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _size_choices(spec: ModelSpec) -> list[str]:
    return list(spec.sizes) + (["auto"] if spec.auto_size else [])


def _nearest(sizes: Sequence[str], wh: tuple[int, int]) -> str:
    """The size closest to `wh` in shape and area (log-distance of the two sides)."""
    w, h = max(wh[0], 1), max(wh[1], 1)

    def distance(size: str) -> float:
        sw, sh = parse_size(size) or (1, 1)
        return (math.log(sw / w)) ** 2 + (math.log(sh / h)) ** 2

    return min(sizes, key=distance)


def size_allowed(spec: ModelSpec, size: str) -> bool:
    """Whether `size` (a fixed size, "auto" or free-form WxH) is accepted by the model."""
    if size in spec.sizes or (size == "auto" and spec.auto_size):
        return True
    wh = parse_size(size)
    return spec.free_size is not None and wh is not None and not spec.free_size.reasons(*wh)


def _fmt_value(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _effective_format(spec: ModelSpec, params: Mapping[str, object]) -> str:
    fmt = params.get("output_format")
    if isinstance(fmt, str) and "output_format" in spec.values:
        fmt = FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if fmt in spec.values["output_format"]:
            return fmt
    return spec.default_format


# ---------------------------------------------------------------------------------------------
# check_request
# ---------------------------------------------------------------------------------------------


def check_request(
    model: str,
    kind: Kind,
    params: Mapping[str, object],
    *,
    prompt: str | None,
    official: bool,
    api: Api = "images",
) -> list[ParamIssue]:
    """Every reason the API would refuse this request (errors), plus warnings.

    `params` are the request parameters as the recipe sets them (None = not set).
    `official` is whether the endpoint is api.openai.com (see is_official_endpoint).
    """
    issues: list[ParamIssue] = []
    given = {k: v for k, v in params.items() if v is not None}

    for name in sorted(given):
        if name == EXTRA_PARAMS:
            issues.extend(_check_extra(given[name]))
        elif name in REFUSED_FIELDS:
            message, hint = REFUSED_FIELDS[name]
            issues.append(ParamIssue(name, message, hint))
        elif name not in KNOWN_PARAMS:
            close = difflib.get_close_matches(name, KNOWN_PARAMS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "known parameters: " + ", ".join(KNOWN_PARAMS)
            issues.append(ParamIssue(name, f"unknown parameter '{name}'", hint))

    spec = MODELS.get(model)
    if spec is None:
        # Never suggest a model the endpoint has retired.
        names = [m for m in known_models() if not (official and MODELS[m].retired)]
        close = difflib.get_close_matches(model, names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "known models: " + ", ".join(names)
        if official:
            issues.append(ParamIssue("model", f"unknown model '{model}'", hint))
        else:
            issues.append(
                ParamIssue(
                    "model",
                    f"unknown model '{model}'; its parameters are not checked",
                    hint,
                    severity="warning",
                )
            )
        return issues

    if spec.retired:
        issues.append(
            ParamIssue(
                "model",
                f"model '{model}' was retired on {spec.retired}",
                spec.replacement,
                severity="error" if official else "warning",
            )
        )

    if kind not in spec.kinds:
        hint = KIND_HINTS[kind]
        if kind == "variation" and official:
            hint = "only dall-e-2 makes variations, and it is retired: use an edit with a prompt and a GPT image model"
        issues.append(ParamIssue("model", f"{model} does not support {KIND_NOUN[kind]}", hint))
        return issues

    if api == "responses":
        issues.extend(_check_responses(spec, kind, given))

    known = {k: v for k, v in given.items() if k in KNOWN_PARAMS}
    # n is checked against the model on either route (the Responses route makes n calls).
    accepted = _accepted(spec, kind, api) | (spec.accepts.get(kind, frozenset()) & {"n"})
    for name in KNOWN_PARAMS:
        if name not in known:
            continue
        if api == "responses" and name in RESPONSES_REJECTED:
            continue  # reported by _check_responses
        if name in spec.rejected:
            message, hint = spec.rejected[name]
            issues.append(ParamIssue(name, message, hint))
        elif name not in accepted:
            takes = [KIND_NOUN[k] for k in KINDS if name in spec.accepts.get(k, ())]
            issues.append(
                ParamIssue(
                    name,
                    f"{name} is not sent with {KIND_NOUN[kind]}",
                    f"{model} takes it only for " + _join_or(takes) if takes else f"{model} does not take it",
                    severity="warning",
                )
            )
        else:
            issues.extend(_check_value(spec, name, known[name]))

    issues.extend(_check_combinations(spec, kind, known))
    issues.extend(_check_prompt(spec, kind, prompt))
    return issues


def _accepted(spec: ModelSpec, kind: Kind, api: Api) -> frozenset[str]:
    """The parameters sent for this model, kind and route."""
    accepted = spec.accepts.get(kind, frozenset())
    if api == "responses":
        every = spec.accepts.get("generate", frozenset()) & RESPONSES_EVERY_KIND
        accepted = (accepted | every) & RESPONSES_PARAMS
    return accepted


def _check_extra(value: object) -> list[ParamIssue]:
    """extra_params: sent as given, with a warning; never a field the tool already knows."""
    if not isinstance(value, Mapping):
        return [ParamIssue(EXTRA_PARAMS, "extra_params must be a mapping of field names to values")]
    issues: list[ParamIssue] = []
    known = sorted(str(k) for k in value if k in TOOL_FIELDS)
    for name in known:
        how = "set it directly" if name in KNOWN_PARAMS else (
            REFUSED_FIELDS[name][1] if name in REFUSED_FIELDS else STRUCTURAL_FIELDS.get(name, "set it directly"))
        issues.append(
            ParamIssue(
                EXTRA_PARAMS,
                f"extra_params may not name '{name}': dalle-pipe already knows that field",
                how,
            )
        )
    extra = sorted(str(k) for k in value if k not in TOOL_FIELDS)
    if extra:
        issues.append(
            ParamIssue(
                EXTRA_PARAMS,
                "extra_params sends " + ", ".join(extra) + " as given, unchecked",
                "the capability table cannot check fields newer than dalle-pipe",
                severity="warning",
            )
        )
    return issues


def _check_responses(spec: ModelSpec, kind: Kind, given: Mapping[str, object]) -> list[ParamIssue]:
    issues: list[ParamIssue] = []
    if not spec.responses_tool:
        issues.append(
            ParamIssue(
                "model",
                f"{spec.name} cannot be the Responses API image_generation tool model",
                "use a GPT image model such as gpt-image-2",
            )
        )
    if kind == "variation":
        issues.append(
            ParamIssue(
                "model",
                "the Responses API image_generation tool makes no variations",
                "variations need dall-e-2 on the Images API",
            )
        )
    for name in sorted(given):
        if name in RESPONSES_REJECTED:
            message, hint = RESPONSES_REJECTED[name]
            issues.append(ParamIssue(name, message, hint))
    # n: the model's own range (checked below). The tool makes one image per call, so the
    # runner sends n calls, each through the limiter and the retry loop.
    return issues


# Providers that reach OpenAI models through something else than api.openai.com, and what
# they need in the recipe: provider -> (required keys, the APIs they serve).
PROVIDER_NEEDS: dict[str, tuple[tuple[str, ...], tuple[Api, ...]]] = {
    "openai": ((), ("images", "responses")),
    "azure": (("deployment",), ("images",)),
    "offline": ((), ("images", "responses")),  # previews either route
}
PROVIDER_HINTS: dict[str, str] = {
    "deployment": "write provider: {name: azure, deployment: <your image model's deployment>}",
    "api": "use api: images with azure, or provider openai for the Responses API",
}


def check_provider(
    name: str, api: str, *, mainline_model: str | None = None, deployment: str | None = None
) -> list[ParamIssue]:
    """What the provider setting itself lacks: azure's deployment, the Responses API's mainline model.

    Issues name the provider key at fault ("deployment", "api", "model") in ParamIssue.param.
    """
    needs = PROVIDER_NEEDS.get(name)
    if needs is None:
        return []
    required, apis = needs
    issues: list[ParamIssue] = []
    given = {"deployment": deployment, "model": mainline_model}
    for key in required:
        if not (given.get(key) or "").strip():
            issues.append(ParamIssue(key, f"provider {name} needs a {key}", PROVIDER_HINTS.get(key)))
    if api not in apis:
        issues.append(ParamIssue("api", f"provider {name} does not serve api: {api}", PROVIDER_HINTS["api"]))
    elif api == "responses":
        if not (mainline_model or "").strip():
            issues.append(
                ParamIssue(
                    "model",
                    "api: responses needs the mainline model that calls the image_generation tool",
                    "write provider: {name: openai, api: responses, model: gpt-5.1}",
                )
            )
        elif mainline_model in MODELS:
            issues.append(
                ParamIssue(
                    "model",
                    f"this is the Responses API's mainline model, and {mainline_model} is an image model",
                    "name a mainline model such as gpt-5.1 here; the image model is the recipe's `model`",
                )
            )
    return issues


def _check_value(spec: ModelSpec, name: str, value: object) -> list[ParamIssue]:
    model = spec.name
    if name == "n":
        if not isinstance(value, int) or isinstance(value, bool):
            return [ParamIssue("n", f"n must be an integer, not {_fmt_value(value)}")]
        if spec.n_min <= value <= spec.n_max:
            return []
        if spec.n_max == 1:
            hint = f"{model} makes one image per request; use n: 1"
        else:
            hint = f"use n between {spec.n_min} and {spec.n_max}"
        return [ParamIssue("n", f"n={value} is not accepted by {model}", hint)]
    if name == "size":
        return _check_size(spec, value)
    if name == "output_compression":
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100):
            return [
                ParamIssue(
                    "output_compression",
                    f"output_compression {_fmt_value(value)} is not an integer from 0 to 100",
                    "use 0..100 (100 = least compression)",
                )
            ]
        return []
    if name == "safety_identifier":
        if not isinstance(value, str):
            return [ParamIssue(name, f"safety_identifier must be a string, not {_fmt_value(value)}")]
        return []
    if name in ENUM_PARAMS:
        allowed = spec.values.get(name, ())
        if isinstance(value, str) and value in allowed:
            if value in spec.preview_values.get(name, ()):
                return [
                    ParamIssue(
                        name,
                        f"{name} '{value}' is a preview on {model}",
                        "it may be refused unless your organization has access",
                        severity="warning",
                    )
                ]
            return []
        if name == "output_format" and isinstance(value, str) and value.lower() in spec.preview_formats:
            return [ParamIssue(name, f"output_format '{value}' is not supported yet", PREVIEW_FORMAT_HINT)]
        hint = "use " + _join_or(allowed)
        if (
            isinstance(value, str)
            and FORMAT_ALIASES.get(value.lower()) in allowed
            and name == "output_format"
        ):
            hint = f"use '{FORMAT_ALIASES[value.lower()]}' (the API spells it that way)"
        return [ParamIssue(name, f"{name} {_fmt_value(value)} is not accepted by {model}", hint)]
    return []  # pragma: no cover - every KNOWN_PARAMS entry is handled above


def _check_size(spec: ModelSpec, value: object) -> list[ParamIssue]:
    model = spec.name
    choices = _size_choices(spec)
    if isinstance(value, str) and (value in spec.sizes or (value == "auto" and spec.auto_size)):
        return []
    wh = parse_size(value)
    free = spec.free_size
    if free is not None and wh is not None:
        reasons = free.reasons(*wh)
        if not reasons:
            return []
        w, h = wh
        m = free.multiple
        hint = f"use {_nearest(spec.sizes, wh)}, the nearest standard size, or any {free.summary()}"
        suggestion = (max(m, int(w / m + 0.5) * m), max(m, int(h / m + 0.5) * m))
        if suggestion != wh and not free.reasons(*suggestion):
            hint = f"try {suggestion[0]}x{suggestion[1]}, the nearest size it takes; sizes are {free.summary()}"
        return [
            ParamIssue(
                "size", f"size {_fmt_value(value)} is not accepted by {model}: {'; '.join(reasons)}", hint
            )
        ]
    if wh is not None:  # the nearest first
        near = _nearest(spec.sizes, wh)
        choices = [near, *(c for c in choices if c != near)]
    hint = "use " + _join_or([*choices, "WxH such as 1536x864"] if free is not None else choices)
    if wh is not None:
        hint = f"use {choices[0]}, the nearest; or {_join_or(choices[1:])}" if len(choices) > 1 else hint
    if wh is None and value != "auto":
        return [ParamIssue("size", f"size {_fmt_value(value)} is not a size", hint)]
    return [ParamIssue("size", f"size {_fmt_value(value)} is not accepted by {model}", hint)]


def _check_combinations(spec: ModelSpec, kind: Kind, params: Mapping[str, object]) -> list[ParamIssue]:
    issues: list[ParamIssue] = []
    accepted = spec.accepts.get(kind, frozenset())
    fmt = _effective_format(spec, params)
    if (
        "background" in accepted
        and params.get("background") == "transparent"
        and spec.transparent_formats
        and fmt not in spec.transparent_formats
    ):
        issues.append(
            ParamIssue(
                "background",
                f"background 'transparent' needs output_format {_join_or(spec.transparent_formats)}",
                f"{fmt} has no alpha channel; use {_join_or(spec.transparent_formats)}",
            )
        )
    if (
        "output_compression" in accepted
        and "output_compression" in params
        and fmt not in spec.compression_formats
    ):
        issues.append(
            ParamIssue(
                "output_compression",
                f"output_compression needs output_format {_join_or(spec.compression_formats)}",
                f"{fmt} output is not compressed; drop output_compression or set output_format: "
                + _join_or(spec.compression_formats),
            )
        )
    return issues


def _check_prompt(spec: ModelSpec, kind: Kind, prompt: str | None) -> list[ParamIssue]:
    if prompt is None:
        return []
    if kind == "variation":
        return [ParamIssue("prompt", "variations take no prompt; it is not sent", None, severity="warning")]
    if not prompt.strip():
        return [ParamIssue("prompt", "prompt is empty", "describe the image to make")]
    if len(prompt) > spec.max_prompt:
        return [
            ParamIssue(
                "prompt",
                f"prompt is {len(prompt)} characters; {spec.name} accepts at most {spec.max_prompt}",
                "shorten the prompt",
            )
        ]
    return []


# ---------------------------------------------------------------------------------------------
# check_inputs
# ---------------------------------------------------------------------------------------------


def _norm_format(fmt: str) -> str:
    f = fmt.lower()
    return FORMAT_ALIASES.get(f, f)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def check_markup(
    model: str,
    kind: Kind,
    *,
    api: Api = "images",
    has_mask: bool = False,
    markup: InputInfo | None = None,
    first: InputInfo | None = None,
    transparent: bool | None = None,
) -> list[ParamIssue]:
    """Why a `markup` cannot go with this request: a GPT Image 2.5 model, the Images route, no mask,
    a PNG the size of the first image with some transparent pixels (`transparent`: None = unknown yet).

    What is not known yet (a markup made by an earlier step) is checked again before sending.
    """
    issues: list[ParamIssue] = []
    if kind != "edit":
        return [ParamIssue("markup", f"{KIND_NOUN[kind]} take no markup", "markup guides an edit")]
    spec = MODELS.get(model)
    with_markup = [s.name for s in _SPECS if s.edit_inputs is not None and s.edit_inputs.markup_allowed]
    if spec is not None and (spec.edit_inputs is None or not spec.edit_inputs.markup_allowed):
        issues.append(
            ParamIssue("markup", f"{model} takes no markup", "markup needs a GPT Image 2.5 model: "
                       + _join_or(with_markup))
        )
    if api == "responses":
        issues.append(
            ParamIssue(
                "markup",
                "the Responses API image_generation tool takes no markup",
                "use api: images for markup edits, or a mask",
            )
        )
    if has_mask:
        issues.append(ParamIssue("markup", "markup cannot be combined with mask", "drop the mask or the markup"))
    if markup is not None:
        if _norm_format(markup.format) != "png":
            issues.append(ParamIssue("markup", f"markup is {markup.format}; a markup must be a PNG",
                                     "draw it with a markup step"))
        elif not markup.has_alpha or transparent is False:
            issues.append(
                ParamIssue(
                    "markup",
                    "markup has no transparent pixels",
                    "a markup is a transparent PNG with strokes on it; a markup step draws one",
                )
            )
        if first is not None and (markup.width, markup.height) != (first.width, first.height):
            issues.append(
                ParamIssue(
                    "markup",
                    f"markup size {markup.width}x{markup.height} differs from the first input image's "
                    f"{first.width}x{first.height}",
                    "a markup must be the size of the first image; use a markup step with size_of",
                )
            )
    return issues


def check_inputs(
    model: str,
    kind: Kind,
    images: Sequence[InputInfo],
    mask: InputInfo | None,
) -> list[ParamIssue]:
    """Problems with the files an edit or variation would upload (count, format, bytes, size, mask).

    An unknown model, or a kind the model does not support, gives no issues here:
    check_request reports those. check_markup checks a markup.
    """
    spec = MODELS.get(model)
    if kind == "generate":
        issues = []
        if images:
            issues.append(ParamIssue("image", "generations take no input image"))
        if mask is not None:
            issues.append(ParamIssue("mask", "generations take no mask"))
        return issues
    if spec is None or kind not in spec.kinds:
        return []
    rules = spec.edit_inputs if kind == "edit" else spec.variation_inputs
    if rules is None:  # pragma: no cover - every model that supports edits/variations has rules
        return []
    issues = []
    noun = "an edit" if kind == "edit" else "a variation"
    if not images:
        issues.append(ParamIssue("image", f"{noun} needs an input image"))
    elif len(images) > rules.max_images:
        issues.append(
            ParamIssue(
                "image",
                f"{len(images)} input images; {model} accepts at most {rules.max_images}",
                "drop some reference images" if rules.max_images > 1 else f"{model} edits one image",
            )
        )
    many = len(images) > 1
    for i, img in enumerate(images):
        which = f"input image {i + 1} of {len(images)}" if many else "input image"
        fmt = _norm_format(img.format)
        if fmt not in rules.formats:
            issues.append(
                ParamIssue(
                    "image",
                    f"{which} is {img.format}; {model} accepts {_join_or(rules.formats)}",
                    "convert it first (a convert step)",
                )
            )
        if img.bytes >= rules.max_bytes:
            issues.append(
                ParamIssue(
                    "image",
                    f"{which} is {_mb(img.bytes)}; {model} accepts less than {_mb(rules.max_bytes)}",
                    "resize it or save it with more compression",
                )
            )
        if rules.square and img.width != img.height:
            issues.append(
                ParamIssue(
                    "image",
                    f"{which} is {img.width}x{img.height}; {model} needs a square image",
                    'crop or pad it to a square first (a pad step with aspect: "1:1")',
                )
            )
    if mask is None:
        if rules.alpha_without_mask and images and not images[0].has_alpha:
            issues.append(
                ParamIssue(
                    "mask",
                    f"{model} edits the transparent area of the image, and this one has none",
                    "add a mask, or use an image with transparency",
                )
            )
        return issues
    if not rules.mask_allowed:
        issues.append(ParamIssue("mask", f"{KIND_NOUN[kind]} take no mask"))
        return issues
    if _norm_format(mask.format) != "png":
        issues.append(ParamIssue("mask", f"mask is {mask.format}; masks must be PNG", "save the mask as PNG"))
    if mask.bytes >= rules.mask_max_bytes:
        issues.append(
            ParamIssue(
                "mask",
                f"mask is {_mb(mask.bytes)}; masks must be less than {_mb(rules.mask_max_bytes)}",
                "save the mask with more compression or at a smaller size",
            )
        )
    if not mask.has_alpha:
        issues.append(
            ParamIssue(
                "mask",
                "mask has no alpha channel",
                "transparent pixels mark the area to edit; make the mask RGBA (a mask step does)",
            )
        )
    if images and (mask.width, mask.height) != (images[0].width, images[0].height):
        issues.append(
            ParamIssue(
                "mask",
                f"mask size {mask.width}x{mask.height} differs from the first input image's "
                f"{images[0].width}x{images[0].height}",
                "a mask must be the size of the first image; use fit: resize or a mask step with size_of",
            )
        )
    return issues


# ---------------------------------------------------------------------------------------------
# What a request sends and what it makes
# ---------------------------------------------------------------------------------------------


def output_size(
    model: str,
    params: Mapping[str, object],
    first_input: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The pixel size an image will have.

    An explicit WxH is that size. "auto" or no size: the first input's size for an
    edit when the model accepts that size, else 1024x1024 (what auto gives for a
    square prompt; the actual auto choice is the model's).
    """
    wh = parse_size(params.get("size"))
    if wh is not None:
        return wh
    spec = MODELS.get(model)
    if first_input is not None:
        w, h = first_input
        size = f"{w}x{h}"
        if spec is None or size_allowed(spec, size):
            return (w, h)
    return DEFAULT_SIZE


def output_format(model: str, params: Mapping[str, object]) -> str:
    """The format the images will come back in: png | jpeg | webp."""
    spec = MODELS.get(model)
    if spec is None:
        fmt = params.get("output_format")
        if isinstance(fmt, str):
            f = _norm_format(fmt)
            if f in GPT_FORMATS:
                return f
        return "png"
    return _effective_format(spec, params)


def extension(fmt: str) -> str:
    """File extension for a format: png -> png, jpeg -> jpg, webp -> webp."""
    f = fmt.lower()
    return EXTENSIONS.get(f, f)


def request_params(
    model: str,
    kind: Kind,
    params: Mapping[str, object],
    *,
    api: Api = "images",
) -> dict[str, object]:
    """What will be SENT (minus prompt and files), normalised.

    None values dropped; only the parameters the model accepts for this kind kept;
    `n` always present (default 1; not sent to the Responses API tool, which makes
    one image per call: n images are n calls); dall-e's `response_format` defaults to b64_json (base64
    rather than a URL that expires in an hour). No other defaults are added.
    On variations, safety_identifier is sent as `user` (the only name that endpoint has).
    `extra_params` (a mapping) is flattened in last, sorted by name, as given; a name the
    tool does not know in `params` is taken for an extra flattened by an earlier call.
    """
    spec = MODELS.get(model)
    given = {k: v for k, v in params.items() if v is not None}
    extra = given.pop(EXTRA_PARAMS, None)
    # Fields the tool does not know can only be extra_params flattened by an earlier call.
    extras = {k: v for k, v in given.items() if k not in TOOL_FIELDS}
    if isinstance(extra, Mapping):
        extras.update({str(k): v for k, v in extra.items() if k not in TOOL_FIELDS})
    if spec is None:
        accepted: frozenset[str] = frozenset(KNOWN_PARAMS)
        if api == "responses":
            accepted = accepted & RESPONSES_PARAMS
    else:
        accepted = _accepted(spec, kind, api)
    out: dict[str, object] = {}
    if api != "responses":
        out["n"] = given.get("n", 1)
    for name in KNOWN_PARAMS:
        if name == "n" or name not in accepted or name not in given:
            continue
        out[SENT_AS.get((kind, name), name)] = given[name]
    if (
        api != "responses"
        and spec is not None
        and spec.default_response_format
        and "response_format" in accepted
        and "response_format" not in out
    ):
        out["response_format"] = spec.default_response_format
    for name in sorted(extras):
        out[name] = extras[name]
    return out
