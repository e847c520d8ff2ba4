"""The HTML document, rendered from ``report.html.j2`` with autoescape on.

This module turns manifest entries into plain values (text, relative hrefs, counts); the
template alone writes markup, and Jinja escapes every value it prints. The inline CSS and JS
live in the template; their CSP hashes are computed from the text the template renders.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jinja2

from .. import __version__
from .build import CHANGES, STATUSES, THUMB_MAX, Shot, content_sha

TEMPLATE = "report.html.j2"
CHECK_STATES = ("failed", "not_judged", "passed")


@dataclass(frozen=True)
class Badge:
    cls: str
    label: str
    title: str | None = None


@dataclass(frozen=True)
class Row:
    """One line of a card's details. ``kind``: text | link | prompt | err | list."""

    label: str
    text: str = ""
    kind: str = "text"
    href: str | None = None
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckView:
    name: str
    kind: str
    state: str  # passed | failed | not_judged
    score: str | None
    reason: str | None
    cost: str | None


@dataclass(frozen=True)
class Card:
    change: str
    status: str
    path: str
    link: str | None  # href of the image, when the file is there
    thumb: str | None
    width: int
    height: int
    alt: str
    empty: str | None  # why there is no image
    badges: list[Badge] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    checks: list[CheckView] = field(default_factory=list)
    checks_state: str | None = None  # the card's filter value: failed | not_judged | passed


def href(rel: str) -> str:
    """A relative path as a URL path: every `:`, `?` and `#` encoded, so it is never a scheme or a query."""
    return quote(rel, safe="/")


