"""Under GitHub Actions no text from a recipe, catalog or server can start a workflow command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from front_util import invoke, write

from dalle_pipe.ci_output import command, guard_output, safe_line

GA = {"GITHUB_ACTIONS": "true"}


def _commands(text: str) -> list[str]:
    """Lines the runner would read as workflow commands (it splits at \\n, \\r and \\r\\n)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [line for line in lines if line.lstrip().startswith("::") or "##[" in line]


@pytest.mark.parametrize(("text", "safe"), [
    ("::error::pwned", "%3A:error::pwned"),
    ("   ::add-mask::x", "   %3A:add-mask::x"),
    ("ok\n::stop-commands::tok\n", "ok\n%3A:stop-commands::tok\n"),
    ("a\r::warning::b\r\n::notice::c", "a\r%3A:warning::b\r\n%3A:notice::c"),
    ("x ##[set-env name=A;]b", "x ##%5Bset-env name=A;]b"),
    ("a :: b %0A::error::c", "a :: b %0A::error::c"),  # not at a line start, and %0A is not a line break here
])
def test_safe_line_neutralises_every_line_start(text: str, safe: str) -> None:
    assert safe_line(text) == safe
    assert _commands(safe_line(text)) == []


def test_our_own_commands_escape_data_and_properties_by_githubs_rules() -> None:
    line = command("error", "50%\n::error::x\r%0A", file="a,b:c.yaml", line=3)
    assert line == "::error file=a%2Cb%3Ac.yaml,line=3,title=dalle-pipe::50%25%0A::error::x%0D%250A"


def test_the_guard_catches_a_command_split_across_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with guard_output(GA):
        sys.stdout.write("first ")
        sys.stdout.write("line\n  :")
        sys.stdout.write(":error::split\n")
        print("::warning::via print")
    assert capsys.readouterr().out == "first line\n  %3A:error::split\n%3A:warning::via print\n"


def test_outside_github_actions_nothing_changes(capsys: pytest.CaptureFixture[str]) -> None:
    with guard_output({"GITHUB_ACTIONS": "false"}):
        print("::notice::kept")
    assert capsys.readouterr().out == "::notice::kept\n"


def test_recipe_text_in_a_printed_problem_cannot_start_a_command(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"recipe.yaml": """version: 1
name: t
steps:
  - id: hero
    generate:
      prompt: "{{ vars['x\\n::error file=x.yaml::pwned\\r::add-mask::mask\\n::stop-commands::tok'] }}"
"""})
    r = invoke(root, "validate", "recipe.yaml", env=GA)
    assert r.exit_code == 2
    assert _commands(r.stderr) == []
    assert r.stderr == (
        "recipe.yaml:6:15: steps[0].generate.prompt: undefined variable "
        "'vars.x\\n::error file=x.yaml::pwned\\n::add-mask::mask\\n::stop-commands::tok' (set it under vars: or "
        "with --var x\n%3A:error file=x.yaml::pwned\n%3A:add-mask::mask\n%3A:stop-commands::tok=...)\n")
    # the one command on stdout is ours, its data escaped (Jinja reads the \r of its source as \n)
    assert r.stdout == (
        "::error file=recipe.yaml,line=6,col=15,title=dalle-pipe::steps[0].generate.prompt: undefined variable "
        "'vars.x\\n::error file=x.yaml::pwned\\n::add-mask::mask\\n::stop-commands::tok' (set it under vars: or "
        "with --var x%0A::error file=x.yaml::pwned%0A::add-mask::mask%0A::stop-commands::tok=...)\n")


def test_catalog_text_in_printed_output_cannot_start_a_command(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {
        "recipe.yaml": "version: 1\nname: t\nprovider: offline\ncatalog: {path: rows.jsonl}\nsteps:\n"
                       "  - id: hero\n    generate:\n      prompt: \"{{ item.p }}\"\n"
                       "    output: \"{{ item.out }}.png\"\n",
        "rows.jsonl": '{"id": "a", "p": "x", "out": "a\\n::error::pwned"}\n',
    })
    r = invoke(root, "run", "--dry-run", "recipe.yaml", env=GA)
    assert r.exit_code == 2
    assert _commands(r.stderr) == []
    assert r.stderr == ("recipe.yaml:9:13: steps[0].output: row 1 (key 'a'): output path 'a\\n::error::pwned.png' "
                        "has a control character (a line break, a tab...) (outputs are relative paths inside "
                        "output_dir)\n")


def test_the_progress_line_writes_to_the_guarded_stream() -> None:
    import io
    import sys

    from dalle_pipe.ci_output import guard_output
    from dalle_pipe.progress import Progress

    saved = sys.stderr
    sys.stderr = buf = io.StringIO()
    try:
        with guard_output({"GITHUB_ACTIONS": "true"}):
            bar = Progress(1, live=True)
            bar.stream.write("::stop-commands::x\n")
    finally:
        sys.stderr = saved
    assert buf.getvalue().startswith("%3A:stop-commands")
