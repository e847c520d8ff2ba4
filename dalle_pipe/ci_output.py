"""GitHub Actions output: annotations on the recipe lines at fault, and a job summary table.

Active only when ``GITHUB_ACTIONS=true``; the summary only when ``GITHUB_STEP_SUMMARY``
names a file. Everything user-controlled (prompts, keys, messages) is escaped so it can
never start a workflow command of its own: inside our own commands by GitHub's rules for
data and properties, and on every other line the tool prints by :func:`safe_line`, which
:func:`guard_output` applies to all of stdout and stderr while a command runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TextIO

from .engine.results import RecipeResult, TaskReport
from .errors import DallePipeError, Problem, RecipeError

MAX_ANNOTATIONS = 50  # per kind and run; GitHub shows only the first few anyway
MAX_SUMMARY_ROWS = 100


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


_COMMAND_START = re.compile(r"^(\s*):(?=:)")
_LINE_ENDS = re.compile(r"(\r\n|\r|\n)")


def safe_line(text: str) -> str:
    """Plain output that cannot start a workflow command when the runner reads it.

    The runner reads a line as a command when, leading spaces trimmed, it starts with `::`
    (`::error::`, `::add-mask::`, `::stop-commands::`...), and as an old-style one when it holds
    `##[`; it splits lines at `\n`, `\r` and `\r\n`. So the first `:` of every such line start
    becomes `%3A` (GitHub's escape for a colon) and `##[` becomes `##%5B`; the rest is kept."""
    parts = _LINE_ENDS.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = _COMMAND_START.sub(r"\1%3A", parts[i], count=1).replace("##[", "##%5B")
    return "".join(parts)


class _Guarded(io.TextIOBase):
    """A text stream whose every line goes out through safe_line; whole lines only, so a command
    split across writes is caught too. Our own commands go out through `command_line`."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        self.pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "errors", None) or "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        buffered = self.pending + text
        cut = max(buffered.rfind("\n"), buffered.rfind("\r"))
        if cut >= 0:
            self.raw.write(safe_line(buffered[:cut + 1]))
        self.pending = buffered[cut + 1:]
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.raw.write(safe_line(self.pending))
            self.pending = ""
        self.raw.flush()

    def command_line(self, line: str) -> None:
        self.flush()
        self.raw.write(line + "\n")


def _write_command(out: TextIO, line: str) -> None:
    """One of our own workflow commands: as is (its text is escaped by `command`)."""
    if isinstance(out, _Guarded):
        out.command_line(line)
    else:
        out.write(line + "\n")


@contextlib.contextmanager
def guard_output(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Under GitHub Actions, pass every line printed on stdout and stderr through safe_line until
    the block ends; elsewhere, nothing changes."""
    if not in_github_actions(env):
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(saved[0]), _Guarded(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, *, file: str | None = None, line: int | None = None,
            col: int | None = None, title: str | None = "dalle-pipe") -> str:
    """One workflow command line, e.g. ``::error file=a.yaml,line=3,title=dalle-pipe::message``."""
    props = [f"{k}={_prop(str(v))}" for k, v in (("file", file), ("line", line), ("col", col),
                                                 ("title", title)) if v is not None and v != ""]
    return f"::{kind}{' ' + ','.join(props) if props else ''}::{_data(message)}"


def repo_path(file: str, env: Mapping[str, str] | None = None) -> str:
    """A path as GitHub names it: relative to GITHUB_WORKSPACE when inside it."""
    env = os.environ if env is None else env
    workspace = env.get("GITHUB_WORKSPACE")
    if not workspace:
        return file
    path = Path(file)
    full = (path if path.is_absolute() else Path.cwd() / path).resolve()
    try:
        return full.relative_to(Path(workspace).resolve()).as_posix()
    except ValueError:
        return file


def problem_annotations(problems: Iterable[Problem], env: Mapping[str, str] | None = None) -> list[str]:
    """``::error``/``::warning`` for each recipe problem, at its file, line and column."""
    out = []
    for p in problems:
        head = f"{p.path}: " if p.path else ""
        tail = f" ({p.hint})" if p.hint else ""
        out.append(command(p.severity, f"{head}{p.message}{tail}", file=repo_path(p.file, env),
                           line=p.line, col=p.col))
    return out


def error_annotations(exc: DallePipeError, env: Mapping[str, str] | None = None) -> list[str]:
    """The annotations for an error that stops a command (exit 2 and friends)."""
    if isinstance(exc, RecipeError):
        return problem_annotations(exc.problems, env)
    return [command("error", exc.format())]


def _where(report: TaskReport, env: Mapping[str, str] | None) -> tuple[str, int]:
    task = report.task
    file, line, _ = task.recipe.source.at(task.step.at)
    return repo_path(file, env), line


def _task_note(report: TaskReport, mode: str) -> tuple[str, str] | None:
    """(kind, message) for one task, or None when there is nothing to say."""
    o = report.outcome
    name = report.task.id
    if not o.in_scope:
        return None
    if o.status == "failed":
        return "error", f"{name}: {o.reason or 'failed'}"
    if o.status == "pending" and mode == "check":
        outputs = ", ".join(report.task.outputs)
        return "error", f"{name}: out of date: {o.reason or 'would be made'} ({outputs})"
    if o.status == "modified":
        return "warning", (f"{name}: {', '.join(report.task.outputs)} was changed by hand: kept, not "
                           f"regenerated (--force replaces it)")
    if o.status == "skipped" and o.reason != "`when` is false":
        return "warning", f"{name}: skipped: {o.reason or 'skipped'}"
    if o.stale:
        return "warning", (f"{name}: approved image kept although its recipe changed "
                          f"(dalle-pipe approve --revoke to let it be made again)")
    return None


def _check_notes(report: TaskReport, env: Mapping[str, str] | None) -> list[tuple[str, str, str, int]]:
    """(kind, message, file, line) for each check that failed on this task's images, at the check's own
    line: an `error` check as an error, a `warn` check as a warning."""
    out: list[tuple[str, str, str, int]] = []
    if not report.task.checks or not report.outcome.in_scope:
        return out
    specs = {c.spec.name: c.spec for c in report.task.checks}
    for entry in report.outcome.entries:
        for c in entry.get("checks") or []:
            spec = specs.get(str(c.get("name"))) if isinstance(c, dict) else None
            if spec is None or c.get("passed") is not False:
                continue
            file, line, _ = report.task.recipe.source.at(spec.at)
            kind = "error" if spec.severity == "error" else "warning"
            out.append((kind, f"{report.task.id}: check '{spec.name}' failed: {c.get('reason') or 'no reason'}",
                        repo_path(file, env), line))
    return out


def run_annotations(results: Sequence[RecipeResult], mode: str = "run",
                    env: Mapping[str, str] | None = None) -> list[str]:
    """Annotations for a run: failed (and, under --check, out-of-date) tasks as errors, skipped and
    hand-modified ones as warnings, stale approvals as notices; at most MAX_ANNOTATIONS of each."""
    out: list[str] = []
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for result in results:
        for report in result.reports:
            note = _task_note(report, mode)
            if note is None:
                continue
            kind, message = note
            if shown.get(kind, 0) >= MAX_ANNOTATIONS:
                hidden[kind] = hidden.get(kind, 0) + 1
                continue
            shown[kind] = shown.get(kind, 0) + 1
            file, line = _where(report, env)
            out.append(command(kind, message, file=file, line=line))
        for report in result.reports:
            for kind, message, file, line in _check_notes(report, env):
                if shown.get(kind, 0) >= MAX_ANNOTATIONS:
                    hidden[kind] = hidden.get(kind, 0) + 1
                    continue
                shown[kind] = shown.get(kind, 0) + 1
                out.append(command(kind, message, file=file, line=line))
        if result.stop_reason:
            out.append(command("error" if result.stop_reason != "interrupted" else "warning",
                               f"{result.recipe.name}: {result.stop_reason}"))
    for kind, n in hidden.items():
        out.append(command(kind, f"... and {n} more ({kind}); see the job summary"))
    return out


_MD_ESCAPES = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"} | {"\r": " ", "\n": " "})


def _md(text: object) -> str:
    """Text safe in a Markdown table cell: no markup, no HTML, no line breaks."""
    return escape(str(text), quote=False).translate(_MD_ESCAPES)


def step_summary(results: Sequence[RecipeResult], mode: str = "run",
                 env: Mapping[str, str] | None = None) -> str:
    """The job summary: one row per recipe, then the failed (and out-of-date) tasks."""
    title = {"check": "dalle-pipe run --check", "dry": "dalle-pipe run --dry-run"}.get(mode, "dalle-pipe run")
    pending = any(r.count("pending") for r in results)
    cols = ["recipe", "generated", "up to date", "failed", "skipped", "modified"]
    cols += ["to make"] if pending else []
    cols += ["spent"]
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |",
             "| --- |" + " ---: |" * (len(cols) - 1)]
    for r in results:
        c = r.counts
        row = [_md(r.recipe.name), c["generated"], c["up_to_date"], c["failed"], c["skipped"], c["modified"]]
        row += [r.count("pending")] if pending else []
        row += [f"${r.spent_usd:,.2f}"]
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    for label, kind in (("Failed tasks", "failed"), ("Failed checks", "failed_checks"), ("Out of date", "pending")):
        if kind == "pending" and mode != "check":
            continue
        rows = [(r, t) for r in results for t in r.reports if t.outcome.status == kind and t.outcome.in_scope]
        if not rows:
            continue
        lines += ["", f"**{label}** ({len(rows)})", "", "| recipe | task | where | message |",
                  "| --- | --- | --- | --- |"]
        for r, t in rows[:MAX_SUMMARY_ROWS]:
            file, line = _where(t, env)
            lines.append(f"| {_md(r.recipe.name)} | {_md(t.task.id)} | {_md(f'{file}:{line}')} | "
                         f"{_md(t.outcome.reason or kind)} |")
        if len(rows) > MAX_SUMMARY_ROWS:
            lines.append(f"\n... and {len(rows) - MAX_SUMMARY_ROWS} more")
    stops = [f"- {_md(r.recipe.name)}: {_md(r.stop_reason)}" for r in results if r.stop_reason]
    if stops:
        lines += ["", "**Stopped**", "", *stops]
    return "\n".join(lines) + "\n\n"


def emit_run(results: Sequence[RecipeResult], mode: str = "run", warnings: Sequence[Problem] = (), *,
             env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
    """After `run`: annotations when under GitHub Actions, and the job summary when it has a file."""
    env = os.environ if env is None else env
    if not in_github_actions(env):
        return
    out = stream or sys.stdout
    for line in [*problem_annotations(warnings, env), *run_annotations(results, mode, env)]:
        _write_command(out, line)
    out.flush()
    path = env.get("GITHUB_STEP_SUMMARY")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(step_summary(results, mode, env))
        except OSError as exc:
            _write_command(out, command("warning", f"could not write the job summary: {exc}"))


def emit_error(exc: DallePipeError, *, env: Mapping[str, str] | None = None,
               stream: TextIO | None = None) -> None:
    """When a command fails under GitHub Actions: one annotation per problem."""
    if not in_github_actions(env):
        return
    out = stream or sys.stdout
    for line in error_annotations(exc, env):
        _write_command(out, line)
    out.flush()
