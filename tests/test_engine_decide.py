"""The one decision (engine/decide.py): typed, taken once per task, and the same for previews and runs."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from test_engine_run import Scripted, png

from dalle_pipe.app import load
from dalle_pipe.engine import run as engine_run
from dalle_pipe.engine.decide import decide
from dalle_pipe.engine.decision import STATUS, Decision, Kind
from dalle_pipe.engine.load import load_state
from dalle_pipe.engine.make import settle
from dalle_pipe.engine.results import RunOptions
from dalle_pipe.engine.run import run_plan
from dalle_pipe.prices import load_prices
from dalle_pipe.recipe import Overrides
from dalle_pipe.store import Journal
from dalle_pipe.throttle import FakeClock, Limits

RECIPE = """\
version: 1
name: three
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 600, concurrency: 2, max_retries: 0}
items: [{id: a}, {id: b}, {id: c}]
steps:
  - id: shot
    generate: {prompt: "product {{ item.id }}"}
  - id: cut
    mask:
      size_of: {step: shot}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
  - id: edit
    edit: {image: {step: shot}, mask: {step: cut}, prompt: "a beach behind it"}
"""


def plan_of(root: Path):  # type: ignore[no-untyped-def]
    (root / "recipe.yaml").write_text(RECIPE)
    return load([root / "recipe.yaml"], Overrides()).plans[0]


def go(root: Path, provider: Scripted, mode: str = "run"):  # type: ignore[no-untyped-def]
    return run_plan(plan_of(root), RunOptions(mode=mode, space_check=False), load_prices(None), "openai",
                    lambda: provider, clock=FakeClock())


def distinct(n: int) -> list[BaseException | bytes]:
    """n different 1024x1024 PNG images."""
    out: list[BaseException | bytes] = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (1024, 1024), (i * 40 % 256, 10, 10)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def decisions(root: Path) -> dict[str, Decision]:
    """Every task of the plan, decided as a preview decides it (nothing written)."""
    plan = plan_of(root)
    state = load_state(plan, RunOptions(mode="dry"), load_prices(None), "openai", None, Limits(), None)
    out: dict[str, Decision] = {}
    for i in range(len(plan.units)):
        done = {}
        for task in plan.tasks_of(i):
            d = decide(state, task, done)
            done[task.step.id] = settle(state, task, d)
            out[task.id] = d
    return out


def test_every_decision_kind_maps_to_one_manifest_status() -> None:
    assert set(STATUS) == set(Kind)
    assert STATUS[Kind.REUSE] == STATUS[Kind.ADOPT] == STATUS[Kind.KEEP_APPROVED] == "up_to_date"
    assert STATUS[Kind.PLACE_SAVED] == STATUS[Kind.MAKE] == "generated"
    assert (STATUS[Kind.KEEP_MODIFIED], STATUS[Kind.KEEP_FOREIGN], STATUS[Kind.WAIT]) == ("modified", "skipped",
                                                                                           "pending")


def test_on_an_empty_folder_the_first_step_is_made_and_the_rest_wait_or_follow_from_fixed_sizes(tmp_path: Path) -> None:
    d = decisions(tmp_path)
    assert d["shot@a"].kind is Kind.MAKE and d["shot@a"].cost is not None and d["shot@a"].cost > 0
    # the mask's size is fixed by the generate step's params: it can be decided (made) now
    assert d["cut@a"].kind is Kind.MAKE and d["cut@a"].cost == 0.0
    assert d["edit@a"].kind is Kind.WAIT and d["edit@a"].reason == "an input will change"
    assert d["edit@a"].cost is not None and d["edit@a"].cost > 0  # an edit counts its input images


def test_each_task_is_decided_once_and_confirmed_when_its_inputs_land(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    real = engine_run.decide

    def counting(state, task, done, **kw):  # type: ignore[no-untyped-def]
        calls[task.id] += 1
        return real(state, task, done, **kw)

    monkeypatch.setattr(engine_run, "decide", counting)
    provider = Scripted(distinct(6))  # distinct images: three different edits (equal ones would be twins)
    result = go(tmp_path, provider)
    assert [r.outcome.status for r in result.reports] == ["generated"] * 9
    assert len(provider.sent) == 6  # three generations, three edits
    # shot: decided once (the fast pass's decision is taken by the worker as it is); cut (decided
    # from the shot's size, which its params fix) and edit (waiting for its inputs) are confirmed
    # once the shot has landed
    assert calls == {**{f"shot@{k}": 1 for k in "abc"}, **{f"{s}@{k}": 2 for s in ("cut", "edit") for k in "abc"}}
    calls.clear()
    again = go(tmp_path, provider)
    assert [r.outcome.status for r in again.reports] == ["up_to_date"] * 9
    assert len(provider.sent) == 6 and set(calls.values()) == {1}  # the no-op rerun: once each, nothing sent


def test_an_image_that_landed_before_a_crash_is_adopted_and_every_preview_says_so(tmp_path: Path) -> None:
    provider = Scripted([])
    go(tmp_path, provider)
    out = tmp_path / "out" / "three"
    manifest = json.loads((out / "manifest.json").read_text())
    shot_a = next(e for e in manifest["entries"] if e["step"] == "shot" and e["key"] == "a")
    # a crash between the write and the journal's done line: the intent is there, the entry is not
    entries = [e for e in manifest["entries"] if not (e["step"] == "shot" and e["key"] == "a")]
    (out / "manifest.json").write_text(json.dumps({**manifest, "entries": entries}))
    journal = Journal(out)
    journal.intent("shot@a", shot_a["fingerprint"], 1)
    journal.close()
    assert decisions(tmp_path)["shot@a"].kind is Kind.ADOPT
    check = go(tmp_path, provider, mode="check")
    assert {r.task.id: r.outcome.status for r in check.reports}["shot@a"] == "up_to_date"
    sent = len(provider.sent)
    result = go(tmp_path, provider)
    assert len(provider.sent) == sent  # adopted: nothing paid again
    entry = next(e for e in json.loads((out / "manifest.json").read_text())["entries"]
                 if e["step"] == "shot" and e["key"] == "a")
    assert entry["recovered"] is True and entry["sha256"] == shot_a["sha256"]
    assert {r.task.id: r.outcome.status for r in result.reports}["shot@a"] == "up_to_date"


def test_a_changed_prompt_is_made_again_and_its_mask_stays_up_to_date(tmp_path: Path) -> None:
    provider = Scripted([])
    go(tmp_path, provider)
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("product {{ item.id }}", "a product {{ item.id }}"))
    plan = load([tmp_path / "recipe.yaml"], Overrides()).plans[0]
    state = load_state(plan, RunOptions(mode="dry"), load_prices(None), "openai", None, Limits(), None)
    done = {}
    kinds = {}
    for task in plan.tasks_of(0):
        d = decide(state, task, done)
        done[task.step.id] = settle(state, task, d)
        kinds[task.step.id] = d.kind
    # the mask depends only on the shot's size, which the params fix: it stays up to date
    assert kinds == {"shot": Kind.MAKE, "cut": Kind.REUSE, "edit": Kind.WAIT}


TWINS = """\
version: 1
name: twins
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {images_per_minute: 600, concurrency: 2, max_retries: 0}
items: [{id: a, name: mug}, {id: b, name: mug}, {id: c, name: cup}]
steps:
  - id: shot
    generate: {prompt: "a {{ item.name }} on a table"}
