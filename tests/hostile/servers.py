"""Shared helpers of the hostile-server, key and clean tests: a small project, the CLI, a PNG."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from fakeapi import FakeOpenAI
from PIL import Image

from dalle_pipe.cli import main

KEY = "sk-proj-Zq8LmN3vXw7RtY2bKc9D"
FOUR = """\
version: 1
name: shots
model: gpt-image-2
params: {size: 1024x1024, quality: low}
throttle: {concurrency: 1, max_retries: 1, timeout_s: 30}
items: [{id: a}, {id: b}, {id: c}, {id: d}]
steps:
  - id: hero
    generate: {prompt: "A {{ item.id }} on marble"}
"""


def project(root: Path, recipe: str = FOUR, **files: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(recipe)
    for name, content in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return root


def env(api: FakeOpenAI | None, **more: str) -> dict[str, str]:
    out = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": api.base_url if api else "", **more}
    return {k: v for k, v in out.items() if v}


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI as a user runs it, in root; stdout and stderr together in .output."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        clear = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None, "AZURE_OPENAI_ENDPOINT": None,
                 "AZURE_OPENAI_API_KEY": None, "GITHUB_ACTIONS": None}
        return CliRunner().invoke(main, list(args), env={**clear, **(env or {})}, catch_exceptions=False)
    finally:
        os.chdir(cwd)


def manifest(root: Path, name: str = "shots") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "out" / name / "manifest.json").read_text())
    return data


def entries(root: Path, name: str = "shots") -> dict[str, dict[str, Any]]:
    return {f"{e['step']}@{e['key']}": e for e in manifest(root, name)["entries"]}


def png(size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def b64png() -> str:
    return base64.b64encode(png()).decode()


def files_under(folder: Path) -> list[str]:
    """Every file below folder (relative POSIX paths), sorted; none when it does not exist."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
