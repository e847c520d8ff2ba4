"""FakeOpenAI itself: wire format, multipart parser, and the rate-limit mode the benchmark relies on."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

try:
    from tests.fakeapi import FakeOpenAI, TokenBucket, format_reset, parse_multipart
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fakeapi import FakeOpenAI, TokenBucket, format_reset, parse_multipart  # type: ignore[no-redef]


def post(api: FakeOpenAI, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    req = urllib.request.Request(
        f"{api.base_url}/images/generations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def test_multipart_parser_keeps_bytes_exactly() -> None:
    payload = b"\r\n--not-the-boundary\r\n\x00\xff\r\n"
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="prompt"\r\n\r\n'
        b"hello\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="image[]"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n"
        b"--XyZ--\r\n"
    )
    fields, files = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert fields == {"prompt": ["hello"]}
    assert len(files) == 1 and files[0].data == payload and files[0].filename == "a.png"
    assert files[0].name == "image[]" and files[0].content_type == "image/png"


def test_missing_bearer_is_401() -> None:
    with FakeOpenAI() as api:
        req = urllib.request.Request(
            f"{api.base_url}/images/generations", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        with info.value as err:
            assert err.code == 401


def test_gpt_models_reject_response_format() -> None:
    with FakeOpenAI() as api:
        status, _, body = post(api, {"model": "gpt-image-2", "prompt": "x", "response_format": "url"})
        assert status == 400 and "response_format" in body["error"]["message"]


def test_unknown_behaviour_is_loud() -> None:
    with FakeOpenAI() as api, pytest.raises(ValueError, match="unknown behaviour"):
        api.script([("tea",)])


def test_format_reset() -> None:
    assert format_reset(0.12) == "120ms"
    assert format_reset(1) == "1s"
    assert format_reset(360) == "6m0s"
    assert format_reset(3723) == "1h2m3s"


def test_token_bucket_debt_keeps_the_long_run_rate() -> None:
    b = TokenBucket(60)  # 1/s, holds 1
    assert b.capacity == 1.0
    now = b.stamp
    b.refill(now)
    assert b.wait_for(1) == 0
    b.take(1)
    assert b.wait_for(1) == pytest.approx(1.0)
    b.refill(now + 0.25)
    assert b.wait_for(1) == pytest.approx(0.75)
    # a request bigger than the bucket is admitted from a full bucket, then paid back
    b.refill(now + 10)
    assert b.tokens == 1.0
    b.take(4)
    assert b.wait_for(4) == pytest.approx(4.0)


def test_rate_limit_mode_holds_the_rate_and_retry_after_is_exact() -> None:
    rate = 600  # 10 requests/s, bucket of 10
    with FakeOpenAI(rate_per_min=rate) as api:
        statuses: list[int] = []
        lock = threading.Lock()
        start = time.monotonic()

        def hammer() -> None:
            while time.monotonic() - start < 1.0:
                status, _, _ = post(api, {"model": "gpt-image-2", "prompt": "x", "size": "64x64"})
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        served = [t for t, _ in api.served]
        assert statuses.count(429) > 0 and api.rate_limited == statuses.count(429)
        # never more than the bucket plus what the rate refilled
        assert len(served) <= 10 + rate / 60 * elapsed + 1
        assert len(served) >= rate / 60 * 1.0  # and not (much) less: the limiter is not too strict

        # drain the bucket, then the advertised wait is enough — and not much more than needed
        while True:
            status, headers, body = post(api, {"model": "gpt-image-2", "prompt": "x", "size": "64x64"})
            if status == 429:
                break
        assert body["error"]["code"] == "rate_limit_exceeded"
        wait_ms = int(headers["retry-after-ms"])
        assert 1 <= wait_ms <= 100
        assert headers["x-ratelimit-limit-requests"] == "600"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        time.sleep(wait_ms / 1000)
        status, headers, _ = post(api, {"model": "gpt-image-2", "prompt": "x", "size": "64x64"})
        assert status == 200


def test_images_per_minute_counts_n() -> None:
    with FakeOpenAI(images_per_min=120) as api:  # 2 images/s, bucket of 2
        status, _, body = post(api, {"model": "gpt-image-2", "prompt": "x", "size": "64x64", "n": 2})
        assert status == 200 and len(body["data"]) == 2
        status, headers, _ = post(api, {"model": "gpt-image-2", "prompt": "x", "size": "64x64", "n": 1})
        assert status == 429
        assert 300 <= int(headers["retry-after-ms"]) <= 500
        assert "x-ratelimit-limit-images" in headers
    assert api.images_served == 2
