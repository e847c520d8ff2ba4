"""The Files and Batch API calls of `run --batch` and `batch status|collect`, through the official SDK.

`BatchClient` is the openai provider (same key, base URL, `max_retries=0` client and error
classification, the key scrubbed from every message) plus six calls: upload a JSONL file
(`files.create(purpose="batch")`), upload an input image of a JSON edit
(`files.create(purpose="vision")`), create a batch (`batches.create(completion_window="24h")`),
retrieve one, find one by its metadata (`batches.list`), and stream a file's content to disk
(`files.with_streaming_response.content`). Transient errors and 429s are retried as
throttle.RetryPolicy decides (POLICY unless given), waiting on an injected clock; a create that may
have reached the server is looked up by its metadata before it is sent again, so one submission
never becomes two paid batches.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..errors import EXIT_FAILED, DallePipeError
from ..store import fsync_dir
from ..throttle import Clock, GiveUp, RetryPolicy, SystemClock, retry_kind
from .base import ProviderError, Transient
from .openai import OpenAIProvider

T = TypeVar("T")

#: Batch statuses after which nothing changes any more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
META_KEY = "dalle_pipe"  # metadata key holding the submission's token
#: Four tries of each call: a Files / Batch API call is cheap to repeat, but not worth a long wait.
POLICY = RetryPolicy(max_retries=3, max_rate_limit_retries=3)
#: Input images of JSON edits: a purpose of the SDK's `FilePurpose` for images a model reads.
INPUT_PURPOSE: Literal["vision"] = "vision"
REFUSED_STATUSES = frozenset({400, 404, 405, 415, 422})


class BatchAPIError(DallePipeError):
    """A Files / Batch API call failed (after its retries): exit 1."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status  # the HTTP status of the last answer, when there was one
        self.maybe_done = False  # the last try may have reached the server (its answer was lost)

    @property
    def refused(self) -> bool:
        """Did the server refuse what was asked (4xx other than auth and rate limits), not fail?"""
        return self.status in REFUSED_STATUSES


@dataclass(frozen=True)
class BatchInfo:
    """What dalle-pipe keeps of a Batch object."""

    id: str
    status: str
    endpoint: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: int = 0
    in_progress_at: int | None = None
    completed_at: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class BatchClient(OpenAIProvider):
    """The openai provider's client, for the Files and Batch APIs."""

    def __init__(self, *, base_url: str | None, api_key: str | None = None, policy: RetryPolicy = POLICY,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        super().__init__(base_url=base_url, api_key=api_key)
        self._policy = policy
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()

    # -- calls ------------------------------------------------------------------------------------

    def upload(self, filename: str, data: bytes) -> str:
        """Upload a JSONL file for a batch; its file id."""
        obj = self._retrying("upload", lambda: self._client.files.create(
            file=(filename, data, "application/jsonl"), purpose="batch"))
        return str(obj.id)

    def upload_input(self, filename: str, data: bytes, mime: str) -> str:
        """Upload an input image of JSON edits (`purpose="vision"`); its file id."""
        obj = self._retrying("upload an input image", lambda: self._client.files.create(
            file=(filename, data, mime), purpose=INPUT_PURPOSE))
        return str(obj.id)

    def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> BatchInfo:
        """Create a batch; on an error after which it may exist, find it by its metadata first."""
        token = metadata[META_KEY]
        since = int(time.time()) - 300

        def send() -> BatchInfo:
            return self._info(self._client.batches.create(
                input_file_id=input_file_id, endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h", metadata=metadata))

        def sent_already(exc: ProviderError) -> BatchInfo | None:
            return self.find(token, since=since) if isinstance(exc, Transient) and exc.maybe_charged else None

        return self._retrying("create a batch", send, before_retry=sent_already)

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self._info(self._retrying("retrieve a batch", lambda: self._client.batches.retrieve(batch_id)))

    def find(self, token: str, *, since: int) -> BatchInfo | None:
        """The batch whose metadata holds this token, looking back to `since` (unix time)."""
        after: str | None = None
        for _ in range(50):  # at most 5,000 batches back
            kwargs: dict[str, Any] = {"limit": 100}
            if after:
                kwargs["after"] = after
            page = self._retrying("list batches", functools.partial(self._client.batches.list, **kwargs))
            items = list(page.data)
            for obj in items:
                if (obj.metadata or {}).get(META_KEY) == token:
                    return self._info(obj)
            if not items or not page.has_more or min(int(o.created_at) for o in items) < since:
                return None
            after = items[-1].id
        return None

    def download(self, file_id: str, dest: Path) -> None:
        """Stream a file's content to `dest` atomically (temp file, fsync, rename)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.dp-tmp")

        def fetch() -> None:
            with self._client.files.with_streaming_response.content(file_id) as resp, open(tmp, "wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())

        try:
            self._retrying("download a batch file", fetch)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        fsync_dir(dest.parent)

    def scrub(self, text: str) -> str:
        return self._scrub(text)

    # -- plumbing ---------------------------------------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[], T],
                  before_retry: Callable[[ProviderError], T | None] | None = None) -> T:
        """fn, tried again as the policy decides; `before_retry` may find, after the wait, that
        the failed try did its work after all (its answer is then the result)."""
        failures: Counter[str | None] = Counter()
        while True:
            try:
                result: T = self._call(fn)
                return result
            except ProviderError as exc:
                kind = retry_kind(exc)
                failures[kind] += 1
                decision = self._policy.decide(exc, failures[kind], self._rng)
                if isinstance(decision, GiveUp):
                    if before_retry is not None:  # the last try may have done its work: look before giving up
                        try:
                            found = before_retry(exc)
                        except BatchAPIError:
                            found = None
                        if found is not None:
                            return found
                    error = self._error(what, decision.error)
                    error.maybe_done = isinstance(exc, Transient) and exc.maybe_charged
                    raise error from None
                self._clock.sleep(decision.wait_s)
                if before_retry is not None and (found := before_retry(exc)) is not None:
                    return found

    def _error(self, what: str, exc: ProviderError) -> BatchAPIError:
        return BatchAPIError(f"could not {what}: {self._scrub(exc.message)}",
                             "check OPENAI_API_KEY and --base-url / OPENAI_BASE_URL" if exc.status in (401, 403, 404)
                             else "run the command again; nothing is lost", status=exc.status)

    @staticmethod
    def _info(obj: Any) -> BatchInfo:
        counts = obj.request_counts
        errors = [f"{e.code or 'error'}: {e.message or ''}" + (f" (line {e.line})" if e.line else "")
                  for e in ((obj.errors.data or []) if obj.errors is not None else [])]
        return BatchInfo(
            id=str(obj.id), status=str(obj.status), endpoint=str(obj.endpoint),
            input_file_id=str(obj.input_file_id), output_file_id=obj.output_file_id,
            error_file_id=obj.error_file_id,
            request_counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts is not None else {},
            errors=errors, metadata=dict(obj.metadata or {}), created_at=int(obj.created_at or 0),
            in_progress_at=obj.in_progress_at, completed_at=obj.completed_at,
        )
