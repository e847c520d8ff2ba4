"""Observable behaviour of dalle_pipe.store: what a run writes in output_dir, and its promises."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dalle_pipe.errors import DallePipeError, LockedError
from dalle_pipe.store import (
    FileIndex,
    Journal,
    ManifestCorruptError,
    ReuseIndex,
    RunLock,
    atomic_write_bytes,
    atomic_write_json,
    clean,
    fingerprint,
    load_manifest,
    load_previous_manifest,
    manifest_files,
    merge_manifests,
    move_to_history,
    previous_manifest_files,
    read_manifests,
    safe_join,
    sha256_bytes,
    sha256_file,
    write_manifest,
)

PY = sys.executable


def run_py(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout
    )


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# -- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_creates_parents_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "img.png"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert listing(tmp_path) == ["a", "a/b", "a/b/img.png"]
    mode = stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_write_error_removes_temp_and_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "img.png"
    atomic_write_bytes(target, b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["img.png"]


@pytest.mark.parametrize("die_in", ["fsync", "replace"])
@pytest.mark.parametrize("existed", [False, True])
def test_crash_between_temp_write_and_rename_never_shows_partial_file(
    tmp_path: Path, die_in: str, existed: bool
) -> None:
    target = tmp_path / "out" / "hero.png"
    if existed:
        atomic_write_bytes(target, b"OLD IMAGE")
    code = """
        import os, stat, sys
        from pathlib import Path
        from dalle_pipe.store import atomic_write_bytes
        real = getattr(os, sys.argv[2])
        def die(*a, **k):
            if sys.argv[2] == "fsync" and not stat.S_ISREG(os.fstat(a[0]).st_mode):
                return real(*a, **k)  # folders are fsynced too; die on the temp file's fsync
            os._exit(9)
        setattr(os, sys.argv[2], die)
        atomic_write_bytes(Path(sys.argv[1]), b"NEW" * 100_000)
        os._exit(0)
    """
    proc = run_py(code, str(target), die_in)
    assert proc.returncode == 9, proc.stderr
    if existed:
        assert target.read_bytes() == b"OLD IMAGE"
    else:
        assert not target.exists()
    leftovers = [p for p in target.parent.iterdir() if p.name != "hero.png"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".hero.png.")
    # the leftover temp file is ours: clean() removes it
    assert [(i.path, i.action) for i in clean(tmp_path / "out", {"hero.png"})] == [(leftovers[0].name, "remove")]
    assert listing(tmp_path / "out") == (["hero.png"] if existed else [])


def test_atomic_write_json_format(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    atomic_write_json(p, {"b": 1, "a": ["é", None]})
    assert p.read_text("utf-8") == '{\n  "b": 1,\n  "a": [\n    "é",\n    null\n  ]\n}\n'


def test_sha256_helpers(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    p = tmp_path / "x.bin"
    p.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == expected
    assert sha256_file(p) == expected
    assert len(expected) == 64 and not expected.startswith("sha256:")


# -- fingerprint --------------------------------------------------------------------------------

FP_BASE: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-image-2",
    "endpoint": "/v1/images/edits",
    "params": {"size": "1536x1024", "quality": "high", "n": 1},
    "prompt": "A mug on marble",
    "input_shas": ["a" * 64, "b" * 64],
}


def test_fingerprint_is_stable_and_canonical() -> None:
    fp = fingerprint(**FP_BASE)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(**FP_BASE) == fp
    reordered = {**FP_BASE, "params": {"n": 1, "quality": "high", "size": "1536x1024"}}
    assert fingerprint(**reordered) == fp
    assert fingerprint(**{**FP_BASE, "input_shas": tuple(FP_BASE["input_shas"])}) == fp
    # the same value in another interpreter (no hash randomisation, no dict-order dependence)
    code = """
        import json, sys
        from dalle_pipe.store import fingerprint
        print(fingerprint(**json.loads(sys.argv[1])))
    """
    proc = run_py(code, json.dumps(FP_BASE))
    assert proc.stdout.strip() == fp, proc.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider", "offline"),
        ("model", "gpt-image-1.5"),
        ("model", None),
        ("endpoint", "/v1/images/generations"),
        ("params", {"size": "1536x1024", "quality": "medium", "n": 1}),
        ("params", {"size": "1536x1024", "quality": "high"}),
        ("params", {"size": "1536x1024", "quality": "high", "n": 1, "background": "auto"}),
        ("prompt", "A mug on marble."),
        ("prompt", None),
        ("prompt", ""),
        ("input_shas", ["a" * 64]),
        ("input_shas", ["b" * 64, "a" * 64]),
        ("input_shas", []),
    ],
)
def test_fingerprint_is_sensitive_to_each_field(field: str, value: object) -> None:
    assert fingerprint(**{**FP_BASE, field: value}) != fingerprint(**FP_BASE)


def test_fingerprint_none_and_empty_prompt_differ() -> None:
    assert fingerprint(**{**FP_BASE, "prompt": None}) != fingerprint(**{**FP_BASE, "prompt": ""})


# -- journal ------------------------------------------------------------------------------------


def entry(path: str, sha: str, fp: str, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "step": "hero",
        "key": "k",
        "index": index,
        "path": path,
        "sha256": sha,
        "fingerprint": fp,
        **extra,
    }


def test_journal_lines_and_state(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.intent("hero@a", "fp-a", 1)
        j.done("hero@a", "fp-a", [entry("a/hero.png", "s1", "fp-a")])
        j.intent("hero@b", "fp-b", 1)
        j.intent("hero@b", "fp-b", 2)  # a retry after a timeout: never resolved
        j.intent("hero@c", "fp-c", 1)
        j.failed("hero@c", "fp-c", {"type": "refusal", "status": 400, "code": "moderation_blocked"})
    raw = (tmp_path / ".dalle-pipe" / "journal.jsonl").read_text("utf-8").splitlines()
    recs = [json.loads(line) for line in raw]
    assert [r["t"] for r in recs] == ["intent", "done", "intent", "intent", "intent", "failed"]
    assert recs[0]["task"] == "hero@a" and recs[0]["fp"] == "fp-a" and recs[0]["attempt"] == 1
    assert recs[0]["at"].endswith("Z")

    state = Journal(tmp_path).read()
    assert state.done == {"fp-a": [entry("a/hero.png", "s1", "fp-a")]}
    assert state.done_entries == [entry("a/hero.png", "s1", "fp-a")]
    assert [(p.task, p.fingerprint, p.attempt, p.attempts) for p in state.pending] == [
        ("hero@b", "fp-b", 2, 2)
    ]
    assert [f["task"] for f in state.failed] == ["hero@c"]
    assert state.bad_lines == 0 and not state.torn_tail


def test_journal_torn_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.intent("hero@a", "fp-a", 1)
    j.close()
    path = tmp_path / ".dalle-pipe" / "journal.jsonl"
    with open(path, "ab") as f:  # a crash mid-write of the done line
        f.write(b'{"t":"done","task":"hero@a","fp":"fp-a","entries":[{"pa')
    state = Journal(tmp_path).read()
    assert state.torn_tail and state.bad_lines == 0
    assert state.done == {}
    assert [p.task for p in state.pending] == ["hero@a"]

    # the next writer cuts the fragment off; appends stay one object per line
    j2 = Journal(tmp_path)
    j2.done("hero@a", "fp-a", [entry("a/hero.png", "s1", "fp-a")])
    j2.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    state = Journal(tmp_path).read()
    assert not state.torn_tail and state.pending == [] and "fp-a" in state.done


def test_journal_unparseable_middle_line_is_counted(tmp_path: Path) -> None:
    path = tmp_path / ".dalle-pipe" / "journal.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(
        '{"t":"intent","task":"x@1","fp":"f1","attempt":1}\n'
        "garbage\n"
        '{"t":"done","task":"x@1","fp":"f1","entries":[]}\n'
        '{"t":"intent","task":"x@2","fp":"f2","attempt":1}\n'
        "not json either\n"
    )
    state = Journal(tmp_path).read()
    assert state.bad_lines == 1 and state.torn_tail
    assert [p.task for p in state.pending] == ["x@2"]


def test_journal_missing_is_empty_and_reset_truncates(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    state = j.read()
    assert state.done == {} and state.pending == [] and state.bad_lines == 0
    j.intent("a@1", "f", 1)
    j.reset()
    path = tmp_path / ".dalle-pipe" / "journal.jsonl"
    assert path.read_bytes() == b""
    j.intent("a@2", "g", 1)  # usable after reset
    j.close()
    assert [p.task for p in Journal(tmp_path).read().pending] == ["a@2"]
    assert sorted(os.listdir(path.parent)) == ["journal.jsonl"]


def test_journal_is_thread_safe(tmp_path: Path) -> None:
    import threading

    j = Journal(tmp_path)

    def work(n: int) -> None:
        for i in range(25):
            j.intent(f"s@{n}-{i}", f"fp{n}-{i}", 1)
            j.done(f"s@{n}-{i}", f"fp{n}-{i}", [entry(f"{n}/{i}.png", "x", f"fp{n}-{i}")])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    state = j.read()
    assert len(state.done) == 100 and state.pending == [] and state.bad_lines == 0


# -- run lock -----------------------------------------------------------------------------------

TRY_LOCK = """
    import sys
    from pathlib import Path
    from dalle_pipe.errors import LockedError
    from dalle_pipe.store import RunLock
    try:
        with RunLock(Path(sys.argv[1])):
            print("acquired")
    except LockedError as e:
        print(type(e).__name__, e.exit_code, e.format(), sep="|")
