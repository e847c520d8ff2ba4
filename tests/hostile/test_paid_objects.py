"""The paid-answer store: bytes durable first, records that survive a crash, damage reported, never raised."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from diskfaults import DiskFaults

from dalle_pipe import store
from dalle_pipe.store import ObjectCorruptError, ObjectRecord, ObjectStore

FP = "a" * 64
FP2 = "b" * 64
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_then_pending_read_find_and_discard_round_trip(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    meta = {"request_id": "req_1", "usage": {"output_tokens": 272}, "revised_prompt": None, "format": "png"}
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0, meta=meta)

    sha = store.sha256_bytes(PNG)
    assert (rec.task, rec.fingerprint, rec.index, rec.sha256, rec.size) == ("hero@mug", FP, 0, sha, len(PNG))
    assert rec.meta == meta
    assert (tmp_path / ".dalle-pipe" / "objects" / sha[:2] / sha).read_bytes() == PNG
    key = store.objects.record_key("hero@mug", FP, 0)
    doc = json.loads((tmp_path / ".dalle-pipe" / "objects" / "records" / f"{key}.json").read_text())
    assert doc == {"version": 1, **{k: v for k, v in rec.to_json().items() if k != "version"}}

    fresh = ObjectStore(tmp_path)
    assert fresh.pending() == [rec]
    assert fresh.pending()[0].meta == meta
    assert fresh.find(FP, 0) == rec
    assert fresh.find(FP, 1) is None
    assert fresh.find(FP, 0, task="other@mug") is None
    assert fresh.read(rec) == PNG

    fresh.discard(rec)
    assert fresh.pending() == []
    assert fresh.find(FP, 0) is None
    assert list((tmp_path / ".dalle-pipe").iterdir()) == []  # bytes, record and their folders gone
    fresh.discard(rec)  # idempotent


def test_nothing_is_created_until_the_first_put(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    assert objects.pending() == []
    assert objects.find(FP, 0) is None
    assert objects.scan() == store.ObjectScan()
    assert not (tmp_path / ".dalle-pipe").exists()


def test_records_are_sorted_and_a_second_put_for_the_same_image_replaces_the_first(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    b1 = objects.put(b"second task", task="b@1", fingerprint=FP2, index=0)
    a1 = objects.put(b"first, index 1", task="a@1", fingerprint=FP, index=1)
    a0 = objects.put(b"first, index 0, old", task="a@1", fingerprint=FP, index=0)
    a0_new = objects.put(b"first, index 0, new", task="a@1", fingerprint=FP, index=0)

    assert ObjectStore(tmp_path).pending() == [a0_new, a1, b1]
    assert not objects.blob_path(a0.sha256).exists()  # the replaced answer's bytes went with its record
    assert objects.read(a0_new) == b"first, index 0, new"


def test_discarding_a_replaced_record_keeps_the_newer_answer(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    unreadable = objects.put(b"not an image", task="hero@mug", fingerprint=FP, index=0, meta={"attempts": 1})
    retried = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0, meta={"attempts": 2})
    objects.discard(unreadable)
    assert ObjectStore(tmp_path).pending() == [retried]
    assert objects.find(FP, 0) == retried
    assert objects.read(retried) == PNG
    objects.discard(retried)
    assert not objects.root.exists()


def test_equal_bytes_for_two_tasks_are_stored_once_and_kept_until_both_are_discarded(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    r1 = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    r2 = objects.put(PNG, task="hero@cup", fingerprint=FP, index=0)
    assert r1.sha256 == r2.sha256
    assert objects.find(FP, 0) == r2  # "hero@cup" sorts first
    assert objects.find(FP, 0, task="hero@mug") == r1

    objects.discard(r1)
    assert ObjectStore(tmp_path).read(r2) == PNG
    objects.discard(r2)
    assert not objects.root.exists()


def test_discard_by_another_store_instance_keeps_bytes_a_remaining_record_names(tmp_path: Path) -> None:
    ObjectStore(tmp_path).put(PNG, task="hero@mug", fingerprint=FP, index=0)
    ObjectStore(tmp_path).put(PNG, task="hero@cup", fingerprint=FP, index=0)
    later = ObjectStore(tmp_path)
    [cup, mug] = later.pending()
    later.discard(mug)
    assert later.read(cup) == PNG


def test_a_record_is_durable_when_put_returns_even_if_the_process_is_killed(tmp_path: Path) -> None:
    script = f"""
