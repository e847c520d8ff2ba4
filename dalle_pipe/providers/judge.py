"""The wire shape of a judgement on the Responses API: the request body and the answer's parser.

A judgement is one `responses.create` call with the image under test (and any reference
images) inline as data URLs, a question, and a structured output format that makes the
model answer exactly `{"pass": bool, "reason": str}`. Kept apart from the SDK so that the
body can be asserted and the parser tested without a network.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .base import InputFile, JudgeRequest

MAX_OUTPUT_TOKENS = 1024  # bounds the cost of one judgement (reasoning included)
MAX_REASON_CHARS = 500
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pass": {"type": "boolean", "description": "true only when the answer to the question is clearly yes"},
        "reason": {"type": "string", "description": "one sentence: what in the image decided it"},
    },
    "required": ["pass", "reason"],
    "additionalProperties": False,
}
TEXT_FORMAT: dict[str, Any] = {
    "format": {"type": "json_schema", "name": "verdict", "schema": VERDICT_SCHEMA, "strict": True},
}
INSTRUCTIONS = (
    "You review images made by an image pipeline. The first image is the one under review; any "
    "further images are references. Answer the user's question about the image under review. "
    "Set pass to true only when the answer is clearly yes. Give the reason in one sentence that "
    "names what you saw."
)


def default_params() -> dict[str, Any]:
    """What a judgement sends besides model, instructions and input (a fresh copy)."""
    return {"text": json.loads(json.dumps(TEXT_FORMAT)), "max_output_tokens": MAX_OUTPUT_TOKENS, "store": False}


def data_url(f: InputFile) -> str:
    return f"data:{f.mime};base64,{base64.b64encode(f.data).decode('ascii')}"


def request_body(request: JudgeRequest) -> dict[str, Any]:
    """The keyword arguments of `responses.create` for one judgement (timeout aside)."""
    content: list[dict[str, Any]] = [
        {"type": "input_text", "text": request.question},
        {"type": "input_image", "image_url": data_url(request.image), "detail": "auto"},
    ]
    for i, ref in enumerate(request.references, start=1):
        content.append({"type": "input_text", "text": f"Reference image {i}:"})
        content.append({"type": "input_image", "image_url": data_url(ref), "detail": "auto"})
    return {
        "model": request.model,
        "instructions": INSTRUCTIONS,
        "input": [{"role": "user", "content": content}],
        **request.params,
    }


def parse_verdict(text: str) -> tuple[bool, str]:
    """`{"pass": bool, "reason": str}` -> (pass, reason); ValueError for anything else."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("pass"), bool) or not isinstance(
        data.get("reason"), str
    ):
        raise ValueError("the answer is not {pass: true|false, reason: text}")
    reason = " ".join(data["reason"].split())
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return data["pass"], reason
