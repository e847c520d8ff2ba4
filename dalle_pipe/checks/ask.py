"""The vision rubric: a question about an image for a vision model, answered {pass, reason}.

A judgement is paid, so it is cached by fingerprint: sha256 of the provider, whether the
endpoint is loopback (a local stand-in never answers for the real API), the model, the
params sent, the rendered question, and the sha256 of the image and of each reference. Its
cost comes from the usage the answer reports, at the model's token prices in the price table
(None when the table has no token prices for that model: unknown, never guessed low).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config.checks import PlannedCheck
from ..imaging.io import encode, load, probe
from ..prices import CHARS_PER_TOKEN, PER_MILLION, PriceTable
from ..providers import endpoint
from ..providers.base import InputFile, Judge, JudgeRequest, Verdict
from ..providers.judge import INSTRUCTIONS, MAX_OUTPUT_TOKENS, default_params
from .result import CheckResult

FINGERPRINT_VERSION = 1
MAX_JUDGE_SIDE = 2048  # the model sees at most this much: larger images are sent scaled down (PNG)
MIMES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def is_loopback(base_url: str | None) -> bool:
    """Whether the endpoint is this machine (localhost, 127.0.0.0/8, ::1): a stand-in, not the real API."""
    if not base_url or not base_url.strip():
        return False
    url = base_url.strip() if "://" in base_url else "http://" + base_url.strip()
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return endpoint.is_loopback(host)


def fingerprint(*, provider: str, loopback: bool, model: str, params: Mapping[str, Any], question: str,
                image_sha256: str, reference_sha256s: Sequence[str]) -> str:
    """The judgement's cache key (hex sha256 of a canonical JSON of exactly these fields)."""
    text = json.dumps({"v": FINGERPRINT_VERSION, "kind": "ask", "provider": provider, "loopback": loopback,
                       "model": model, "params": params, "question": question, "image": image_sha256,
                       "references": list(reference_sha256s)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _token_prices(table: PriceTable, model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens of a text model; None when the table cannot tell."""
    text = table.text_models.get(model)
    if text is not None:
        return text.input, text.output
    price = table.models.get(model)
    if price is None or price.tokens is None:
        return None
    t = price.tokens
    return t.text_input, (t.text_output if t.text_output is not None else t.image_output)


def estimate_cost(table: PriceTable, model: str, question: str, images: int) -> float | None:
    """The most one judgement may cost: its text, `images` images at the table's per-image token
    estimate, and the whole output budget (max_output_tokens bounds reasoning and answer)."""
    prices = _token_prices(table, model)
    if prices is None:
        return None
    text = math.ceil((len(question) + len(INSTRUCTIONS)) / CHARS_PER_TOKEN) + 20 * (images - 1)
    tokens_in = text + images * table.input_image_tokens
    return round((tokens_in * prices[0] + MAX_OUTPUT_TOKENS * prices[1]) / PER_MILLION, 6)


def cost_from_usage(table: PriceTable, model: str, usage: Mapping[str, Any] | None) -> float | None:
    """The cost of a finished judgement from the Responses API's usage; None when unknown."""
    prices = _token_prices(table, model)
    if prices is None or usage is None:
        return None
    tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (tokens_in, tokens_out)):
        return None
    assert isinstance(tokens_in, int) and isinstance(tokens_out, int)
    return round((tokens_in * prices[0] + tokens_out * prices[1]) / PER_MILLION, 6)


def input_file(path: Path, shown: str) -> tuple[InputFile, str]:
    """An image as a judgement sends it, and the sha256 of the file itself (what the fingerprint uses,
    so a change in how images are scaled never makes a cached judgement look new). A png, jpeg or
    webp within MAX_JUDGE_SIDE is sent as it is; anything else is scaled to fit and sent as PNG."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    info = probe(path)
    if info.format in MIMES and max(info.width, info.height) <= MAX_JUDGE_SIDE and info.orientation in (0, 1):
        return InputFile("image", shown, data, path.name, MIMES[info.format]), sha
    from PIL import Image

    img = load(path)
    img.thumbnail((MAX_JUDGE_SIDE, MAX_JUDGE_SIDE), Image.Resampling.LANCZOS)
    return InputFile("image", shown, encode(img, "png"), f"{path.stem}.png", "image/png"), sha


def request(check: PlannedCheck, image: InputFile, references: Sequence[InputFile], *,
            timeout_s: float = 300.0) -> JudgeRequest:
    """The judgement a planned `ask` check sends about `image`."""
    spec = check.spec
    if spec.kind != "ask" or spec.model is None or check.question is None:
        raise ValueError(f"{spec.name} is not a planned ask check")
    return JudgeRequest(spec.model, check.question, image, tuple(references), default_params(), timeout_s)


def request_fingerprint(req: JudgeRequest, *, provider: str, base_url: str | None,
                        shas: Sequence[str] | None = None) -> str:
    """The judgement's fingerprint; `shas`: the files' sha256 (image first, as input_file gives them),
    else the sha256 of the bytes sent."""
    shas = list(shas) if shas is not None else [hashlib.sha256(f.data).hexdigest()
                                                 for f in (req.image, *req.references)]
    return fingerprint(provider=provider, loopback=is_loopback(base_url), model=req.model, params=req.params,
                       question=req.question, image_sha256=shas[0], reference_sha256s=shas[1:])


def result(check: PlannedCheck, verdict: Verdict, *, cost_usd: float | None, fingerprint: str) -> CheckResult:
    """The CheckResult of an answered judgement (score: None; the reason is the model's)."""
    spec = check.spec
    return CheckResult(spec.name, spec.kind, verdict.passed, None, verdict.reason, cost_usd, spec.severity,
                       fingerprint)


def judge(provider: Judge, check: PlannedCheck, image: InputFile, references: Sequence[InputFile], *,
          provider_name: str, base_url: str | None, prices: PriceTable, timeout_s: float = 300.0,
          shas: Sequence[str] | None = None) -> CheckResult:
    """Send one judgement (one attempt: pacing and retries are the caller's) and cost it."""
    req = request(check, image, references, timeout_s=timeout_s)
    fp = request_fingerprint(req, provider=provider_name, base_url=base_url, shas=shas)
    verdict = provider.judge(req)
    cost = 0.0 if verdict.passed is None and verdict.usage is None else cost_from_usage(prices, req.model,
                                                                                       verdict.usage)
    return result(check, verdict, cost_usd=cost, fingerprint=fp)


def checks_cost(prices: PriceTable, checks: Sequence[PlannedCheck], images: int, *, free: bool) -> float | None:
    """The most one try's judgements cost: every ask check on each of `images` images (free: 0).
    None when any ask model's price is unknown."""
    if free:
        return 0.0
    total = 0.0
    for check in checks:
        if check.spec.kind != "ask" or check.spec.model is None or check.question is None:
            continue
        one = estimate_cost(prices, check.spec.model, check.question, 1 + len(check.references))
        if one is None:
            return None
        total += one * images
    return round(total, 6)


def worst_case(image_cost: float | None, checks: float | None, retry: int) -> float | None:
    """What --max-cost gates on for a task with checks: (image + judgements) for each of retry + 1 tries."""
    if image_cost is None or checks is None:
        return None
    return round((image_cost + checks) * (retry + 1), 6)
