"""The provider boundary: request and response values, the error classes, the Protocol.

A provider makes exactly one attempt per call. Retries, pacing and
classification into retry/refuse/fatal are the runner's (see throttle.py),
driven by the ProviderError subclasses raised here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RequestKind = Literal["generate", "edit", "variation"]

ENDPOINTS: dict[str, str] = {
    "generate": "/v1/images/generations",
    "edit": "/v1/images/edits",
    "variation": "/v1/images/variations",
}
RESPONSES_ENDPOINT = "/v1/responses"


@dataclass(frozen=True)
class InputFile:
    """A file uploaded with a request: role is 'image' or 'mask'."""

    role: Literal["image", "mask"]
    path: str  # as shown in the manifest (relative to output_dir or project root)
    data: bytes
    filename: str
    mime: str  # image/png, image/jpeg, image/webp


@dataclass(frozen=True)
class ImageRequest:
    """Everything one paid call needs. `params` is exactly what is sent, minus prompt and files."""

    kind: RequestKind
    model: str
    prompt: str | None  # None for variations
    params: dict[str, Any]  # e.g. {"n": 1, "size": "1024x1024", "quality": "high", "output_format": "png"}
    images: tuple[InputFile, ...] = ()
    mask: InputFile | None = None
    timeout_s: float = 300.0
    api: Literal["images", "responses"] = "images"
    mainline_model: str | None = None  # the Responses API's model when api == "responses"

    @property
    def n(self) -> int:
        return int(self.params.get("n", 1) or 1)

    @property
    def endpoint(self) -> str:
        return RESPONSES_ENDPOINT if self.api == "responses" else ENDPOINTS[self.kind]


@dataclass(frozen=True)
class GeneratedImage:
    """One image as it came back: the encoded bytes and what the model made of the prompt."""

    data: bytes
    format: str  # png | jpeg | webp
    revised_prompt: str | None = None


@dataclass(frozen=True)
class ImageResponse:
    """The outcome of one successful call."""

    images: tuple[GeneratedImage, ...]
    request_id: str | None = None
    usage: dict[str, Any] | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* as received
    response_id: str | None = None  # Responses API id


class ProviderError(Exception):
    """One failed attempt. Subclasses tell the runner what to do next."""

    type = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.headers = headers or {}

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "code": self.code, "message": self.message}


class RateLimited(ProviderError):
    """429 rate_limit_exceeded: pause every worker for retry_after_s, then retry."""

    type = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class Transient(ProviderError):
    """5xx, timeout, connection reset, cut-off response: back off with jitter and retry.

    maybe_charged is True when the server may have done (and billed) the work:
    a timeout, a reset after the request was sent, or a cut-off response.
    """

    type = "transient"

    def __init__(self, message: str, *, maybe_charged: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.maybe_charged = maybe_charged


class Refused(ProviderError):
    """A moderation / content-policy refusal: recorded as a failed entry, never retried."""

    type = "refused"


class BadRequest(ProviderError):
    """Another 4xx the request itself caused: recorded as failed, not retried."""

    type = "bad_request"


class Fatal(ProviderError):
    """401/403/404 or insufficient_quota: stop starting new requests for the whole run."""

    type = "fatal"


class WaitTooLong(Fatal):
    """The server asked to wait longer than throttle.max_wait_s: the account cannot go on."""

    type = "wait_too_long"


class NoImage(ProviderError):
    """A 2xx answer without a readable image (no `data`, not a list, empty, bad base64, not an
    image). The server may have billed it; what to do next (retry once, fail the entry) is the engine's."""

    type = "no_image"
    maybe_charged = True

    def __init__(self, message: str = "the server sent no readable image", **kw: Any) -> None:
        super().__init__(message, **kw)


#: The least run of a key's characters that counts as the key when a server reflects part of it.
KEY_RUN = 8
REDACTED = "[redacted]"
_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_*\-]{3,}")


def scrub_key(text: str, key: str | None) -> str:
    """``text`` with every trace of ``key`` replaced by [redacted]: the key, any run of KEY_RUN or more
    of its consecutive characters, OpenAI's masked form (first 3 characters, asterisks, last 4,
    e.g. ``sk-****abcd``) and anything shaped like an OpenAI key (``sk-…``, masked or not)."""
    if key:
        text = _scrub_runs(text, key)
        if len(key) >= 7:
            masked = re.escape(key[:3]) + r"\*+" + re.escape(key[-4:])
            text = re.sub(masked, REDACTED, text)
    return _KEY_SHAPE.sub(f"sk-{REDACTED}", text)


def _scrub_runs(text: str, key: str) -> str:
    """Replace every span of text that is a run of >= KEY_RUN consecutive characters of key."""
    n = KEY_RUN
    if len(key) < n:
        return text.replace(key, REDACTED) if key else text
    grams = {key[i:i + n] for i in range(len(key) - n + 1)}
    if not any(g in text for g in grams):
        return text
    covered = [False] * len(text)
    for i in range(len(text) - n + 1):
        if text[i:i + n] in grams:
            for j in range(i, i + n):
                covered[j] = True
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(REDACTED)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Provider(Protocol):
    """What the runner sees of a provider."""

    name: str  # "openai" | "offline" | "azure"

    def send(self, request: ImageRequest) -> ImageResponse:
        """Make one attempt; raise a ProviderError subclass on failure."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
