"""report.html from hand-written manifests: hostile values stay text, CSP hashes match, and the
fields other parts add (warnings, mainline model, checks) are shown and filterable."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_report import _browse

from dalle_pipe import store
from dalle_pipe.report import Shot, render_page, write_report

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "</textarea></style></script><script>alert(2)</script>",
    "javascript:alert(3)",
    "{{ 7*7 }}{% raw %}",
]


class Page(HTMLParser):
    """Every element with its attributes, the text outside scripts, and the style and script bodies."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.bodies: dict[str, list[str]] = {"script": [], "style": []}
        self._in: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag in self.bodies:
            self._in = tag
            self.bodies[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.bodies[self._in][-1] += data
        else:
            self.text.append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == name]


def entry(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"step": "hero", "key": "mug", "index": 0, "path": "mug/hero.png", "sha256": "a" * 64,
                            "status": "generated", "model": "gpt-image-2", "provider": "openai",
                            "params": {"size": "1024x1024"}, "prompt": "a mug", "cost_usd": 0.04,
                            "width": 1024, "height": 1024, "format": "png"}
    return {**base, **over}


def page(*entries: dict[str, Any], present: bool = True, gone: tuple[dict[str, Any], ...] = ()) -> str:
    shots = [Shot(e, "failed" if e.get("status") == "failed" else "new", None, present) for e in entries]
    return render_page({"recipe": {"name": "shots", "path": "recipe.yaml"}, "entries": list(entries)}, shots, gone)


def card_of(html: str, path: str) -> str:
    start = html.index(f'data-path="{path}"')
    return html[start:html.index("</article>", start)]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_values_stay_text(evil: str) -> None:
    e = entry(step=evil, key=evil, path=f"{evil}/x.png", prompt=evil, revised_prompt=evil, model=evil,
              provider=evil, mainline_model=evil, params={evil: evil}, inputs=[{"role": evil, "path": evil}],
              warnings=[evil], status="failed", sha256=None,
              error={"type": evil, "status": 500, "code": evil, "message": evil},
              checks=[{"name": evil, "kind": evil, "passed": False, "score": 0.5, "reason": evil, "cost_usd": 0.001}])
    html = render_page({"recipe": {"name": evil, "path": evil}, "provider": evil, "finished_at": evil,
                        "version": evil, "entries": [e]}, [Shot(e, "failed", None, False)], [e])
    doc = Page(html)
    assert len(doc.tags("script")) == 1 and len(doc.tags("style")) == 1  # only the page's own
    assert not doc.tags("img") and not doc.tags("textarea")
    for tag, attrs in doc.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("href", "src"):
            value = attrs.get(name)
            assert value is None or not value.lower().startswith("javascript"), (tag, attrs)
    text = "".join(doc.text)
    assert text.count(evil) >= 10  # shown, as text: name, prompt, revised, model, error, check reason, ...
    assert "49" not in text.replace(evil, "")  # a template in a value is never evaluated
    assert "alert" not in "".join(doc.bodies["script"]) + "".join(doc.bodies["style"])


def test_an_image_path_is_always_a_relative_url() -> None:
    e = entry(path="javascript:alert(1)//x.png")
    doc = Page(page(e))
    hrefs = {a["href"] for a in doc.tags("a")}
    assert hrefs == {"javascript%3Aalert%281%29//x.png"}  # a path, never a scheme


