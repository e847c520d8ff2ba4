"""How this fixture was made: run with the main branch's code (before the engine redesign), from the repo root.

    python tests/data/upgrade_main/make_fixture.py /tmp/upgrade && cp -r /tmp/upgrade/... here

It is checked in as data; the tests never run it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from fakeapi import FakeOpenAI
from test_run import invoke, make_project

RECIPE = (Path(__file__).parent / "recipe.yaml").read_text()
CATALOG = (Path(__file__).parent / "products.csv").read_text()

if __name__ == "__main__":
    root = Path(sys.argv[1])
    shutil.rmtree(root, ignore_errors=True)
    make_project(root, RECIPE, CATALOG)
    with FakeOpenAI() as api:
        env = {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": api.base_url, "DALLE_PIPE_NO_REPORT": "1"}
        r = invoke(root, "run", "recipe.yaml", env=env)
        print(r.exit_code, r.output)