"""


def twins_plan(root: Path):  # type: ignore[no-untyped-def]
    (root / "recipe.yaml").write_text(TWINS)
    return load([root / "recipe.yaml"], Overrides()).plans[0]


def test_two_tasks_with_one_request_are_made_once_and_every_preview_counts_it_once(tmp_path: Path) -> None:
    plan = twins_plan(tmp_path)
    prices = load_prices(None)
    dry = load_state(plan, RunOptions(mode="dry"), prices, "openai", None, Limits(), None)
    kinds = {}
    for i in range(3):
        task = plan.tasks_of(i)[0]
        d = decide(dry, task, {})
        settle(dry, task, d)
        kinds[task.id] = (d.kind, d.cost, d.reason)
    one = kinds["shot@a"][1]
    assert one is not None and one > 0
    assert kinds["shot@b"] == (Kind.TWIN, 0.0, "the same request as shot@a: made once, then copied")
    assert kinds["shot@a"][0] is kinds["shot@c"][0] is Kind.MAKE
    gate_state = load_state(plan, RunOptions(mode="dry"), prices, "openai", None, Limits(), None)
    assert engine_run.gate(plan, [0, 1, 2], gate_state, 10.0) == round(2 * one, 6)  # --max-cost counts it once

    provider = Scripted([])
    result = run_plan(plan, RunOptions(space_check=False), prices, "openai", lambda: provider, clock=FakeClock())
    statuses = {r.task.id: (r.outcome.status, r.outcome.reason) for r in result.reports}
    # whichever of a and b reaches the request first makes it; the other copies it
    made, copied = ("shot@a", "shot@b") if statuses["shot@a"][0] == "generated" else ("shot@b", "shot@a")
    assert statuses[made] == ("generated", None)
    assert statuses[copied] == ("up_to_date", f"the same request as {made}: made once, copied here")
    assert sorted(q.prompt or "" for q in provider.sent) == ["a cup on a table", "a mug on a table"]
    out = tmp_path / "out" / "twins"
    a, b = ((out / k / "shot.png").read_bytes() for k in "ab")
    assert a == b
    rerun = run_plan(twins_plan(tmp_path), RunOptions(space_check=False), prices, "openai", lambda: provider,
                     clock=FakeClock())
    assert [r.outcome.status for r in rerun.reports] == ["up_to_date"] * 3 and len(provider.sent) == 2


def test_a_twin_of_a_request_that_failed_fails_without_sending(tmp_path: Path) -> None:
    from dalle_pipe.providers.base import Refused

    plan = twins_plan(tmp_path)
    provider = Scripted([Refused("blocked by the safety system", status=400, code="moderation_blocked"), png()])
    result = run_plan(plan, RunOptions(space_check=False), load_prices(None), "openai", lambda: provider,
                      clock=FakeClock())
    statuses = {r.task.id: (r.outcome.status, r.outcome.reason) for r in result.reports}
    sent, twin = ("shot@a", "shot@b") if "same request" in str(statuses["shot@b"][1]) else ("shot@b", "shot@a")
    assert statuses[sent][0] == "failed"
    assert statuses[twin] == ("failed", f"the same request as {sent}, which was not made: {statuses[sent][1]}")
    assert len(provider.sent) == 2  # shot@a (refused) and shot@c: the twin sent nothing


def test_saved_paid_bytes_no_task_places_are_reported_and_kept_and_redundant_ones_go(tmp_path: Path) -> None:
    from dalle_pipe.app import notes
    from dalle_pipe.store import ObjectStore

    provider = Scripted(distinct(6))
    go(tmp_path, provider)
    out = tmp_path / "out" / "three"
    manifest = json.loads((out / "manifest.json").read_text())
    shot_a = next(e for e in manifest["entries"] if e["step"] == "shot" and e["key"] == "a")
    objects = ObjectStore(out)
    # an answer saved for shot@a's request, which is in place already (redundant), and one for a request
    # no task makes any more (a prompt since changed): paid, so kept and reported
    objects.put(distinct(7)[6], task="shot@a", fingerprint=shot_a["fingerprint"], index=0, meta={})
    objects.put(distinct(8)[7], task="shot@b", fingerprint="sha256:" + "0" * 64, index=0, meta={})
    result = go(tmp_path, provider)
    assert [r.outcome.status for r in result.reports] == ["up_to_date"] * 9
    assert result.unplaced == ["shot@b #0"]
    assert notes(result) == [
        f"note: 1 paid image(s) an earlier run saved are kept in {out / '.dalle-pipe' / 'objects'}, not placed: "
        "no task of this run asks for them any more (shot@b #0); they stay there until removed by hand"]
    assert [r.task for r in ObjectStore(out).pending()] == ["shot@b"]
