"""The price table (data in `data/prices.json`) and the cost of a request.

The packaged table records the date its numbers were last checked; `--prices FILE`
replaces it with a JSON file of the same shape. Prices never come from a recipe.

Costing rules (also written in the JSON's "rules"):
- per image, by quality and size; n images cost n times one;
- quality auto (or none on GPT image models) is priced as `default_quality` (high: the worst case);
- size auto (or none when `default_size` is auto) is priced as the dearest listed size;
- a free-form WxH not listed is the 1024x1024 price scaled by pixel count (w*h / 1024²);
- usage-billed models are costed from the response's token usage when there is one;
- the Responses route: tool_usage.image_gen when present, else the image model's estimate
  (never $0), plus the mainline model's `usage` at its `text_models` price;
- the Batch API costs `batch_multiplier` (0.5) times as much.
Costs are rounded to 6 decimals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import UsageError
from .models import parse_size

BASE_SIZE = "1024x1024"
BASE_PIXELS = 1024 * 1024
PER_MILLION = 1_000_000
CHARS_PER_TOKEN = 4  # rough prompt-token estimate for English text
SHAPE_HINT = "a price table is JSON shaped like the packaged dalle_pipe/data/prices.json"


@dataclass(frozen=True)
class TokenPrices:
    """USD per 1M tokens."""

    text_input: float
    image_input: float
    image_output: float
    text_output: float | None = None  # None: priced as image_output (the dearer, to be safe)
    text_input_cached: float | None = None  # list prices, recorded; usage does not split cached tokens by kind
    image_input_cached: float | None = None


@dataclass(frozen=True)
class TextPrice:
    """A mainline (text) model of the Responses route: USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cached tokens cost the full input price


@dataclass(frozen=True)
class ModelPrice:
    per_image: Mapping[str, Mapping[str, float]]  # quality -> size -> USD per image
    default_quality: str  # what quality auto / no quality is priced as
    default_size: str  # what no size is priced as ("auto" = the dearest listed size)
    tokens: TokenPrices | None = None  # None: billed per image only
    placeholder: bool = False  # True: a plausible number, not a checked list price


