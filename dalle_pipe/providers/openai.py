"""The openai provider: one attempt per call through the official SDK, errors mapped to our classes.

This is the only module that imports ``openai``, and only inside OpenAIProvider (so
commands that send nothing never pay its import time).

- Key: the ``api_key`` argument, else ``OPENAI_API_KEY``; base URL: the argument, else
  ``OPENAI_BASE_URL``, else the SDK's default (api.openai.com).
- The client is built with ``max_retries=0`` (retries are the runner's); every call
  gets ``timeout=request.timeout_s``.
- Images API: ``images.with_raw_response.generate | edit | create_variation``, sending
  exactly ``request.params`` (parameters the SDK does not know go in ``extra_body``)
  plus prompt, model and files (``(filename, bytes, mime)``; several images as a list;
  the mask). ``url`` answers are downloaded at once (they expire after an hour) with
  httpx2 and the same timeout, without the API key.
- Responses API (``request.api == "responses"``): ``responses.with_raw_response.create``
  with ``model`` = the mainline model and the ``image_generation`` tool forced with
  ``tool_choice``: the tool always names the image model (its default changes) and the
  ``action`` (generate | edit), takes the params as settings (``safety_identifier`` goes to
  the top level) and the mask as ``input_image_mask: {image_url: <PNG data URL>}``; input
  images are sent inline as data URLs. One image per call (the runner splits n > 1). A
  200 whose call has ``status: failed``, or that holds no image call, is a refusal. The
  usage is ``{"usage": <mainline usage>, "tool_usage": {"image_gen": <image usage>}}``.

Error classification (status errors keep status, code, message, request id and headers):
- 4xx with code moderation_blocked / content_policy_violation, or a 400 whose message
  mentions the "safety system": Refused.
- 429 insufficient_quota: Fatal. Other 429: RateLimited, retry_after_s from
  ``retry-after-ms`` first, then ``retry-after`` (seconds or an HTTP date), read by
  throttle.retry_after_from_headers (the one parser).
- 401, 403, 404: Fatal. 408, 409 (the SDK's own retryable 4xx): Transient, not charged.
  Other 4xx: BadRequest.
- 5xx: Transient. maybe_charged is True for 502, 504, 520 and 524 — a gateway lost or
  timed out waiting for the upstream's answer, so the image may have been made and
  billed; False for 500 (the API itself reports the request failed), 503 (overloaded,
  turned away before any work) and the rest.
- Timeouts: Transient; maybe_charged False for ConnectTimeout / PoolTimeout (nothing was
  sent), True otherwise (read/write timeouts: the server may be working on it).
- Connection errors: maybe_charged False when the request never reached the server
  (ConnectError, WriteError, UnsupportedProtocol, ProxyError, LocalProtocolError), True
  otherwise (ReadError, RemoteProtocolError: a reset or a cut-off answer).
- A 200 whose body is not JSON, or a failed ``url`` download: Transient(maybe_charged=True).
- A 200 without a readable image (no ``data``, not a list, empty, an item without an image,
  bad base64, bytes that are not an image): NoImage ("the server sent no readable image").
- An error body that is not OpenAI-shaped (HTML, plain text, JSON without error.message):
  ``HTTP <status> <reason phrase>: <a short, tag-free, scrubbed excerpt>``.

``timeout_s`` is the deadline of the whole attempt (see deadline.py), not of each read.
A plain http:// endpoint that is not loopback is refused at construction (endpoint.py).

The API key never appears in anything the server sent back: messages, request ids,
revised prompts, usage and kept headers all go through base.scrub_key (runs of 8+ of the
key's characters, its masked form, anything shaped like an OpenAI key).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http
import inspect
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..throttle import retry_after_from_headers
from .base import (
    BadRequest,
    Fatal,
    GeneratedImage,
    ImageRequest,
    ImageResponse,
    InputFile,
    JudgeRequest,
    NoImage,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
    Verdict,
    scrub_key,
)
from .endpoint import check_endpoint

if TYPE_CHECKING:
    import httpx2
    import openai

REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
FATAL_STATUSES = frozenset({401, 403, 404})
RETRYABLE_4XX = frozenset({408, 409})
CHARGED_5XX = frozenset({502, 504, 520, 524})
SDK_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
RESPONSES_TOP_LEVEL = frozenset({"safety_identifier"})  # sent with responses.create, not in the tool
EXCERPT_CHARS = 200  # of a non-OpenAI error body, in a message
_TAG = re.compile(r"<[^>]*>")
_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"))


def sniff_format(data: bytes) -> str | None:
    """png | jpeg | webp | gif from the first bytes, or None."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def http_client(oa: Any) -> Any:
    """The SDK's default client, on a transport that makes timeout_s the whole request's deadline."""
    import httpx2

    from .deadline import transport

    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)  # the SDK's defaults
    return oa.DefaultHttpxClient(transport=transport(limits=limits))


