"""Time an offline run and its no-op rerun of a recipe whose step carries checks (size, unchanged, ask).

The first run measures every check; the rerun finds each result by fingerprint (no decode, no
image read), so it should cost about what a rerun without checks costs.

    python benchmarks/bench_checks_rerun.py [--units 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from dalle_pipe.cli import main as cli

RECIPE = """\
version: 1
name: bench
model: gpt-image-2
params: {{size: 1024x1024, quality: low}}
items: [{items}]
steps:
  - id: hero
    generate: {{prompt: "a {{{{ item.id }}}}"}}
  - id: keep
    mask: {{size_of: {{step: hero}}, shapes: [{{circle: {{center: [0.5, 0.5], radius: 0.4}}}}], invert: true}}
  - id: beach
    edit: {{image: {{step: hero}}, mask: {{step: keep}}, prompt: "a beach"}}
{checks}"""
CHECKS = """\
    checks:
      - size: 1024x1024
      - unchanged: {from: {step: hero}, outside: {step: keep}, min: 0.9}
      - ask: "Is the {{ item.id }} whole?"
        model: gpt-5.1
    on_fail: {retry: 1}
"""


def timed(root: Path) -> float:
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, ["run", "recipe.yaml", "--offline", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    args = parser.parse_args()
    os.environ["DALLE_PIPE_NO_REPORT"] = "1"
    items = ", ".join(f"{{id: u{i}}}" for i in range(args.units))
    print(f"{'recipe':>14}  {'units':>6}  {'run s':>7}  {'rerun s':>8}")
    for label, checks in (("without checks", ""), ("with checks", CHECKS)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "recipe.yaml").write_text(RECIPE.format(items=items, checks=checks))
            cwd = os.getcwd()
            os.chdir(root)
            try:
                first, again = timed(root), timed(root)
            finally:
                os.chdir(cwd)
        print(f"{label:>14}  {args.units:>6}  {first:7.2f}  {again:8.2f}")


if __name__ == "__main__":
    main()
