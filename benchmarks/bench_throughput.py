"""Busy time against the rate-limit bound, and the cost of a no-op rerun.

    python benchmarks/bench_throughput.py            # both parts
    python benchmarks/bench_throughput.py rate       # rate-limited stand-in only
    python benchmarks/bench_throughput.py noop 10000 # no-op rerun of N three-step units

Part 1 starts the local stand-in (tests/fakeapi.py) as a token bucket per minute
holding one second of rate, answering 429 with retry-after-ms and x-ratelimit-*
headers, with 0.5 s latency, and runs `dalle-pipe run` against it: 60 images at
concurrency 8 and 600 or 300 images/min, with the limit (a) stated in the recipe,
(b) unstated. Busy time runs from the first request's arrival to the last answer;
the bound is max(N / rate, N * latency / concurrency).

Part 2 makes N units of generate -> mask -> edit offline, then times a rerun
with nothing changed and reports its peak memory (max RSS of the process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakeapi import FakeOpenAI  # noqa: E402

N = 60
LATENCY = 0.5
CONCURRENCY = 8


def recipe(n: int, rate: int | None) -> str:
    throttle = f"images_per_minute: {rate}, " if rate else ""
    items = "\n".join(f"  - {{id: p{i:03d}}}" for i in range(n))
    return f"""version: 1
name: bench
model: gpt-image-2
params: {{size: 1024x1024, quality: low}}
throttle: {{{throttle}concurrency: {CONCURRENCY}}}
items:
{items}
steps:
  - id: shot
    generate: {{prompt: "product {{{{ item.id }}}}"}}
"""


_WRAP = ("import atexit, resource, runpy, sys; "
         "atexit.register(lambda: sys.stderr.write("
         "f'MAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')); "
         "sys.argv = ['dalle-pipe', *sys.argv[1:]]; runpy.run_module('dalle_pipe.cli', run_name='__main__')")


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> float:
    return cli_rss(root, *args, env=env)[0]


def cli_rss(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one `dalle-pipe run` in its own process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, "run", "recipe.yaml", "--quiet", *args],
                          cwd=root, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    rss = max((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS ")),
              default=0)
    return took, rss // 1024


def rate_case(rate: int, stated: bool) -> tuple[float, float, int, int]:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(rate_per_min=rate, latency_s=LATENCY) as api:
        root = Path(tmp)
        (root / "recipe.yaml").write_text(recipe(N, rate if stated else None))
        cli(root, env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": api.base_url})
        arrivals = [r.time for r in api.image_requests]
        busy = max(t for t, _ in api.served) - min(arrivals)
        bound = max(N / rate * 60, N * LATENCY / CONCURRENCY)
        return busy, bound, api.rate_limited, len(api.image_requests)


def part_rate() -> None:
    print(f"rate-limited stand-in: {N} images, latency {LATENCY}s, concurrency {CONCURRENCY}")
    print(f"{'rate/min':>9} {'limit':>9} {'busy s':>8} {'bound s':>8} {'ratio':>6} {'429s':>5} {'429 %':>6}")
    for rate in (600, 300):
        for stated in (True, False):
            busy, bound, limited, requests = rate_case(rate, stated)
            print(f"{rate:>9} {'stated' if stated else 'unstated':>9} {busy:>8.2f} {bound:>8.2f} "
                  f"{busy / bound:>6.3f} {limited:>5} {100 * limited / requests:>5.1f}%")


def noop_recipe(n: int) -> str:
    return """version: 1
name: noop
model: gpt-image-2
params: {size: 128x128, quality: low}
catalog: {path: rows.csv}
steps:
  - id: shot
    generate: {prompt: "product {{ item.name }} on a table"}
  - id: cut
    mask:
      size_of: {step: shot}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
  - id: edit
    edit: {image: {step: shot}, mask: {step: cut}, prompt: "a beach behind it"}
"""


def part_noop(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "recipe.yaml").write_text(noop_recipe(n))
        (root / "rows.csv").write_text("id,name\n" + "".join(f"r{i},item {i}\n" for i in range(n)))
        first, first_mb = cli_rss(root, "--offline")
        flip, flip_mb = cli_rss(root, "--offline")  # statuses go generated -> up_to_date: manifest rewritten
        rerun, rerun_mb = cli_rss(root, "--offline")  # nothing changes at all: nothing is written
        check, check_mb = cli_rss(root, "--offline", "--check")
        print(f"{n} units x 3 steps ({3 * n} files), offline; seconds and peak RSS of each process:")
        print(f"  first run      {first:7.2f} s {first_mb:5d} MB")
        print(f"  first rerun    {flip:7.2f} s {flip_mb:5d} MB   (statuses become up_to_date: rewritten)")
        print(f"  no-op rerun    {rerun:7.2f} s {rerun_mb:5d} MB   (nothing written)")
        print(f"  --check        {check:7.2f} s {check_mb:5d} MB")


def plan_recipe() -> str:
    return """version: 1
name: catalog
model: gpt-image-2
params: {size: 1024x1024, quality: low}
catalog: {path: rows.csv, where: "item.active == 'yes'"}
steps:
  - id: shot
    generate: {prompt: "product {{ item.name }} on a table"}
  - id: cut
    mask:
      size_of: {step: shot}
      shapes: [{circle: {center: [0.5, 0.5], radius: 0.4}}]
  - id: edit
    edit: {image: {step: shot}, mask: {step: cut}, prompt: "a beach behind it"}
"""


def timed(root: Path, *args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one `dalle-pipe ARGS` in its own process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *args], cwd=root, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                                    if k != "OPENAI_API_KEY"})
    took = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    rss = max((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS ")),
              default=0)
    return took, rss // 1024


def part_plan(n: int) -> None:
    """`plan` and `run --check` on an n-row catalog (90 % active), generate -> mask -> edit, nothing on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "recipe.yaml").write_text(plan_recipe())
        rows = "".join(f"r{i},item {i},{'no' if i % 10 == 9 else 'yes'}\n" for i in range(n))
        (root / "rows.csv").write_text("id,name,active\n" + rows)
        print(f"{n} rows ({n - n // 10} active) x 3 steps, nothing on disk; seconds and peak RSS:")
        for label, args in (("plan", ("plan", "recipe.yaml")), ("plan --json", ("plan", "--json", "recipe.yaml")),
                            ("run --check", ("run", "--check", "--quiet", "recipe.yaml"))):
            took, mb = timed(root, *args)
            print(f"  {label:<12} {took:7.2f} s {mb:5d} MB")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "rate"):
        part_rate()
    if what in ("all", "noop"):
        part_noop(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
    if what in ("all", "plan"):
        part_plan(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)


if __name__ == "__main__":
    main()