"""

HOLD_LOCK = """
    import sys, time
    from pathlib import Path
    from dalle_pipe.store import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
"""


def test_run_lock_refuses_another_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with RunLock(out) as lock:
        assert lock.held
        assert (out / ".dalle-pipe" / "lock").read_text().strip() == str(os.getpid())
        proc = run_py(TRY_LOCK, str(out))
        assert proc.stdout.strip() == (
            f"LockedError|2|another dalle-pipe run is using {out} (wait for it to finish)"
        ), proc.stderr
        # and a second lock in this very process too
        with pytest.raises(LockedError) as info:
            RunLock(out).acquire()
        assert info.value.message == f"another dalle-pipe run is using {out}"
        assert info.value.hint == "wait for it to finish"
        assert isinstance(info.value, DallePipeError)
    assert run_py(TRY_LOCK, str(out)).stdout.strip() == "acquired"


def test_run_lock_is_freed_when_the_holder_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [PY, "-c", textwrap.dedent(HOLD_LOCK), str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert (out / ".dalle-pipe" / "lock").read_text().strip() == str(holder.pid)
        with pytest.raises(LockedError):
            RunLock(out).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with RunLock(out) as lock:
        assert lock.held


WAIT_LOCK = """
    import sys
    from pathlib import Path
    from dalle_pipe.store import RunLock
    print("waiting", flush=True)
    try:
        RunLock(Path(sys.argv[1]), "lock.report", wait=True).acquire()
        print("acquired")
    except KeyboardInterrupt:
        print("interrupted")
