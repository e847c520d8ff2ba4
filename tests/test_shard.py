"""`--shard I/N`: deterministic units, 1/N of the rate, own manifest, journal and lock; --check and report see all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakeapi import FakeOpenAI
from test_run import invoke, make_project

from dalle_pipe import store
from dalle_pipe.engine.results import RunOptions
from dalle_pipe.engine.shards import shard_provider
from dalle_pipe.engine.units import limits_for, select_units
from dalle_pipe.errors import LockedError
from dalle_pipe.providers.base import ImageRequest, ImageResponse, RateLimited
from dalle_pipe.report import load_manifests

KEY = "sk-test-SHARD-8b1f3e5a2c"
ITEMS = "\n".join(f"  - {{id: p{i}}}" for i in range(8))
RECIPE = f"""\
version: 1
name: many
model: gpt-image-2
params: {{size: 1024x1024, quality: low}}
throttle: {{requests_per_minute: 600, images_per_minute: 300, concurrency: 4}}
items:
{ITEMS}
steps:
  - id: shot
    generate: {{prompt: "product {{{{ item.id }}}}"}}
  - id: small
    resize: {{image: {{step: shot}}, size: 256x256}}
"""




def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url}


def out(root: Path) -> Path:
    return root / "out" / "many"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_shards_write_their_own_manifests_and_check_and_report_read_them_all(tmp_path: Path,
                                                                           api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    keys = []
    for i in (1, 2, 3):
        r = invoke(root, "run", "recipe.yaml", "--shard", f"{i}/3", env=env(api))
        assert r.exit_code == 0, r.output
        m = load(out(root) / f"manifest.shard-{i}-of-3.json")
        keys.append({e["key"] for e in m["entries"]})
        assert set(m) == {"tool", "version", "format", "recipe", "provider", "started_at", "finished_at",
                          "counts", "entries"}
        assert m["counts"]["generated"] == 2 * len(keys[-1])
    assert not (out(root) / "manifest.json").exists()
    assert sorted(k for ks in keys for k in ks) == [f"p{i}" for i in range(8)]  # a partition of the units
    assert sum(1 for q in api.image_requests) == 8
    assert (out(root) / ".dalle-pipe" / "lock.shard-1-of-3").exists()
    # --check (no shard) reads every shard's outputs: nothing to do
    api.clear()
    r = invoke(root, "run", "recipe.yaml", "--check", env={"OPENAI_BASE_URL": api.base_url})
    assert r.exit_code == 0, r.output
    assert "many: 0 generated, 16 up to date, 0 failed" in r.output and "to make" not in r.output
    # the review page shows them all
    r = invoke(root, "report", "recipe.yaml", env=env(api))
    assert r.exit_code == 0, r.output
    page = (out(root) / "report.html").read_text()
    assert all(f"p{i}/shot.png" in page for i in range(8))
    merged, _ = load_manifests(out(root))
    assert merged is not None and len(merged["entries"]) == 16
    # a whole run reuses every shard's images and writes manifest.json
    r = invoke(root, "run", "recipe.yaml", env=env(api))
    assert r.exit_code == 0 and "0 generated, 16 up to date" in r.output, r.output
    assert api.image_requests == []
    assert len(load(out(root) / "manifest.json")["entries"]) == 16


def test_a_shard_rerun_keeps_its_own_entries_and_the_selection_is_deterministic(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    from dalle_pipe.app import load as load_targets
    from dalle_pipe.recipe import Overrides

    cwd = os.getcwd()
    os.chdir(root)
    try:
        plan = load_targets([Path("recipe.yaml")], Overrides(provider="offline")).plans[0]
    finally:
        os.chdir(cwd)
    parts = [select_units(plan, RunOptions(shard=(i, 4))) for i in (1, 2, 3, 4)]
    assert sorted(u for p in parts for u in p) == list(range(8))
    assert parts == [select_units(plan, RunOptions(shard=(i, 4))) for i in (1, 2, 3, 4)]
    r = invoke(root, "run", "--offline", "recipe.yaml", "--shard", "2/4")
    assert r.exit_code == 0, r.output
    first = load(out(root) / "manifest.shard-2-of-4.json")
    r = invoke(root, "run", "--offline", "recipe.yaml", "--shard", "2/4", "--only", "small")
    assert r.exit_code == 0, r.output
    again = load(out(root) / "manifest.shard-2-of-4.json")
    assert [(e["step"], e["key"]) for e in again["entries"]] == [(e["step"], e["key"]) for e in first["entries"]]
    assert (out(root) / ".dalle-pipe" / "manifest.shard-2-of-4.prev.json").exists()


def test_each_shard_takes_one_nth_of_the_rate(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    from dalle_pipe.app import load as load_targets
    from dalle_pipe.recipe import Overrides

    cwd = os.getcwd()
    os.chdir(root)
    try:
        recipe = load_targets([Path("recipe.yaml")], Overrides(provider="offline")).plans[0].recipe
    finally:
        os.chdir(cwd)
    whole = limits_for(recipe, RunOptions())
    quarter = limits_for(recipe, RunOptions(shard=(3, 4)))
    assert (whole.requests_per_minute, whole.images_per_minute) == (600, 300)
    assert (quarter.requests_per_minute, quarter.images_per_minute) == (150, 75)
    assert quarter.concurrency == whole.concurrency

    # a limit learned from the headers is the shard's share too
    class Stub:
        name = "openai"

        def __init__(self) -> None:
            self.fail = False

        def send(self, request: ImageRequest) -> ImageResponse:
            headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-images": "60",
                       "x-ratelimit-remaining-requests": "499"}
            if self.fail:
                raise RateLimited("429", retry_after_s=1.0, headers=headers)
            return ImageResponse(images=(), rate_headers=headers)

        def close(self) -> None:
            pass

    stub = Stub()
    factory = shard_provider(lambda: stub, (1, 4))
    assert factory is not None
    provider = factory()
    request = ImageRequest(kind="generate", model="gpt-image-2", prompt="x", params={})
    assert provider.send(request).rate_headers == {"x-ratelimit-limit-requests": "125",
                                                   "x-ratelimit-limit-images": "15",
                                                   "x-ratelimit-remaining-requests": "499"}
    stub.fail = True
    with pytest.raises(RateLimited) as exc:
        provider.send(request)
    assert exc.value.headers["x-ratelimit-limit-images"] == "15"
    assert shard_provider(None, (1, 4)) is None


def test_shards_lock_alone_and_exclude_a_whole_run(tmp_path: Path) -> None:
    folder = tmp_path / "o"
    one = store.RunLock(folder, shared=True)
    two = store.RunLock(folder, shared=True)
    own = store.RunLock(folder, "lock.shard-1-of-2")
    one.acquire()
    two.acquire()  # shards share the folder's lock
    own.acquire()
    with pytest.raises(LockedError):
        store.RunLock(folder, "lock.shard-1-of-2").acquire()  # the same shard twice
    with pytest.raises(LockedError):
        store.RunLock(folder).acquire()  # a whole run waits for every shard
    one.release()
    two.release()
    own.release()
    whole = store.RunLock(folder)
    whole.acquire()
    with pytest.raises(LockedError):
        store.RunLock(folder, shared=True).acquire()
    whole.release()


def test_parallel_shards_in_separate_processes_do_not_collide(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    with FakeOpenAI(latency_s=0.2) as api:
        e = {**os.environ, **env(api), "DALLE_PIPE_NO_REPORT": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "dalle_pipe.cli", "run", "recipe.yaml", "--quiet",
                                   "--shard", f"{i}/2"], cwd=root, env=e, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in (1, 2)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(out(root).rglob("shot.png")):
            time.sleep(0.02)
        busy = invoke(root, "run", "recipe.yaml", env=env(api))  # a whole run waits for the shards
        results = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        assert busy.exit_code == 2 and "another dalle-pipe run" in busy.output
        assert len(api.image_requests) == 8
        journals = sorted(p.name for p in (out(root) / ".dalle-pipe").glob("journal*.jsonl"))
        assert journals == ["journal.shard-1-of-2.jsonl", "journal.shard-2-of-2.jsonl"]
        r = invoke(root, "run", "recipe.yaml", "--check", env={"OPENAI_BASE_URL": api.base_url})
        assert r.exit_code == 0, r.output


def test_batches_by_shard(tmp_path: Path, api: FakeOpenAI) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    for i in (1, 2):
        r = invoke(root, "run", "--batch", "recipe.yaml", "--shard", f"{i}/2", env=env(api))
        assert r.exit_code == 0, r.output
    docs = {tuple(d["shard"]): d for d in
            (json.loads(p.read_text()) for p in store.batches_dir(out(root)).glob("*.json"))}
    assert set(docs) == {(1, 2), (2, 2)}
    assert sum(len(d["requests"]) for d in docs.values()) == 8
    r = invoke(root, "batch", "status", "recipe.yaml", "--shard", "1/2", env=env(api))
    assert r.exit_code == 0 and r.output.count("shard 1/2") == 1, r.output
    for i in (1, 2):
        r = invoke(root, "batch", "collect", "recipe.yaml", "--shard", f"{i}/2", env=env(api))
        assert r.exit_code == 0, r.output
        m = load(out(root) / f"manifest.shard-{i}-of-2.json")
        assert {e["status"] for e in m["entries"]} == {"generated"}
    assert not (out(root) / "manifest.json").exists()
    assert [q for q in api.image_requests if q.path.startswith("/v1/images")] == []
    r = invoke(root, "run", "recipe.yaml", "--check", env={"OPENAI_BASE_URL": api.base_url})
    assert r.exit_code == 0, r.output