class OpenAIProvider:
    """The openai provider (Images API, or the Responses API's image_generation tool)."""

    name = "openai"

    def __init__(self, *, base_url: str | None, api_key: str | None = None) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        if not key.strip():
            raise UsageError(
                "no API key: OPENAI_API_KEY is not set",
                hint="export OPENAI_API_KEY=..., or use --offline to render locally",
            )
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        check_endpoint(url, source="--base-url" if base_url else "OPENAI_BASE_URL")
        self._setup(key.strip(), lambda oa, k: oa.OpenAI(api_key=k, base_url=url, max_retries=0,
                                                          http_client=http_client(oa)))

    def _setup(self, key: str, make_client: Callable[[Any, str], openai.OpenAI]) -> None:
        """Import the SDK (lazily: it costs a noticeable import time) and build the client."""
        self._key = key
        import openai

        self._openai = openai
        try:
            self._client: openai.OpenAI = make_client(openai, key)
        except (openai.OpenAIError, ValueError) as exc:
            raise UsageError(f"cannot set up the OpenAI client: {self._scrub(str(exc))}") from None
        self._download_client: httpx2.Client | None = None
        self._lock = threading.Lock()
        self._known: dict[str, frozenset[str]] = {}

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    # -- the Provider interface ----------------------------------------------------------------

    def send(self, request: ImageRequest) -> ImageResponse:
        from .deadline import deadline

        with deadline(request.timeout_s):  # the whole attempt: request, answer, url download
            if request.api == "responses":
                return self._send_responses(request)
            return self._send_images(request)

    def _send_images(self, request: ImageRequest) -> ImageResponse:
        raw = self._call(lambda: self._images_call(request))
        parsed = self._parse(raw)
        if not isinstance(parsed, self._openai.types.ImagesResponse):
            raise self._no_image(raw)
        items = parsed.data
        if not isinstance(items, list) or not items:
            raise self._no_image(raw)
        images: list[GeneratedImage] = []
        for item in items:
            if not isinstance(item, self._openai.types.Image):
                raise self._no_image(raw)
            b64, url = item.b64_json, item.url
            if isinstance(b64, str) and b64:
                data = self._b64(b64, raw)
            elif isinstance(url, str) and url:
                data = self._download(url, request.timeout_s, raw)
            else:
                raise self._no_image(raw)
            fmt = sniff_format(data)
            if fmt is None:
                raise self._no_image(raw)
            revised = item.revised_prompt if isinstance(item.revised_prompt, str) else None
            images.append(GeneratedImage(data=data, format=fmt, revised_prompt=self._scrub_opt(revised)))
        usage = parsed.usage.model_dump(exclude_none=True) if parsed.usage is not None else None
        return ImageResponse(
            images=tuple(images),
            request_id=self._scrub_opt(raw.request_id),
            usage=self._scrub_value(usage),
            rate_headers=self._rate_headers(raw.headers),
        )

    def close(self) -> None:
        with self._lock:
            if self._download_client is not None:
                self._download_client.close()
                self._download_client = None
        self._client.close()

    def __enter__(self) -> OpenAIProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------------

    def _split_params(self, method: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """kwargs for fn: the parameters the SDK knows as keywords, the rest in extra_body."""
        known = self._known.get(method)
        if known is None:
            known = frozenset(inspect.signature(fn).parameters) - SDK_OPTIONS
            self._known[method] = known
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in params.items():
            (kwargs if k in known else extra)[k] = v
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    @staticmethod
    def _file(f: InputFile) -> tuple[str, bytes, str]:
        return (f.filename, f.data, f.mime)

    def _images_call(self, request: ImageRequest) -> Any:
        raw_api = self._client.images.with_raw_response
        params = {k: v for k, v in request.params.items() if k not in ("model", "prompt", "image", "mask")}
        if request.kind == "generate":
            fn: Callable[..., Any] = raw_api.generate
            kwargs = self._split_params("generate", self._client.images.generate, params)
            kwargs["prompt"] = request.prompt or ""
        elif request.kind == "edit":
            fn = raw_api.edit
            kwargs = self._split_params("edit", self._client.images.edit, params)
            kwargs["prompt"] = request.prompt or ""
            files = [self._file(f) for f in request.images]
            kwargs["image"] = files[0] if len(files) == 1 else files
            if request.mask is not None:
                kwargs["mask"] = self._file(request.mask)
            if request.markup is not None:  # api helper (issue 13): markup edits
                kwargs["markup"] = self._file(request.markup)
        else:
            # create_variation is marked deprecated in the SDK (the endpoint is retired on
            # api.openai.com); OpenAI-compatible servers may still serve it. Keep the
            # DeprecationWarning it emits at every call out of the user's output.
            warnings.filterwarnings(
                "ignore",
                message="deprecated",
                category=DeprecationWarning,
                module=r"openai\._legacy_response",
            )
            fn = raw_api.create_variation
            kwargs = self._split_params("variation", self._client.images.create_variation, params)
            kwargs["image"] = self._file(request.images[0])
        kwargs["model"] = request.model
        kwargs["timeout"] = request.timeout_s
        return fn(**kwargs)

    def _send_responses(self, request: ImageRequest) -> ImageResponse:
        """One Responses API call whose forced image_generation tool makes one image."""
        if request.kind == "variation":
            raise BadRequest("the Responses API has no variations; use an edit", code="unsupported")
        if not request.mainline_model:
            raise BadRequest(
                "the Responses API needs a mainline model (provider.model)", code="missing_model"
            )
        if request.n != 1:
            raise BadRequest("the Responses API makes one image per call (n must be 1)", code="invalid_n")
        raw = self._call(lambda: self._responses_call(request))
        parsed = self._parse(raw)
        if not isinstance(parsed, self._openai.types.responses.Response):
            raise self._transient_charged(f"unexpected response body ({type(parsed).__name__})", raw)
        from openai.types.responses.response_output_item import ImageGenerationCall

        output = parsed.output if isinstance(parsed.output, list) else []
        calls = [o for o in output if isinstance(o, ImageGenerationCall)]
        request_id = self._scrub_opt(raw.request_id)
        headers = self._error_headers(raw.headers)
        made = [c for c in calls if c.status != "failed" and c.result]
        if not made:
            failed = next((c for c in calls if c.status == "failed" or not c.result), None)
            if failed is None:
                text = self._scrub((parsed.output_text or "").strip())[:500]
                message, code = f"the model made no image{': ' + text if text else ''}", "no_image"
            else:
                err = failed.error
                message = err.message if err is not None else f"image generation call {failed.status}"
                code = (err.code if err is not None else None) or "image_generation_failed"
            # HTTP 200 with a failed call (or none): a refusal, never retried.
            raise Refused(self._scrub(message), status=200, code=code, request_id=request_id, headers=headers)
        images: list[GeneratedImage] = []
        for c in made:
            assert c.result is not None
            data = self._b64(c.result, raw)
            fmt = sniff_format(data)
            if fmt is None:
                raise self._no_image(raw)
            revised = c.revised_prompt if isinstance(c.revised_prompt, str) else None
            images.append(GeneratedImage(data=data, format=fmt, revised_prompt=self._scrub_opt(revised)))
        # Both models' usage, under the API's own names: the mainline model's `usage`, and the
        # image model's `tool_usage.image_gen` (what prices.cost_from_usage prices).
        usage: dict[str, Any] = {}
        if parsed.usage is not None:
            usage["usage"] = parsed.usage.model_dump(exclude_none=True)
        tool_usage = getattr(parsed, "tool_usage", None)
        image_gen = getattr(tool_usage, "image_gen", None) if tool_usage is not None else None
        if image_gen is not None:
            usage["tool_usage"] = {"image_gen": image_gen.model_dump(exclude_none=True)}
        return ImageResponse(
            images=tuple(images),
            request_id=request_id,
            usage=self._scrub_value(usage) or None,
            rate_headers=self._rate_headers(raw.headers),
            response_id=self._scrub_opt(parsed.id),
        )

    def _responses_call(self, request: ImageRequest) -> Any:
        """responses.create with the image_generation tool, the image model always named (its default
        changes), the action stated, the mask as input_image_mask and the input images inline."""
        tool: dict[str, Any] = {
            "type": "image_generation",
            "model": request.model,
            "action": "edit" if request.kind == "edit" else "generate",
        }
        top: dict[str, Any] = {}
        for k, v in request.params.items():
            if k in RESPONSES_TOP_LEVEL:
                top[k] = v
            elif k not in ("n", "type", "model", "action", "input_image_mask"):
                tool[k] = v
        if request.mask is not None:
            tool["input_image_mask"] = {"image_url": self._data_url(request.mask)}
        content: list[dict[str, Any]] = [{"type": "input_text", "text": request.prompt or ""}]
        content += [
            {"type": "input_image", "image_url": self._data_url(f), "detail": "auto"} for f in request.images
        ]
        create: Callable[..., Any] = self._client.responses.with_raw_response.create
        return create(
            model=request.mainline_model,
            input=[{"role": "user", "content": content}],
            tools=[tool],
            tool_choice={"type": "image_generation"},
            timeout=request.timeout_s,
            **top,
        )

    @staticmethod
    def _data_url(f: InputFile) -> str:
        return f"data:{f.mime};base64,{base64.b64encode(f.data).decode('ascii')}"

    # -- responses and errors ---------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run one SDK call; turn every SDK / transport failure into a ProviderError."""
        oa = self._openai
        try:
            return fn()
        except oa.APIStatusError as exc:
            raise self._from_status(exc) from None
        except oa.APITimeoutError as exc:
            charged = not self._is_cause(exc, ("ConnectTimeout", "PoolTimeout"))
            raise Transient(
                f"request timed out ({self._cause_name(exc)})", maybe_charged=charged, code="timeout"
            ) from None
        except oa.APIConnectionError as exc:
            before = self._is_cause(
                exc, ("ConnectError", "WriteError", "UnsupportedProtocol", "ProxyError", "LocalProtocolError")
            )
            detail = self._scrub(str(exc.__cause__ or exc))
            raise Transient(
                f"connection error ({self._cause_name(exc)}: {detail})",
                maybe_charged=not before,
                code="connection_error",
            ) from None
        except oa.APIResponseValidationError as exc:
            raise Transient(
                f"the response does not have the expected shape: {self._scrub(exc.message)}",
                maybe_charged=True,
                status=exc.status_code,
                code="invalid_response",
                request_id=self._scrub_opt(exc.response.headers.get("x-request-id")),
            ) from None

    def _parse(self, raw: Any) -> Any:
        try:
            return raw.parse()
        except self._openai.APIResponseValidationError as exc:
            message = f"the response does not have the expected shape: {exc.message}"
            raise self._transient_charged(message, raw) from None
        except ValueError as exc:  # json.JSONDecodeError, pydantic errors
            message = f"the response is not valid JSON ({type(exc).__name__})"
            raise self._transient_charged(message, raw) from None

    def _b64(self, text: str, raw: Any) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self._no_image(raw) from None

    def _download(self, url: str, timeout_s: float, raw: Any) -> bytes:
        """Fetch a `url` answer now (it expires after an hour). The API key is not sent."""
        import httpx2

        shown = self._scrub(url.split("?", 1)[0])  # a signed URL's query is a credential: never shown
        with self._lock:
            if self._download_client is None:
                from .deadline import transport

                self._download_client = httpx2.Client(follow_redirects=True, transport=transport())
            client = self._download_client
        try:
            resp = client.get(url, timeout=timeout_s)
        except httpx2.HTTPError as exc:
            raise self._transient_charged(f"downloading {shown} failed ({type(exc).__name__})", raw) from None
        if resp.status_code != 200:
            raise self._transient_charged(f"downloading {shown} failed: HTTP {resp.status_code}", raw)
        return resp.content

    def _no_image(self, raw: Any) -> NoImage:
        """A 2xx answer without a readable image."""
        return NoImage(
            status=getattr(raw, "status_code", None),
            code="no_image",
            request_id=self._scrub_opt(getattr(raw, "request_id", None)),
            headers=self._error_headers(getattr(raw, "headers", {})),
        )

    def _transient_charged(self, message: str, raw: Any) -> Transient:
        return Transient(
            self._scrub(message),
            maybe_charged=True,
            status=getattr(raw, "status_code", None),
            code="invalid_response",
            request_id=self._scrub_opt(getattr(raw, "request_id", None)),
            headers=self._error_headers(getattr(raw, "headers", {})),
        )

    def _from_status(self, exc: openai.APIStatusError) -> ProviderError:
        status = exc.status_code
        body = exc.body
        message = ""
        err_type: str | None = None
        text = ""
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
            message = self._scrub(body["message"].strip())[:2000]
            err_type = str(body.get("type")) if body.get("type") is not None else None
        else:  # not OpenAI-shaped (an HTML page from a proxy, plain text, other JSON): say what came
            message = self._excerpt(exc.response)
            text = f"HTTP {status} {message}"
        code = exc.code if isinstance(exc.code, str) else None
        code = self._scrub(code)[:100] if code else None
        headers = self._error_headers(exc.response.headers)
        kw: dict[str, Any] = {
            "status": status,
            "code": code,
            "request_id": self._scrub_opt(exc.request_id),
            "headers": headers,
        }
        text = text or f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        if 400 <= status < 500 and (
            code in REFUSAL_CODES or (status == 400 and "safety system" in message.lower())
        ):
            return Refused(text, **kw)
        if status == 429:
            if code == "insufficient_quota" or err_type == "insufficient_quota":
                return Fatal(text, **kw)
            return RateLimited(text, retry_after_s=retry_after_from_headers(headers), **kw)
        if status in FATAL_STATUSES:
            return Fatal(text, **kw)
        if status in RETRYABLE_4XX:
            return Transient(text, maybe_charged=False, **kw)
        if 400 <= status < 500:
            return BadRequest(text, **kw)
        return Transient(text, maybe_charged=status in CHARGED_5XX, **kw)

    @staticmethod
    def _cause_chain(exc: BaseException) -> list[BaseException]:
        chain: list[BaseException] = []
        cur: BaseException | None = exc.__cause__ or exc.__context__
        while cur is not None and cur not in chain and len(chain) < 8:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        return chain

    def _is_cause(self, exc: BaseException, names: tuple[str, ...]) -> bool:
        """Is the first transport exception under exc (by class name, any of its bases) one of names?"""
        chain = self._cause_chain(exc)
        if not chain:
            return False
        return any(cls.__name__ in names for cls in type(chain[0]).__mro__)

    def _cause_name(self, exc: BaseException) -> str:
        chain = self._cause_chain(exc)
        return type(chain[0]).__name__ if chain else type(exc).__name__

    def _rate_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k.lower(): self._scrub(v) for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}

    def _excerpt(self, response: Any) -> str:
        """The reason phrase and a short, scrubbed, tag-free excerpt of an error body."""
        status = int(getattr(response, "status_code", 0) or 0)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = str(getattr(response, "reason_phrase", "") or "")
        try:
            text = response.text
        except Exception:
            text = ""
        if text.lstrip().startswith(("{", "[")):  # JSON on one line, as it came
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(text), ensure_ascii=False)
        text = " ".join(_TAG.sub(" ", text).split())
        text = self._scrub(text)
        if len(text) > EXCERPT_CHARS:
            text = text[: EXCERPT_CHARS - 1] + "…"
        return f"{phrase}: {text}" if text else f"{phrase} (empty body)" if phrase else "(empty body)"

    def _error_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            k.lower(): self._scrub(v)
            for k, v in headers.items()
            if k.lower() not in ("set-cookie", "authorization")
        }

    def _scrub(self, text: str) -> str:
        """The one scrubber (base.scrub_key) with this provider's key."""
        return scrub_key(text, self._key)

    def _scrub_opt(self, text: str | None) -> str | None:
        return None if text is None else self._scrub(str(text))

    def _scrub_value(self, value: Any) -> Any:
        """Every string inside a JSON-like value (usage) scrubbed."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, dict):
            return {self._scrub(str(k)): self._scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub_value(v) for v in value]
        return value

    # -- judgements (checks: ask) -----------------------------------------------------------------

    def judge(self, request: JudgeRequest) -> Verdict:
        """One Responses API call answering {pass, reason} about an image (see providers/judge.py).

        A refusal (a refusal content part, or a 200 with no answer text) is Refused; an answer cut
        off at max_output_tokens is BadRequest (it was billed; the same call would stop again);
        an answer that is not the verdict JSON is Transient(maybe_charged=True).
        """
        from openai.types.responses import Response

        from .deadline import deadline
        from .judge import parse_verdict, request_body

        body = request_body(request)
        create: Callable[..., Any] = self._client.responses.with_raw_response.create
        with deadline(request.timeout_s):  # the whole attempt, as for images
            raw = self._call(lambda: create(**body, timeout=request.timeout_s))
            parsed = self._parse(raw)
        if not isinstance(parsed, Response):
            raise self._transient_charged(f"unexpected response body ({type(parsed).__name__})", raw)
        kw: dict[str, Any] = {"status": 200, "request_id": raw.request_id,
                              "headers": self._error_headers(raw.headers)}
        refusal = next((c.refusal for o in parsed.output if o.type == "message"
                        for c in o.content if c.type == "refusal"), None)
        if refusal is not None:
            raise Refused(self._scrub(f"the model refused to judge: {refusal}"[:500]), code="refusal", **kw)
        if parsed.status == "incomplete":
            why = parsed.incomplete_details.reason if parsed.incomplete_details else None
            raise BadRequest(f"the judgement stopped before its answer ({why or 'incomplete'})",
                             code="incomplete", **kw)
        try:
            passed, reason = parse_verdict(parsed.output_text)
        except ValueError as exc:
            raise self._transient_charged(f"the judgement is unusable: {exc}", raw) from None
        usage = self._scrub_value(parsed.usage.model_dump(exclude_none=True)) if parsed.usage is not None else None
        return Verdict(passed, self._scrub(reason), request_id=raw.request_id, usage=usage, response_id=parsed.id)
