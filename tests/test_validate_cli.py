"""The broken-recipe table: each folder of tests/recipes/ is a project whose recipe is wrong.

`expected.txt` holds exactly what `dalle-pipe validate` prints on stderr (it exits 2);
`args.txt`, when present, holds the command line's arguments (default: `recipe.yaml`).
`run`, with and without `--offline`, must refuse the same way and write nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dalle_pipe.cli import main

CASES = Path(__file__).parent / "recipes"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").is_file())


@pytest.fixture
def case_dir(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the case (symlinks kept as they are), as the working folder, with no endpoint set."""
    work = tmp_path / request.param
    shutil.copytree(CASES / request.param, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return work


def _args(work: Path) -> list[str]:
    file = work / "args.txt"
    return file.read_text().split() if file.is_file() else ["recipe.yaml"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=True)


def test_the_table_is_not_empty() -> None:
    assert len(CASE_NAMES) >= 40


@pytest.mark.parametrize("case_dir", CASE_NAMES, indirect=True)
def test_validate_reports_every_problem_exactly(case_dir: Path) -> None:
    expected = (case_dir / "expected.txt").read_text()
    result = _invoke(["validate", *_args(case_dir)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert (result.exit_code, result.stderr) == (2, expected)
    assert result.stdout == ""


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "openai"])
@pytest.mark.parametrize("case_dir", CASE_NAMES, indirect=True)
def test_run_refuses_the_same_way_and_writes_nothing(case_dir: Path, offline: bool) -> None:
    expected = (case_dir / "expected.txt").read_text()
    before = _tree(case_dir)
    result = _invoke(["run", *(["--offline"] if offline else []), *_args(case_dir)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert (result.exit_code, result.stderr) == (2, expected)
    assert _tree(case_dir) == before
