"""Upgrades pay nothing: entries written by an older version get today's fingerprint when only the
normalisation of what is sent changed (e.g. a field no longer sent on edits).

An entry is migrated only when its recorded fields reproduce its recorded fingerprint: then the
fingerprint of what this version would send for the same request replaces it. Anything else is
left as it was (and is simply not reused when it no longer matches).
"""

from __future__ import annotations

from typing import Any

from .. import models
from ..store import fingerprint

#: The manifest format this version writes. 1: no `format` key (before the engine redesign).
MANIFEST_FORMAT = 2

_KINDS = {"generations": "generate", "edits": "edit", "variations": "variation"}


def upgrade(entries: list[Any], fmt: object) -> list[Any]:
    """The entries of a manifest (or journal) of format `fmt`, with old fingerprints normalised."""
    if isinstance(fmt, int) and fmt >= MANIFEST_FORMAT:
        return entries
    return [_entry(e) if isinstance(e, dict) else e for e in entries]


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    endpoint, params, model = e.get("endpoint"), e.get("params"), e.get("model")
    if not isinstance(endpoint, str) or not isinstance(params, dict) or not isinstance(model, str):
        return e
    kind = _KINDS.get(endpoint.rsplit("/", 1)[-1])
    if kind is None or e.get("provider") in (None, "local"):
        return e  # the Responses route and local steps: nothing of theirs changed
    now = models.request_params(model, kind, params)  # type: ignore[arg-type]
    if now == params:
        return e
    inputs = e.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        return e
    shas = [str(i.get("sha256")) for i in inputs]
    fields = {"provider": str(e.get("provider")), "model": model, "endpoint": endpoint,
              "prompt": e.get("prompt"), "input_shas": shas}
    if fingerprint(params=params, **fields) != e.get("fingerprint"):  # type: ignore[arg-type]
        return e
    return {**e, "params": now, "fingerprint": fingerprint(params=now, **fields)}  # type: ignore[arg-type]
