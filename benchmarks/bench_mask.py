"""Time a large feathered mask, from shapes to PNG bytes, on one core.

The target: a 4096 x 4096 feathered mask, PNG encoding included, in under 2 s.
Each case is run several times; the best wall and CPU (process) times are printed,
CPU time being the one that a busy machine distorts least.

    python benchmarks/bench_mask.py [--size 4096] [--repeat 3] [--feather 0 8 16 32 64 128]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from dalle_pipe.imaging import masks
from dalle_pipe.imaging.io import encode, encode_mask_png

SHAPES: list[dict[str, Any]] = [{"circle": {"center": [0.5, 0.5], "radius": 0.4}}]  # SPEC's product-photo mask
LIMIT_S = 2.0


def best(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--feather", type=float, nargs="+", default=[0, 8, 16, 32, 64, 128])
    args = ap.parse_args()
    n = args.size
    print(f"mask {n}x{n}, circle r=0.4, invert; best of {args.repeat}; seconds")
    print(f"{'feather':>8} {'alpha':>8} {'encode':>8} {'total':>8} {'cpu':>8} {'bytes':>10}  via encode(build_mask)")
    worst = 0.0
    for feather in args.feather:

        def alpha(f: float = feather) -> object:
            return masks.mask_alpha(n, n, SHAPES, invert=True, feather=f)

        def total(f: float = feather) -> object:
            return masks.mask_png(n, n, SHAPES, invert=True, feather=f)

        def via_image(f: float = feather) -> object:
            return encode(masks.build_mask(n, n, SHAPES, invert=True, feather=f), "png")

        a_wall, _, a = best(alpha, args.repeat)
        e_wall, _, _ = best(lambda a=a: encode_mask_png(a), args.repeat)  # type: ignore[misc]
        t_wall, t_cpu, data = best(total, args.repeat)
        i_wall, _, _ = best(via_image, args.repeat)
        assert isinstance(data, bytes)
        decoded = Image.open(io.BytesIO(data))
        assert decoded.mode == "RGBA" and decoded.size == (n, n)
        worst = max(worst, t_cpu)
        print(
            f"{feather:>8g} {a_wall:>8.3f} {e_wall:>8.3f} {t_wall:>8.3f} {t_cpu:>8.3f} {len(data):>10,}  {i_wall:.3f}"
        )
    verdict = "OK" if worst < LIMIT_S else "OVER"
    print(f"slowest (CPU): {worst:.3f} s — target < {LIMIT_S} s: {verdict}")


if __name__ == "__main__":
    main()
