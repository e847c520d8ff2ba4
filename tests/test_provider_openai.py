"""The openai provider, driven through the real SDK over HTTP against FakeOpenAI (no SDK monkeypatching)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from dalle_pipe.errors import UsageError
from dalle_pipe.providers.base import (
    BadRequest,
    Fatal,
    ImageRequest,
    InputFile,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
)
from dalle_pipe.providers.openai import OpenAIProvider, sniff_format
from dalle_pipe.throttle import retry_after_from_headers as parse_retry_after

try:
    from tests.fakeapi import FakeOpenAI, http_date
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fakeapi import FakeOpenAI, http_date  # type: ignore[no-redef]

KEY = "sk-test-0123456789abcdefSECRET"




@pytest.fixture
def provider(api: FakeOpenAI) -> Iterator[OpenAIProvider]:
    p = OpenAIProvider(base_url=api.base_url, api_key=KEY)
    yield p
    p.close()


def png(
    size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = (10, 200, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


def infile(data: bytes, name: str = "in.png", role: str = "image") -> InputFile:
    return InputFile(role=role, path=f"inputs/{name}", data=data, filename=name, mime="image/png")  # type: ignore[arg-type]


def gen(
    model: str = "gpt-image-2", prompt: str = "a red fox", timeout_s: float = 10.0, **params: Any
) -> ImageRequest:
    return ImageRequest(kind="generate", model=model, prompt=prompt, params=params, timeout_s=timeout_s)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# -- laziness ---------------------------------------------------------------------------------------


def test_import_does_not_import_the_sdk() -> None:
    code = "import sys, dalle_pipe.providers.openai; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- successful calls ------------------------------------------------------------------------------


def test_generate_returns_images_usage_request_id_and_rate_headers(
    api: FakeOpenAI, provider: OpenAIProvider
) -> None:
    params = {"n": 2, "size": "1536x1024", "quality": "high", "output_format": "png"}
    resp = provider.send(gen(**params))
    assert len(resp.images) == 2
    for image in resp.images:
        assert image.format == "png"
        assert image.revised_prompt is None
        assert decode(image.data).size == (1536, 1024)
    assert resp.request_id is not None and resp.request_id.startswith("req_")
    assert resp.usage is not None and resp.usage["output_tokens"] == 544
    assert resp.usage["input_tokens_details"]["text_tokens"] >= 1
    assert resp.rate_headers == {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
    }
    rec = api.last
    assert rec.path == "/v1/images/generations"
    # exactly the params, plus model and prompt; no response_format for GPT image models
    assert rec.json == {"model": "gpt-image-2", "prompt": "a red fox", **params}
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["content-type"].startswith("application/json")


def test_no_retries_inside_the_sdk(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    api.script([("500",), ("ok",)])
    with pytest.raises(Transient):
        provider.send(gen())
    assert len(api.image_requests) == 1  # max_retries=0: the runner decides about retries
    assert api.pending == 1


def test_unknown_params_travel_in_the_body(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    provider.send(gen(size="1024x1024", brand_new_option="yes"))
    assert api.last.json == {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "size": "1024x1024",
        "brand_new_option": "yes",
    }


def test_output_format_follows_the_bytes(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    resp = provider.send(gen(output_format="jpeg", output_compression=70, size="1024x1024"))
    assert resp.images[0].format == "jpeg"
    assert resp.images[0].data[:3] == b"\xff\xd8\xff"
    resp = provider.send(gen(output_format="webp", size="1024x1024"))
    assert resp.images[0].format == "webp"


def test_dalle3_revised_prompt(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    resp = provider.send(
        gen(model="dall-e-3", size="1792x1024", quality="hd", style="vivid", response_format="b64_json")
    )
    assert resp.images[0].revised_prompt == "A detailed rendering of: a red fox"
    assert resp.usage is None
    assert api.last.json is not None and api.last.json["response_format"] == "b64_json"


def test_edit_sends_multipart_with_exact_file_bytes(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    first, second = png((64, 48), (1, 2, 3)), png((64, 48), (200, 100, 50))
    mask = png((64, 48), (255, 255, 255, 0), mode="RGBA")
    req = ImageRequest(
        kind="edit",
        model="gpt-image-1.5",
        prompt="same product, on a beach",
        params={"n": 2, "size": "auto", "input_fidelity": "high", "quality": "medium"},
        images=(infile(first, "a.png"), infile(second, "b.png")),
        mask=infile(mask, "mask.png", role="mask"),
    )
    resp = provider.send(req)
    assert len(resp.images) == 2
    assert decode(resp.images[0].data).size == (64, 48)  # "auto" → the first image's size
    rec = api.last
    assert rec.path == "/v1/images/edits"
    assert rec.headers["content-type"].startswith("multipart/form-data")
    assert [f.data for f in rec.images] == [first, second]
    assert [f.filename for f in rec.images] == ["a.png", "b.png"]
    assert [f.content_type for f in rec.images] == ["image/png", "image/png"]
    assert rec.mask is not None and rec.mask.data == mask and rec.mask.filename == "mask.png"
    assert rec.params == {
        "model": "gpt-image-1.5",
        "prompt": "same product, on a beach",
        "n": "2",
        "size": "auto",
        "input_fidelity": "high",
        "quality": "medium",
    }


def test_edit_with_one_image(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    data = png((32, 32))
    req = ImageRequest(kind="edit", model="gpt-image-2", prompt="x", params={}, images=(infile(data),))
    provider.send(req)
    assert [(f.name, f.data) for f in api.last.files] == [("image", data)]
    assert api.last.mask is None


def test_variation(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    data = png((256, 256))
    req = ImageRequest(
        kind="variation",
        model="dall-e-2",
        prompt=None,
        params={"n": 2, "size": "256x256", "response_format": "b64_json"},
        images=(infile(data),),
    )
    resp = provider.send(req)  # the SDK's DeprecationWarning must not surface (warnings are errors here)
    assert len(resp.images) == 2 and decode(resp.images[0].data).size == (256, 256)
    rec = api.last
    assert rec.path == "/v1/images/variations"
    assert rec.images[0].data == data
    assert rec.params == {"model": "dall-e-2", "n": "2", "size": "256x256", "response_format": "b64_json"}


def test_url_answers_are_downloaded_at_once_without_the_key(
    api: FakeOpenAI, provider: OpenAIProvider
) -> None:
    api.script([("url",)])
    resp = provider.send(gen(model="dall-e-3", size="1024x1024", response_format="url"))
    assert decode(resp.images[0].data).size == (1024, 1024)
    downloads = [r for r in api.requests if r.method == "GET"]
    assert len(downloads) == 1 and downloads[0].path.startswith("/files/")
    assert "authorization" not in downloads[0].headers


def test_key_and_base_url_from_the_environment(api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    with OpenAIProvider(base_url=None) as p:
        p.send(gen())
    assert api.last.headers["authorization"] == f"Bearer {KEY}"


def test_missing_key_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-should-not-be-used")
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        OpenAIProvider(base_url="http://127.0.0.1:9/v1")


# -- the Responses API -----------------------------------------------------------------------------


def test_responses_api_generate(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    req = ImageRequest(
        kind="generate",
        model="gpt-image-2",
        prompt="a lighthouse",
        params={"size": "1024x1536", "quality": "high"},
        api="responses",
        mainline_model="gpt-5.5",
    )
    resp = provider.send(req)
    assert decode(resp.images[0].data).size == (1024, 1536)
    assert resp.images[0].revised_prompt == "A detailed rendering of: a lighthouse"
    assert resp.response_id is not None and resp.response_id.startswith("resp_")
    assert resp.usage is not None
    assert resp.usage["tool_usage"]["image_gen"]["output_tokens"] == 272
    assert resp.usage["usage"]["total_tokens"] == 60  # the mainline model's own
    body = api.last.json
    assert body is not None and api.last.path == "/v1/responses"
    assert body["model"] == "gpt-5.5"
    assert body["tools"] == [
        {"type": "image_generation", "model": "gpt-image-2", "action": "generate", "size": "1024x1536",
         "quality": "high"}
    ]
    assert body["tool_choice"] == {"type": "image_generation"}


def test_responses_api_edit_sends_images_and_mask_inline(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    image, mask = png((32, 32)), png((32, 32), (255, 255, 255, 0), mode="RGBA")
    req = ImageRequest(
        kind="edit",
        model="gpt-image-2",
        prompt="make it night",
        params={},
        images=(infile(image),),
        mask=infile(mask, "m.png", role="mask"),
        api="responses",
        mainline_model="gpt-5.5",
    )
    provider.send(req)
    body = api.last.json
    assert body is not None
    content = body["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "make it night"}
    assert content[1]["type"] == "input_image" and content[1]["image_url"].startswith(
        "data:image/png;base64,"
    )
    assert body["tools"][0]["input_image_mask"]["image_url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("behaviour,code", [("moderation", "moderation_blocked"), ("noimage", "no_image")])
def test_responses_api_refusals(api: FakeOpenAI, provider: OpenAIProvider, behaviour: str, code: str) -> None:
    api.script([(behaviour,)])
    req = ImageRequest(
        kind="generate", model="gpt-image-2", prompt="x", params={}, api="responses", mainline_model="gpt-5.5"
    )
    with pytest.raises(Refused) as info:
        provider.send(req)
    assert info.value.code == code and info.value.status == 200


# -- error classification ------------------------------------------------------------------------------


FAULTS: list[tuple[tuple[Any, ...], type[ProviderError], dict[str, Any]]] = [
    (("429", 250), RateLimited, {"status": 429, "code": "rate_limit_exceeded", "retry_after_s": 0.25}),
    (("429", None, "2"), RateLimited, {"status": 429, "retry_after_s": 2.0}),
    (("quota",), Fatal, {"status": 429, "code": "insufficient_quota"}),
    (("moderation",), Refused, {"status": 400, "code": "moderation_blocked"}),
    (("content_policy",), Refused, {"status": 400, "code": "content_policy_violation"}),
    (("safety",), Refused, {"status": 400, "code": None}),
    (("401",), Fatal, {"status": 401, "code": "invalid_api_key"}),
    (("403",), Fatal, {"status": 403}),
    (("404",), Fatal, {"status": 404}),
    (("400",), BadRequest, {"status": 400}),
    (("422",), BadRequest, {"status": 422}),
    (("408",), Transient, {"status": 408, "maybe_charged": False}),
    (("500",), Transient, {"status": 500, "maybe_charged": False}),
    (("502",), Transient, {"status": 502, "maybe_charged": True}),
    (("503",), Transient, {"status": 503, "maybe_charged": False}),
    (("504",), Transient, {"status": 504, "maybe_charged": True}),
    (("reset",), Transient, {"maybe_charged": True}),
    (("cutoff",), Transient, {"maybe_charged": True}),
    (("notjson",), Transient, {"maybe_charged": True}),
    (("url_gone",), Transient, {"maybe_charged": True}),
]


@pytest.mark.parametrize(
    "behaviour,cls,attrs", FAULTS, ids=[str(f[0][0]) + str(i) for i, f in enumerate(FAULTS)]
)
def test_faults_map_to_error_classes(
    api: FakeOpenAI,
    provider: OpenAIProvider,
    behaviour: tuple[Any, ...],
    cls: type[ProviderError],
    attrs: dict[str, Any],
) -> None:
    api.script([behaviour])
    with pytest.raises(ProviderError) as info:
        provider.send(gen(model="dall-e-3", size="1024x1024"))
    err = info.value
    assert type(err) is cls, (type(err), str(err))
    for name, value in attrs.items():
        assert getattr(err, name) == value, (name, getattr(err, name), str(err))
    if err.status is not None and behaviour[0] not in ("reset", "cutoff"):
        assert err.request_id is not None and err.request_id.startswith("req_")
    # the key never shows, not even the masked form the 401 message carries
    for text in (str(err), repr(err), err.message, repr(err.headers), repr(err.as_dict())):
        assert KEY not in text
        assert "sk-tes" not in text and "SECRET" not in text


def test_rate_limited_keeps_the_rate_headers(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    api.script([("429", 1500)])
    with pytest.raises(RateLimited) as info:
        provider.send(gen())
    assert info.value.retry_after_s == 1.5
    assert info.value.headers["retry-after-ms"] == "1500"
    assert info.value.headers["retry-after"] == "2"
    assert info.value.headers["x-ratelimit-limit-requests"] == "500"


def test_retry_after_http_date(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    api.script([("429", None, http_date(30))])
    with pytest.raises(RateLimited) as info:
        provider.send(gen())
    assert info.value.retry_after_s is not None and 25 <= info.value.retry_after_s <= 31


def test_timeout_is_transient_and_maybe_charged(api: FakeOpenAI, provider: OpenAIProvider) -> None:
    api.script([("sleep", 3)])
    with pytest.raises(Transient) as info:
        provider.send(gen(timeout_s=0.5))
    assert info.value.maybe_charged is True and info.value.code == "timeout"


def test_connect_error_is_not_charged() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY) as p,
        pytest.raises(Transient) as info,
    ):
        p.send(gen(timeout_s=5))
    assert info.value.maybe_charged is False
    assert "ConnectError" in str(info.value) and KEY not in str(info.value)


def test_wrong_key_is_fatal_and_redacted() -> None:
    with (
        FakeOpenAI(api_key="sk-the-right-one") as api,
        OpenAIProvider(base_url=api.base_url, api_key=KEY) as p,
        pytest.raises(Fatal) as info,
    ):
        p.send(gen())
    assert info.value.status == 401 and "Incorrect API key" in str(info.value)
    assert KEY not in str(info.value) and "SECRET" not in str(info.value)


# -- helpers ---------------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_sniff_format() -> None:
    assert sniff_format(png()) == "png"
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_format(b"nothing") is None