"""


def test_a_waiting_lock_takes_its_turn(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = RunLock(out, "lock.report")
    holder.acquire()
    waiter = RunLock(out, "lock.report", wait=True)
    thread = threading.Thread(target=waiter.acquire)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and not waiter.held  # no LockedError: it waits
    holder.release()
    thread.join(10)
    assert not thread.is_alive() and waiter.held
    assert (out / ".dalle-pipe" / "lock.report").read_text().strip() == str(os.getpid())
    with pytest.raises(LockedError):
        RunLock(out, "lock.report").acquire()  # without wait, the held lock still refuses at once
    waiter.release()


def test_ctrl_c_interrupts_a_waiting_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with RunLock(out, "lock.report"):
        proc = subprocess.Popen([PY, "-c", textwrap.dedent(WAIT_LOCK), str(out)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
            time.sleep(0.3)  # into flock()
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert output.strip() == "interrupted"


# -- file index ---------------------------------------------------------------------------------


class CountingIndex(FileIndex):
    def __init__(self, output_dir: Path) -> None:
        self.hashed: list[str] = []
        super().__init__(output_dir)

    def _hash(self, path: str) -> str:
        self.hashed.append(Path(path).name)
        return super()._hash(path)


def write_old(path: Path, data: bytes, age_s: int = 3600) -> None:
    """Write a file whose mtime is in the past (as after an earlier run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time_ns() - age_s * 10**9
    os.utime(path, ns=(t, t))


def test_file_index_hashes_only_when_stat_moved(tmp_path: Path) -> None:
    img = tmp_path / "a" / "hero.png"
    write_old(img, b"one")
    idx = CountingIndex(tmp_path)
    assert idx.sha(img) == sha256_bytes(b"one")
    assert idx.sha(img) == sha256_bytes(b"one")
    assert idx.hashed == ["hero.png"]  # the second call did not read the file

    img.write_bytes(b"two, longer")  # size and mtime move
    assert idx.sha(img) == sha256_bytes(b"two, longer")
    assert idx.hashed == ["hero.png", "hero.png"]

    # racy-clean, as in git: same size, mtime_ns put back, same inode -> the OLD cached value
    st = img.stat()
    with open(img, "r+b") as f:
        f.write(b"TWO")
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert idx.sha(img) == sha256_bytes(b"two, longer")
    assert len(idx.hashed) == 2

    # a new inode (an editor's atomic save) with the same size and mtime is noticed
    tmp = img.with_name("x")
    tmp.write_bytes(b"TWO, longer")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep_inode_alive = tmp.with_name("y")
    os.link(img, keep_inode_alive)  # so the new file cannot reuse the old inode number
    os.replace(tmp, img)
    assert idx.sha(img) == sha256_bytes(b"TWO, longer")
    assert len(idx.hashed) == 3

    img.unlink()
    assert idx.sha(img) is None
    assert idx.sha(tmp_path / "never") is None
    assert idx.sha(tmp_path / "a") is None  # a folder is not a file


def test_file_index_persists_without_rehashing(tmp_path: Path) -> None:
    imgs = [tmp_path / f"k{i}" / "hero.png" for i in range(5)]
    for i, p in enumerate(imgs):
        write_old(p, f"image {i}".encode())
    idx = FileIndex(tmp_path)
    idx.record(imgs[0], sha256_bytes(b"image 0"))
    for p in imgs[1:]:
        idx.sha(p)
    idx.save()
    doc = json.loads((tmp_path / ".dalle-pipe" / "index.json").read_text())
    size, mtime_ns, ino, sha = doc["entries"]["k0/hero.png"]
    st = imgs[0].stat()
    assert (size, mtime_ns, ino, sha) == (st.st_size, st.st_mtime_ns, st.st_ino, sha256_bytes(b"image 0"))

    again = CountingIndex(tmp_path)
    assert len(again) == 5
    assert [again.sha(p) for p in imgs] == [sha256_bytes(f"image {i}".encode()) for i in range(5)]
    assert again.hashed == []
    before = (tmp_path / ".dalle-pipe" / "index.json").stat().st_mtime_ns
    again.save()  # nothing changed: not rewritten
    assert (tmp_path / ".dalle-pipe" / "index.json").stat().st_mtime_ns == before


def test_file_index_distrusts_entries_as_new_as_the_index(tmp_path: Path) -> None:
    img = tmp_path / "hero.png"
    img.write_bytes(b"aaaa")
    idx = FileIndex(tmp_path)
    idx.sha(img)
    idx.save()
    index_mtime = (tmp_path / ".dalle-pipe" / "index.json").stat().st_mtime_ns
    # the file changes within the index's own clock tick, same size: git's "racy" case
    img.write_bytes(b"bbbb")
    os.utime(img, ns=(index_mtime, index_mtime))
    again = CountingIndex(tmp_path)
    assert again.sha(img) == sha256_bytes(b"bbbb")
    assert again.hashed == ["hero.png"]
    assert again.sha(img) == sha256_bytes(b"bbbb")
    assert again.hashed == ["hero.png"]  # only once per process


def test_file_index_corrupt_or_foreign_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / ".dalle-pipe" / "index.json"
    path.parent.mkdir()
    for content in ["{not json", "[]", '{"version": 99, "entries": {}}', '{"version": 1, "entries": 3}']:
        path.write_text(content)
        assert len(FileIndex(tmp_path)) == 0
    path.write_text('{"version": 1, "entries": {"a.png": [1, 2, 3, "x"], "b.png": ["bad"]}}')
    assert len(FileIndex(tmp_path)) == 1


def test_file_index_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    idx = FileIndex(out)
    assert idx.key(out / "a" / "b.png") == "a/b.png"
    assert idx.key(out / "a" / ".." / "c.png") == "c.png"
    assert idx.key(tmp_path / "in.png") == str(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    assert FileIndex(Path("out")).key(Path("out/a/b.png")) == "a/b.png"


# -- manifest -----------------------------------------------------------------------------------


def manifest(*entries: dict[str, Any], generated: int = 0) -> dict[str, Any]:
    return {
        "tool": "dalle-pipe",
        "version": "0.1.0",
        "recipe": {"path": "recipes/r.yaml", "name": "r", "sha256": "0" * 64},
        "provider": "offline",
        "started_at": "2026-11-05T10:00:00.000Z",
        "finished_at": "2026-11-05T10:00:01.000Z",
        "counts": {"generated": generated, "up_to_date": 0, "failed": 0, "skipped": 0},
        "entries": list(entries),
    }


def test_manifest_write_keeps_previous_copy(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) is None
    assert load_previous_manifest(tmp_path) is None
    first = manifest(entry("a.png", "s1", "f1"), generated=1)
    write_manifest(tmp_path, first)
    assert load_manifest(tmp_path) == first
    assert load_previous_manifest(tmp_path) is None
    text = (tmp_path / "manifest.json").read_text("utf-8")
    assert text.startswith('{\n  "tool": "dalle-pipe",') and text.endswith("}\n")

    second = manifest(entry("a.png", "s2", "f2"))
    write_manifest(tmp_path, second)
    assert load_manifest(tmp_path) == second
    assert load_previous_manifest(tmp_path) == first
    assert (tmp_path / ".dalle-pipe" / "manifest.prev.json").read_text("utf-8") == text


def test_corrupt_manifest_is_reported_and_never_clobbers_the_previous(tmp_path: Path) -> None:
    first, second = manifest(generated=1), manifest(generated=2)
    write_manifest(tmp_path, first)
    write_manifest(tmp_path, second)
    (tmp_path / "manifest.json").write_text('{"tool": "dalle-pipe", "entr')
    with pytest.raises(ManifestCorruptError) as info:
        load_manifest(tmp_path)
    assert isinstance(info.value, DallePipeError) and info.value.exit_code == 2
    assert "manifest.json: not a valid dalle-pipe manifest" in info.value.message
    assert "manifest.prev.json" in (info.value.hint or "")
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestCorruptError, match="not an object"):
        load_manifest(tmp_path)

    third = manifest(generated=3)
    write_manifest(tmp_path, third)
    assert load_manifest(tmp_path) == third
    assert load_previous_manifest(tmp_path) == first  # the good copy survived
    assert (tmp_path / ".dalle-pipe" / "manifest.corrupt.json").read_text() == "[1, 2]"


def test_manifests_of_a_folder_merge_into_one_the_last_finished_winning(tmp_path: Path) -> None:
    a0, b0 = entry("a.png", "s1", "f1"), entry("b.png", "s2", "f2", key="b")
    a1 = {**entry("a.png", "s3", "f3"), "status": "failed"}  # a0's (step, key, index)
    whole = {**manifest(a0, b0), "finished_at": "2026-11-05T10:00:09.000Z"}
    shard = {**manifest(a1), "finished_at": "2026-11-05T10:00:05.000Z", "provider": "shard"}
    write_manifest(tmp_path, whole)
    atomic_write_json(tmp_path / "manifest.shard-1-of-2.json", shard)
    (tmp_path / "manifest.shard-2-of-2.json").write_text("{not json")  # corrupt: skipped
    docs = read_manifests(manifest_files(tmp_path), strict=True)
    assert docs == [shard, whole]  # oldest finished first
    assert merge_manifests(docs) == {**whole, "entries": [a0, b0]}  # the whole run finished last
    assert merge_manifests([whole, shard]) == {**shard, "entries": [a1, b0]}  # had the shard finished last
    assert merge_manifests([]) is None and merge_manifests([shard]) is shard
    assert previous_manifest_files(tmp_path) == [tmp_path / ".dalle-pipe" / "manifest.prev.json"]
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestCorruptError):
        read_manifests(manifest_files(tmp_path), strict=True)
    assert read_manifests(manifest_files(tmp_path)) == [shard]


