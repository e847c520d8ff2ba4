"""Micro-benchmark of the no-op rerun path of dalle_pipe.store.

10,000 units x 3 steps = 30,000 output files: a first "run" writes them and records their
sha256 in the FileIndex; then a "rerun" loads index.json, asks sha() of every unchanged file
(one os.stat each), looks each entry up in a ReuseIndex, and saves the index.

    python benchmarks/bench_store.py [--units N] [--steps N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dalle_pipe.store import FileIndex, ReuseIndex, fingerprint, sha256_bytes


class CountingIndex(FileIndex):
    hashed = 0

    def _hash(self, path: str) -> str:
        self.hashed += 1
        return super()._hash(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the files (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = Path(tmp) / "out"
        n = args.units * args.steps

        t0 = time.perf_counter()
        rels: list[str] = []
        entries: list[dict[str, object]] = []
        idx = FileIndex(out)
        for u in range(args.units):
            folder = out / f"sku-{u:05d}"
            folder.mkdir(parents=True)
            for s in range(args.steps):
                rel = f"sku-{u:05d}/step{s}.png"
                data = f"image {u} {s}".encode() * 8
                p = out / rel
                p.write_bytes(data)  # plain writes: the bench measures the index, not fsync
                sha = sha256_bytes(data)
                idx.record(p, sha)
                rels.append(rel)
                fp = fingerprint(
                    provider="offline",
                    model="gpt-image-2",
                    endpoint="/v1/images/generations",
                    params={"size": "1024x1024", "quality": "low"},
                    prompt=f"prompt {u} {s}",
                    input_shas=[],
                )
                entries.append(
                    {"fingerprint": fp, "index": 0, "path": rel, "sha256": sha, "bytes": len(data)}
                )
        t_setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx.save()
        t_first_save = time.perf_counter() - t0
        size = (out / ".dalle-pipe" / "index.json").stat().st_size

        # -- the no-op rerun --
        paths = [out / r for r in rels]
        for p in paths:
            str(p)  # Path objects format lazily; the runner pays that when it builds them
        t0 = time.perf_counter()
        again = CountingIndex(out)
        t_load = time.perf_counter() - t0
        assert len(again) == n

        t0 = time.perf_counter()
        for p in paths:
            again.sha(p)
        t_sha = time.perf_counter() - t0
        hashed_in_sha = again.hashed

        t0 = time.perf_counter()
        reuse = ReuseIndex(entries, again, out)
        hits = sum(reuse.lookup(str(e["fingerprint"]), 0) is not None for e in entries)
        t_reuse = time.perf_counter() - t0
        assert hits == n

        t0 = time.perf_counter()
        again.save()  # nothing changed (unless racy entries were rehashed): usually a no-op
        t_save_noop = time.perf_counter() - t0
        again.record(paths[0], str(entries[0]["sha256"]))
        t0 = time.perf_counter()
        again.save()
        t_save = time.perf_counter() - t0

    rows = [
        (f"files: {n} ({args.units} units x {args.steps} steps); index.json {size / 1e6:.2f} MB", None),
        (f"setup: write + record {n} files (not part of the rerun)", t_setup),
        ("first save of index.json", t_first_save),
        ("rerun: FileIndex load", t_load),
        (f"rerun: sha() of {n} unchanged files ({hashed_in_sha} rehashed as racy)", t_sha),
        (f"rerun: ReuseIndex build + {n} lookups (stat each again)", t_reuse),
        ("rerun: save, nothing changed (no-op)", t_save_noop),
        ("rerun: save, one entry changed", t_save),
        ("TOTAL rerun: load + sha() + save", t_load + t_sha + t_save),
    ]
    for label, secs in rows:
        print(label if secs is None else f"{label:<62} {secs:7.3f} s")


if __name__ == "__main__":
    main()
