"""Shared fixtures: a temporary project folder built from a dict of files; the local stand-in API."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from fakeapi import FakeOpenAI

Files = Mapping[str, str | bytes]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Files], Path]:
    """Build a project from `{relative path: text or bytes}`; the working folder becomes its root.

    The endpoint variables are cleared so that checks see api.openai.com unless a test says otherwise.
    """
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def build(files: Files) -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        monkeypatch.chdir(root)
        return root

    return build


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    """The stand-in OpenAI API on a free local port, answering normally unless scripted."""
    with FakeOpenAI() as server:
        yield server
