"""Busy time against the rate-limit bound, the cost of a no-op rerun, and planning a big catalog.

    python benchmarks/bench_throughput.py               # every part
    python benchmarks/bench_throughput.py rate          # rate-limited stand-in only
    python benchmarks/bench_throughput.py noop 10000    # no-op rerun of N three-step units
    python benchmarks/bench_throughput.py noop 10000 3  # ... the rerun and --check 3 times each
    python benchmarks/bench_throughput.py noop 10000 3 --keep /tmp/noop  # make the folder there once, reuse it
    python benchmarks/bench_throughput.py plan 100000   # plan / run --check of an N-row catalog
    python benchmarks/bench_throughput.py plan 100000 3 # ... each command 3 times

Part 1 starts the local stand-in (tests/fakeapi.py) as a token bucket per minute
holding one second of rate, answering 429 with retry-after-ms and x-ratelimit-*
headers, with 0.5 s latency, and runs `dalle-pipe run` against it: 60 images at
concurrency 8 and 600 or 300 images/min, with the limit (a) stated in the recipe,
(b) unstated. Busy time runs from the first request's arrival to the last answer;
the bound is max(N / rate, N * latency / concurrency).

Part 2 makes N units of generate -> mask -> edit offline, then times a rerun
with nothing changed and reports its peak memory (max RSS of the process).

Part 3 plans an N-row catalog, nothing on disk, each command in its own process:
(a) 90 % of the rows active (`where`), generate -> mask -> edit: `plan`, `plan --json`
and `run --check`; (b) every row, two steps with ordinary templates (a filter, a
condition, a templated output path and key), offline: `plan`. Each line gives the
wall time, the CPU time (user + system) and the peak memory of the process.
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
         "f'MAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} CPU "
         "{resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime}\\n'"
         ")); sys.argv = ['dalle-pipe', *sys.argv[1:]]; runpy.run_module('dalle_pipe.cli', run_name='__main__')")


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> float:
    return cli_rss(root, *args, env=env)[0]


def cli_rss(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of one `dalle-pipe run` in its own process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, "run", "recipe.yaml", "--quiet", *args],
                          cwd=root, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    line = next((ln.split() for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS ")), None)
    if line is None:
        return took, 0, 0.0
    return took, int(line[1]) // 1024, float(line[3])


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


def part_noop(n: int, repeat: int = 1, keep: Path | None = None) -> None:
    """Make n units and time no-op reruns; with keep, the folder is made there once and reused after."""
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        recipe_text = noop_recipe(n)
        runs = []
        ready = root / ".made"
        if not (ready.exists() and ready.read_text() == recipe_text):
            root.mkdir(parents=True, exist_ok=True)
            (root / "recipe.yaml").write_text(recipe_text)
            (root / "rows.csv").write_text("id,name\n" + "".join(f"r{i},item {i}\n" for i in range(n)))
            runs += [("first run", cli_rss(root, "--offline"), ""),
                     # statuses go generated -> up_to_date: manifest rewritten
                     ("first rerun", cli_rss(root, "--offline"), "   (statuses become up_to_date: rewritten)")]
            ready.write_text(recipe_text)
        runs += [("no-op rerun", cli_rss(root, "--offline"), "   (nothing written)") for _ in range(repeat)]
        runs += [("--check", cli_rss(root, "--offline", "--check"), "") for _ in range(repeat)]
        print(f"{n} units x 3 steps ({3 * n} files), offline; wall seconds, CPU seconds and peak RSS of each process:")
        for label, (took, mb, cpu), note in runs:
            print(f"  {label:<14} {took:7.2f} s {cpu:7.2f} s CPU {mb:5d} MB{note}")


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


def templated_recipe() -> str:
    """Two steps with ordinary templates: a filter and a condition in the prompt, a templated key and output."""
    return """version: 1
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


def timed(root: Path, *args: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one `dalle-pipe ARGS` in its own process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *args], cwd=root, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                                    if k not in ("OPENAI_API_KEY", "GITHUB_ACTIONS")})
    took = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    line = next((ln.split() for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS ")), None)
    if line is None:
        return took, 0.0, 0
    return took, float(line[3]), int(line[1]) // 1024


def part_plan(n: int, repeat: int = 1) -> None:
    """`plan` and `run --check` on an n-row catalog, nothing on disk (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "recipe.yaml").write_text(plan_recipe())
        rows = "".join(f"r{i},item {i},{'no' if i % 10 == 9 else 'yes'}\n" for i in range(n))
        (root / "rows.csv").write_text("id,name,active\n" + rows)
        with (root / "skus.csv").open("w") as f:
            f.write("sku,name,color,big\n")
            for i in range(n):
                f.write(f"p{i:06d},product {i},{('red', 'blue', 'green')[i % 3]},{i % 2}\n")
        (root / "templated.yaml").write_text(templated_recipe().replace("rows.csv", "skus.csv"))
        print(f"{n} rows, nothing on disk; wall seconds, CPU seconds (user + system) and peak RSS of each process:")
        cases = (("plan", ("plan", "recipe.yaml")), ("plan --json", ("plan", "--json", "recipe.yaml")),
                 ("run --check", ("run", "--check", "--quiet", "recipe.yaml")),
                 ("plan, templates", ("plan", "templated.yaml")))
        for label, args in cases:
            for _ in range(repeat):
                took, cpu, mb = timed(root, *args)
                print(f"  {label:<16} {took:7.2f} s {cpu:7.2f} s CPU {mb:5d} MB")
        print(f"  (a) {n - n // 10} active rows x generate -> mask -> edit; (b) plan, templates: {n} rows x "
              f"generate -> resize, offline")


def main() -> None:
    args = sys.argv[1:]
    keep = None
    if "--keep" in args:
        at = args.index("--keep")
        keep = Path(args[at + 1]).resolve()
        del args[at:at + 2]
    sys.argv[1:] = args
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "rate"):
        part_rate()
    if what in ("all", "noop"):
        part_noop(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000, int(sys.argv[3]) if len(sys.argv) > 3 else 1,
                  keep)
    if what in ("all", "plan"):
        part_plan(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000, int(sys.argv[3]) if len(sys.argv) > 3 else 1)


if __name__ == "__main__":
    main()
