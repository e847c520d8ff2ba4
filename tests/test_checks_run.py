"""Checks run by `dalle-pipe run`, end to end through the CLI against the stand-in API: pass, retry,
failed_checks kept and not paid again, --check until approved, cached judgements, warn annotations,
the worst-case estimate and --max-cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakeapi import FakeOpenAI, RecordedRequest
from test_run import by_task, invoke, manifest

from dalle_pipe.cli import main

KEY = "sk-test-checks-0d9e"

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items:
  - {id: mug}
steps:
  - id: hero
    generate: {prompt: "A ceramic mug on marble"}
    checks:
      - size: 1024x1024
      - ask: "Is the {{ item.id }} whole, handle included?"
        model: gpt-5.1
        severity: SEVERITY
    on_fail: {retry: RETRY}
  - id: beach
    edit:
      image: {step: hero}
      prompt: "a tropical beach at sunset as background"
"""
ASK_LINE = 12  # the `- ask:` item of the recipe above


def project(root: Path, *, retry: int = 2, severity: str = "error") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(RECIPE.replace("RETRY", str(retry)).replace("SEVERITY", severity))
    return root


def env(api: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1",
            "GITHUB_ACTIONS": "", **extra}


def run(root: Path, api: FakeOpenAI, *args: str, **extra: str) -> Any:
    return invoke(root, "run", "recipe.yaml", *args, env=env(api, **extra))


def judgements(api: FakeOpenAI) -> list[RecordedRequest]:
    return [q for q in api.image_requests if q.path == "/v1/responses"]


def images(api: FakeOpenAI, kind: str = "generations") -> list[RecordedRequest]:
    return [q for q in api.image_requests if q.path == f"/v1/images/{kind}"]


def answers(*verdicts: bool) -> Any:
    """A judge rule that answers the given verdicts in turn (the last one from then on)."""
    left = list(verdicts)

    def rule(question: str, imgs: list[bytes]) -> tuple[bool, str]:
        passed = left.pop(0) if len(left) > 1 else left[0]
        return passed, "the handle is whole" if passed else "the mug's handle is cut off"
    return rule


def history(root: Path) -> list[Path]:
    return sorted((root / "out/shots/.dalle-pipe/history").rglob("*.png"))