def usd(value: object, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "unknown"
    return f"${value:,.{digits}f}"


def _params(params: object) -> str:
    if not isinstance(params, Mapping) or not params:
        return "—"
    return " · ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                      for k, v in params.items())


def _error(err: object) -> str | None:
    if not isinstance(err, Mapping):
        return None
    head = " ".join(str(err[k]) for k in ("type", "status", "code") if err.get(k) not in (None, ""))
    msg = err.get("message")
    return f"{head}: {msg}" if head and msg else str(msg or head) or None


def task_name(e: Mapping[str, Any]) -> str:
    key = e.get("key")
    return f"{e.get('step')}@{key}" if key else str(e.get("step"))


def _thumb_size(e: Mapping[str, Any]) -> tuple[int, int]:
    w, h = e.get("width"), e.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return THUMB_MAX, THUMB_MAX
    scale = min(1.0, THUMB_MAX / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _checks(raw: object) -> list[CheckView]:
    """The entry's optional ``checks: [{name, kind, passed, score, reason, cost_usd}]``."""
    if not isinstance(raw, list):
        return []
    out = []
    for c in raw:
        if not isinstance(c, Mapping):
            continue
        passed = c.get("passed")
        state = "passed" if passed is True else "failed" if passed is False else "not_judged"
        score = c.get("score")
        shown = (f"{score:.3f}".rstrip("0").rstrip(".") if isinstance(score, float) else str(score)) \
            if isinstance(score, int | float) and not isinstance(score, bool) else None
        cost = c.get("cost_usd")
        out.append(CheckView(_text(c.get("name")) or _text(c.get("kind")) or "check", _text(c.get("kind")),
                             state, shown, _text(c.get("reason")) or None,
                             usd(cost, 4) if isinstance(cost, int | float) and cost else None))
    return out


def card(s: Shot) -> Card:
    """What one card shows, as plain values."""
    e = s.entry
    status = str(e.get("status") or "unknown")
    found = e.get("path")
    rel = found if isinstance(found, str) else ""
    link = href(rel) if s.present and rel else None
    width, height = _thumb_size(e)
    empty = None
    if link is None:
        empty = "failed" if status == "failed" else "no image" if not content_sha(e) else "file missing"
    badges = [Badge(f"c-{s.change}", s.change), Badge(f"s-{status}", status.replace("_", " "))]
    if e.get("approved"):
        badges.append(Badge("approved", "approved"))
    if e.get("stale"):
        badges.append(Badge("warn", "stale", "the recipe changed since this image was approved"))
    if e.get("possible_duplicate_charge"):
        badges.append(Badge("warn", "possible duplicate charge", "a retry followed a timeout or a cut-off response"))
    rows = [Row("file", rel, "link" if link else "text", link)]
    if e.get("prompt") is not None:
        rows.append(Row("prompt", _text(e.get("prompt")), "prompt"))
    if e.get("revised_prompt") is not None:
        rows.append(Row("revised", _text(e.get("revised_prompt")), "prompt"))
    model = e.get("model")
    rows.append(Row("model", f"{model} ({e.get('provider')})" if model else _text(e.get("provider")) or "—"))
    mainline = e.get("mainline_model")
    if mainline is None and isinstance(e.get("params"), Mapping):
        mainline = e["params"].get("mainline_model")
    if mainline:
        rows.append(Row("mainline", _text(mainline)))
    rows.append(Row("params", _params(e.get("params"))))
    inputs = e.get("inputs")
    if isinstance(inputs, list) and inputs:
        rows.append(Row("inputs", ", ".join(f"{i.get('role')}: {i.get('path')}" for i in inputs
                                            if isinstance(i, Mapping))))
    if e.get("width"):
        rows.append(Row("size", f"{e.get('width')}×{e.get('height')} {e.get('format') or ''}".strip()))
    rows.append(Row("cost", usd(e.get("cost_usd"))))
    warnings = e.get("warnings")
    if isinstance(warnings, list) and warnings:
        items = tuple(_text(w) for w in warnings)
        rows.append(Row("warnings", kind="list", items=items))
        badges.append(Badge("warn", f"{len(items)} warning{'' if len(items) == 1 else 's'}"))
    err = _error(e.get("error"))
    if err and status in ("failed", "skipped", "failed_checks"):
        rows.append(Row("error" if status != "skipped" else "why", err, "err"))
    checks = _checks(e.get("checks"))
    state = None
    if checks:
        states = {c.state for c in checks}
        state = next(st for st in CHECK_STATES if st in states)
        failed = sum(c.state == "failed" for c in checks)
        badges.append(Badge("ck-failed", f"{failed} check{'' if failed == 1 else 's'} failed") if failed
                      else Badge(f"ck-{state}", "checks passed" if state == "passed" else "checks not judged"))
    return Card(s.change, status, rel, link, href(s.thumb) if s.thumb else None, width, height, task_name(e),
                empty, badges, rows, checks, state)


@dataclass(frozen=True)
class Filter:
    name: str
    label: str
    counts: list[tuple[str, int]]


def _filters(shots: Sequence[Shot], states: Sequence[str | None]) -> list[Filter]:
    changes = [(c, sum(1 for s in shots if s.change == c)) for c in CHANGES]
    present = {str(s.entry.get("status")) for s in shots}
    extra = sorted(st for st in present if st not in STATUSES and st not in ("None", ""))
    statuses = [(st, sum(1 for s in shots if s.entry.get("status") == st)) for st in (*STATUSES, *extra)]
    out = [Filter("change", "since last run", changes), Filter("status", "status", statuses)]
    if any(states):
        out.append(Filter("checks", "checks", [(st, states.count(st)) for st in CHECK_STATES]))
    return out


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(str(text).encode("utf-8")).digest()).decode("ascii")


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("dalle_pipe", "report"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["csp_hash"] = _csp_hash
    return env.get_template(TEMPLATE)


def _check_states(shots: Sequence[Shot]) -> list[str | None]:
    out: list[str | None] = []
    for s in shots:
        checks = _checks(s.entry.get("checks"))
        states = {c.state for c in checks}
        out.append(next((st for st in CHECK_STATES if st in states), None))
    return out


def page_parts(manifest: Mapping[str, Any], shots: Sequence[Shot],
               gone: Sequence[Mapping[str, Any]] = ()) -> Iterator[str]:
    """The HTML document in pieces, written one by one: a page of 30,000 images is never one string."""
    found = manifest.get("recipe")
    recipe: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    groups: dict[str, dict[str, list[Shot]]] = {}
    for s in shots:
        step, key = str(s.entry.get("step")), str(s.entry.get("key") or "")
        groups.setdefault(step, {}).setdefault(key, []).append(s)
    costs = [s.entry.get("cost_usd") for s in shots if content_sha(s.entry)]
    known = [c for c in costs if isinstance(c, int | float) and not isinstance(c, bool)]
    cost = usd(sum(known), 2) + (f" ({len(costs) - len(known)} unknown)" if len(known) < len(costs) else "")
    meta = (f"recipe {recipe.get('path')}", f"provider {manifest.get('provider')}",
            f"finished {manifest.get('finished_at')}", f"dalle-pipe {manifest.get('version') or __version__}")
    steps = [(step, sum(len(v) for v in units.values()), units) for step, units in groups.items()]
    return _joined(_template().generate(
        name=str(recipe.get("name") or "dalle-pipe"), meta=meta, total=len(shots), cost=cost,
        filters=_filters(shots, _check_states(shots)), steps=steps, card=card,
        gone=[(task_name(e), _text(e.get("path"))) for e in gone]))


def _joined(chunks: Iterator[str], size: int = 1 << 16) -> Iterator[str]:
    """Jinja yields a few words at a time; the writer gets pieces of about 64 KiB."""
    buf: list[str] = []
    n = 0
    for chunk in chunks:
        buf.append(chunk)
        n += len(chunk)
        if n >= size:
            yield "".join(buf)
            buf, n = [], 0
    if buf:
        yield "".join(buf)


def render_page(manifest: Mapping[str, Any], shots: Sequence[Shot],
                gone: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole HTML document (pure: no file access)."""
    return "".join(page_parts(manifest, shots, gone))