# -- reuse --------------------------------------------------------------------------------------


def make_output(out: Path, rel: str, data: bytes, fp: str, index: int = 0) -> dict[str, Any]:
    p = out / rel
    atomic_write_bytes(p, data)
    return entry(rel, sha256_bytes(data), fp, index=index, bytes=len(data))


def test_reuse_finds_entry_at_its_path(tmp_path: Path) -> None:
    e0 = make_output(tmp_path, "k1/hero-0.png", b"image zero", "fp1", 0)
    e1 = make_output(tmp_path, "k1/hero-1.png", b"image one", "fp1", 1)
    reuse = ReuseIndex([e0, e1], FileIndex(tmp_path), tmp_path)
    assert reuse.lookup("fp1", 0) is e0
    assert reuse.lookup("fp1", 1) is e1
    assert reuse.lookup("fp1", 2) is None
    assert reuse.lookup("other", 0) is None
    assert "fp1" in reuse and "other" not in reuse


def test_reuse_finds_a_moved_or_renamed_file_by_fingerprint(tmp_path: Path) -> None:
    e = make_output(tmp_path, "row-7/hero.png", b"paid image", "fp7")
    make_output(tmp_path, "row-8/hero.png", b"paid imagf", "fp8")  # same size, other content
    (tmp_path / "renumbered").mkdir()
    os.rename(tmp_path / "row-7" / "hero.png", tmp_path / "renumbered" / "hero.png")
    reuse = ReuseIndex([e], FileIndex(tmp_path), tmp_path)
    found = reuse.lookup("fp7", 0)
    assert found is not None
    assert found["path"] == "renumbered/hero.png"
    assert {k: v for k, v in found.items() if k != "path"} == {k: v for k, v in e.items() if k != "path"}
    assert e["path"] == "row-7/hero.png"  # the original entry is not mutated


