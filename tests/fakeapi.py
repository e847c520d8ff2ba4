"""FakeOpenAI: a small local server speaking the OpenAI Images API wire format, for tests and benchmarks.

    with FakeOpenAI() as api:                      # listens on 127.0.0.1:<free port>
        client_base_url = api.base_url             # "http://127.0.0.1:PORT/v1"
        api.script([("429", 250), ("500",), ("ok",)])   # behaviours for the next requests
        ...
        api.requests[-1].json / .fields / .images / .mask / .headers

Routes: POST /v1/images/generations (JSON), POST /v1/images/edits and
/v1/images/variations (multipart/form-data, parsed here), POST /v1/responses (the
image_generation tool: one image_generation_call per request, with usage and
tool_usage.image_gen; `api.revise = lambda prompt, i: ...` sets its revised prompt; the
answer is kept in RecordedRequest.response), Azure OpenAI's POST
/openai/deployments/<deployment>/images/generations|edits (the `api-key` header instead
of a bearer token, and an `api-version` query, else 404; RecordedRequest.query), GET
/files/<token> (the download route `url` answers point at). Every request is recorded (RecordedRequest), and
answered with x-request-id and x-ratelimit-{limit,remaining,reset}-requests headers.
Images are solid-colour pictures of the requested size and format (PNG by default),
the colour derived from sha256(kind, model, prompt, index): deterministic. GPT image
models get usage / output_format / size / quality / background in the body and a 400
for response_format or style; dall-e-3 gets revised_prompt; dall-e-* with
response_format=url get url answers.

Behaviours (tuples; a bare string is read as a 1-tuple), consumed one per image request:
    ("ok",)                      a normal answer
    ("429", ms)                  429 rate_limit_exceeded, retry-after-ms: ms and retry-after: ceil(ms/1000)
    ("429", None, "2")           429 with only `retry-after: 2` (seconds or an HTTP date)
    ("quota",)                   429 insufficient_quota
    ("moderation",)              400 code moderation_blocked, "…rejected by the safety system…"
    ("content_policy",)          400 code content_policy_violation
    ("safety",)                  400 "…safety system…" message with no code
    ("401",) ("403",) ("404",) ("400",) ("500",) ("502",) ("503",) …   that status, an error JSON
    ("reset",)                   read the request, then close the socket with a TCP RST, no response
    ("cutoff",)                  status line, headers (full Content-Length) and half the body, then close
    ("notjson",)                 200 application/json whose body is not JSON
    ("url",)                     a normal answer with data[i].url on the /files route instead of b64_json
    ("url_gone",)                data[i].url pointing at a file that answers 404
    ("sleep", s)                 wait s seconds, then a normal answer (for client timeouts)
    ("noimage",)                 /v1/responses only: a 200 with a text message and no image call
    ("raw", status, body, headers)  exactly that answer (body str or bytes; headers a dict, optional)
    ("drip", s)                  a 200 whose JSON body comes one byte every s seconds (at most 400 bytes)
                                 (and ("moderation",) there is a 200 whose call has status "failed";
                                 on a judgement, a 200 whose message is a refusal)

Judgements (checks: ask): a POST /v1/responses with no tools and a json_schema text format
is answered with one message whose output_text is the verdict JSON. `api.judge = lambda
question, images: (passed, reason)` decides it (images: the decoded bytes of every
input_image, the image under review first); a str instead of a tuple is sent verbatim as the
output text (a malformed answer). Default: {"pass": true, "reason": "looks right"}. Usage:
input_tokens = len(question) // 4 + 765 per image, output_tokens = 25.
`api.vary = True` makes every image answer a new picture (the real API never answers twice alike).
A missing bearer token, or one other than FakeOpenAI(api_key=...) when set, gets a 401.

Strict mode (on unless FakeOpenAI(strict=False)): a field the installed SDK does not define
for that endpoint (its TypedDicts: ImageGenerateParams, ImageEditParams,
ImageCreateVariationParams, ResponseCreateParams and the image_generation tool) is answered
like the real API: 400 invalid_request_error, code unknown_parameter, param the field.
Multipart names are read without their brackets (`image[]`, `svg[model]`).

Files and Batch API (`api.batch_api`, a FakeBatchAPI): POST /v1/files (multipart: purpose,
file), GET /v1/files/{id} and /v1/files/{id}/content; POST /v1/batches, GET /v1/batches/{id}
and GET /v1/batches (the list, newest first). A batch "runs" on its first retrieve: every
JSONL line is executed against this server's own image handlers (same validation, same
deterministic images and usage as a direct request), successes go to the output file, failures
to the error file. An edit line takes the JSON form of OpenAI's spec (`EditImageBodyJsonParam`):
`images: [{file_id}]` and `mask: {file_id}` name files uploaded to /v1/files, and are answered
exactly as a multipart edit of those bytes; strict mode knows its fields (`json_edit_fields`).
`api.batch_api.json_edits = False` answers every edit line 400 (a server without the form);
`api.batch_api.refuse_purposes = {"vision"}` answers uploads of that purpose 400;
`api.batch_api.refuse_endpoints = {"/v1/images/edits"}` answers creating a batch for it 400.
`api.batch_api.script([...])` answers the next Files / Batch API requests, one behaviour each:
("429", ms) and ("429", None, "<seconds or HTTP date>") as above, ("500",) and any other status
(an error JSON, the request not done), or ("502", "after"): the request is done (a batch created),
then that status is answered, as when a gateway loses the answer; ("ok",) answers normally.
`api.batch_api.hold = True` keeps batches in_progress until `release()`;
`api.batch_api.fail = lambda line: ("moderation",) or None` picks lines to fail (any error
behaviour, or ("expired",) for a line the window never reached); `api.batch_api.lines` lists
every executed line.
Without a script the server answers normally (dall-e-* with response_format=url → url answers).

Rate-limit mode: FakeOpenAI(rate_per_min=R) and/or images_per_min=I keep token buckets
that refill continuously at R/60 (I/60) per second and hold one second of rate (at least
one request). A request that finds too few tokens is answered 429 rate_limit_exceeded
with retry-after-ms (exact time until enough tokens, rounded up), retry-after (whole
seconds, rounded up) and x-ratelimit-{limit,remaining,reset}-{requests,images}; a rejected
request costs nothing. An image request costs 1 request token and n image tokens; when n
exceeds the bucket, a full bucket admits it and goes into debt, so the long-run rate
never exceeds the limit. `served` lists (monotonic time, n) of every 200 answer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

Behaviour = tuple[Any, ...]

GPT_PREFIXES = ("gpt-image", "chatgpt-image")
AZURE_ROUTE = re.compile(r"/openai/deployments/([^/]+)/images/(generations|edits)")  # + ?api-version=
KNOWN = {
    "ok",
    "429",
    "quota",
    "moderation",
    "content_policy",
    "safety",
    "reset",
    "cutoff",
    "notjson",
    "url",
    "url_gone",
    "sleep",
    "noimage",
    "raw",
    "drip",
}


def _keys(typed_dict: Any) -> frozenset[str]:
    return frozenset(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


def sdk_fields() -> dict[str, frozenset[str]]:
    """Per endpoint, the fields the installed SDK defines (strict mode's whitelist)."""
    from openai.types import image_create_variation_params, image_edit_params, image_generate_params
    from openai.types.responses import response_create_params, tool_param

    return {
        "generate": _keys(image_generate_params.ImageGenerateParamsNonStreaming),
        "edit": _keys(image_edit_params.ImageEditParamsNonStreaming),
        "variation": _keys(image_create_variation_params.ImageCreateVariationParams),
        "responses": _keys(response_create_params.ResponseCreateParamsNonStreaming),
        "responses_tool": _keys(tool_param.ImageGeneration),
    }


def json_edit_fields() -> frozenset[str]:
    """The JSON form of /v1/images/edits: the SDK's edit fields, with `images` (file ids) for `image`."""
    return (sdk_fields()["edit"] - {"image"}) | {"images"}


def unknown_field(kind: str, params: dict[str, Any], files: Iterable[str] = ()) -> str | None:
    """The first field (sorted) of a request that the SDK does not define for this endpoint."""
    known = {**sdk_fields(), "edit_json": json_edit_fields()}
    names = {re.sub(r"\[.*$", "", k) for k in [*params, *files]}
    for name in sorted(names - known[kind]):
        return name
    if kind == "responses":
        for tool in params.get("tools") or []:
            if isinstance(tool, dict) and tool.get("type") == "image_generation":
                for name in sorted(set(tool) - known["responses_tool"]):
                    return f"tools[0].{name}"
    return None


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart body."""

    name: str  # form field name: "image", "image[]", "mask"
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """What the server received, and how it answered."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: dict[str, Any] | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)  # multipart non-file fields
    files: list[FilePart] = field(default_factory=list)
    behaviour: Behaviour = ("ok",)
    status: int | None = None
    time: float = 0.0  # time.monotonic() at arrival
    response: dict[str, Any] | None = None  # the JSON answered (Responses API answers)

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string (e.g. Azure's api-version)."""
        return parse_qs(urlsplit(self.path).query)

    @property
    def params(self) -> dict[str, Any]:
        """The request's parameters: the JSON body, or the multipart fields (one value each, as strings)."""
        if self.json is not None:
            return dict(self.json)
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.fields.items()}

    @property
    def images(self) -> list[FilePart]:
        return [f for f in self.files if f.name in ("image", "image[]")]

    @property
    def mask(self) -> FilePart | None:
        masks = [f for f in self.files if f.name == "mask"]
        return masks[0] if masks else None


class TokenBucket:
    """Continuous refill at per_min/60 per second; holds one second of rate, at least `minimum`."""

    def __init__(self, per_min: float, minimum: float = 1.0) -> None:
        if per_min <= 0:
            raise ValueError("per_min must be positive")
        self.per_min = per_min
        self.rate = per_min / 60.0
        self.capacity = max(self.rate, minimum)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` can be taken (0 when it can now). Call refill first."""
        need = min(cost, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, cost: float) -> None:
        self.tokens -= cost

    def reset_s(self) -> float:
        return max(0.0, (self.capacity - self.tokens) / self.rate)


def format_reset(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: '120ms', '1s', '6m0s', '1h2m3s'."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    s = math.ceil(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, list[str]], list[FilePart]]:
    """A small, exact multipart/form-data parser (file bytes are kept byte for byte)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, list[str]] = {}
    files: list[FilePart] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header block")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name_m = re.search(r'(?:^|;)\s*name="([^"]*)"', disposition)
        file_m = re.search(r'(?:^|;)\s*filename="([^"]*)"', disposition)
        name = name_m.group(1) if name_m else ""
        if file_m is not None:
            files.append(FilePart(name, file_m.group(1), headers.get("content-type"), content))
        else:
            fields.setdefault(name, []).append(content.decode("utf-8"))
    return fields, files


def is_judgement(body: Any) -> bool:
    """A Responses request that asks for a structured verdict rather than an image."""
    if not isinstance(body, dict) or body.get("tools"):
        return False
    fmt = (body.get("text") or {}).get("format") or {}
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


def _retry_after(b: Behaviour) -> dict[str, str]:
    """The retry-after headers of a ("429", ms, retry_after) behaviour (see the module docstring)."""
    ms = b[1] if len(b) > 1 else 1000
    retry_after = b[2] if len(b) > 2 else None
    if ms is not None:
        return {"retry-after-ms": str(int(ms)),
                "retry-after": str(retry_after if retry_after is not None else max(1, math.ceil(ms / 1000)))}
    return {} if retry_after is None else {"retry-after": str(retry_after)}


def _error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _masked_key(auth: str) -> str:
    key = auth.removeprefix("Bearer ").strip()
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        return None

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], *, ctype: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, OSError, ValueError):
            # The client went away (timeout) or we cut the connection on purpose.
            self.close_connection = True

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path.startswith(("/v1/files", "/v1/batches")):
            fake.batch_api.handle(self, "GET", b"")
            return
        rec = RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
        rec.time = time.monotonic()
        fake._record(rec)
        token = self.path.removeprefix("/files/")
        data = fake._downloads.get(token) if self.path.startswith("/files/") else None
        if data is None:
            rec.status = 404
            self._send_json(404, _error("Not found", "invalid_request_error", "not_found"), {})
            return
        rec.status = 200
        fmt = data[1]
        self._send(200, data[0], {}, ctype=f"image/{fmt}")

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith(("/v1/files", "/v1/batches")):
            fake.batch_api.handle(self, "POST", body)
            return
        rec = RecordedRequest("POST", self.path, headers, body, time=time.monotonic())
        kind = {
            "/v1/images/generations": "generate",
            "/v1/images/edits": "edit",
            "/v1/images/variations": "variation",
            "/v1/responses": "responses",
        }.get(self.path.split("?")[0])
        azure = AZURE_ROUTE.fullmatch(self.path.split("?")[0])
        if azure is not None:
            kind = {"generations": "generate", "edits": "edit"}[azure.group(2)]
        try:
            if kind in ("generate", "responses"):
                rec.json = json.loads(body or b"{}")
            elif kind is not None:
                rec.fields, rec.files = parse_multipart(body, headers.get("content-type", ""))
        except ValueError as exc:
            fake._record(rec)
            rec.status = 400
            self._send_json(
                400, _error(f"Could not parse the body: {exc}", "invalid_request_error", None), {}
            )
            return
        if kind is None:
            fake._record(rec)
            rec.status = 404
            self._send_json(404, _error(f"Unknown route {self.path}", "invalid_request_error", None), {})
            return
        rec.behaviour = fake._next_behaviour()
        fake._record(rec)
        self._answer(kind, rec)

    def _answer(self, kind: str, rec: RecordedRequest) -> None:
        fake = self.server.fake
        b = rec.behaviour
        what = str(b[0])
        rid = fake._request_id()
        base_headers = {"x-request-id": rid, **fake._plain_rate_headers()}

        if rec.path.startswith("/openai/"):  # Azure: the api-key header, and an api-version
            key = rec.headers.get("api-key")
            if not key or "authorization" in rec.headers or (fake.api_key is not None and key != fake.api_key):
                what = "401"
            elif not rec.query.get("api-version"):
                rec.status = 404
                self._send_json(404, {"error": {"code": "404", "message": "Resource not found"}}, base_headers)
                return
        elif not rec.headers.get("authorization", "").startswith("Bearer ") or (
            fake.api_key is not None and rec.headers.get("authorization") != f"Bearer {fake.api_key}"
        ):
            what = "401"

        if what not in KNOWN and not what.isdigit():
            raise ValueError(f"FakeOpenAI: unknown behaviour {b!r}")
        if what == "sleep":
            time.sleep(float(b[1]))
            what = "ok"
        if what == "raw":
            raw_body = b[2] if isinstance(b[2], bytes) else str(b[2]).encode()
            given = dict(b[3]) if len(b) > 3 else {}
            ctype = given.pop("content-type", "application/json")
            rec.status = int(b[1])
            self._send(rec.status, raw_body, {**base_headers, **given}, ctype=ctype)
            return
        if what == "drip":
            rec.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "400")
            for k, v in base_headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
            for _ in range(400):  # ends when the client hangs up (a broken pipe) or after 400 bytes
                time.sleep(float(b[1]))
                self.wfile.write(b" ")
                self.wfile.flush()
            self.close_connection = True
            return
        if what == "reset":
            rec.status = 0
            self.close_connection = True
            # SO_LINGER 0: closing sends a TCP RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
            return
        if what == "429":
            rec.status = 429
            msg = "Rate limit reached for images per min (IPM). Please try again later."
            self._send_json(429, _error(msg, "requests", "rate_limit_exceeded"), {**base_headers, **_retry_after(b)})
            return
        errors: dict[str, tuple[int, dict[str, Any]]] = {
            "quota": (
                429,
                _error(
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    "insufficient_quota",
                ),
            ),
            "moderation": (
                400,
                _error(
                    "Your request was rejected by the safety system. If you believe this is an error, "
                    f"contact us and include the request ID {rid}.",
                    "image_generation_user_error",
                    "moderation_blocked",
                ),
            ),
            "content_policy": (
                400,
                _error(
                    "Your request was rejected as a result of our safety system.",
                    "invalid_request_error",
                    "content_policy_violation",
                ),
            ),
            "safety": (
                400,
                _error("This request has been blocked by our safety system.", "invalid_request_error", None),
            ),
            "401": (
                401,
                _error(
                    f"Incorrect API key provided: {_masked_key(rec.headers.get('authorization', ''))}. "
                    "You can find your API key at https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            ),
        }
        if kind == "responses" and is_judgement(rec.json) and what == "moderation":
            rec.status = 200
            self._send_json(200, fake._judge_payload(rec, refusal=True), base_headers)
            return
        if kind == "responses" and what in ("moderation", "noimage"):
            rec.status = 200
            self._send_json(200, fake._responses_payload(rec, refusal=what), base_headers)
            return
        if what in errors:
            status, payload = errors[what]
            rec.status = status
            self._send_json(status, payload, base_headers)
            return
        if what.isdigit():
            status = int(what)
            rec.status = status
            if status >= 500:
                payload = _error(
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                )
            else:
                payload = _error(f"Fake error {status}.", "invalid_request_error", f"fake_{status}")
            self._send_json(status, payload, base_headers)
            return
        if what == "notjson":
            rec.status = 200
            self._send(200, b"<html>upstream proxy error</html>", base_headers)
            return

        # A real answer: validate lightly, then apply the rate limit, then build the images.
        unknown = unknown_field(kind, rec.params, (f.name for f in rec.files)) if fake.strict else None
        if unknown is not None:
            rec.status = 400
            self._send_json(400, _error(f"Unknown parameter: '{unknown}'.", "invalid_request_error",
                                        "unknown_parameter", unknown), base_headers)
            return
        problem = fake._validate(kind, rec)
        if problem is not None:
            rec.status = 400
            self._send_json(400, _error(problem, "invalid_request_error", "invalid_value"), base_headers)
            return
        judgement = kind == "responses" and is_judgement(rec.json)
        n = 0 if judgement else 1 if kind == "responses" else int(rec.params.get("n") or 1)
        limited = fake._admit(n)
        if limited is not None:
            wait, headers = limited
            rec.status = 429
            h = {"x-request-id": rid, **headers}
            h["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            h["retry-after"] = str(max(1, math.ceil(wait)))
            msg = f"Rate limit reached. Please try again in {math.ceil(wait * 1000)}ms."
            self._send_json(429, _error(msg, "requests", "rate_limit_exceeded"), h)
            return
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if judgement:
            payload = fake._judge_payload(rec, refusal=False)
        elif kind == "responses":
            payload = fake._responses_payload(rec, refusal=None)
        else:
            payload = fake._payload(kind, rec, url_mode=what, host=self.headers.get("host", ""))
        body = json.dumps(payload).encode()
        headers = {"x-request-id": rid, **fake._rate_headers()}
        if what == "cutoff":
            rec.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        rec.status = 200
        if not judgement:
            fake._served(n)
        self._send(200, body, headers)


class FakeOpenAI:
    """A threaded local server speaking the Images API; a context manager. See the module docstring."""

    # /v1/responses: the revised prompt for (prompt, a number unique to the answer); None: the default
    revise: Callable[[str, int], str] | None = None
    # /v1/responses judgements: the verdict for (question, image bytes); None: a pass
    judge: Callable[[str, list[bytes]], tuple[bool, str] | str] | None = None
    # each image answer differs from the last (as the real API's do): a retry makes another picture
    vary: bool = False

    def __init__(
        self,
        *,
        rate_per_min: float | None = None,
        images_per_min: float | None = None,
        latency_s: float = 0.0,
        api_key: str | None = None,
        strict: bool = True,
    ) -> None:
        self.api_key = api_key  # when set, any other bearer key gets a 401
        self.strict = strict  # 400 unknown_parameter for a field the SDK does not define (see above)
        self.latency_s = latency_s
        self.requests_bucket = TokenBucket(rate_per_min) if rate_per_min else None
        self.images_bucket = TokenBucket(images_per_min) if images_per_min else None
        self.served: list[tuple[float, int]] = []  # (monotonic time, n) of every 200 image answer
        self.rate_limited = 0  # 429s the rate-limit mode answered
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._records: list[RecordedRequest] = []
        self._downloads: dict[str, tuple[bytes, str]] = {}
        self.batch_api = FakeBatchAPI(self)
        self._png_cache: dict[tuple[int, int, tuple[int, int, int], str], bytes] = {}
        self._counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeOpenAI:
        server = _Server(("127.0.0.1", port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeOpenAI is not started"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the SDK / --base-url / OPENAI_BASE_URL."""
        return f"{self.origin}/v1"

    # -- scripting and records -------------------------------------------------------------------

    def script(self, behaviours: Iterable[Behaviour | str]) -> None:
        """Queue behaviours for the next image requests, one each, in order."""
        queued = [(b,) if isinstance(b, str) else tuple(b) for b in behaviours]
        for b in queued:
            if not b or (str(b[0]) not in KNOWN and not str(b[0]).isdigit()):
                raise ValueError(f"FakeOpenAI: unknown behaviour {b!r}")
        with self._lock:
            self._script.extend(queued)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (image requests and downloads), oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def image_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def last(self) -> RecordedRequest:
        return self.image_requests[-1]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._script.clear()
            self.served.clear()
            self.rate_limited = 0

    @property
    def images_served(self) -> int:
        with self._lock:
            return sum(n for _, n in self.served)

    # -- internals (called from handler threads) ----------------------------------------------------

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._records.append(rec)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else ("ok",)

    def _request_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"req_{self._counter:06d}{hashlib.sha256(str(self._counter).encode()).hexdigest()[:18]}"

    def _served(self, n: int) -> None:
        with self._lock:
            self.served.append((time.monotonic(), n))

    def _admit(self, n: int) -> tuple[float, dict[str, str]] | None:
        """Rate-limit mode: take the tokens, or say how long to wait (and the headers)."""
        with self._lock:
            now = time.monotonic()
            buckets = [
                (b, c) for b, c in ((self.requests_bucket, 1), (self.images_bucket, n)) if b is not None
            ]
            for b, _ in buckets:
                b.refill(now)
            wait = max((b.wait_for(c) for b, c in buckets), default=0.0)
            if wait > 0:
                self.rate_limited += 1
                return wait, self._rate_headers_locked()
            for b, c in buckets:
                b.take(c)
            return None

    def _rate_headers_locked(self) -> dict[str, str]:
        h: dict[str, str] = {}
        for unit, b in (("requests", self.requests_bucket), ("images", self.images_bucket)):
            if b is None:
                continue
            h[f"x-ratelimit-limit-{unit}"] = f"{b.per_min:g}"
            h[f"x-ratelimit-remaining-{unit}"] = str(max(0, math.floor(b.tokens)))
            h[f"x-ratelimit-reset-{unit}"] = format_reset(b.reset_s())
        return h

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            if self.requests_bucket is None and self.images_bucket is None:
                return self._plain_rate_headers()
            return self._rate_headers_locked()

    @staticmethod
    def _plain_rate_headers() -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
        }

    @staticmethod
    def _validate(kind: str, rec: RecordedRequest) -> str | None:
        p = rec.params
        if kind == "responses" and is_judgement(p):
            return None if p.get("model") and p.get("input") else "A judgement needs a model and an input."
        if kind == "responses":
            tools = p.get("tools") or []
            if not p.get("model") or not tools or tools[0].get("type") != "image_generation":
                return "A Responses request needs a model and an image_generation tool."
            return None
        model = str(p.get("model") or "dall-e-2")
        if kind != "variation" and not p.get("prompt"):
            return "Missing required parameter: 'prompt'."
        if kind != "generate" and not rec.images:
            return "Missing required parameter: 'image'."
        try:
            n = int(p.get("n") or 1)
        except (TypeError, ValueError):
            return "Invalid value for 'n'."
        if not 1 <= n <= 10 or (model.startswith("dall-e-3") and n != 1):
            return f"Invalid value for 'n': {n}."
        if model.startswith(GPT_PREFIXES):
            for unknown in ("response_format", "style"):
                if unknown in p:
                    return f"Unknown parameter: '{unknown}'."
        size = p.get("size")
        if size not in (None, "auto") and not re.fullmatch(r"\d{1,5}x\d{1,5}", str(size)):
            return f"Invalid value for 'size': {size!r}."
        return None

    def _image(self, width: int, height: int, seed: str, fmt: str) -> bytes:
        if self.vary:
            with self._lock:
                self._varied = getattr(self, "_varied", 0) + 1
                seed += f"\0{self._varied}"
        digest = hashlib.sha256(seed.encode()).digest()
        colour = (digest[0], digest[1], digest[2])
        key = (width, height, colour, fmt)
        with self._lock:
            cached = self._png_cache.get(key)
        if cached is not None:
            return cached
        img = Image.new("RGB", (width, height), colour)
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, "PNG", compress_level=1)
        elif fmt == "jpeg":
            img.save(buf, "JPEG", quality=80)
        else:
            img.save(buf, "WEBP", quality=80)
        data = buf.getvalue()
        with self._lock:
            if len(self._png_cache) > 256:
                self._png_cache.clear()
            self._png_cache[key] = data
        return data

    def _payload(self, kind: str, rec: RecordedRequest, *, url_mode: str, host: str) -> dict[str, Any]:
        p = rec.params
        model = str(p.get("model") or "dall-e-2")
        gpt = model.startswith(GPT_PREFIXES)
        n = int(p.get("n") or 1)
        fmt = str(p.get("output_format") or "png") if gpt else "png"
        fmt = {"jpg": "jpeg"}.get(fmt, fmt)
        size = str(p.get("size") or "auto")
        if size == "auto":
            width, height = 1024, 1024
            if rec.images:
                with contextlib.suppress(Exception):
                    width, height = Image.open(io.BytesIO(rec.images[0].data)).size
        else:
            w, _, h = size.partition("x")
            width, height = int(w), int(h)
        prompt = str(p.get("prompt") or "")
        as_url = url_mode in ("url", "url_gone") or (not gpt and p.get("response_format") == "url")
        data: list[dict[str, Any]] = []
        for i in range(n):
            image = self._image(width, height, f"{kind}\0{model}\0{prompt}\0{i}", fmt)
            item: dict[str, Any] = {}
            if as_url:
                with self._lock:
                    self._counter += 1
                    token = f"img-{self._counter}.{fmt}"
                    if url_mode != "url_gone":
                        self._downloads[token] = (image, fmt)
                item["url"] = f"http://{host}/files/{token}"
            else:
                item["b64_json"] = base64.b64encode(image).decode("ascii")
            if model.startswith("dall-e-3"):
                item["revised_prompt"] = f"A detailed rendering of: {prompt}"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt:
            text_tokens = max(1, len(prompt) // 4)
            image_in = 0 if kind == "generate" else 194 * len(rec.images)
            image_out = 272 * n
            out.update(
                {
                    "background": "transparent" if p.get("background") == "transparent" else "opaque",
                    "output_format": fmt,
                    "quality": p.get("quality") if p.get("quality") not in (None, "auto") else "medium",
                    "size": f"{width}x{height}",
                    "usage": {
                        "input_tokens": text_tokens + image_in,
                        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_in},
                        "output_tokens": image_out,
                        "output_tokens_details": {"image_tokens": image_out, "text_tokens": 0},
                        "total_tokens": text_tokens + image_in + image_out,
                    },
                }
            )
        return out

    def _judge_payload(self, rec: RecordedRequest, *, refusal: bool) -> dict[str, Any]:
        """A judgement's answer: one message holding the verdict JSON (or a refusal)."""
        body = rec.json or {}
        question, images = "", []
        for message in body.get("input") or []:
            for part in message.get("content") or []:
                if part.get("type") == "input_text" and not question:
                    question = str(part.get("text") or "")
                elif part.get("type") == "input_image":
                    url = str(part.get("image_url") or "")
                    images.append(base64.b64decode(url.split(",", 1)[1]) if url.startswith("data:") else b"")
        rule = self.judge
        answer = rule(question, images) if rule is not None else (True, "looks right")
        text = answer if isinstance(answer, str) else json.dumps({"pass": answer[0], "reason": answer[1]})
        content = {"type": "refusal", "refusal": "I can't help with that."} if refusal else \
            {"type": "output_text", "text": text, "annotations": []}
        with self._lock:
            self._counter += 1
            n = self._counter
        out: dict[str, Any] = {
            "id": f"resp_{n:06d}", "object": "response", "created_at": int(time.time()),
            "model": body.get("model"), "status": "completed", "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [],
            "output": [{"type": "message", "id": f"msg_{n:06d}", "role": "assistant", "status": "completed",
                        "content": [content]}],
            "usage": {"input_tokens": len(question) // 4 + 765 * len(images),
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 25,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": len(question) // 4 + 765 * len(images) + 25},
        }
        rec.response = out
        return out

    def _responses_payload(self, rec: RecordedRequest, *, refusal: str | None) -> dict[str, Any]:
        """A Responses API answer with one image_generation_call (or a failed call / a text-only answer)."""
        body = rec.json or {}
        tool = dict((body.get("tools") or [{}])[0])
        prompt = ""
        for message in body.get("input") or []:
            for part in message.get("content") or []:
                if part.get("type") == "input_text":
                    prompt = str(part.get("text") or "")
        fmt = str(tool.get("output_format") or "png")
        size = str(tool.get("size") or "auto")
        if size == "auto":  # an edit keeps its first input image's size
            size = "1024x1024"
            urls = [p.get("image_url") for m in body.get("input") or [] for p in m.get("content") or []
                    if p.get("type") == "input_image"]
            if urls and str(urls[0]).startswith("data:"):
                with contextlib.suppress(Exception):
                    first = Image.open(io.BytesIO(base64.b64decode(str(urls[0]).split(",", 1)[1])))
                    size = f"{first.width}x{first.height}"
        w, _, h = size.partition("x")
        with self._lock:
            self._counter += 1
            n = self._counter
        out: dict[str, Any] = {
            "id": f"resp_{n:06d}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model"),
            "status": "completed",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "usage": {
                "input_tokens": 40,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 60,
            },
        }
        if refusal == "noimage":
            out["output"].append(
                {
                    "type": "message",
                    "id": f"msg_{n:06d}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "I can't make that image.", "annotations": []}
                    ],
                }
            )
            rec.response = out
            return out
        revise = self.revise
        call: dict[str, Any] = {
            "type": "image_generation_call",
            "id": f"ig_{n:06d}",
            "status": "completed",
            "action": tool.get("action") or ("edit" if "input_image_mask" in tool else "generate"),
            "output_format": fmt,
            "size": f"{w}x{h}",
            "revised_prompt": revise(prompt, n) if revise else f"A detailed rendering of: {prompt}",
        }
        if refusal == "moderation":
            call["status"] = "failed"
            call["error"] = {
                "code": "moderation_blocked",
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
            }
        else:
            image = self._image(int(w), int(h), f"responses\0{tool.get('model')}\0{prompt}\0{n}", fmt)
            call["result"] = base64.b64encode(image).decode("ascii")
            out["tool_usage"] = {
                "image_gen": {
                    "input_tokens": 50,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                    "output_tokens": 272,
                    "output_tokens_details": {"image_tokens": 272, "text_tokens": 0},
                    "total_tokens": 322,
                },
                "web_search": {"num_requests": 0},
            }
        out["output"].append(call)
        rec.response = out
        return out


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (for `retry-after`) that many seconds from now."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


BATCH_ENDPOINTS = {"/v1/images/generations": "generate", "/v1/images/edits": "edit"}


class FakeBatchAPI:
    """The Files and Batch APIs of FakeOpenAI (see the module docstring)."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.hold = False  # batches stay in_progress until release()
        self.fail: Any = None  # line -> behaviour (tuple or str) to fail it, or None
        self.files: dict[str, dict[str, Any]] = {}  # id -> {"meta": FileObject, "data": bytes}
        self.batches: dict[str, dict[str, Any]] = {}  # id -> Batch object
        self.lines: list[dict[str, Any]] = []  # every executed line
        self.json_edits = True  # edit lines in the JSON form are answered (False: 400, as without the form)
        self.refuse_purposes: set[str] = set()  # uploads of these purposes are answered 400
        self.refuse_endpoints: set[str] = set()  # batches for these endpoints are refused 400
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()

    def script(self, behaviours: Iterable[Behaviour | str]) -> None:
        """Queue behaviours for the next Files / Batch API requests, one each, in order."""
        queued = [(b,) if isinstance(b, str) else tuple(b) for b in behaviours]
        for b in queued:
            if not b or not (b[0] in ("ok", "429") or str(b[0]).isdigit()):
                raise ValueError(f"FakeBatchAPI: unknown behaviour {b!r}")
        with self._lock:
            self._script.extend(queued)

    def release(self) -> None:
        """Let held batches complete (on their next retrieve)."""
        self.hold = False

    # -- HTTP -----------------------------------------------------------------------------------

    def handle(self, h: _Handler, method: str, body: bytes) -> None:
        fake = self.fake
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = RecordedRequest(method, h.path, headers, body, time=time.monotonic())
        fake._record(rec)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or (fake.api_key is not None and auth != f"Bearer {fake.api_key}"):
            rec.status = 401
            h._send_json(401, _error(f"Incorrect API key provided: {_masked_key(auth)}.", "invalid_request_error",
                                     "invalid_api_key"), {})
            return
        with self._lock:
            b = rec.behaviour = self._script.popleft() if self._script else ("ok",)
        what = str(b[0])
        if what == "429":
            rec.status = 429
            h._send_json(429, _error("Rate limit reached for requests per min (RPM). Please try again later.",
                                     "requests", "rate_limit_exceeded"), {"x-request-id": fake._request_id(),
                                                                          **_retry_after(b)})
            return
        failure = int(what) if what.isdigit() else None
        if failure is not None and b[1:] != ("after",):
            rec.status = failure
            h._send_json(failure, _error(f"Fake error {failure}.", "server_error", None),
                         {"x-request-id": fake._request_id()})
            return
        path = h.path.split("?")[0].rstrip("/")
        query = dict(p.partition("=")[::2] for p in h.path.partition("?")[2].split("&") if p)
        status, payload = 404, _error(f"Unknown route {h.path}", "invalid_request_error", None)
        raw: bytes | None = None
        parts = path.split("/")[2:]  # ["files", id, "content"] / ["batches", id]
        with self._lock:
            if method == "POST" and parts == ["files"]:
                rec.fields, rec.files = parse_multipart(body, headers.get("content-type", ""))
                status, payload = self._upload(rec)
            elif method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                f = self.files.get(parts[1])
                if f is not None:
                    status, raw = 200, f["data"]
            elif method == "GET" and len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
                status, payload = 200, self.files[parts[1]]["meta"]
            elif method == "POST" and parts == ["batches"]:
                rec.json = json.loads(body or b"{}")
                status, payload = self._create(rec.json)
            elif method == "GET" and parts == ["batches"]:
                status, payload = 200, self._list(query)
            elif method == "GET" and len(parts) == 2 and parts[0] == "batches" and parts[1] in self.batches:
                status, payload = 200, self._retrieve(parts[1], h.headers.get("host", ""))
        if failure is not None:  # done, but the answer is lost on the way
            rec.status = failure
            h._send_json(failure, _error(f"Fake error {failure}.", "server_error", None),
                         {"x-request-id": fake._request_id()})
            return
        rec.status = status
        if raw is not None:
            h._send(200, raw, {"x-request-id": fake._request_id()}, ctype="application/octet-stream")
        else:
            h._send_json(status, payload, {"x-request-id": fake._request_id()})

    # -- files ------------------------------------------------------------------------------------

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:06d}{hashlib.sha256(data).hexdigest()[:12]}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = {"meta": meta, "data": data}
        return meta

    def _upload(self, rec: RecordedRequest) -> tuple[int, dict[str, Any]]:
        purpose = (rec.fields.get("purpose") or [""])[0]
        uploaded = [f for f in rec.files if f.name == "file"]
        if not uploaded or not purpose:
            return 400, _error("Missing required parameter: 'file' or 'purpose'.", "invalid_request_error", None)
        if purpose in self.refuse_purposes:
            return 400, _error(f"Invalid value for 'purpose': {purpose!r}.", "invalid_request_error",
                               "invalid_value", "purpose")
        return 200, self._add_file(uploaded[0].data, uploaded[0].filename or "upload", purpose)

    # -- batches ----------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        f = self.files.get(str(body.get("input_file_id")))
        if f is None or f["meta"]["purpose"] != "batch":
            return 400, _error("Invalid 'input_file_id'.", "invalid_request_error", "invalid_value")
        if body.get("endpoint") not in set(BATCH_ENDPOINTS) - self.refuse_endpoints \
                or body.get("completion_window") != "24h":
            return 400, _error("Invalid 'endpoint' or 'completion_window'.", "invalid_request_error",
                               "invalid_value")
        now = int(time.time())
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        batch: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "completed_at": None, "failed_at": None, "expired_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        lines, problems = [], []
        seen: set[str] = set()
        for i, text in enumerate(f["data"].decode("utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                problems.append({"code": "invalid_json_line", "message": "Invalid JSON.", "line": i})
                continue
            cid = line.get("custom_id")
            if not isinstance(cid, str) or cid in seen or line.get("method") != "POST" \
                    or line.get("url") != body["endpoint"] or not isinstance(line.get("body"), dict):
                problems.append({"code": "invalid_request", "message": "Bad line.", "line": i})
                continue
            seen.add(cid)
            lines.append(line)
        if problems or not lines:
            batch.update({"status": "failed", "failed_at": now,
                          "errors": {"object": "list", "data": problems or
                                     [{"code": "empty_file", "message": "No requests.", "line": None}]}})
        batch["request_counts"]["total"] = len(lines)
        batch["_lines"] = lines
        self.batches[batch_id] = batch
        return 200, self._public(batch)

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        ordered = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        after = query.get("after")
        if after:
            ordered = [b for b in ordered if b["id"] < after]
        limit = int(query.get("limit") or 20)
        page = ordered[:limit]
        return {"object": "list", "data": [self._public(b) for b in page],
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
                "has_more": len(ordered) > limit}

    def _retrieve(self, batch_id: str, host: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        if batch["status"] == "validating":
            batch.update({"status": "in_progress", "in_progress_at": int(time.time())})
        if batch["status"] == "in_progress" and not self.hold:
            self._run(batch, host)
        return self._public(batch)

    def _run(self, batch: dict[str, Any], host: str) -> None:
        fake = self.fake
        kind = BATCH_ENDPOINTS[batch["endpoint"]]
        out, err = [], []
        for line in batch["_lines"]:
            self.lines.append(line)
            behaviour = self.fail(line) if self.fail is not None else None
            if isinstance(behaviour, str):
                behaviour = (behaviour,)
            result: dict[str, Any] = {"id": f"batch_req_{len(self.lines):06d}", "custom_id": line["custom_id"],
                                      "response": None, "error": None}
            if behaviour and behaviour[0] == "expired":
                result["error"] = {"code": "batch_expired",
                                   "message": "This request could not be executed before the window expired."}
                err.append(result)
                continue
            status, payload = self._execute(kind, line["body"], behaviour, host)
            result["response"] = {"status_code": status, "request_id": fake._request_id(), "body": payload}
            (out if status == 200 else err).append(result)
        now = int(time.time())
        batch["request_counts"].update({"completed": len(out), "failed": len(err)})
        batch.update({"status": "completed", "completed_at": now, "finalizing_at": now})
        name = batch["id"]
        if out:
            batch["output_file_id"] = self._add_file(_jsonl(out), f"{name}_output.jsonl", "batch_output")["id"]
        if err:
            batch["error_file_id"] = self._add_file(_jsonl(err), f"{name}_error.jsonl", "batch_output")["id"]

    def _execute(self, kind: str, body: dict[str, Any], behaviour: Behaviour | None,
                 host: str) -> tuple[int, dict[str, Any]]:
        fake = self.fake
        what = str(behaviour[0]) if behaviour else "ok"
        errors = {
            "moderation": (400, _error("Your request was rejected by the safety system.",
                                       "image_generation_user_error", "moderation_blocked")),
            "content_policy": (400, _error("Your request was rejected as a result of our safety system.",
                                           "invalid_request_error", "content_policy_violation")),
        }
        if what in errors:
            return errors[what]
        if what.isdigit():
            status = int(what)
            return status, _error(f"Fake error {status}.", "server_error" if status >= 500 else
                                  "invalid_request_error", None if status >= 500 else f"fake_{status}")
        rec = RecordedRequest("POST", "/v1/images/generations", {}, b"", json=body)
        if kind == "edit":
            if not self.json_edits:
                return 400, _error("'image' must be a file: a JSON body cannot carry one.", "invalid_request_error",
                                   "invalid_value")
            unknown = unknown_field("edit_json", body) if fake.strict else None
            if unknown is not None:
                return 400, _error(f"Unknown parameter: '{unknown}'.", "invalid_request_error",
                                   "unknown_parameter", unknown)
            resolved = self._json_edit(body)
            if isinstance(resolved, str):
                return 400, _error(resolved, "invalid_request_error", "invalid_value")
            rec = resolved
        unknown = unknown_field(kind, rec.params, (f.name for f in rec.files)) if fake.strict else None
        if unknown is not None:
            return 400, _error(f"Unknown parameter: '{unknown}'.", "invalid_request_error", "unknown_parameter",
                               unknown)
        problem = fake._validate(kind, rec)
        if problem is not None:
            return 400, _error(problem, "invalid_request_error", "invalid_value")
        fake._served(int(body.get("n") or 1))
        return 200, fake._payload(kind, rec, url_mode="ok", host=host)


    def _json_edit(self, body: dict[str, Any]) -> RecordedRequest | str:
        """A JSON edit as the multipart edit of the files it names (or what is wrong with it)."""
        images = body.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= 16:
            return "'images' must list 1 to 16 images."
        refs = [("image[]", ref) for ref in images]
        if "mask" in body:
            refs.append(("mask", body["mask"]))
        files = []
        for name, ref in refs:
            file_id = ref.get("file_id") if isinstance(ref, dict) else None
            f = self.files.get(str(file_id))
            if f is None or f["meta"]["purpose"] == "batch_output":
                return f"Invalid file id for '{name.rstrip('[]')}': {file_id!r}."
            files.append(FilePart(name, f["meta"]["filename"], None, f["data"]))
        fields = {k: v for k, v in body.items() if k not in ("images", "mask")}
        return RecordedRequest("POST", "/v1/images/edits", {}, b"", json=fields, files=files)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def main(argv: list[str] | None = None) -> None:
    """`python tests/fakeapi.py [--port 8000]`: serve the stand-in API until Ctrl-C, for a local end-to-end try."""
    import argparse

    parser = argparse.ArgumentParser(description="The local stand-in for the OpenAI Images API (no key checked).")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free one)")
    args = parser.parse_args(argv)
    api = FakeOpenAI().start(args.port)
    print(f"stand-in OpenAI API at {api.base_url}", flush=True)
    print(f"try: OPENAI_API_KEY=dummy dalle-pipe run --base-url {api.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()


if __name__ == "__main__":
    main()