def test_passing_checks_are_recorded_and_a_rerun_sends_nothing(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert "checks: 2 passed, 0 failed, 0 not judged" in r.output
    assert len(images(api)) == 1 and len(judgements(api)) == 1
    sent = judgements(api)[0].json
    assert sent["model"] == "gpt-5.1"
    hero = by_task(manifest(root))["hero@mug#0"]
    assert hero["status"] == "generated"
    assert [(c["name"], c["kind"], c["passed"], c["reason"]) for c in hero["checks"]] == [
        ("size", "size", True, "1024x1024"), ("ask", "ask", True, "looks right")]
    assert hero["checks"][0]["cost_usd"] == 0.0 and hero["checks"][1]["cost_usd"] > 0
    assert by_task(manifest(root))["beach@mug#0"].get("checks") is None
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert api.image_requests == []  # the image is up to date, the judgement cached: 0 judge requests
    assert by_task(manifest(root))["hero@mug#0"]["checks"] == hero["checks"]


def test_a_failed_check_makes_the_image_again_and_dependents_use_the_final_one(tmp_path: Path,
                                                                               api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    api.vary = True
    api.judge = answers(False, True)
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert len(images(api)) == 2 and len(judgements(api)) == 2
    m = by_task(manifest(root))
    hero = m["hero@mug#0"]
    assert hero["status"] == "generated" and hero["attempt"] == 1
    assert [a["attempt"] for a in hero["check_attempts"]] == [0, 1]
    assert [a["checks"][1]["passed"] for a in hero["check_attempts"]] == [False, True]
    assert hero["check_attempts"][0]["checks"][1]["reason"] == "the mug's handle is cut off"
    assert hero["check_attempts"][0]["fingerprint"] != hero["fingerprint"]  # the attempt is numbered in it
    # the first image went to history; the edit was made from the final one
    old = history(root)
    assert len(old) == 1 and old[0].read_bytes() != (root / "out/shots/mug/hero.png").read_bytes()
    edits = images(api, "edits")
    assert len(edits) == 1 and edits[0].images[0].data == (root / "out/shots/mug/hero.png").read_bytes()
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0 and api.image_requests == [], r.output  # the retried image is up to date


def test_checks_still_failing_keep_the_last_image_exit_1_and_are_not_paid_again(tmp_path: Path,
                                                                                api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", retry=1)
    api.vary = True
    api.judge = answers(False)
    r = run(root, api)
    assert r.exit_code == 1, r.output
    assert len(images(api)) == 2 and len(judgements(api)) == 2  # retry: 1 makes it twice, no more
    assert "1 failed checks" in r.output and "checks: 1 passed, 1 failed, 0 not judged" in r.output  # the kept image's
    assert "hero@mug: checks failed: ask: the mug's handle is cut off" in r.output
    m = manifest(root)
    assert m["counts"]["failed_checks"] == 1
    hero = by_task(m)["hero@mug#0"]
    assert hero["status"] == "failed_checks" and (root / "out/shots/mug/hero.png").is_file()
    assert by_task(m)["beach@mug#0"]["status"] == "skipped"  # a dependent waits for an image that passes
    api.clear()
    r = run(root, api)
    assert r.exit_code == 1, r.output
    assert api.image_requests == []  # kept: not made or judged again until its fingerprint changes
    assert by_task(manifest(root))["hero@mug#0"]["status"] == "failed_checks"
    doc = json.loads(run(root, api, "--json").output)["recipes"][0]
    assert (doc["failed_checks"], doc["checks"]) == (1, {"passed": 1, "failed": 1, "warn": 0, "not_judged": 0})
    assert doc["failed"] == [{"task": "hero@mug", "error": "checks failed: ask: the mug's handle is cut off; kept "
                              "from an earlier run (`dalle-pipe approve` accepts it; --force or a changed recipe "
                              "makes it again)"}]
    r = run(root, api, "--check")
    assert r.exit_code == 1, r.output
    a = invoke(root, "approve", "mug/hero", "--recipe", "recipe.yaml")
    assert a.exit_code == 0, a.output
    r = run(root, api, "--check")
    assert r.exit_code == 1  # the approved image passes; its dependent is still to make
    assert "failed checks" not in r.output and "1 to make" in r.output, r.output
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert len(images(api)) == 0 and len(images(api, "edits")) == 1  # approval overrides: the edit follows
    api.clear()
    r = run(root, api, "--check")
    assert r.exit_code == 0, r.output


def test_force_makes_a_failed_image_again(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", retry=0)
    api.vary = True
    api.judge = answers(False)
    assert run(root, api).exit_code == 1
    api.clear()
    api.judge = answers(True)
    r = run(root, api, "--force")
    assert r.exit_code == 0, r.output
    assert len(images(api)) == 1 and len(judgements(api)) == 1


def test_a_warn_check_annotates_its_own_line_and_exits_0(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", severity="warn")
    api.judge = answers(False)
    r = run(root, api, GITHUB_ACTIONS="true")
    assert r.exit_code == 0, r.output
    assert len(images(api)) == 1 and len(judgements(api)) == 1  # a warn check never retries
    assert (f"::warning file=recipe.yaml,line={ASK_LINE},title=dalle-pipe::hero@mug: check 'ask' failed: "
            f"the mug's handle is cut off") in r.output.splitlines()
    assert "checks: 1 passed, 1 failed (1 warn), 0 not judged" in r.output


def test_an_error_check_annotates_its_line_as_an_error(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p", retry=0)
    api.judge = answers(False)
    summary = tmp_path / "summary.md"
    r = run(root, api, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    assert r.exit_code == 1
    assert ("**Failed checks** (1)\n\n| recipe | task | where | message |\n| --- | --- | --- | --- |\n"
            "| shots | hero@mug | recipe.yaml:8 | checks failed: ask: the mug's handle is cut off |"
            ) in summary.read_text()
    assert (f"::error file=recipe.yaml,line={ASK_LINE},title=dalle-pipe::hero@mug: check 'ask' failed: "
            f"the mug's handle is cut off") in r.output.splitlines()


def test_offline_ask_is_not_judged_and_passes(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    r = invoke(root, "run", "recipe.yaml", "--offline", env={"DALLE_PIPE_NO_REPORT": "1"})
    assert r.exit_code == 0, r.output
    assert "checks: 1 passed, 0 failed, 1 not judged" in r.output
    ask = by_task(manifest(root))["hero@mug#0"]["checks"][1]
    assert ask["passed"] is None and ask["cost_usd"] == 0.0


def plan_costs(root: Path) -> tuple[float, float]:
    """(the hero step's cost, the recipe's total) as `plan --json` shows them."""
    r = CliRunner().invoke(main, ["plan", str(root / "recipe.yaml"), "--json"],
                           env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9"})
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["recipes"][0]
    hero = next(s for s in row["steps"] if s["step"] == "hero")
    assert hero["tries"] == int((root / "recipe.yaml").read_text().split("retry: ")[1][0]) + 1
    return float(hero["cost_usd"]), float(row["total"]["cost_usd"])


def test_plan_counts_the_worst_case_and_max_cost_gates_on_it(tmp_path: Path, api: FakeOpenAI) -> None:
    once, once_total = plan_costs(project(tmp_path / "a", retry=0))
    worst, worst_total = plan_costs(project(tmp_path / "b", retry=2))
    assert once > 0 and abs(worst - 3 * once) < 1e-5  # N+1 tries, each paying the image and the ask
    r = CliRunner().invoke(main, ["plan", str(tmp_path / "b/recipe.yaml")],
                           env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9"})
    assert "  up to 3 tries" in r.output.splitlines()[2], r.output
    root = tmp_path / "b"
    between = f"{(once_total + worst_total) / 2:.6f}"  # enough for one try, not for the worst case
    r = run(root, api, "--max-cost", between)
    assert r.exit_code == 2, r.output
    assert "exceeds --max-cost" in r.output
    assert api.image_requests == [] and not (root / "out").exists()


def test_the_shipped_catalog_shows_where_check_results_appear_offline(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = Path(__file__).resolve().parent.parent
    for name in ("pipeline.yaml", "recipes", "catalogs"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    r = invoke(tmp_path, "run", "--offline", env={"DALLE_PIPE_NO_REPORT": "1"})
    assert r.exit_code == 0, r.output
    assert "product-catalog: 9 generated, 0 up to date, 0 failed, 0 skipped, 0 modified; checks: 3 passed, " \
           "0 failed, 3 not judged" in r.output
    beach = by_task(manifest(tmp_path, "product-catalog"))["beach@mug-01#0"]
    unchanged, judged = beach["checks"]
    assert (unchanged["kind"], unchanged["passed"], unchanged["score"]) == ("unchanged", True, 1.0)
    assert (judged["kind"], judged["severity"], judged["passed"], judged["cost_usd"]) == ("ask", "warn", None, 0.0)
    r = invoke(tmp_path, "run", "--offline", env={"DALLE_PIPE_NO_REPORT": "1"})
    assert r.exit_code == 0 and "0 generated, 9 up to date" in r.output, r.output
    assert by_task(manifest(tmp_path, "product-catalog"))["beach@mug-01#0"]["checks"] == beach["checks"]
    before = (tmp_path / "out/product-catalog/manifest.json").read_bytes()
    r = invoke(tmp_path, "run", "--offline", env={"DALLE_PIPE_NO_REPORT": "1"})
    assert (tmp_path / "out/product-catalog/manifest.json").read_bytes() == before  # nothing changed, nothing written


def test_a_check_added_later_runs_on_the_kept_image_without_paying_for_it(tmp_path: Path,
                                                                          api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    assert run(root, api).exit_code == 0
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("      - size: 1024x1024\n",
                                                 "      - size: 1024x1024\n      - transparent: {min: 0.5}\n"))
    r = run(root, api, "--check")
    assert r.exit_code == 1 and "1 failed checks" in r.output, r.output  # measured locally, nothing sent
    api.clear()
    r = run(root, api)
    assert r.exit_code == 1, r.output
    assert api.image_requests == []  # the image is up to date and the ask cached: only the new check ran
    hero = by_task(manifest(root))["hero@mug#0"]
    assert hero["status"] == "failed_checks"
    assert [(c["name"], c["passed"]) for c in hero["checks"]] == [("size", True), ("transparent", False),
                                                                   ("ask", True)]
    assert hero["checks"][1]["reason"] == "0.0% of the pixels are fully transparent (needs at least 50.0%)"


def test_offline_a_failing_local_check_uses_its_retries_then_keeps_the_last_image(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("      - size: 1024x1024\n", "      - transparent: {min: 0.5}\n"))
    r = invoke(root, "run", "recipe.yaml", "--offline", env={"DALLE_PIPE_NO_REPORT": "0"})
    assert r.exit_code == 1, r.output
    page = (root / "out/shots/report.html").read_text()  # the page shows the result and can filter on it
    assert 'data-path="mug/hero.png" data-checks="failed"' in page
    assert "0.0% of the pixels are fully transparent (needs at least 50.0%)" in page
    assert ("hero@mug: checks failed: transparent: 0.0% of the pixels are fully transparent "
            "(needs at least 50.0%)") in r.output
    hero = by_task(manifest(root))["hero@mug#0"]
    assert (hero["status"], hero["attempt"]) == ("failed_checks", 2)
    assert [a["attempt"] for a in hero["check_attempts"]] == [0, 1, 2]  # the offline "not judged" ask passes
    assert len({a["fingerprint"] for a in hero["check_attempts"]}) == 3
    r = invoke(root, "run", "recipe.yaml", "--offline", env={"DALLE_PIPE_NO_REPORT": "1"})
    assert r.exit_code == 1 and "0 generated" in r.output
    assert by_task(manifest(root))["hero@mug#0"]["check_attempts"] == hero["check_attempts"]  # not made again


def test_a_judgement_not_answered_is_asked_again_once_then_cached(tmp_path: Path, api: FakeOpenAI) -> None:
    root = project(tmp_path / "p")
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("items:", "throttle: {max_retries: 0}\nitems:"))
    api.script(["ok", "500"])  # the image, then its judgement: not answered
    r = run(root, api)
    assert r.exit_code == 1 and "checks: 1 passed, 0 failed, 1 not judged" in r.output, r.output
    assert len(images(api)) == 1 and len(judgements(api)) == 1  # "not judged" is no reason to make it again
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0, r.output
    assert len(judgements(api)) == 1 and len(images(api, "edits")) == 1
    hero = by_task(manifest(root))["hero@mug#0"]
    assert hero["checks"][1]["passed"] is True
    assert hero["check_attempts"][0]["checks"][1]["passed"] is None  # the first try's record, as it was
    api.clear()
    r = run(root, api)
    assert r.exit_code == 0 and api.image_requests == [], r.output  # the answer is cached, not the "not judged"