def test_csp_hashes_are_those_of_the_rendered_style_and_script() -> None:
    html = page(entry(checks=[{"name": "size", "kind": "size", "passed": True}]))
    doc = Page(html)
    (meta,) = [a for a in doc.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    policy = str(meta["content"])

    def digest(text: str) -> str:
        return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    assert f"style-src '{digest(doc.bodies['style'][0])}'" in policy
    assert f"script-src '{digest(doc.bodies['script'][0])}'" in policy
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy


def test_warnings_are_listed_per_entry() -> None:
    html = page(entry(warnings=["approved while stale", "made offline"]), entry(key="wallet", path="w.png"))
    card = card_of(html, "mug/hero.png")
    assert ('<dt>warnings</dt><dd><ul class="warns"><li>approved while stale</li><li>made offline</li></ul></dd>'
            in card)
    assert '<span class="b warn">2 warnings</span>' in card
    assert "warnings" not in card_of(html, "w.png")


def test_the_mainline_model_of_a_responses_image() -> None:
    html = page(entry(mainline_model="gpt-5.5", endpoint="/v1/responses"),
                entry(key="b", path="b.png", params={"size": "1024x1024", "mainline_model": "gpt-5.4"}),
                entry(key="c", path="c.png"))
    assert "<dt>mainline</dt><dd>gpt-5.5</dd>" in card_of(html, "mug/hero.png")
    assert "<dt>mainline</dt><dd>gpt-5.4</dd>" in card_of(html, "b.png")
    assert "mainline" not in card_of(html, "c.png")


CHECKS = [
    {"name": "size", "kind": "size", "passed": True, "score": None, "reason": None, "cost_usd": None},
    {"name": "handle", "kind": "ask", "passed": False, "score": None,
     "reason": "the mug's handle is cut off", "cost_usd": 0.0021},
    {"name": "kept", "kind": "unchanged", "passed": True, "score": 0.9871, "reason": None, "cost_usd": 0},
]


def test_a_badge_and_the_reason_per_check() -> None:
    html = page(entry(status="failed_checks", checks=CHECKS))
    card = card_of(html, "mug/hero.png")
    assert 'data-checks="failed"' in html
    assert '<span class="b ck-failed">1 check failed</span>' in card
    assert '<span class="b s-failed_checks">failed checks</span>' in card
    items = re.findall(r"<li data-check=\"(\w+)\">(.*?)</li>", card)
    assert items == [
        ("passed", '<span class="b ck-passed" title="size">size: passed</span>'),
        ("failed", '<span class="b ck-failed" title="ask">handle: failed</span> the mug&#39;s handle is cut off '
                   "<small>$0.0021</small>"),
        ("passed", '<span class="b ck-passed" title="unchanged">kept: passed 0.987</span>'),
    ]


def test_the_checks_filter_counts_failed_unjudged_and_passed() -> None:
    offline = [{"name": "same", "kind": "ask", "passed": None, "reason": "not judged (offline)"}]
    html = page(entry(checks=CHECKS), entry(key="b", path="b.png", checks=offline),
                entry(key="c", path="c.png", checks=CHECKS[:1]), entry(key="d", path="d.png"))
    assert '<div class="group" role="group" aria-label="checks" data-filter="checks">' in html
    assert 'data-value="failed" aria-pressed="false">failed <b>1</b>' in html
    assert 'data-value="not_judged" aria-pressed="false">not judged <b>1</b>' in html
    assert 'data-value="passed" aria-pressed="false">passed <b>1</b>' in html
    assert 'data-checks="not_judged"' in card_of(html, "b.png")
    assert '<span class="b ck-not_judged">checks not judged</span>' in card_of(html, "b.png")
    assert "data-checks" not in card_of(html, "d.png")
    assert "<span>status</span>" in html and "failed checks" not in html  # no such status here: no button


def test_no_checks_filter_without_checks() -> None:
    assert 'data-filter="checks"' not in page(entry())


def test_checks_filter_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "out"
    entries = [entry(key="ok", path="ok.png", sha256=None, checks=CHECKS[:1]),
               entry(key="bad", path="bad.png", sha256=None, status="failed_checks", checks=CHECKS),
               entry(key="none", path="none.png", sha256=None)]
    store.atomic_write_json(out / store.MANIFEST_NAME, {"recipe": {"name": "shots"}, "entries": entries})
    url = write_report(out).resolve().as_uri()
    dom = _browse(url + "#checks=failed", tmp_path, "--dump-dom").stdout
    visible = re.findall(r'<article class="card"[^>]*data-path="([^"]*)"(?![^>]*hidden)', dom)
    assert visible == ["bad.png"]
    assert '<span id="shown">1</span>' in dom