def test_reuse_finds_an_image_kept_in_history(tmp_path: Path) -> None:
    e = make_output(tmp_path, "k/hero.png", b"the first paid image", "fp-old")
    moved = move_to_history(tmp_path, tmp_path / "k" / "hero.png", stamp="20261105T100000Z")
    atomic_write_bytes(tmp_path / "k" / "hero.png", b"a newer image")
    found = ReuseIndex([e], FileIndex(tmp_path), tmp_path).lookup("fp-old", 0)
    assert found is not None
    assert tmp_path / found["path"] == moved


def test_reuse_ignores_changed_files_failed_and_unsafe_entries(tmp_path: Path) -> None:
    e = make_output(tmp_path, "k/hero.png", b"original", "fp")
    (tmp_path / "k" / "hero.png").write_bytes(b"edited by hand")
    failed = {**entry("k/x.png", "s", "fp2"), "status": "failed"}
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(b"secret")
    unsafe = entry(f"../{outside.name}", sha256_bytes(b"secret"), "fp3")
    reuse = ReuseIndex([e, failed, unsafe, {"junk": True}], FileIndex(tmp_path), tmp_path)
    assert reuse.lookup("fp", 0) is None
    assert reuse.lookup("fp2", 0) is None
    assert reuse.lookup("fp3", 0) is None
    outside.unlink()


