"""Time the local image checks (SSIM-based `unchanged` and `similar`) on one core.

Each case is run several times; the best wall and CPU (process) times are printed.

    python benchmarks/bench_checks.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from dalle_pipe.checks.local import similar_score, unchanged_score

SIZES = [(1024, 1024), (1536, 1024), (3840, 2160)]


def best(fn: Callable[..., object], repeat: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'size':>10}  {'check':>9}  {'wall s':>7}  {'cpu s':>7}")
    for w, h in SIZES:
        source = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        alpha = np.full((h, w), 255, dtype=np.uint8)
        alpha[h // 4:3 * h // 4, w // 4:3 * w // 4] = 0
        mask = Image.fromarray(np.dstack([np.full((h, w, 3), 255, np.uint8), alpha]), "RGBA")
        cases: list[tuple[str, Callable[..., object]]] = [
            ("unchanged", lambda i=image, s=source, m=mask: unchanged_score(i, s, m)),
            ("similar", lambda i=image, s=source: similar_score(i, s)),
        ]
        for name, fn in cases:
            wall, cpu = best(fn, args.repeat)
            print(f"{w}x{h:<5}  {name:>9}  {wall:7.3f}  {cpu:7.3f}")


if __name__ == "__main__":
    main()
