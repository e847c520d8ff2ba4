"""`ask`: a judgement through the real openai SDK over HTTP against tests/fakeapi.py; fingerprint and cost."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI
from PIL import Image

from dalle_pipe.checks import CheckResult, ask
from dalle_pipe.config.checks import CheckImage, CheckSpec, PlannedCheck
from dalle_pipe.prices import ModelPrice, PriceTable, TokenPrices
from dalle_pipe.providers.base import InputFile, RateLimited, Refused, Transient
from dalle_pipe.providers.judge import INSTRUCTIONS, MAX_OUTPUT_TOKENS, VERDICT_SCHEMA, parse_verdict
from dalle_pipe.providers.offline import OfflineProvider
from dalle_pipe.providers.openai import OpenAIProvider

KEY = "sk-test-judge-5e2a9c"
QUESTION = "Is this the same steel mug as in the reference, fully visible, on a beach?"
PRICES = PriceTable("2026-12-01", "test", "test", {
    "gpt-5.5": ModelPrice({}, "high", "auto", TokenPrices(text_input=1.25, image_input=1.25, image_output=10.0,
                                                          text_output=10.0)),
})


def png(colour: str) -> InputFile:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "PNG")
    return InputFile("image", f"{colour}.png", buf.getvalue(), f"{colour}.png", "image/png")


IMAGE, REFERENCE = png("red"), png("blue")


def planned(model: str = "gpt-5.5", question: str = QUESTION) -> PlannedCheck:
    spec = CheckSpec("same", "ask", "error", ("steps", 1, "checks", 0), question="…", model=model)
    return PlannedCheck(spec, question, (CheckImage("with", path=None),))


@pytest.fixture
def provider(api: FakeOpenAI) -> Iterator[OpenAIProvider]:
    with OpenAIProvider(base_url=api.base_url, api_key=KEY) as p:
        yield p


def judge(provider: OpenAIProvider, api: FakeOpenAI, check: PlannedCheck | None = None) -> CheckResult:
    return ask.judge(provider, check or planned(), IMAGE, [REFERENCE], provider_name="openai",
                     base_url=api.base_url, prices=PRICES)


def test_a_judgement_sends_the_image_references_and_a_structured_format(provider: OpenAIProvider,
                                                                        api: FakeOpenAI) -> None:
    seen: list[tuple[str, list[bytes]]] = []

    def rule(question: str, images: list[bytes]) -> tuple[bool, str]:
        seen.append((question, images))
        return False, "The mug's handle is cut off at the right edge."

    api.judge = rule
    result = judge(provider, api)
    body = api.last.json
    assert body is not None
    assert body == {
        "model": "gpt-5.5",
        "instructions": INSTRUCTIONS,
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": QUESTION},
            {"type": "input_image", "image_url": "data:image/png;base64," + base64.b64encode(IMAGE.data).decode(),
             "detail": "auto"},
            {"type": "input_text", "text": "Reference image 1:"},
            {"type": "input_image",
             "image_url": "data:image/png;base64," + base64.b64encode(REFERENCE.data).decode(), "detail": "auto"},
        ]}],
        "text": {"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT_SCHEMA, "strict": True}},
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "store": False,
    }
    assert api.last.path == "/v1/responses"
    assert api.last.headers["authorization"] == f"Bearer {KEY}"
    assert seen == [(QUESTION, [IMAGE.data, REFERENCE.data])]
    tokens_in = len(QUESTION) // 4 + 2 * 765
    assert result.to_json() == {
        "name": "same", "kind": "ask", "severity": "error", "passed": False, "score": None,
        "reason": "The mug's handle is cut off at the right edge.",
        "cost_usd": round((tokens_in * 1.25 + 25 * 10.0) / 1_000_000, 6),
        "fingerprint": ask.fingerprint(provider="openai", loopback=True, model="gpt-5.5",
                                       params={k: body[k] for k in ("text", "max_output_tokens", "store")},
                                       question=QUESTION, image_sha256=hashlib.sha256(IMAGE.data).hexdigest(),
                                       reference_sha256s=[hashlib.sha256(REFERENCE.data).hexdigest()]),
    }


def test_the_default_rule_passes_and_the_estimate_is_never_low(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    result = judge(provider, api)
    assert (result.passed, result.reason) == (True, "looks right")
    estimate = ask.estimate_cost(PRICES, "gpt-5.5", QUESTION, images=2)
    assert result.cost_usd is not None and estimate is not None
    assert estimate >= result.cost_usd


def test_a_model_without_token_prices_costs_unknown(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    result = judge(provider, api, planned(model="gpt-4.1-mini"))
    assert (result.passed, result.cost_usd) == (True, None)
    assert ask.estimate_cost(PRICES, "gpt-4.1-mini", QUESTION, images=2) is None


def test_a_malformed_answer_is_transient_and_maybe_charged(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    api.judge = lambda question, images: '{"pass": "yes"}'
    with pytest.raises(Transient) as info:
        judge(provider, api)
    assert info.value.maybe_charged is True
    assert info.value.message == "the judgement is unusable: the answer is not {pass: true|false, reason: text}"


def test_a_refusal_and_a_rate_limit_are_classified(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    api.script([("moderation",), ("429", 1500)])
    with pytest.raises(Refused) as refused:
        judge(provider, api)
    assert refused.value.message == "the model refused to judge: I can't help with that."
    with pytest.raises(RateLimited) as limited:
        judge(provider, api)
    assert limited.value.retry_after_s == 1.5
    assert len(api.requests) == 2


def test_offline_nothing_is_judged_and_nothing_is_paid() -> None:
    result = ask.judge(OfflineProvider(), planned(), IMAGE, [REFERENCE], provider_name="offline", base_url=None,
                       prices=PRICES)
    assert (result.passed, result.cost_usd, result.reason) == (
        None, 0.0, "not judged: the offline provider does not look at images")


def test_the_fingerprint_covers_every_field() -> None:
    base = {"provider": "openai", "loopback": False, "model": "gpt-5.5", "params": {"store": False},
            "question": QUESTION, "image_sha256": "a" * 64, "reference_sha256s": ["b" * 64]}
    first = ask.fingerprint(**base)  # type: ignore[arg-type]
    assert first == ask.fingerprint(**base)  # type: ignore[arg-type]
    changes = {"provider": "azure", "loopback": True, "model": "gpt-5", "params": {"store": True},
               "question": QUESTION + " ", "image_sha256": "c" * 64, "reference_sha256s": []}
    prints = {ask.fingerprint(**{**base, key: value}) for key, value in changes.items()}  # type: ignore[arg-type]
    assert len(prints) == len(changes) and first not in prints


@pytest.mark.parametrize(("url", "loopback"), [
    (None, False), ("https://api.openai.com/v1", False), ("http://127.0.0.1:8080/v1", True),
    ("http://localhost:1234", True), ("http://[::1]:9/v1", True), ("127.0.0.5:80", True),
    ("https://proxy.example.com/v1", False), ("http://10.0.0.1/v1", False),
])
def test_loopback_endpoints(url: str | None, loopback: bool) -> None:
    assert ask.is_loopback(url) is loopback


@pytest.mark.parametrize(("text", "expected"), [
    ('{"pass": true, "reason": "ok"}', (True, "ok")),
    ('{"pass": false, "reason": "the handle\\n is  cut off"}', (False, "the handle is cut off")),
    (json.dumps({"pass": True, "reason": "x" * 600}), (True, "x" * 497 + "...")),
])
def test_parse_verdict(text: str, expected: tuple[bool, str]) -> None:
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text", ["", "yes", "[]", '{"pass": 1, "reason": "x"}', '{"pass": true}'])
def test_parse_verdict_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_verdict(text)


def test_the_worst_case_counts_every_try_and_every_judgement() -> None:
    size = CheckSpec("size", "size", "error", ("steps", 1, "checks", 1), size=(16, 16))
    checks = [planned(), PlannedCheck(size)]
    one = ask.estimate_cost(PRICES, "gpt-5.5", QUESTION, images=2)
    assert one is not None
    assert ask.checks_cost(PRICES, checks, images=2, free=False) == round(2 * one, 6)
    assert ask.checks_cost(PRICES, checks, images=2, free=True) == 0.0
    assert ask.checks_cost(PRICES, [planned(model="gpt-4.1-mini")], images=1, free=False) is None
    assert ask.worst_case(0.05, 0.01, retry=2) == 0.18
    assert ask.worst_case(None, 0.01, retry=0) is None


def test_a_key_reflected_in_the_reason_is_scrubbed(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    api.judge = lambda question, images: (False, f"the server saw {KEY} in the request")
    result = judge(provider, api)
    assert result.passed is False
    assert KEY not in result.reason and KEY not in json.dumps(result.to_json())


def test_a_slow_judgement_stops_at_its_deadline(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    api.script([("sleep", 2)])
    with pytest.raises(Transient) as info:
        ask.judge(provider, planned(), IMAGE, [], provider_name="openai", base_url=api.base_url, prices=PRICES,
                  timeout_s=0.3)
    assert info.value.code == "timeout"


def test_input_files_are_sent_as_they_are_unless_too_large(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(IMAGE.data)
    sent, sha = ask.input_file(small, "out/small.png")
    assert (sent.data, sent.mime, sent.path, sha) == (IMAGE.data, "image/png", "out/small.png",
                                                      hashlib.sha256(IMAGE.data).hexdigest())
    wide = tmp_path / "wide.jpg"
    Image.new("RGB", (4096, 64), "green").save(wide, "JPEG")
    sent, sha = ask.input_file(wide, "wide.jpg")
    assert sha == hashlib.sha256(wide.read_bytes()).hexdigest()
    assert (sent.mime, sent.filename, Image.open(io.BytesIO(sent.data)).size) == ("image/png", "wide.png",
                                                                                 (2048, 32))


def test_the_fingerprint_uses_the_files_sha256_when_given(provider: OpenAIProvider, api: FakeOpenAI) -> None:
    shas = ["1" * 64, "2" * 64]
    result = ask.judge(provider, planned(), IMAGE, [REFERENCE], provider_name="openai", base_url=api.base_url,
                       prices=PRICES, shas=shas)
    req = ask.request(planned(), IMAGE, [REFERENCE])
    assert result.fingerprint == ask.request_fingerprint(req, provider="openai", base_url=api.base_url, shas=shas)
    assert result.fingerprint != ask.request_fingerprint(req, provider="openai", base_url=api.base_url)


def test_a_judgement_is_priced_from_the_shipped_text_models() -> None:
    from dalle_pipe.prices import load_prices

    table = load_prices()
    price = table.text_models["gpt-5-mini"]
    usage = {"input_tokens": 1000, "output_tokens": 200}
    assert ask.cost_from_usage(table, "gpt-5-mini", usage) == round(
        (1000 * price.input + 200 * price.output) / 1_000_000, 6)
    assert (ask.estimate_cost(table, "gpt-5-mini", QUESTION, images=1) or 0) > 0
