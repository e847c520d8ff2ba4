"""Old fingerprints are normalised to what this version sends, only when they reproduce."""

from __future__ import annotations

from typing import Any

from dalle_pipe import models
from dalle_pipe.engine.migrate import MANIFEST_FORMAT, upgrade
from dalle_pipe.store import fingerprint


def entry(params: dict[str, Any], fp: str | None = None) -> dict[str, Any]:
    fields = {"provider": "openai", "model": "gpt-image-2", "endpoint": "/v1/images/edits", "prompt": "beach",
              "input_shas": ["a" * 64, "size:1024x1024"]}
    return {"step": "beach", "key": "mug", "index": 0, "provider": "openai", "model": "gpt-image-2",
            "endpoint": "/v1/images/edits", "params": params, "prompt": "beach",
            "inputs": [{"role": "image", "path": "mug/hero.png", "sha256": "a" * 64},
                       {"role": "size_of", "path": "mug/hero.png", "sha256": "size:1024x1024"}],
            "fingerprint": fp or fingerprint(params=params, **fields)}  # type: ignore[arg-type]


def test_a_field_no_longer_sent_is_dropped_and_the_fingerprint_follows() -> None:
    old = {"n": 1, "size": "1024x1024", "style": "vivid"}  # a field edits do not send
    now = models.request_params("gpt-image-2", "edit", old)
    assert now == {"n": 1, "size": "1024x1024"}
    (up,) = upgrade([entry(old)], None)
    assert up["params"] == now
    assert up["fingerprint"] == entry(now)["fingerprint"]


def test_entries_that_do_not_reproduce_their_fingerprint_and_new_manifests_are_left_alone() -> None:
    odd = entry({"n": 1, "size": "1024x1024", "style": "vivid"}, fp="0" * 64)
    assert upgrade([odd], None) == [odd]
    old = entry({"n": 1, "size": "1024x1024", "style": "vivid"})
    assert upgrade([old], MANIFEST_FORMAT) == [old]
    same = entry({"n": 1, "size": "1024x1024"})
    assert upgrade([same], None) == [same]
