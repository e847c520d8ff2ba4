"""Time and peak memory of `dalle-pipe plan` on a catalog of N rows (default 100,000).

    python benchmarks/bench_plan_rows.py           # 100,000 rows
    python benchmarks/bench_plan_rows.py 20000     # N rows

The recipe has two steps with ordinary templates (a prompt with a filter and a
condition, an output path) over a CSV catalog, the shape of a real catalog run.
The command runs in a child process; the numbers are its wall time and its max RSS.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """version: 1
name: bench
provider: offline
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: rows.csv, key: "{{ item.sku }}"}
steps:
  - id: shot
    generate: {prompt: "{{ item.name | title }} on a {{ item.color }} table{% if item.big == '1' %}, wide{% endif %}"}
    output: "{{ key }}/shot.{{ ext }}"
  - id: small
    resize: {image: {step: shot}, size: 256x256}
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "recipe.yaml").write_text(RECIPE)
        with (root / "rows.csv").open("w") as f:
            f.write("sku,name,color,big\n")
            for i in range(n):
                f.write(f"p{i:06d},product {i},{('red', 'blue', 'green')[i % 3]},{i % 2}\n")
        exe = Path(sys.executable).parent / "dalle-pipe"
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        helped = subprocess.run([str(exe), "plan", "--help"], capture_output=True, text=True).stdout
        ceiling = ["--max-units", str(max(n, 1))] if "--max-units" in helped else []
        proc = subprocess.run([str(exe), "plan", "recipe.yaml", *ceiling], cwd=root,
                              capture_output=True, text=True, env={**os.environ, "GITHUB_ACTIONS": ""})
        elapsed = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"plan exited {proc.returncode}")
        print(f"plan of {n} rows (2 steps): {elapsed:.1f} s, peak RSS {max(rss, before) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
