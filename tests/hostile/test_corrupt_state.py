"""Hand-edited or damaged state files: the index is a cache and is rebuilt; the journal skips lines
of the wrong type. Never a traceback, nothing lost."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dalle_pipe import store
from dalle_pipe.cli import main

FP = "f" * 64

RECIPE = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: products.csv, key: "{{ item.sku }}"}
steps:
  - id: hero
    generate: {prompt: "A {{ item.name }} on marble"}
"""


def invoke(root: Path, *args: str) -> Any:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b"",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b'{"version": 1, "entries": []}',
        b'{"version": "1", "entries": {}}',
        b'{"version": 99, "entries": {"a.png": [1, 2, 3, "x"]}}',
        b"[1, 2, 3]",
        b"null",
    ],
    ids=["text", "empty", "binary", "deep", "entries-list", "version-str", "version-new", "list", "null"],
)
def test_a_corrupt_index_is_an_empty_cache_rebuilt_by_hashing(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"image bytes")
    index_path = tmp_path / ".dalle-pipe" / "index.json"
    index_path.parent.mkdir()
    index_path.write_bytes(content)

    idx = store.FileIndex(tmp_path)
    assert len(idx) == 0
    assert idx.sha(image) == store.sha256_bytes(b"image bytes")
    idx.save()
    doc = json.loads(index_path.read_text())
    assert doc["version"] == 1
    assert doc["entries"]["a.png"][3] == store.sha256_bytes(b"image bytes")


def test_wrong_typed_index_entries_are_dropped_and_good_ones_kept(tmp_path: Path) -> None:
    for name in ("good.png", "bad.png"):
        (tmp_path / name).write_bytes(name.encode())
    good = tmp_path / "good.png"
    st = good.stat()
    index_path = tmp_path / ".dalle-pipe" / "index.json"
    index_path.parent.mkdir()
    lie = "0" * 64  # a wrong sha for bad.png, under a wrong-typed entry: must never be believed
    entries = {
        "good.png": [st.st_size, st.st_mtime_ns, st.st_ino, store.sha256_bytes(b"good.png")],
        "bad.png": ["9", 1, 2, lie],
        "worse.png": {"size": 1},
        "short.png": [1, 2],
    }
    index_path.write_text(json.dumps({"version": 1, "entries": entries}))
    os.utime(index_path, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))

    idx = store.FileIndex(tmp_path)
    assert sorted(idx.cached()) == ["good.png"]
    assert idx.sha(tmp_path / "bad.png") == store.sha256_bytes(b"bad.png")


def test_an_index_that_is_a_folder_is_an_empty_cache(tmp_path: Path) -> None:
    (tmp_path / ".dalle-pipe" / "index.json").mkdir(parents=True)
    (tmp_path / "a.png").write_bytes(b"x")
    idx = store.FileIndex(tmp_path)
    assert idx.sha(tmp_path / "a.png") == store.sha256_bytes(b"x")


def test_a_rerun_over_a_hand_edited_index_pays_nothing_and_rebuilds_it(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "products.csv").write_text("sku,name\nmug,ceramic mug\nboard,cutting board\n")
    first = invoke(root, "run", "--offline", "recipe.yaml")
    assert first.exit_code == 0, first.output
    out = root / "out" / "shots"
    index_path = out / ".dalle-pipe" / "index.json"
    assert index_path.exists()
    images = {p: p.read_bytes() for p in out.rglob("*.png") if ".dalle-pipe" not in p.parts}
    assert len(images) == 2

    index_path.write_text('{"version": 1, "entries": {"hero/mug.png": "hand-edited"')  # torn, wrong type
    again = invoke(root, "run", "--offline", "recipe.yaml")
    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    assert "shots: 0 generated, 2 up to date, 0 failed, 0 skipped, 0 modified" in again.output
    assert {p: p.read_bytes() for p in images} == images
    assert json.loads(index_path.read_text())["version"] == 1


# -- the journal ---------------------------------------------------------------------------------------


