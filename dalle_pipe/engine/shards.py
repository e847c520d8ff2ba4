"""Shards of one output folder, run side by side (parallel CI jobs).

Each shard holds the folder's lock shared and its own lock exclusively, keeps its own journal and
writes its own manifest (manifest.shard-I-of-N.json); a whole run holds the folder's lock
exclusively. Reuse, --check and the report read every manifest*.json in the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

from .. import store
from ..providers.base import ImageRequest, ImageResponse, Judge, JudgeRequest, Provider, Verdict


def run_locks(out_dir: Path, shard: tuple[int, int] | None) -> list[store.RunLock]:
    """The locks a writing run takes: the folder's (shared by shards), then the shard's own."""
    if shard is None:
        return [store.RunLock(out_dir)]
    return [store.RunLock(out_dir, shared=True), store.RunLock(out_dir, f"lock.{store.shard_suffix(shard)}")]


def journal_for(out_dir: Path, shard: tuple[int, int] | None) -> store.Journal:
    journal = store.Journal(out_dir)
    if shard is not None:
        journal.path = journal.path.with_name(f"journal.{store.shard_suffix(shard)}.jsonl")
    return journal


class _ShardShare:
    """A provider whose learned rate limits are a shard's share: x-ratelimit-limit-* divided by n,
    so n shards that learn the account's limit from the headers pace at 1/n of it each."""

    def __init__(self, inner: Provider, n: int) -> None:
        self.inner = inner
        self.n = n
        self.name = inner.name

    def _scale(self, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        for k, v in headers.items():
            if k.lower().startswith("x-ratelimit-limit-"):
                try:
                    out[k] = f"{float(v) / self.n:g}"
                except ValueError:
                    continue
        return out

    def send(self, request: ImageRequest) -> ImageResponse:
        from ..providers.base import ProviderError

        try:
            resp = self.inner.send(request)
        except ProviderError as exc:
            exc.headers = self._scale(exc.headers)
            raise
        return replace(resp, rate_headers=self._scale(resp.rate_headers))

    def judge(self, request: JudgeRequest) -> Verdict:
        return cast(Judge, self.inner).judge(request)

    def close(self) -> None:
        self.inner.close()


def shard_provider(factory: Callable[[], Provider] | None,
                   shard: tuple[int, int] | None) -> Callable[[], Provider] | None:
    if factory is None or shard is None or shard[1] == 1:
        return factory
    n = shard[1]
    return lambda: _ShardShare(factory(), n)