@dataclass(frozen=True)
class PriceTable:
    checked: str  # ISO date the numbers were last checked
    source: str
    note: str
    models: Mapping[str, ModelPrice]
    currency: str = "USD"
    batch_multiplier: float = 0.5
    input_image_tokens: int = 1000  # estimate per edit input image
    high_fidelity_extra_tokens: int = 6240  # estimate per input image with input_fidelity high
    path: str | None = None  # the --prices file it came from; None for the packaged table
    text_models: Mapping[str, TextPrice] = field(default_factory=dict)

    def is_placeholder(self, model: str) -> bool:
        """True when the model's numbers are placeholders (no public figure): `plan` says so."""
        price = self.models.get(model)
        return price is not None and price.placeholder


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The packaged table (path None) or the JSON file at `path` (same shape; replaces it).

    A missing, unreadable or malformed file raises UsageError naming the file and the problem.
    """
    if path is None:
        return _packaged()
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read price table {where}: {exc.strerror or exc}", SHAPE_HINT) from None
    except UnicodeDecodeError:
        raise UsageError(f"price table {where} is not UTF-8 text", SHAPE_HINT) from None
    return _parse(text, where, where)


@lru_cache(maxsize=1)
def _packaged() -> PriceTable:
    text = resources.files("dalle_pipe").joinpath("data/prices.json").read_text(encoding="utf-8")
    return _parse(text, "packaged dalle_pipe/data/prices.json", None)


def _fail(where: str, problem: str) -> UsageError:
    return UsageError(f"price table {where}: {problem}", SHAPE_HINT)


def _number(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _fail(where, f"{key} must be a number >= 0, not {json.dumps(value)}")
    return float(value)


def _optional(value: object, where: str, key: str) -> float | None:
    return None if value is None else _number(value, where, key)


def _string(value: object, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{key} must be a non-empty string")
    return value


def _object(value: object, where: str, key: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _fail(where, f"{key} must be an object")
    return value


def _parse(text: str, where: str, path: str | None) -> PriceTable:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(where, f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    top = _object(doc, where, "the top level")
    models_doc = _object(top.get("models"), where, "models")
    if not models_doc:
        raise _fail(where, "models is empty")
    models = {name: _parse_model(value, where, f"models.{name}") for name, value in models_doc.items()}

    def number_or(key: str, default: float) -> float:
        return _number(top[key], where, key) if key in top else default

    return PriceTable(
        checked=_string(top.get("checked"), where, "checked"),
        source=_string(top.get("source", path or "packaged table"), where, "source"),
        note=str(top.get("note", "")),
        models=models,
        currency=_string(top.get("currency", "USD"), where, "currency"),
        batch_multiplier=number_or("batch_multiplier", 0.5),
        input_image_tokens=int(number_or("input_image_tokens", 1000)),
        high_fidelity_extra_tokens=int(number_or("high_fidelity_extra_tokens", 6240)),
        path=path,
        text_models={
            name: _parse_text(value, where, f"text_models.{name}")
            for name, value in _object(top.get("text_models", {}), where, "text_models").items()
        },
    )


def _parse_text(value: object, where: str, key: str) -> TextPrice:
    doc = _object(value, where, key)
    cached = doc.get("cached_input")
    return TextPrice(
        input=_number(doc.get("input"), where, f"{key}.input"),
        output=_number(doc.get("output"), where, f"{key}.output"),
        cached_input=None if cached is None else _number(cached, where, f"{key}.cached_input"),
    )


def _parse_model(value: object, where: str, key: str) -> ModelPrice:
    doc = _object(value, where, key)
    per_doc = _object(doc.get("per_image"), where, f"{key}.per_image")
    if not per_doc:
        raise _fail(where, f"{key}.per_image is empty")
    per_image: dict[str, dict[str, float]] = {}
    for quality, sizes in per_doc.items():
        sizes_doc = _object(sizes, where, f"{key}.per_image.{quality}")
        if not sizes_doc:
            raise _fail(where, f"{key}.per_image.{quality} is empty")
        per_image[quality] = {
            size: _number(price, where, f"{key}.per_image.{quality}.{size}")
            for size, price in sizes_doc.items()
        }
    default_quality = _string(
        doc.get("default_quality", next(iter(per_image))), where, f"{key}.default_quality"
    )
    if default_quality not in per_image:
        raise _fail(where, f"{key}.default_quality '{default_quality}' has no per_image prices")
    default_size = _string(doc.get("default_size", BASE_SIZE), where, f"{key}.default_size")
    tokens: TokenPrices | None = None
    if doc.get("tokens") is not None:
        t = _object(doc["tokens"], where, f"{key}.tokens")
        text_output = t.get("text_output")
        tokens = TokenPrices(
            text_input=_number(t.get("text_input"), where, f"{key}.tokens.text_input"),
            image_input=_number(t.get("image_input"), where, f"{key}.tokens.image_input"),
            image_output=_number(t.get("image_output"), where, f"{key}.tokens.image_output"),
            text_output=None
            if text_output is None
            else _number(text_output, where, f"{key}.tokens.text_output"),
            text_input_cached=_optional(t.get("text_input_cached"), where, f"{key}.tokens.text_input_cached"),
            image_input_cached=_optional(t.get("image_input_cached"), where, f"{key}.tokens.image_input_cached"),
        )
    return ModelPrice(
        per_image=per_image,
        default_quality=default_quality,
        default_size=default_size,
        tokens=tokens,
        placeholder=bool(doc.get("placeholder", False)),
    )


# ---------------------------------------------------------------------------------------------
# Costing
# ---------------------------------------------------------------------------------------------


def _per_image(price: ModelPrice, params: Mapping[str, object]) -> float | None:
    quality = params.get("quality")
    if quality is None or quality == "auto":
        quality = price.default_quality
    if not isinstance(quality, str) or quality not in price.per_image:
        return None
    by_size = price.per_image[quality]
    size = params.get("size")
    if size is None:
        size = price.default_size
    if size == "auto":
        return max(by_size.values())
    if not isinstance(size, str):
        return None
    if size in by_size:
        return by_size[size]
    wh = parse_size(size)
    if wh is None or BASE_SIZE not in by_size:
        return None
    return by_size[BASE_SIZE] * (wh[0] * wh[1]) / BASE_PIXELS


def _count(params: Mapping[str, object]) -> int | None:
    n = params.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    return n


def estimate_request(
    table: PriceTable,
    model: str,
    kind: str,
    params: Mapping[str, object],
    *,
    batch: bool = False,
    input_images: int = 0,
    prompt: str | None = None,
) -> float | None:
    """The estimated cost in USD of one request (all n images); None when the table cannot tell.

    `input_images` (edits) and `prompt` add their input tokens on usage-billed models;
    without them the estimate is the per-image price times n.
    """
    price = table.models.get(model)
    n = _count(params)
    if price is None or n is None:
        return None
    one = _per_image(price, params)
    if one is None:
        return None
    total = one * n
    if price.tokens is not None:
        if kind == "edit" and input_images > 0:
            per_input = table.input_image_tokens
            if params.get("input_fidelity") == "high":
                per_input += table.high_fidelity_extra_tokens
            total += input_images * per_input * price.tokens.image_input / PER_MILLION
        if prompt:
            total += math.ceil(len(prompt) / CHARS_PER_TOKEN) * price.tokens.text_input / PER_MILLION
    if batch:
        total *= table.batch_multiplier
    return round(total, 6)


def _tokens(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _image_usage(usage: Mapping[str, object]) -> Mapping[str, object] | None:
    """The image part of a usage record: the Images API's usage, or the Responses route's
    tool_usage.image_gen; None when a Responses-route record has no image usage."""
    if "input_tokens" in usage or "output_tokens" in usage:
        return usage
    tool = usage.get("tool_usage")
    image_gen = tool.get("image_gen") if isinstance(tool, Mapping) else usage.get("image_gen")
    return image_gen if isinstance(image_gen, Mapping) else None


def text_cost(table: PriceTable, model: str | None, usage: Mapping[str, object] | None) -> float | None:
    """The Responses route's mainline (text) model's cost in USD from its `usage`; None when the table
    does not price that model or the usage is missing or malformed."""
    price = table.text_models.get(model or "")
    if price is None or not isinstance(usage, Mapping):
        return None
    u = usage.get("usage") if isinstance(usage.get("usage"), Mapping) else None
    if not isinstance(u, Mapping):
        return None
    input_total, output_total = _tokens(u.get("input_tokens", 0)), _tokens(u.get("output_tokens", 0))
    if input_total is None or output_total is None:
        return None
    details = u.get("input_tokens_details")
    cached = _tokens(details.get("cached_tokens", 0)) if isinstance(details, Mapping) else 0
    cached = min(cached or 0, input_total)
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = ((input_total - cached) * price.input + cached * cached_price + output_total * price.output)
    return round(total / PER_MILLION, 6)


#: The Responses route's mainline model, estimated before the call: the prompt, plus what the call
#: adds around it (instructions, the image tool's definition), in; the revised prompt and the tool
#: call, out. Generous, so that an estimate is high rather than low.
MAINLINE_EXTRA_INPUT_TOKENS = 600
MAINLINE_OUTPUT_TOKENS = 400


def mainline_estimate(table: PriceTable, model: str | None, prompt: str | None) -> float:
    """What the mainline (text) model of one Responses-route call is expected to cost; 0 when the
    table does not price it (the recorded cost then leaves it out too)."""
    price = table.text_models.get(model or "")
    if price is None:
        return 0.0
    tokens_in = math.ceil(len(prompt or "") / CHARS_PER_TOKEN) + MAINLINE_EXTRA_INPUT_TOKENS
    return round((tokens_in * price.input + MAINLINE_OUTPUT_TOKENS * price.output) / PER_MILLION, 6)


def cost_from_usage(
    table: PriceTable,
    model: str,
    usage: Mapping[str, object] | None,
    params: Mapping[str, object],
    *,
    batch: bool = False,
    mainline_model: str | None = None,
    kind: str = "generate",
    input_images: int = 0,
    prompt: str | None = None,
) -> float | None:
    """The cost in USD of a finished request from the usage it reported.

    Usage is as the Images API returns it: {input_tokens, input_tokens_details:
    {text_tokens, image_tokens}, output_tokens, output_tokens_details?: {image_tokens,
    text_tokens}}, or the Responses route's {usage, tool_usage: {image_gen}}. Without
    (image) usage, or for a per-image-billed model (dall-e), or when the usage is
    malformed, the image part is estimate_request of the same request (`kind`, `input_images`,
    `prompt`: the one estimate the gate used): never $0. On the Responses route (`mainline_model`
    set), the mainline model's `usage` is added at its text price.
    """
    image = _image_cost(table, model, usage, params, batch=batch, kind=kind, input_images=input_images,
                        prompt=prompt)
    if mainline_model is None or image is None:
        return image
    text = text_cost(table, mainline_model, usage)
    if text is None:
        return image
    return round(image + text * (table.batch_multiplier if batch else 1.0), 6)


def _image_cost(
    table: PriceTable,
    model: str,
    usage: Mapping[str, object] | None,
    params: Mapping[str, object],
    *,
    batch: bool,
    kind: str,
    input_images: int,
    prompt: str | None,
) -> float | None:
    price = table.models.get(model)
    if price is None:
        return None
    u = _image_usage(usage) if usage is not None else None
    if u is None or price.tokens is None:
        return estimate_request(table, model, kind, params, batch=batch, input_images=input_images, prompt=prompt)
    input_total = _tokens(u.get("input_tokens", 0))
    output_total = _tokens(u.get("output_tokens", 0))
    if input_total is None or output_total is None:
        return estimate_request(table, model, kind, params, batch=batch, input_images=input_images, prompt=prompt)
    in_details = u.get("input_tokens_details")
    out_details = u.get("output_tokens_details")
    text_in, image_in = input_total, 0
    if isinstance(in_details, Mapping):
        t, i = _tokens(in_details.get("text_tokens", 0)), _tokens(in_details.get("image_tokens", 0))
        if t is not None and i is not None:
            text_in, image_in = t, i
    text_out, image_out = 0, output_total
    if isinstance(out_details, Mapping):
        t, i = _tokens(out_details.get("text_tokens", 0)), _tokens(out_details.get("image_tokens", 0))
        if t is not None and i is not None:
            text_out, image_out = t, i
    tp = price.tokens
    text_out_price = tp.image_output if tp.text_output is None else tp.text_output
    total = (
        text_in * tp.text_input
        + image_in * tp.image_input
        + image_out * tp.image_output
        + text_out * text_out_price
    ) / PER_MILLION
    if batch:
        total *= table.batch_multiplier
    return round(total, 6)