import os, signal
from pathlib import Path
from dalle_pipe.store import ObjectStore
ObjectStore(Path({str(tmp_path)!r})).put(b"paid bytes", task="hero@mug", fingerprint={FP!r}, index=2,
                                          meta={{"request_id": "req_9"}})
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    [rec] = ObjectStore(tmp_path).pending()
    assert (rec.task, rec.index, rec.meta) == ("hero@mug", 2, {"request_id": "req_9"})
    assert ObjectStore(tmp_path).read(rec) == b"paid bytes"


def test_torn_and_hand_edited_records_are_reported_never_raised(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    good = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    records = tmp_path / ".dalle-pipe" / "objects" / "records"
    torn = records / f"{store.objects.record_key('hero@cup', FP, 0)}.json"
    torn.write_bytes(json.dumps(good.to_json()).encode()[:40])  # a crash mid-write under the final name
    wrong = records / f"{store.objects.record_key('hero@pan', FP, 0)}.json"
    wrong.write_text(json.dumps({**good.to_json(), "task": "hero@pan", "index": "0"}))
    renamed = records / f"{store.objects.record_key('x', FP, 0)}.json"
    renamed.write_text(json.dumps(good.to_json()))  # a record copied under another name
    deep = records / f"{'d' * 64}.json"
    deep.write_text("[" * 100_000)
    binary = records / f"{'e' * 64}.json"
    binary.write_bytes(b"\xff\xfe\x00")
    (records / ".half.json.1a2b3c.dp-tmp").write_bytes(b"{")  # an interrupted write's temp file: ignored

    scan = ObjectStore(tmp_path).scan()
    assert scan.records == [good]
    assert [(c.path.name, c.reason) for c in scan.corrupt] == sorted(
        [
            (torn.name, "not a record: not valid JSON"),
            (wrong.name, "not a record: index is not a whole number >= 0"),
            (renamed.name, "not a record: its name does not match its task, fingerprint and index"),
            (deep.name, "not a record: nested too deeply"),
            (binary.name, "not a record: not valid JSON"),
        ]
    )
    assert scan.orphans == []
    assert ObjectStore(tmp_path).pending() == [good]

    # The files are left for inspection; the bytes a corrupt record names are not deleted under it.
    objects2 = ObjectStore(tmp_path)
    objects2.discard(good)
    assert torn.exists() and wrong.exists()
    assert objects2.blob_path(good.sha256).exists()  # still named by the copied and the wrong-typed record


def test_a_record_whose_bytes_are_missing_or_cut_short_is_reported(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    gone = objects.put(b"will vanish", task="a@1", fingerprint=FP, index=0)
    short = objects.put(b"will be cut short", task="b@1", fingerprint=FP, index=0)
    objects.blob_path(gone.sha256).unlink()
    objects.blob_path(short.sha256).write_bytes(b"will")

    scan = ObjectStore(tmp_path).scan()
    assert scan.records == []
    reasons = {c.path.name: c.reason for c in scan.corrupt}
    assert reasons == {
        objects.record_path(gone).name: f"its bytes are missing ({objects.blob_path(gone.sha256)})",
        objects.record_path(short).name: (
            f"its bytes are 4 long, the record says 17 ({objects.blob_path(short.sha256)})"
        ),
    }
    assert [c.path for c in scan.corrupt] == sorted(c.path for c in scan.corrupt)


def test_read_detects_bytes_that_no_longer_match_their_sha256(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    blob = objects.blob_path(rec.sha256)
    blob.write_bytes(b"X" + PNG[1:])  # same size: the scan cannot tell, read must

    assert ObjectStore(tmp_path).pending() == [rec]
    with pytest.raises(ObjectCorruptError) as info:
        ObjectStore(tmp_path).read(rec)
    assert info.value.reason == "the stored bytes do not match their sha256"
    assert info.value.path == blob
    assert str(info.value) == f"{blob}: the stored bytes do not match their sha256"
    assert blob.exists()  # left for inspection

    blob.unlink()
    with pytest.raises(ObjectCorruptError, match="the stored bytes are missing"):
        objects.read(rec)


def test_a_later_put_of_the_same_bytes_repairs_a_damaged_blob(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    objects.blob_path(rec.sha256).write_bytes(b"X" + PNG[1:])
    objects.put(PNG, task="hero@cup", fingerprint=FP, index=0)
    assert objects.read(rec) == PNG


def test_bytes_without_a_record_are_listed_as_orphans(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    objects.record_path(rec).unlink()  # as if the process died between the bytes and the record
    assert ObjectStore(tmp_path).scan().orphans == [objects.blob_path(rec.sha256)]


def test_temp_files_of_interrupted_writes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    blob_tmp = objects.blob_path(rec.sha256).parent / f".{rec.sha256}.0a1b2c3d4e5f.dp-tmp"
    record_tmp = objects.records_dir / ".abc.json.0a1b2c3d4e5f.dp-tmp"
    blob_tmp.write_bytes(PNG[:10])
    record_tmp.write_bytes(b"{")
    assert ObjectStore(tmp_path).remove_temp_files() == 2
    assert not blob_tmp.exists() and not record_tmp.exists()
    assert ObjectStore(tmp_path).pending() == [rec]
    assert ObjectStore(tmp_path / "nothing-here").remove_temp_files() == 0


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    with pytest.raises(ValueError, match="index must be a whole number >= 0, not -1"):
        objects.put(PNG, task="t", fingerprint=FP, index=-1)
    with pytest.raises(TypeError):
        objects.put(PNG, task="t", fingerprint=FP, index=0, meta={"when": object()})
    assert not (tmp_path / ".dalle-pipe").exists()


def test_any_task_name_is_a_safe_record_name(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    rec = objects.put(b"x", task="../../etc/passwd\x00é", fingerprint="../" * 50, index=0)
    assert objects.record_path(rec).parent == tmp_path / ".dalle-pipe" / "objects" / "records"
    assert ObjectStore(tmp_path).pending() == [rec]


def test_concurrent_workers_put_and_discard_without_losing_a_record(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path)
    errors: list[BaseException] = []
    kept: list[ObjectRecord] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            for i in range(20):
                # Every worker stores the same bytes for i % 3 == 0: shared blobs under concurrent discards.
                data = b"shared" if i % 3 == 0 else f"w{w}-{i}".encode()
                rec = objects.put(data, task=f"t{w}@{i}", fingerprint=FP, index=i)
                if i % 2:
                    objects.discard(rec)
                else:
                    with lock:
                        kept.append(rec)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(kept) == 80
    fresh = ObjectStore(tmp_path)
    assert fresh.pending() == sorted(kept, key=lambda r: (r.task, r.fingerprint, r.index))
    assert all(fresh.read(r) for r in kept)
    assert fresh.scan().corrupt == [] and fresh.scan().orphans == []
    for rec in kept:
        fresh.discard(rec)
    assert not fresh.root.exists()


# -- disk errors at the file layer ---------------------------------------------------------------


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT])
def test_a_disk_error_while_storing_leaves_nothing_half_written(
    tmp_path: Path, disk_faults: DiskFaults, err: int
) -> None:
    objects = ObjectStore(tmp_path)
    kept = objects.put(b"an earlier answer", task="a@1", fingerprint=FP, index=0)
    disk_faults.fail(err, where="/objects/")
    with pytest.raises(OSError) as info:
        objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    assert store.is_disk_error(info.value)
    assert info.value.errno == err
    assert ObjectStore(tmp_path).pending() == [kept]
    assert [p for p in files_under(tmp_path)] == sorted(
        [
            f".dalle-pipe/objects/{kept.sha256[:2]}/{kept.sha256}",
            f".dalle-pipe/objects/records/{store.objects.record_key('a@1', FP, 0)}.json",
        ]
    )


def test_a_disk_error_on_the_record_removes_the_bytes_it_just_wrote(tmp_path: Path, disk_faults: DiskFaults) -> None:
    objects = ObjectStore(tmp_path)
    disk_faults.fail(errno.ENOSPC, where="/objects/records/", op="fsync")
    with pytest.raises(OSError, match="No space left on device"):
        objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    assert files_under(tmp_path) == []
    assert ("write", objects.blob_path(store.sha256_bytes(PNG))) in disk_faults.ops

    disk_faults.clear()  # space was freed: the same store works again
    rec = objects.put(PNG, task="hero@mug", fingerprint=FP, index=0)
    assert ObjectStore(tmp_path).pending() == [rec]


def test_the_journal_goes_through_the_same_file_layer(tmp_path: Path, disk_faults: DiskFaults) -> None:
    disk_faults.fail(errno.EIO, where="journal.jsonl", op="fsync")
    with store.Journal(tmp_path) as journal, pytest.raises(OSError) as info:
        journal.intent("hero@mug", FP, 1)
    assert store.is_disk_error(info.value)
    assert disk_faults.ops[-1] == ("fsync", tmp_path / ".dalle-pipe" / "journal.jsonl")


# -- rescue ----------------------------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder, moved under this test's tmp_path."""
    root = tmp_path / "systemp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_rescue_writes_private_files_under_the_system_temp_folder(tmp_path: Path, temp_root: Path) -> None:
    out = tmp_path / "project" / "out" / "shots"
    path = ObjectStore(out).rescue(PNG, name="hero/mug.png", meta={"task": "hero@mug", "request_id": "req_1"})

    folder = store.rescue_dir(out)
    assert folder.parent == temp_root / "dalle-pipe-rescue"
    assert path == folder / "mug.png"
    assert path.read_bytes() == PNG
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert json.loads(path.with_name("mug.png.json").read_text()) == {
        "sha256": store.sha256_bytes(PNG),
        "size": len(PNG),
        "output_dir": str(out),
        "task": "hero@mug",
        "request_id": "req_1",
    }
    assert store.rescue_dir(tmp_path / "other") != folder  # one folder per output folder

    # The same bytes again: the same file. Other bytes under the same name: never overwritten.
    assert store.rescue(out, PNG, name="mug.png") == path
    other = store.rescue(out, b"other bytes", name="mug.png")
    assert other == folder / f"{store.sha256_bytes(b'other bytes')[:12]}-mug.png"
    assert path.read_bytes() == PNG and other.read_bytes() == b"other bytes"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../../etc/cron.d/x", "x"), ("..", None), (".hidden", "hidden"), ("a b;c.png", "a_b_c.png")],
)
def test_rescue_names_stay_inside_the_rescue_folder(
    tmp_path: Path, temp_root: Path, name: str, expected: str | None
) -> None:
    path = store.rescue(tmp_path, b"bytes", name=name)
    assert path.parent == store.rescue_dir(tmp_path)
    assert path.name == (expected or store.sha256_bytes(b"bytes")[:16])


def test_rescue_never_writes_through_a_folder_someone_else_planted(tmp_path: Path, temp_root: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (temp_root / "dalle-pipe-rescue").symlink_to(elsewhere)
    path = store.rescue(tmp_path, b"bytes", name="x.png")
    assert path.read_bytes() == b"bytes"
    assert path.parent.parent == temp_root
    assert path.parent.name.startswith("dalle-pipe-rescue-")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(elsewhere.iterdir()) == []


def test_rescue_is_not_stopped_by_a_fault_on_the_output_disk(
    tmp_path: Path, temp_root: Path, disk_faults: DiskFaults
) -> None:
    out = tmp_path / "out"
    disk_faults.fail(errno.ENOSPC, where=out.as_posix() + "/")
    with pytest.raises(OSError):
        ObjectStore(out).put(PNG, task="hero@mug", fingerprint=FP, index=0)
    path = ObjectStore(out).rescue(PNG, name="hero@mug-0.png")
    assert path.read_bytes() == PNG
    assert os.path.commonpath([path, temp_root]) == str(temp_root)