def test_reuse_prefers_the_latest_entry(tmp_path: Path) -> None:
    old = make_output(tmp_path, "a.png", b"older", "fp")
    new = make_output(tmp_path, "b.png", b"newer", "fp")
    assert ReuseIndex([old, new], FileIndex(tmp_path), tmp_path).lookup("fp", 0) is new


# -- history and clean --------------------------------------------------------------------------


def test_move_to_history_never_overwrites(tmp_path: Path) -> None:
    img = tmp_path / "k" / "hero.png"
    atomic_write_bytes(img, b"first paid")
    first = move_to_history(tmp_path, img, stamp="20261105T100000Z")
    assert first == tmp_path / ".dalle-pipe" / "history" / "20261105T100000Z" / "k" / "hero.png"
    assert first.read_bytes() == b"first paid" and not img.exists()

    atomic_write_bytes(img, b"second paid")
    second = move_to_history(tmp_path, img, stamp="20261105T100000Z")
    assert second == tmp_path / ".dalle-pipe" / "history" / "20261105T100000Z-2" / "k" / "hero.png"
    assert first.read_bytes() == b"first paid" and second.read_bytes() == b"second paid"

    atomic_write_bytes(img, b"third paid")
    third = move_to_history(tmp_path, img)
    assert third.relative_to(tmp_path / ".dalle-pipe" / "history").parts[1:] == ("k", "hero.png")
    assert len(third.relative_to(tmp_path / ".dalle-pipe" / "history").parts[0]) == len("20261105T100000Z")


