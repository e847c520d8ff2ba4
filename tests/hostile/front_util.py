"""Helpers for the front-end hostile tests: a project on disk, the command line, the tree on disk."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result

from dalle_pipe.cli import main

KEY = "sk-test-FRONT-9d2e7a41c3"


def write(root: Path, files: Mapping[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def invoke(root: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """The command line in `root`, its stdout and stderr apart; never an endpoint from the shell."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        full = {"OPENAI_BASE_URL": "", "OPENAI_API_KEY": "", "GITHUB_ACTIONS": "", **(env or {})}
        return CliRunner().invoke(main, list(args), env={k: v or None for k, v in full.items()},
                                  catch_exceptions=False)
    finally:
        os.chdir(cwd)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes), folder ('dir') and symlink ('-> target') under root."""
    out: dict[str, bytes | str] = {}
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(here) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png(width: int, height: int, raw: bytes, *, interlace: int = 0) -> bytes:
    """An RGB 8-bit PNG whose IDAT holds `raw` (filter bytes included), every CRC right."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def scanlines(width: int, height: int, value: int = 0x80) -> bytes:
    return b"".join(b"\x00" + bytes([value]) * (width * 3) for _ in range(height))
