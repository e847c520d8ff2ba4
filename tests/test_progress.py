"""What a run prints on a terminal and in CI."""

from __future__ import annotations

import io
from pathlib import Path

from test_run import invoke, make_project

from dalle_pipe.progress import Progress


class _Report:
    def __init__(self, step: str, status: str) -> None:
        self.task = type("T", (), {"step": type("S", (), {"id": step})()})()
        self.outcome = type("O", (), {"status": status})()


def test_terminal_progress_shows_steps_rate_eta_and_waits() -> None:
    stream = io.StringIO()
    bar = Progress(4, stream=stream, live=True)
    bar.task(_Report("hero", "generated"))  # type: ignore[arg-type]
    bar.wait("rate_limit", 2.5)
    for step in ("beach", "hero", "beach"):
        bar.task(_Report(step, "up_to_date"))  # type: ignore[arg-type]
    text = stream.getvalue()
    assert "1/4 tasks  hero:1 " in text
    assert "4/4 tasks  hero:2 beach:2 " in text  # the last task always draws
    assert "img/min" in text and "ETA " in text
    assert "rate limit wait 2.5s" in text
    bar.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_not_a_terminal_prints_one_summary_line_per_recipe(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    r = invoke(root, "run", "--offline", "recipe.yaml")
    assert r.output == "shots: 6 generated, 0 up to date, 0 failed, 0 skipped, 0 modified\n"
    quiet = invoke(root, "run", "--offline", "--quiet", "recipe.yaml")
    assert quiet.exit_code == 0 and quiet.output == ""
