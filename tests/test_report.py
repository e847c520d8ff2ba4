"""report.html: every entry shown, all escaped, thumbnails reused, changes classified; in real Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_pipe import store
from dalle_pipe.cli import main
from dalle_pipe.report import THUMB_MAX, classify, removed, render_page, thumb_ext, write_report

INJECTION = "<script>alert(1)</script>"

RECIPE = """\
version: 1
name: shots
provider: offline
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug, what: "a ceramic mug"}
  - {id: wallet, what: "a leather wallet"}
  - {id: evil, what: "<script>alert(1)</script> & \\"quotes\\""}
steps:
  - id: hero
    generate: {prompt: "{{ item.what }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
"""


def invoke(root: Path, *args: str) -> Any:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(cwd)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    result = invoke(tmp_path, "run", "recipe.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path


def out_dir(project: Path) -> Path:
    return project / "out" / "shots"


def manifest(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir(project) / "manifest.json").read_text())
    return data


class _Collect(HTMLParser):
    """Attributes of every element, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.append((tag, dict(attrs)))
        if tag == "script":
            self.scripts += 1
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


def test_run_writes_the_report_next_to_the_manifest(project: Path) -> None:
    page = out_dir(project) / "report.html"
    assert page.is_file()
    html = page.read_text()
    assert html.startswith("<!doctype html>")
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from the network
    assert "default-src 'none'" in html


def test_every_entry_is_referenced(project: Path) -> None:
    doc = parse((out_dir(project) / "report.html").read_text())
    cards = [a for tag, a in doc.attrs if tag == "article"]
    links = {a.get("href") for tag, a in doc.attrs if tag == "a"}
    imgs = {a.get("src") for tag, a in doc.attrs if tag == "img"}
    entries = manifest(project)["entries"]
    assert len(entries) == 6
    by_step = sorted(entries, key=lambda e: e["step"] != "hero")
    assert [c["data-path"] for c in cards] == [e["path"] for e in by_step]

    for e in entries:
        assert quote(e["path"]) in links
        assert f".thumbs/{e['sha256']}.{thumb_ext()}" in imgs


def test_grouped_by_step_then_unit(project: Path) -> None:
    html = (out_dir(project) / "report.html").read_text()
    steps = re.findall(r'<section class="step" data-step="([^"]*)"', html)
    assert steps == ["hero", "bg_mask"]
    hero = html[html.index('data-step="hero"'):html.index('data-step="bg_mask"')]
    assert re.findall(r'<div class="unit" data-key="([^"]*)"', hero) == ["mug", "wallet", "evil"]


def test_prompts_are_escaped(project: Path) -> None:
    html = (out_dir(project) / "report.html").read_text()
    assert INJECTION not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34; on marble" in html  # markupsafe's forms
    doc = parse(html)
    assert doc.scripts == 1  # only the page's own script
    assert any(INJECTION in t for t in doc.text)  # shown as text


def test_escaping_of_every_field_and_unsafe_paths() -> None:
    evil = INJECTION
    entry = {"step": evil, "key": evil, "index": 0, "path": f"javascript:{evil}", "sha256": None,
             "status": "failed", "model": evil, "provider": evil, "params": {evil: evil}, "prompt": evil,
             "revised_prompt": evil, "inputs": [{"role": evil, "path": evil}], "cost_usd": None,
             "error": {"type": evil, "status": 400, "code": evil, "message": evil}}
    from dalle_pipe.report import Shot

    html = render_page({"recipe": {"name": evil, "path": evil}, "provider": evil, "entries": [entry]},
                       [Shot(entry, "failed", None, False)], [entry])
    assert "<script>alert" not in html
    assert parse(html).scripts == 1
    assert 'href="javascript' not in html
    odd = {**entry, "status": "generated", "path": "a b#1/x?.png", "sha256": "0" * 64}
    html = render_page({"entries": [odd]}, [Shot(odd, "new", None, True)])
    assert 'href="a%20b%231/x%3F.png"' in html  # a file name is a path, never a fragment or a query


def test_thumbnails_small_named_by_sha_and_reused(project: Path) -> None:
    folder = out_dir(project) / ".thumbs"
    entries = manifest(project)["entries"]
    thumbs = sorted(folder.iterdir())
    assert {p.name for p in thumbs} == {f"{e['sha256']}.{thumb_ext()}" for e in entries}
    for p in thumbs:
        with Image.open(p) as im:
            assert max(im.size) <= THUMB_MAX
            assert im.format in ("WEBP", "JPEG")
    before = {p.name: p.stat().st_mtime_ns for p in thumbs}
    write_report(out_dir(project))
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_thumbnail_remade_when_the_image_changes_and_stale_ones_removed(project: Path) -> None:
    invoke(project, "run", "recipe.yaml", "--quiet")  # a no-op run: previous == current
    (project / "recipe.yaml").write_text(RECIPE.replace("on marble", "on slate"))
    old = {e["path"]: e["sha256"] for e in manifest(project)["entries"]}
    assert invoke(project, "run", "recipe.yaml", "--quiet").exit_code == 0
    new = {e["path"]: e["sha256"] for e in manifest(project)["entries"]}
    names = {p.name.split(".")[0] for p in (out_dir(project) / ".thumbs").iterdir()}
    assert names == set(new.values())
    changed = {p for p in new if new[p] != old[p]}
    assert changed == {"mug/hero.png", "wallet/hero.png", "evil/hero.png"}
    html = (out_dir(project) / "report.html").read_text()
    cards = re.findall(r'data-change="([^"]*)" data-status="([^"]*)" data-path="([^"]*)"', html)
    assert {(c, s) for c, s, p in cards if p.endswith("hero.png")} == {("changed", "generated")}
    assert {(c, s) for c, s, p in cards if p.endswith("bg_mask.png")} == {("unchanged", "up_to_date")}


def test_classify_against_previous_manifest() -> None:
    prev = [{"step": "a", "key": "k1", "index": 0, "sha256": "1" * 64},
            {"step": "a", "key": "k2", "index": 0, "sha256": "2" * 64},
            {"step": "a", "key": "k3", "index": 0, "sha256": "3" * 64},
            {"step": "a", "key": "gone", "index": 0, "sha256": "4" * 64}]
    now = [{"step": "a", "key": "k1", "index": 0, "sha256": "1" * 64, "status": "up_to_date"},
           {"step": "a", "key": "k2", "index": 0, "sha256": "f" * 64, "status": "generated"},
           {"step": "a", "key": "k3", "index": 0, "sha256": "3" * 64, "status": "failed"},
           {"step": "a", "key": "k4", "index": 0, "sha256": "5" * 64, "status": "generated"},
           {"step": "a", "key": "k4", "index": 1, "sha256": None, "status": "skipped"}]
    assert classify(now, prev) == ["unchanged", "changed", "failed", "new", "new"]
    assert classify(now, None) == ["new", "new", "failed", "new", "new"]
    assert [e["key"] for e in removed(now, prev)] == ["gone"]


def test_entries_without_files_and_filter_counts(project: Path) -> None:
    doc = manifest(project)
    doc["entries"][0] = {**doc["entries"][0], "status": "failed", "sha256": None,
                         "error": {"type": "refused", "status": 400, "code": "moderation_blocked",
                                   "message": "rejected by the safety system"}}
    doc["entries"][1] = {**doc["entries"][1], "status": "skipped", "sha256": None,
                         "error": {"type": "skipped", "status": None, "code": None,
                                   "message": "`when` is false"}}
    store.atomic_write_json(out_dir(project) / "manifest.json", doc)
    html = write_report(out_dir(project)).read_text()
    assert "refused 400 moderation_blocked: rejected by the safety system" in html
    assert "`when` is false" in html
    assert 'data-value="failed" aria-pressed="false">failed <b>1</b>' in html
    assert 'data-value="skipped" aria-pressed="false">skipped <b>1</b>' in html
    for status in ("failed", "skipped"):
        card = html[html.index(f'data-status="{status}"'):]
        card = card[:card.index("</article>")]
        assert "<img" not in card and "<a " not in card
        assert ">no image<" in card or ">failed<" in card


def test_report_command_rebuilds(project: Path) -> None:
    page = out_dir(project) / "report.html"
    page.unlink()
    result = invoke(project, "report", "recipe.yaml")
    assert result.exit_code == 0, result.output
    assert result.output == "shots: wrote out/shots/report.html\n"
    assert page.is_file()
    page.unlink()
    assert invoke(project, "report", "out/shots").exit_code == 0  # an output folder works too
    assert page.is_file()


def test_report_command_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    result = invoke(tmp_path, "report", "recipe.yaml")
    assert result.exit_code == 2
    assert "no manifest.json yet for shots" in result.output


# --------------------------------------------------------------------------------------------- browser

def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_in_headless_chromium(project: Path, tmp_path: Path) -> None:
    page = (out_dir(project) / "report.html").resolve()
    url = page.as_uri()
    shot = tmp_path / "shot.png"
    run = _browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), run.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((64, 100)).getcolors(64 * 100)
        assert colours is not None and len(colours) > 50  # thumbnails drawn, not a blank page

    dom = _browse(url, tmp_path, "--dump-dom").stdout
    assert "<article" in dom
    entries = manifest(project)["entries"]
    doc = parse(dom)
    hrefs = {a.get("href") for tag, a in doc.attrs if tag == "a"}
    srcs = {a.get("src") for tag, a in doc.attrs if tag == "img"}
    paths = [a.get("data-path") for tag, a in doc.attrs if tag == "article"]
    for e in entries:
        assert e["path"] in paths
        assert quote(e["path"]) in hrefs
        assert f".thumbs/{e['sha256']}.{thumb_ext()}" in srcs
    assert not any(tag == "script" and INJECTION in str(a) for tag, a in doc.attrs)
    assert INJECTION in "".join(doc.text)  # rendered as text
    assert "<span id=\"shown\">6</span>" in dom

    filtered = _browse(url + "#status=generated&q=leather", tmp_path, "--dump-dom").stdout
    visible = re.findall(r'<article class="card"[^>]*data-path="([^"]*)"(?![^>]*hidden)', filtered)
    assert visible == ["wallet/hero.png"]  # the page's script ran (under its CSP hash) and filtered
    assert '<span id="shown">1</span>' in filtered