def write_journal(tmp_path: Path, lines: list[object]) -> None:
    path = tmp_path / ".dalle-pipe" / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def test_wrong_typed_journal_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    entry = {"step": "hero", "key": "mug", "index": 0, "path": "hero/mug.png", "fingerprint": FP}
    write_journal(
        tmp_path,
        [
            {"t": "intent", "task": "hero@mug", "fp": FP, "attempt": 1, "at": "2026-01-01T00:00:00.000Z"},
            {"t": "done", "task": "hero@mug", "fp": FP, "entries": [entry, "junk", 3], "at": "x"},
            {"t": "intent", "task": ["hero@cup"], "fp": FP, "attempt": 1},  # task not a string
            {"t": "intent", "task": "hero@cup", "fp": 12, "attempt": 1},  # fp not a string
            {"t": "done", "task": "hero@cup", "fp": FP, "entries": {"0": entry}},  # entries not a list
            {"t": "intent", "task": "hero@pan", "fp": FP, "attempt": "two", "at": 5},
            {"t": "failed", "task": "hero@pot", "fp": FP, "error": "quota"},  # error not an object
            {"t": 7},
            "[" * 50_000,
            ["a", "list"],
            {"t": "something-newer", "task": 1},  # an unknown kind from a newer version: ignored
        ],
    )
    state = store.Journal(tmp_path).read()
    assert state.done == {FP: [entry]}
    assert state.done_entries == [entry]
    assert state.pending == [store.PendingIntent(task="hero@pan", fingerprint=FP, attempt=0, attempts=1, at="5")]
    assert [f["error"] for f in state.failed] == [{"message": "quota"}]
    assert state.bad_lines == 6
    assert state.torn_tail is False


def test_a_wrong_typed_last_line_is_a_torn_tail_and_the_next_line_starts_clean(tmp_path: Path) -> None:
    write_journal(tmp_path, [{"t": "intent", "task": "a@1", "fp": FP, "attempt": 1, "at": "t"}, {"t": "done"}])
    state = store.Journal(tmp_path).read()
    assert (state.bad_lines, state.torn_tail, len(state.pending)) == (0, True, 1)
    with store.Journal(tmp_path) as journal:
        journal.done("a@1", FP, [])
    state = store.Journal(tmp_path).read()
    assert state.pending == [] and state.done == {FP: []}


def test_a_run_over_a_journal_with_wrong_typed_lines_does_not_crash(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "products.csv").write_text("sku,name\nmug,ceramic mug\n")
    out = root / "out" / "shots"
    write_journal(
        out,
        [
            {"t": "done", "task": "hero@mug", "fp": FP, "entries": "nope"},
            {"t": "failed", "task": "hero@mug", "fp": FP, "error": ["not", "an", "object"]},
            {"t": "intent", "task": None, "fp": None},
        ],
    )
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.exit_code == 0, r.output
    assert "shots: 1 generated, 0 up to date, 0 failed, 0 skipped, 0 modified" in r.output
    assert len([p for p in out.rglob("*.png") if ".dalle-pipe" not in p.parts]) == 1



# -- the manifest ---------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda doc: doc["entries"].append(5), "entries[1] is not an object"),
        (lambda doc: doc["entries"].insert(0, ["hero", "mug"]), "entries[0] is not an object"),
        (lambda doc: "[" * 100_000, "it is nested too deeply"),
    ],
    ids=["number", "list", "deep"],
)
def test_a_manifest_entry_of_the_wrong_type_stops_with_exit_2_naming_the_file(
    tmp_path: Path, edit: Any, reason: str
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "products.csv").write_text("sku,name\nmug,ceramic mug\n")
    assert invoke(root, "run", "--offline", "recipe.yaml").exit_code == 0
    out = root / "out" / "shots"
    path = out / "manifest.json"
    doc = json.loads(path.read_text())
    changed = edit(doc)
    path.write_text(changed if isinstance(changed, str) else json.dumps(doc))
    before = snapshot(out)

    for command in (["run", "--offline", "recipe.yaml"], ["plan", "recipe.yaml"]):
        r = invoke(root, *command)
        assert r.exit_code == 2, r.output
        assert r.output == (
            f"error: {path}: not a valid dalle-pipe manifest: {reason} "
            f"(fix or remove it; the previous one is {out / '.dalle-pipe' / 'manifest.prev.json'})\n"
        )
    assert snapshot(out) == before  # nothing written, nothing lost
