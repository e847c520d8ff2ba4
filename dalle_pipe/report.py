"""report.html: a static contact sheet of one output_dir, grouped by step then unit, showing what changed.

The page needs no network: CSS and JS are inline and pinned by a Content-Security-Policy
that allows only them and local images. Thumbnails live in ``output_dir/.thumbs/``, named
by the image's sha256, so an unchanged image is never thumbnailed twice.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__, store
from .errors import UsageError
from .recipe import Overrides
from .store._fs import rel_parts

THUMB_MAX = 256
CHANGES = ("new", "changed", "unchanged", "failed")
STATUSES = ("generated", "up_to_date", "modified", "failed", "skipped")
_THUMB_NAME = re.compile(r"^[0-9a-f]{64}\.(webp|jpg)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Shot:
    """One manifest entry as the page shows it."""

    entry: Mapping[str, Any]
    change: str  # new | changed | unchanged | failed
    thumb: str | None  # relative to output_dir
    present: bool  # the image file exists


def thumb_ext() -> str:
    """WebP (keeps transparency) when Pillow can write it, else JPEG."""
    from PIL import features

    return "webp" if features.check("webp") else "jpg"


def content_sha(entry: Mapping[str, Any]) -> str | None:
    """The sha256 of what the file holds now: a hand-edited (modified) entry keeps its original
    ``sha256`` and records the file's in ``current_sha256``."""
    sha = entry.get("current_sha256") or entry.get("sha256")
    return sha if isinstance(sha, str) else None


def _key(entry: Mapping[str, Any]) -> tuple[str, str, int]:
    index = entry.get("index")
    return str(entry.get("step")), str(entry.get("key")), index if isinstance(index, int) else 0


