"""`dalle-pipe run` as users see it: files, manifest fields, reruns, reuse, no-loss rules, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dalle_pipe.cli import main

ENTRY_FIELDS = {
    "step", "key", "index", "path", "sha256", "width", "height", "format", "bytes", "provider", "model",
    "endpoint", "params", "prompt", "revised_prompt", "inputs", "fingerprint", "request_id", "usage",
    "cost_usd", "attempts", "possible_duplicate_charge", "approved", "created_at", "duration_s", "status",
    "error",
}

CATALOG = "sku,name,active\nmug,ceramic mug,yes\nboard,cutting board,yes\nscarf,wool scarf,no\n"

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}", where: "item.active == 'yes'"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
  - id: bg_mask
    mask:
      size_of: {step: hero}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
      invert: true
  - id: beach
    edit:
      image: {step: hero}
      mask: {step: bg_mask}
      prompt: "a tropical beach at sunset as background"
"""


def make_project(root: Path, recipe: str = RECIPE, catalog: str = CATALOG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(recipe)
    (root / "products.csv").write_text(catalog)
    return root


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        os.chdir(cwd)


def manifest(root: Path, name: str = "shots") -> dict[str, Any]:
    return json.loads((root / "out" / name / "manifest.json").read_text())


def by_task(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{e['step']}@{e['key']}#{e['index']}": e for e in m["entries"]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "p")


def test_offline_run_writes_images_and_a_complete_manifest(project: Path) -> None:
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert "shots: 6 generated, 0 up to date, 0 failed, 0 skipped, 0 modified" in r.output
    m = manifest(project)
    assert m["tool"] == "dalle-pipe" and m["provider"] == "offline"
    assert m["recipe"]["name"] == "shots" and len(m["recipe"]["sha256"]) == 64
    assert m["counts"] == {"generated": 6, "up_to_date": 0, "failed": 0, "skipped": 0, "modified": 0}
    assert sorted(by_task(m)) == sorted(f"{s}@{k}#0" for s in ("hero", "bg_mask", "beach")
                                        for k in ("mug", "board"))
    for e in m["entries"]:
        assert set(e) >= ENTRY_FIELDS, ENTRY_FIELDS - set(e)
        path = project / "out" / "shots" / e["path"]
        assert path.is_file()
        assert e["bytes"] == path.stat().st_size
        with Image.open(path) as img:
            assert img.size == (e["width"], e["height"]) == (1024, 1024)
    beach = by_task(m)["beach@mug#0"]
    assert beach["endpoint"] == "/v1/images/edits"
    assert beach["params"] == {"n": 1, "size": "1024x1024", "quality": "low"}
    assert beach["revised_prompt"] is None
    assert [i["role"] for i in beach["inputs"]] == ["image", "mask"]
    assert beach["inputs"][0]["path"] == "mug/hero.png"
    assert by_task(m)["hero@mug#0"]["prompt"] == "A ceramic mug on marble"
    assert by_task(m)["bg_mask@mug#0"]["endpoint"] == "local/mask"
    assert not list((project / "out" / "shots").rglob("*.tmp"))


def test_edit_keeps_every_pixel_outside_the_mask(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    out = project / "out" / "shots" / "mug"
    hero = np.asarray(Image.open(out / "hero.png").convert("RGBA"))
    beach = np.asarray(Image.open(out / "beach.png").convert("RGBA"))
    mask = np.asarray(Image.open(out / "bg_mask.png"))
    assert mask.shape == (1024, 1024, 4)
    keep = mask[..., 3] == 255
    assert keep.any() and (~keep).any()
    assert np.array_equal(hero[keep], beach[keep])
    assert not np.array_equal(hero[~keep], beach[~keep])


def test_rerun_with_nothing_changed_sends_nothing_and_writes_no_image(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    images = sorted((project / "out" / "shots").rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in images]
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0
    assert "shots: 0 generated, 6 up to date, 0 failed, 0 skipped, 0 modified" in r.output
    assert [p.stat().st_mtime_ns for p in images] == stamps
    assert manifest(project)["counts"]["up_to_date"] == 6


def test_a_changed_row_remakes_only_its_own_units(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    before = by_task(manifest(project))
    (project / "products.csv").write_text(CATALOG.replace("ceramic mug", "stoneware mug"))
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert "shots: 2 generated, 4 up to date" in r.output
    after = by_task(manifest(project))
    assert after["hero@mug#0"]["status"] == "generated"
    assert after["beach@mug#0"]["status"] == "generated"
    assert after["bg_mask@mug#0"]["status"] == "up_to_date"  # same size, same shapes: same mask
    assert after["hero@board#0"]["sha256"] == before["hero@board#0"]["sha256"]
    assert after["hero@board#0"]["status"] == "up_to_date"


def test_renumbered_rows_cost_nothing(tmp_path: Path) -> None:
    recipe = RECIPE.replace('key: "{{ item.sku }}", ', "")  # key = row number
    root = make_project(tmp_path / "p", recipe, "name,active\nmug,yes\nboard,yes\n")
    assert invoke(root, "run", "--offline", "recipe.yaml").exit_code == 0
    (root / "products.csv").write_text("name,active\nlamp,no\nmug,yes\nboard,yes\n")
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert "0 generated, 6 up to date" in r.output, r.output
    assert (root / "out" / "shots" / "3" / "beach.png").is_file()


def test_check_reports_work_to_do_without_writing(project: Path) -> None:
    r = invoke(project, "run", "--offline", "--check", "recipe.yaml")
    assert r.exit_code == 1
    assert "to make: hero@mug -> mug/hero.png" in r.output
    assert not (project / "out").exists()
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    assert invoke(project, "run", "--offline", "--check", "recipe.yaml").exit_code == 0
    (project / "out" / "shots" / "board" / "hero.png").unlink()
    r = invoke(project, "run", "--offline", "--check", "recipe.yaml")
    assert r.exit_code == 1
    assert "to make: hero@board" in r.output


def test_a_hand_edited_file_is_kept_and_force_moves_it_to_history(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    hero = project / "out" / "shots" / "mug" / "hero.png"
    Image.new("RGB", (1024, 1024), "red").save(hero)
    edited = hero.read_bytes()
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0
    assert "1 modified" in r.output
    assert hero.read_bytes() == edited
    assert by_task(manifest(project))["hero@mug#0"]["status"] == "modified"
    r = invoke(project, "run", "--offline", "--force", "--only", "hero", "--items", "mug", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert hero.read_bytes() != edited
    history = list((project / "out" / "shots" / ".dalle-pipe" / "history").rglob("hero.png"))
    assert [p.read_bytes() for p in history] == [edited]


def test_limited_runs_keep_the_other_entries(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml", "--items", "mug").exit_code == 0
    assert {e["key"] for e in manifest(project)["entries"]} == {"mug"}
    assert invoke(project, "run", "--offline", "recipe.yaml", "--only", "hero", "--items", "board").exit_code == 0
    m = by_task(manifest(project))
    assert sorted(m) == ["beach@mug#0", "bg_mask@mug#0", "hero@board#0", "hero@mug#0"]
    assert m["beach@mug#0"]["status"] == "generated"


def test_unknown_only_step_is_a_usage_error(project: Path) -> None:
    r = invoke(project, "run", "--offline", "recipe.yaml", "--only", "heor")
    assert r.exit_code == 2
    assert "error: --only heor: no step 'heor' (did you mean 'hero'?)" in r.output


def test_offline_never_overwrites_another_providers_image(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    mpath = project / "out" / "shots" / "manifest.json"
    m = json.loads(mpath.read_text())
    for e in m["entries"]:
        if e["step"] == "hero" and e["key"] == "mug":
            e["provider"] = "openai"
            e["fingerprint"] = "0" * 64  # as if made by another provider
    mpath.write_text(json.dumps(m))
    hero = project / "out" / "shots" / "mug" / "hero.png"
    before = hero.read_bytes()
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert hero.read_bytes() == before
    entry = by_task(manifest(project))["hero@mug#0"]
    assert entry["status"] == "skipped"
    assert "offline provider never writes over an image made by openai" in entry["error"]["message"]
    assert r.exit_code == 0


def test_no_key_and_no_offline_exits_2_naming_both(project: Path) -> None:
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    r = invoke(project, "run", "recipe.yaml", env=env)
    assert r.exit_code == 2
    assert "OPENAI_API_KEY is not set" in r.output and "--offline" in r.output
    assert not (project / "out").exists()


def test_a_second_run_on_a_locked_output_dir_exits_2(project: Path) -> None:
    from dalle_pipe.store import RunLock

    out = project / "out" / "shots"
    out.mkdir(parents=True)
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from pathlib import Path; "
                               "from dalle_pipe.store import RunLock; l=RunLock(Path(sys.argv[1])); "
                               "l.acquire(); print('held', flush=True); time.sleep(30)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = invoke(project, "run", "--offline", "recipe.yaml")
        assert r.exit_code == 2
        assert "another dalle-pipe run is using" in r.output
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with RunLock(out):  # the kernel released it when the holder died
        pass


def test_dry_run_writes_nothing(project: Path) -> None:
    r = invoke(project, "run", "--offline", "--dry-run", "recipe.yaml")
    assert r.exit_code == 0
    assert "to make: beach@board -> board/beach.png" in r.output
    assert not (project / "out").exists()


def test_json_summary(project: Path) -> None:
    r = invoke(project, "run", "--offline", "--json", "recipe.yaml")
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["exit_code"] == 0
    assert doc["recipes"][0]["counts"]["generated"] == 6
    assert doc["recipes"][0]["name"] == "shots"


def test_an_image_written_just_before_a_crash_is_adopted_not_paid_again(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml", "--only", "hero").exit_code == 0
    out = project / "out" / "shots"
    hero = by_task(manifest(project))["hero@mug#0"]
    # as if killed after the image was written but before its journal `done` line and the manifest
    (out / "manifest.json").unlink()
    (out / ".dalle-pipe" / "manifest.prev.json").unlink(missing_ok=True)
    (out / ".dalle-pipe" / "journal.jsonl").write_text(
        json.dumps({"t": "intent", "task": "hero@mug", "fp": hero["fingerprint"], "attempt": 1,
                    "at": "2026-12-02T00:00:00Z"}) + "\n")
    (out / "board" / "hero.png").unlink()
    before = (out / "mug" / "hero.png").read_bytes()
    r = invoke(project, "run", "--offline", "recipe.yaml", "--only", "hero")
    assert r.exit_code == 0, r.output
    m = by_task(manifest(project))
    assert m["hero@mug#0"]["status"] == "up_to_date"
    assert m["hero@mug#0"]["recovered"] is True
    assert m["hero@mug#0"]["sha256"] == hero["sha256"]
    assert (out / "mug" / "hero.png").read_bytes() == before
    assert m["hero@board#0"]["status"] == "generated"


def test_a_second_no_op_rerun_leaves_the_manifest_and_report_byte_identical(project: Path) -> None:
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0  # generated -> up_to_date
    out = project / "out" / "shots"
    before = {p: p.read_bytes() for p in (out / "manifest.json", out / "report.html")}
    r = invoke(project, "run", "--offline", "recipe.yaml")
    assert "0 generated, 6 up to date" in r.output
    assert {p: p.read_bytes() for p in before} == before
    (project / "products.csv").write_text(CATALOG.replace("ceramic mug", "stoneware mug"))
    assert invoke(project, "run", "--offline", "recipe.yaml").exit_code == 0
    assert (out / "manifest.json").read_bytes() != before[out / "manifest.json"]