def test_a_hand_edited_image_shows_what_the_file_holds_now(project: Path) -> None:
    path = out_dir(project) / "mug" / "hero.png"
    with Image.open(path) as im:
        im.convert("RGB").rotate(90).save(path)
    now = store.sha256_file(path)
    assert invoke(project, "run", "recipe.yaml", "--quiet").exit_code == 0
    html = (out_dir(project) / "report.html").read_text()
    assert f'src=".thumbs/{now}.{thumb_ext()}"' in html
    assert '<article class="card" data-change="changed" data-status="modified" data-path="mug/hero.png">' in html


def test_an_unreadable_image_gets_no_preview_but_still_a_link(project: Path) -> None:
    shutil.rmtree(out_dir(project) / ".thumbs")
    (out_dir(project) / "mug" / "hero.png").write_bytes(b"not a png")
    html = write_report(out_dir(project)).read_text()
    card = html[html.index('data-path="mug/hero.png"'):]
    card = card[:card.index("</article>")]
    assert '<a class="thumb" href="mug/hero.png"><span class="noimg">no preview</span></a>' in card


def test_shards_without_a_whole_run_manifest_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    for shard in ("1/2", "2/2"):
        r = invoke(tmp_path, "run", "recipe.yaml", "--shard", shard, "--quiet")
        assert r.exit_code == 0, r.output
    out = out_dir(tmp_path)
    assert not (out / "manifest.json").exists()
    html = (out / "report.html").read_text()
    paths = re.findall(r'data-path="([^"]*)"', html)
    assert sorted(paths) == sorted(f"{k}/{s}.png" for k in ("mug", "wallet", "evil") for s in ("hero", "bg_mask"))
    assert all(f".thumbs/{p.name}" in html for p in (out / ".thumbs").iterdir())
    assert invoke(tmp_path, "report", "recipe.yaml").exit_code == 0


def test_writers_of_the_page_take_turns(project: Path) -> None:
    page = out_dir(project) / "report.html"
    page.unlink()
    written: list[Path] = []
    with store.RunLock(out_dir(project), "lock.report"):  # another writer (a shard finishing) holds it
        thread = threading.Thread(target=lambda: written.append(write_report(out_dir(project))))
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and not page.exists()  # waiting its turn, not failing
    thread.join(30)
    assert written == [page] and page.read_text().startswith("<!doctype html>")