def test_move_to_history_refuses_outside_and_missing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere.png").write_bytes(b"x")
    with pytest.raises(ValueError):
        move_to_history(out, tmp_path / "elsewhere.png")
    with pytest.raises(ValueError):
        move_to_history(out, out / ".dalle-pipe" / "index.json")
    with pytest.raises(FileNotFoundError):
        move_to_history(out, out / "nothing.png")
    assert not (out / ".dalle-pipe").exists()


def test_clean_touches_only_recorded_files_and_keeps_paid_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    keep = {"k1/hero.png", "banner.webp"}
    files = {rel: rel.encode() for rel in [*keep, "k2/hero.png", "k2/mask.png", "old.webp", "edited.png",
                                            "user.png", "input.png", ".thumbs/k1_hero.png"]}
    for rel, data in files.items():
        atomic_write_bytes(out / rel, data)
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"not ours")
    os.symlink(outside, out / "link.png")

    def rec(rel: str, provider: str, cost: float | None = None) -> dict[str, Any]:
        return entry(rel, sha256_bytes(files.get(rel, b"not ours")), "fp", provider=provider, cost_usd=cost)

    write_manifest(out, manifest(rec("k2/hero.png", "openai", 0.05), rec("k2/mask.png", "local"),
                                 rec("old.webp", "offline"), rec("edited.png", "openai", 0.2),
                                 rec("input.png", "offline"), rec("link.png", "offline"),
                                 rec("k1/hero.png", "openai", 0.05), rec("../escape.png", "offline")))
    (out / "edited.png").write_bytes(b"touched by hand")
    items = clean(out, keep, protect=[out / "input.png"])
    assert [(i.path, i.action, i.reason) for i in items] == [
        ("edited.png", "keep", "no task makes it any more; changed since it was made: yours now, not touched"),
        ("input.png", "keep", "no task makes it any more; an input a recipe reads: not touched"),
        ("k2/hero.png", "history", "no task makes it any more; paid ($0.0500)"),
        ("k2/mask.png", "remove", "no task makes it any more; free (local)"),
        ("link.png", "keep", "no task makes it any more; a symlink, or reached through one: not touched"),
        ("old.webp", "remove", "no task makes it any more; free (offline)"),
    ]
    assert outside.read_bytes() == b"not ours" and os.path.islink(out / "link.png")
    (moved,) = [p for p in (out / ".dalle-pipe" / "history").rglob("*") if p.is_file()]
    assert moved.relative_to(out / ".dalle-pipe" / "history").parts[1:] == ("k2", "hero.png")
    assert sorted(p for p in listing(out) if not p.startswith(".dalle-pipe")) == [
        ".thumbs", ".thumbs/k1_hero.png", "banner.webp", "edited.png", "input.png", "k1", "k1/hero.png",
        "link.png", "manifest.json", "user.png"]
    assert [i.action for i in clean(out, keep, protect=[out / "input.png"])] == ["keep"] * 3
    assert clean(tmp_path / "missing", set()) == []


