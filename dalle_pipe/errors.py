"""One error base for the whole tool; exit codes are decided by class, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def reduce_exit(*, interrupted: bool = False, failed: bool = False, work_left: bool = False) -> int:
    """The one exit-code reduction of a finished command: 130 interrupted; 1 when something failed
    (or the run stopped early) or work is left (--check found some; batches still in flight); else 0.
    Errors raised before anything ran carry their own code (DallePipeError.exit_code, 2)."""
    if interrupted:
        return EXIT_INTERRUPTED
    if failed or work_left:
        return EXIT_FAILED
    return EXIT_OK


@dataclass(frozen=True, order=True)
class Problem:
    """One problem found in a recipe or its inputs, with its place.

    Sorted by (file, line, col, path, message): the order users read them in.
    """

    file: str
    line: int  # 1-based
    col: int  # 1-based
    path: str  # e.g. "steps[1].edit.mask" (steps 0-based); "" for the whole file
    message: str
    hint: str | None = None
    severity: Literal["error", "warning"] = field(default="error", compare=False)

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        head = f"{self.path}: " if self.path else ""
        prefix = "warning: " if self.severity == "warning" else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{where}{prefix}{head}{self.message}{tail}"

    def to_json(self) -> dict[str, Any]:
        """The one JSON shape of a problem, for every command's --json."""
        return {"file": self.file, "line": self.line, "column": self.col, "path": self.path,
                "message": self.message, "hint": self.hint}


class DallePipeError(Exception):
    """Base of every error the tool raises on purpose; carries a message and an exit code."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_json(self) -> dict[str, Any]:
        """`{exit_code, error, problems, warnings}`: what --json prints when a command cannot start."""
        problems = getattr(self, "problems", [])
        return {"exit_code": self.exit_code, "error": None if problems else self.format(),
                "problems": [p.to_json() for p in problems if p.severity == "error"],
                "warnings": [p.to_json() for p in problems if p.severity == "warning"]}


class UsageError(DallePipeError):
    """Bad arguments or environment (no key, unknown option value, ...): exit 2."""


class RecipeError(DallePipeError):
    """A recipe, pipeline or catalog has problems; all of them are listed, sorted: exit 2."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(dict.fromkeys(problems))  # a setting shared by several recipes is said once
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__(f"{len(errors)} problem(s) found")

    def format(self) -> str:
        return "\n".join(p.format() for p in self.problems)


class CostLimitError(DallePipeError):
    """The estimate exceeds --max-cost: nothing is sent; exit 2."""


class DiskSpaceError(DallePipeError):
    """The output disk has less free space than the run would write: nothing is sent; exit 2."""


class LockedError(DallePipeError):
    """Another run holds the lock on this output_dir: exit 2."""