def classify(entries: Sequence[Mapping[str, Any]],
             previous: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Each entry against the previous manifest: new, changed (sha256 differs), unchanged or failed."""
    before = {_key(e): e for e in previous or ()}
    out = []
    for e in entries:
        old = before.get(_key(e))
        if e.get("status") == "failed":
            out.append("failed")
        elif old is None:
            out.append("new")
        elif content_sha(old) != content_sha(e):
            out.append("changed")
        else:
            out.append("unchanged")
    return out


def removed(entries: Sequence[Mapping[str, Any]],
            previous: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """Previous entries that the current manifest no longer has."""
    now = {_key(e) for e in entries}
    return [e for e in previous or () if _key(e) not in now]


def _source(output_dir: Path, entry: Mapping[str, Any]) -> Path | None:
    """Where an entry's image is: a lexical join (relative, no `..`); symlinks are resolved only
    before a file is read (`_readable`), since resolving 30,000 paths costs seconds."""
    rel = entry.get("path")
    if not isinstance(rel, str):
        return None
    parts = rel_parts(rel)
    return output_dir.joinpath(*parts) if parts else None


def _readable(output_dir: Path, src: Path) -> bool:
    """A file to read for a thumbnail: inside output_dir once symlinks are followed."""
    try:
        store.safe_join(output_dir, src.relative_to(output_dir).as_posix())
    except ValueError:
        return False
    return src.is_file()


def _make_thumb(src: Path, dst: Path, ext: str) -> bool:
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.draft("RGB", (THUMB_MAX, THUMB_MAX))
            small = ImageOps.exif_transpose(im)
            alpha = small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info
            small = small.convert("RGBA" if alpha else "RGB")
            small.thumbnail((THUMB_MAX, THUMB_MAX))
            buf = io.BytesIO()
            if ext == "webp":
                small.save(buf, "WEBP", quality=80, method=2)
            else:
                if alpha:
                    flat = Image.new("RGB", small.size, (255, 255, 255))
                    flat.paste(small, mask=small.getchannel("A"))
                    small = flat
                small.save(buf, "JPEG", quality=82, optimize=True)
    except Exception:  # a preview is best effort: Pillow raises many types for bad data
        return False
    store.atomic_write_bytes(dst, buf.getvalue())
    return True


def make_thumbnails(output_dir: Path, entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """sha256 -> thumbnail path (relative to output_dir); made only when missing, stale ones removed."""
    output_dir = Path(output_dir)
    folder = output_dir / store.THUMBS_DIRNAME
    ext = thumb_ext()
    wanted: dict[str, Path] = {}
    for e in entries:
        sha = content_sha(e)
        if sha is not None and _SHA.match(sha) and sha not in wanted:
            src = _source(output_dir, e)
            if src is not None:
                wanted[sha] = src
    done: dict[str, str] = {}
    todo: list[tuple[str, Path]] = []
    for sha, src in wanted.items():
        if (folder / f"{sha}.{ext}").is_file():
            done[sha] = f"{store.THUMBS_DIRNAME}/{sha}.{ext}"
        elif _readable(output_dir, src):
            todo.append((sha, src))
    if todo:
        workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumb") as pool:
            made = pool.map(lambda t: _make_thumb(t[1], folder / f"{t[0]}.{ext}", ext), todo)
            for (sha, _), ok in zip(todo, made, strict=True):
                if ok:
                    done[sha] = f"{store.THUMBS_DIRNAME}/{sha}.{ext}"
    if folder.is_dir():
        keep = {f"{sha}.{ext}" for sha in done}
        for child in folder.iterdir():
            stray = _THUMB_NAME.match(child.name) and child.name not in keep
            if stray or child.name.endswith(".dp-tmp"):
                with contextlib.suppress(OSError):
                    child.unlink()
    return done


def build_shots(output_dir: Path, manifest: Mapping[str, Any],
                previous: Mapping[str, Any] | None) -> tuple[list[Shot], list[Mapping[str, Any]]]:
    """The page's content: every entry with its change and thumbnail, and what was removed."""
    entries = [e for e in manifest.get("entries", []) if isinstance(e, Mapping)]
    prev = [e for e in (previous or {}).get("entries", []) if isinstance(e, Mapping)] if previous else None
    thumbs = make_thumbnails(output_dir, entries)
    shots = []
    for e, change in zip(entries, classify(entries, prev), strict=True):
        sha = content_sha(e)
        src = _source(output_dir, e) if sha else None
        present = src is not None and src.is_file()
        shots.append(Shot(e, change, thumbs.get(sha) if sha and present else None, present))
    return shots, removed(entries, prev)


def _merge(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Manifests of one folder as one: entries by (step, key, index), the last finished winning."""
    if len(docs) <= 1:
        return docs[0] if docs else None
    docs = sorted(docs, key=lambda d: str(d.get("finished_at") or ""))
    merged: dict[tuple[str, str, int], Any] = {}
    for doc in docs:
        for e in doc["entries"]:
            if isinstance(e, Mapping):
                merged[_key(e)] = e
    return {**docs[-1], "entries": list(merged.values())}


def _read_all(paths: Iterable[Path], *, strict: bool) -> list[dict[str, Any]]:
    from .store.manifest import _parse_manifest

    docs = []
    for path in paths:
        try:
            docs.append(_parse_manifest(path))
        except FileNotFoundError:
            continue
        except (OSError, store.ManifestCorruptError):
            if strict and path.name == store.MANIFEST_NAME:
                raise
    return docs


def load_manifests(output_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(current, previous): manifest.json and the shards' manifests merged, and their previous copies."""
    from .store import SHARD_MANIFEST_GLOB, manifest_files

    current = _merge(_read_all(manifest_files(output_dir), strict=True))
    state = store.state_dir(output_dir)
    prev_paths = [state / store.PREV_MANIFEST_NAME,
                  *sorted(state.glob(SHARD_MANIFEST_GLOB.replace(".json", ".prev.json")))]
    return current, _merge(_read_all(prev_paths, strict=False))


@contextlib.contextmanager
def _report_lock(output_dir: Path) -> Iterator[None]:
    """Shards finishing together take turns: each reads every manifest, then writes the page."""
    path = store.state_dir(output_dir) / "lock.report"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(output_dir: Path, *, manifest: dict[str, Any] | None = None,
                 previous: dict[str, Any] | None = None) -> Path:
    """Write ``output_dir/report.html`` (atomically) from its manifest(s); return its path.

    A run with one manifest passes it (and the previous one) in: parsing 25 MB of JSON twice more
    while the run's own copies are alive would double the peak memory of a 10,000-unit run.
    """
    output_dir = Path(output_dir)
    with _report_lock(output_dir):
        if manifest is None:
            manifest, previous = load_manifests(output_dir)
        if manifest is None:
            raise UsageError(f"no {store.MANIFEST_NAME} in {output_dir}", "run the recipe first")
        shots, gone = build_shots(output_dir, manifest, previous)
        path = output_dir / store.REPORT_NAME
        store.atomic_write_chunks(path, page_parts(manifest, shots, gone))
    return path


def rebuild_reports(targets: list[Path], overrides: Overrides) -> list[tuple[str, Path]]:
    """`dalle-pipe report`: rewrite report.html of each target's output_dir, under its run lock.

    A target is a recipe or pipeline file (none means ./pipeline.yaml), or an output folder.
    """
    from .store import manifest_files

    dirs = [(t.name, t) for t in targets if t.is_dir()]
    files = [t for t in targets if not t.is_dir()]
    if files or not targets:
        from .app import load

        dirs += [(p.recipe.name, p.recipe.output_dir) for p in load(files, overrides).plans]
    written, missing = [], []
    for name, out_dir in dirs:
        if not manifest_files(out_dir):
            missing.append(f"{name} ({out_dir})")
            continue
        with store.RunLock(out_dir):
            written.append((name, write_report(out_dir)))
    if missing:
        raise UsageError(f"no {store.MANIFEST_NAME} yet for {', '.join(missing)}"
                         + (f"; wrote {len(written)} other report(s)" if written else ""),
                         "run the recipe first")
    return written

# ----------------------------------------------------------------------------------------------- page

def _t(value: object) -> str:
    """Text for HTML: escaped, quotes included (safe in attributes too)."""
    return escape("" if value is None else str(value), quote=True)


def _href(rel: str) -> str:
    return _t(quote(rel, safe="/"))


def _usd(value: object, digits: int = 3) -> str:
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


def _task(e: Mapping[str, Any]) -> str:
    key = e.get("key")
    return f"{e.get('step')}@{key}" if key else str(e.get("step"))


def _thumb_size(e: Mapping[str, Any]) -> tuple[int, int]:
    w, h = e.get("width"), e.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return THUMB_MAX, THUMB_MAX
    scale = min(1.0, THUMB_MAX / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _card(s: Shot) -> str:
    e = s.entry
    status = str(e.get("status") or "unknown")
    rel = e.get("path") if isinstance(e.get("path"), str) else ""
    parts = [f'<article class="card" data-change="{_t(s.change)}" data-status="{_t(status)}" '
             f'data-path="{_t(rel)}">']
    if s.present and rel:
        if s.thumb:
            w, h = _thumb_size(e)
            img = (f'<img src="{_href(s.thumb)}" loading="lazy" decoding="async" width="{w}" height="{h}" '
                   f'alt="{_t(_task(e))}">')
        else:
            img = '<span class="noimg">no preview</span>'
        parts.append(f'<a class="thumb" href="{_href(rel)}">{img}</a>')
    else:
        why = "failed" if status == "failed" else "no image" if not content_sha(e) else "file missing"
        parts.append(f'<div class="thumb empty"><span class="noimg">{_t(why)}</span></div>')
    badges = [f'<span class="b c-{_t(s.change)}">{_t(s.change)}</span>',
              f'<span class="b s-{_t(status)}">{_t(status.replace("_", " "))}</span>']
    if e.get("approved"):
        badges.append('<span class="b approved">approved</span>')
    if e.get("stale"):
        badges.append('<span class="b warn" title="the recipe changed since this image was approved">'
                      "stale</span>")
    if e.get("possible_duplicate_charge"):
        badges.append('<span class="b warn" title="a retry followed a timeout or a cut-off response">'
                      'possible duplicate charge</span>')
    parts.append(f'<div class="badges">{"".join(badges)}</div>')
    link = f'<a href="{_href(rel)}">{_t(rel)}</a>' if s.present and rel else _t(rel)
    rows = [("file", link)]
    if e.get("prompt") is not None:
        rows.append(("prompt", f'<span class="prompt">{_t(e.get("prompt"))}</span>'))
    if e.get("revised_prompt") is not None:
        rows.append(("revised", f'<span class="prompt">{_t(e.get("revised_prompt"))}</span>'))
    model = e.get("model")
    rows.append(("model", _t(f"{model} ({e.get('provider')})" if model else e.get("provider") or "—")))
    rows.append(("params", _t(_params(e.get("params")))))
    inputs = e.get("inputs")
    if isinstance(inputs, list) and inputs:
        rows.append(("inputs", _t(", ".join(f"{i.get('role')}: {i.get('path')}" for i in inputs
                                            if isinstance(i, Mapping)))))
    size = f"{e.get('width')}×{e.get('height')} {e.get('format') or ''}" if e.get("width") else None
    if size:
        rows.append(("size", _t(size.strip())))
    rows.append(("cost", _t(_usd(e.get("cost_usd")))))
    err = _error(e.get("error"))
    if err and status in ("failed", "skipped"):
        rows.append(("error" if status == "failed" else "why", f'<span class="err">{_t(err)}</span>'))
    parts.append("<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl></article>")
    return "".join(parts)


def _buttons(name: str, label: str, counts: Mapping[str, int], total: int) -> str:
    out = [f'<div class="group" role="group" aria-label="{label}" data-filter="{name}"><span>{label}</span>',
           f'<button type="button" data-value="" aria-pressed="true">all <b>{total}</b></button>']
    for value, n in counts.items():
        out.append(f'<button type="button" data-value="{_t(value)}" aria-pressed="false"'
                   f'{" disabled" if not n else ""}>{_t(value.replace("_", " "))} <b>{n}</b></button>')
    return "".join(out) + "</div>"


def render_page(manifest: Mapping[str, Any], shots: Sequence[Shot],
                gone: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole HTML document (pure: no file access)."""
    return "".join(page_parts(manifest, shots, gone))


def page_parts(manifest: Mapping[str, Any], shots: Sequence[Shot],
               gone: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The HTML document in pieces, written one by one: a page of 30,000 images is never one string."""
    found = manifest.get("recipe")
    recipe: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    name = str(recipe.get("name") or "dalle-pipe")
    groups: dict[str, dict[str, list[Shot]]] = {}
    for s in shots:
        step, key = str(s.entry.get("step")), str(s.entry.get("key") or "")
        groups.setdefault(step, {}).setdefault(key, []).append(s)
    changes = {c: sum(1 for s in shots if s.change == c) for c in CHANGES}
    statuses = {st: sum(1 for s in shots if s.entry.get("status") == st) for st in STATUSES}
    costs = [s.entry.get("cost_usd") for s in shots if content_sha(s.entry)]
    known = [c for c in costs if isinstance(c, int | float) and not isinstance(c, bool)]
    cost = _usd(sum(known), 2) + (f" ({len(costs) - len(known)} unknown)" if len(known) < len(costs) else "")
    body = []
    for step, units in groups.items():
        n = sum(len(v) for v in units.values())
        body.append(f'<section class="step" data-step="{_t(step)}"><h2>{_t(step)} '
                    f'<small>{n} image{"" if n == 1 else "s"}</small></h2><div class="units">')
        for key, items in units.items():
            head = f"<h3>{_t(key)}</h3>" if key else ""
            body.append(f'<div class="unit" data-key="{_t(key)}">{head}<div class="cards">'
                        + "".join(_card(s) for s in items) + "</div></div>")
        body.append("</div></section>")
    if not shots:
        body.append('<p class="none">This manifest has no entries yet.</p>')
    if gone:
        listed = "".join(f"<li>{_t(_task(e))}: {_t(e.get('path'))}</li>" for e in gone)
        body.append(f'<details class="gone"><summary>{len(gone)} image(s) no longer in the manifest'
                    f'</summary><ul>{listed}</ul></details>')
    meta = " · ".join(_t(x) for x in (
        f"recipe {recipe.get('path')}", f"provider {manifest.get('provider')}",
        f"finished {manifest.get('finished_at')}", f"dalle-pipe {manifest.get('version') or __version__}"))
    csp = (f"default-src 'none'; img-src 'self' data:; style-src '{_csp_hash(_CSS)}'; "
           f"script-src '{_csp_hash(_JS)}'; base-uri 'none'; form-action 'none'")
    return [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_t(name)} · dalle-pipe review</title><style>{_CSS}</style></head><body>",
        f'<header><h1>{_t(name)}</h1><p class="meta">{meta}</p>',
        f'<p class="meta"><span id="shown">{len(shots)}</span> of {len(shots)} image(s) shown · '
        f"cost of these images {_t(cost)}</p>",
        '<nav class="filters">', _buttons("change", "since last run", changes, len(shots)),
        _buttons("status", "status", statuses, len(shots)),
        '<input type="search" id="q" placeholder="search prompts, keys, files" aria-label="search">',
        "</nav></header><main>", *body, f"</main><script>{_JS}</script></body></html>\n",
    ]


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


_CSS = """
:root{color-scheme:light dark;--bg:#fafafa;--fg:#1d1d1f;--mute:#6b6b70;--card:#fff;--line:#e2e2e6;
--new:#1a7f37;--changed:#9a6700;--failed:#cf222e;--ok:#57606a;--acc:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--fg:#e6e6e6;--mute:#9aa0a6;--card:#171a21;
--line:#2b303b;--new:#3fb950;--changed:#d29922;--failed:#f85149;--ok:#8b949e;--acc:#58a6ff}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
background:var(--bg);color:var(--fg)}
header{position:sticky;top:0;z-index:2;background:var(--bg);border-bottom:1px solid var(--line);
padding:12px 20px}h1{margin:0 0 4px;font-size:20px}.meta{margin:2px 0;color:var(--mute)}
.filters{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin-top:8px}
.group{display:flex;flex-wrap:wrap;gap:4px;align-items:center}.group>span{color:var(--mute);margin-right:4px}
button{font:inherit;border:1px solid var(--line);background:var(--card);color:var(--fg);border-radius:14px;
padding:2px 10px;cursor:pointer}button[aria-pressed=true]{border-color:var(--acc);color:var(--acc)}
button:disabled{opacity:.45;cursor:default}
input[type=search]{font:inherit;padding:3px 8px;border:1px solid var(--line);border-radius:6px;
background:var(--card);color:var(--fg);min-width:240px}
main{padding:8px 20px 40px}h2{font-size:17px;margin:22px 0 6px}h2 small{color:var(--mute);font-weight:400}
h3{font-size:13px;margin:0 0 4px;font-family:ui-monospace,monospace;overflow-wrap:anywhere;max-width:274px}
.units{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{width:274px;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px;
overflow:hidden}
.card[data-change=failed]{border-color:var(--failed)}
.thumb{display:flex;align-items:center;justify-content:center;height:256px;border-radius:4px;
background-color:#ccc;background-image:linear-gradient(45deg,#eee 25%,transparent 25%,transparent 75%,
#eee 75%),linear-gradient(45deg,#eee 25%,transparent 25%,transparent 75%,#eee 75%);
background-size:16px 16px;background-position:0 0,8px 8px}
.thumb img{max-width:100%;max-height:256px;height:auto;object-fit:contain}
.thumb.empty{background:repeating-linear-gradient(135deg,transparent 0 8px,rgba(127,127,127,.12) 8px 16px)}
.noimg{color:var(--mute)}
.badges{display:flex;flex-wrap:wrap;gap:4px;margin:6px 0}
.b{font-size:12px;border-radius:10px;padding:0 7px;border:1px solid currentColor;color:var(--ok)}
.c-new,.s-generated{color:var(--new)}.c-changed,.s-modified,.warn{color:var(--changed)}
.c-failed,.s-failed{color:var(--failed)}.approved{color:var(--acc)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 8px;margin:0;font-size:12.5px}
dt{color:var(--mute)}dd{margin:0;min-width:0;overflow-wrap:anywhere}
.prompt{display:block;max-height:9em;overflow:auto;white-space:pre-wrap}.err{color:var(--failed)}
a{color:var(--acc)}.gone{margin-top:24px;color:var(--mute)}[hidden]{display:none!important}
"""

_JS = """
(function(){
var cards=Array.prototype.slice.call(document.querySelectorAll("article.card"));
var texts=cards.map(function(c){return c.textContent.toLowerCase();});
var groups=Array.prototype.slice.call(document.querySelectorAll(".unit,.step"));
var state={change:"",status:"",q:""};var shown=document.getElementById("shown");
function apply(){var n=0;
cards.forEach(function(c,i){var ok=(!state.change||c.dataset.change===state.change)&&
(!state.status||c.dataset.status===state.status)&&(!state.q||texts[i].indexOf(state.q)>=0);
c.hidden=!ok;if(ok)n++;});
groups.forEach(function(g){g.hidden=!g.querySelector("article.card:not([hidden])");});
shown.textContent=String(n);}
function press(group,value){group.querySelectorAll("button").forEach(function(x){
x.setAttribute("aria-pressed",String(x.dataset.value===value));});}
function save(){var h=[];["change","status","q"].forEach(function(k){
if(state[k])h.push(k+"="+encodeURIComponent(state[k]));});
history.replaceState(null,"",h.length?"#"+h.join("&"):location.pathname+location.search);}
var filters=Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
filters.forEach(function(group){
group.addEventListener("click",function(ev){var b=ev.target.closest("button");if(!b||b.disabled)return;
state[group.dataset.filter]=b.dataset.value;press(group,b.dataset.value);apply();save();});});
var q=document.getElementById("q");
q.addEventListener("input",function(){state.q=q.value.trim().toLowerCase();apply();save();});
location.hash.replace(/^#/,"").split("&").forEach(function(kv){var i=kv.indexOf("=");if(i<0)return;
var k=kv.slice(0,i),v="";try{v=decodeURIComponent(kv.slice(i+1));}catch(e){return;}
if(k==="q"){q.value=v;state.q=v.trim().toLowerCase();}else if(k in state)state[k]=v;});
filters.forEach(function(group){press(group,state[group.dataset.filter]);});
if(state.change||state.status||state.q)apply();
})();
"""
