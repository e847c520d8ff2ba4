"""A run on a disk that fills up or refuses writes: no new request, nothing paid is lost, exit 1."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from diskfaults import DiskFaults, SmallDisk
from fakeapi import FakeOpenAI
from test_run import by_task, invoke, make_project, manifest

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
items: [{id: a}, {id: b}, {id: c}]
steps:
  - id: hero
    generate: {prompt: "product {{ item.id }}"}
"""


def env(api: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}


def test_a_full_disk_stops_new_requests_keeps_the_paid_bytes_and_a_rerun_places_them(
        tmp_path: Path, api: FakeOpenAI, disk_faults: DiskFaults) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    images = str(root / "out/shots") + "/"
    disk_faults.fail(errno.ENOSPC, where=lambda p: p.as_posix().startswith(images) and p.suffix == ".png"
                     and ".dalle-pipe" not in p.parts, after=1)
    r = invoke(root, "run", "recipe.yaml", "--concurrency", "1", env=env(api))
    assert r.exit_code == 1, r.output
    first = len(api.image_requests)
    assert first in (2, 3)  # a landed; b's answer is stored, then placing it fails; c only if in flight
    assert "no space left on the device while writing" in r.output
    m = by_task(manifest(root))
    assert m["hero@a#0"]["status"] == "generated"
    assert m["hero@b#0"]["status"] == "failed"
    assert "a rerun places them without paying" in m["hero@b#0"]["error"]["message"]
    assert m["hero@c#0"]["status"] == ("failed" if first == 3 else "skipped")
    disk_faults.clear()
    api.clear()
    r = invoke(root, "run", "recipe.yaml", "--concurrency", "1", env=env(api))
    assert r.exit_code == 0, r.output
    assert first + len(api.image_requests) == 3  # every image paid once: stored bytes are placed
    m = by_task(manifest(root))
    assert m["hero@b#0"]["status"] == "generated" and m["hero@b#0"]["recovered"] is True
    assert not list((root / "out/shots/.dalle-pipe/objects/records").glob("*.json"))


def test_a_store_write_refused_rescues_the_bytes_to_the_temp_folder(
        tmp_path: Path, api: FakeOpenAI, disk_faults: DiskFaults) -> None:
    root = make_project(tmp_path / "p", RECIPE)
    disk_faults.fail(errno.EROFS, where=".dalle-pipe/objects/")
    r = invoke(root, "run", "recipe.yaml", "--concurrency", "1", env=env(api))
    assert r.exit_code == 1, r.output
    assert len(api.image_requests) == 1
    entry = by_task(manifest(root))["hero@a#0"]
    assert entry["status"] == "failed"
    assert "the file system is read-only while writing the paid image" in entry["error"]["message"]
    rescued = Path(entry["error"]["message"].rsplit("rescued to ", 1)[1])
    assert rescued.is_file() and rescued.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_little_free_space_stops_before_sending(tmp_path: Path, api: FakeOpenAI,
                                                     small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("2m")
    root = make_project(tmp_path / "p", RECIPE)
    out = disk.path / "out"
    r = invoke(root, "run", "recipe.yaml", "--output-dir", str(out), env=env(api))
    assert r.exit_code == 2, r.output
    assert "not enough free space: this run needs about" in r.output
    assert api.image_requests == []
    r = invoke(root, "run", "recipe.yaml", "--output-dir", str(out), "--no-space-check", env=env(api))
    assert r.exit_code == 0, r.output
    assert len(api.image_requests) == 3