def test_clean_purge_empties_history_with_the_recorded_cost(tmp_path: Path) -> None:
    out = tmp_path / "out"
    atomic_write_bytes(out / "a.png", b"paid a")
    atomic_write_bytes(out / "b.png", b"free b")
    write_manifest(out, manifest(entry("a.png", sha256_bytes(b"paid a"), "fa", provider="openai", cost_usd=0.25),
                                 entry("b.png", sha256_bytes(b"free b"), "fb", provider="offline")))
    move_to_history(out, out / "a.png", stamp="S")
    move_to_history(out, out / "b.png", stamp="S")
    atomic_write_bytes(out / ".dalle-pipe" / "history" / "S" / "hand.png", b"unrecorded")
    dry = clean(out, set(), purge=True, dry_run=True)
    assert [(i.path, i.action, i.paid, i.cost_usd) for i in dry] == [
        (".dalle-pipe/history/S/a.png", "purge", True, 0.25),
        (".dalle-pipe/history/S/b.png", "purge", False, None),
        (".dalle-pipe/history/S/hand.png", "purge", True, None),
    ]
    assert (out / ".dalle-pipe" / "history" / "S" / "a.png").read_bytes() == b"paid a"  # dry: nothing gone
    assert clean(out, set()) == []  # without --purge history stays
    assert [i.path for i in clean(out, set(), purge=True)] == [i.path for i in dry]
    assert not (out / ".dalle-pipe" / "history").exists()


def test_clean_prunes_folders_it_emptied(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a" / "b" / "c.png", b"x")
    (tmp_path / "empty-by-user").mkdir()
    write_manifest(tmp_path, manifest(entry("a/b/c.png", sha256_bytes(b"x"), "f", provider="offline")))
    assert [i.path for i in clean(tmp_path, set())] == ["a/b/c.png"]
    assert [p for p in listing(tmp_path) if not p.startswith(".dalle-pipe")] == ["empty-by-user", "manifest.json"]


# -- safe_join ----------------------------------------------------------------------------------


def test_safe_join(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert safe_join(out, "k1/hero.png") == out / "k1" / "hero.png"
    assert safe_join(out, "./k1/hero.png") == out / "k1" / "hero.png"
    for bad in ["../x.png", "k/../../x.png", "/etc/passwd", "", ".", "a\x00b"]:
        with pytest.raises(ValueError):
            safe_join(out, bad)
    os.symlink(tmp_path, out / "escape")
    with pytest.raises(ValueError):
        safe_join(out, "escape/x.png")
    (out / "inner").mkdir()
    os.symlink(out / "inner", out / "ok")
    assert safe_join(out, "ok/x.png") == out / "ok" / "x.png"


def test_fingerprint_equals_the_sha256_of_the_canonical_json_of_its_fields() -> None:
    import hashlib
    import json

    from dalle_pipe.store import fingerprint

    params = {"size": "1024x1024", "n": 2, "quality": "high", "nested": {"b": 1, "a": [1, "é"]}}
    for _ in range(2):  # the second call uses the cached params text
        for prompt in ("un café ☕", None, 'quote " and \\ back'):
            doc = {"provider": "openai", "model": "gpt-image-2", "endpoint": "/v1/images/edits",
                   "params": params, "prompt": prompt, "input_shas": ["b" * 64, "a" * 64]}
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            assert fingerprint(provider="openai", model="gpt-image-2", endpoint="/v1/images/edits", params=params,
                               prompt=prompt, input_shas=["b" * 64, "a" * 64]) == \
                hashlib.sha256(text.encode()).hexdigest()
