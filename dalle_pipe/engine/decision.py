"""The typed results of the engine: what was decided for a task (`Decision`), and what became of it (`Outcome`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plan import InputRef

Resolved = list[tuple[InputRef, Path, str]]  # (reference, path, sha256) of each input
Inputs = tuple[tuple[InputRef, Path | str, str], ...]  # as decided: a str is relative to output_dir


class Kind(enum.StrEnum):
    """What the one decision says to do with a task (README: "One decision for every command")."""

    REUSE = "reuse"  # an earlier image with this fingerprint, unchanged, wherever it is now
    KEEP_APPROVED = "keep_approved"  # approved by a person, its file unchanged (stale when the recipe moved)
    KEEP_MODIFIED = "keep_modified"  # the file at the path was changed by hand
    KEEP_FOREIGN = "keep_foreign"  # another provider's image: the offline provider never writes over it
    ADOPT = "adopt"  # a whole image at the path, asked for before a crash whose `done` line never came
    PLACE_SAVED = "place_saved"  # paid bytes an earlier run stored but never placed
    MAKE = "make"  # send the request (or make the local step)
    TWIN = "twin"  # the same request as another task of this run: made once, then copied
    SKIP = "skip"  # `when` is false, an input is unusable, not selected
    FAIL = "fail"  # a file input is missing, the prompt does not render
    WAIT = "wait"  # an input is still to be made: decided again when it lands


#: The manifest status each decision comes to (MAKE: `generated`, or `failed` when the call fails).
STATUS: dict[Kind, str] = {
    Kind.REUSE: "up_to_date", Kind.KEEP_APPROVED: "up_to_date", Kind.KEEP_MODIFIED: "modified",
    Kind.KEEP_FOREIGN: "skipped", Kind.ADOPT: "up_to_date", Kind.PLACE_SAVED: "generated",
    Kind.MAKE: "generated", Kind.TWIN: "up_to_date", Kind.SKIP: "skipped", Kind.FAIL: "failed", Kind.WAIT: "pending",
}


@dataclass(slots=True)
class Decision:
    """One task, decided: what to do, why, and what making it would cost (list price). Never changed
    once made (not frozen only because a frozen dataclass costs 4x as much to build, 30,000 times)."""

    kind: Kind
    reason: str | None = None
    in_scope: bool = True  # selected by --only (an unselected task is still decided: its outputs feed others)
    prompt: str | None = None
    fingerprint: str | None = None
    endpoint: str | None = None  # as the fingerprint sees it
    provider: str | None = None  # "local" for local steps
    inputs: Inputs = ()
    found: tuple[dict[str, Any], ...] = ()  # REUSE: the entries found; KEEP_*: the entries kept
    cost: float | None = None  # MAKE / WAIT: the estimate (None: a price not known)
    size: tuple[int, int] | None = None  # the output size, when the params fix it before it is made
    attempt: int = 0  # a retry after failed checks, numbered in the fingerprint
    placeholder: bool = False  # KEEP_APPROVED: the approved image was made offline
    error_type: str | None = None  # FAIL: the error's type

    @property
    def status(self) -> str:
        return STATUS[self.kind]

    def resolved(self, output_dir: Path) -> Resolved:
        """The inputs with their paths (those relative to output_dir made whole), for a task that uses them."""
        return [(ref, output_dir / p if isinstance(p, str) else p, sha) for ref, p, sha in self.inputs]


@dataclass(slots=True)
class Outcome:
    """What became of one task: its status, its entries (one per image), and the decision behind it."""

    status: str  # generated | up_to_date | failed | failed_checks | skipped | modified | pending (previews)
    entries: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    revised_prompt: str | None = None
    reason: str | None = None
    in_scope: bool = True
    stale: bool = False
    kept: str | None = None  # why a file at the path was kept rather than made (printed after a run)
    cost: float | None = None
    size: tuple[int, int] | None = None  # a pending task's output size, when its params fix it
    paths: list[str] | None = None  # a pending task's output paths (its entries are not built)
    decision: Decision | None = None  # a pending outcome's decision: taken as it is once the run sends
    fingerprint: str | None = None  # a pending outcome's request (previews name what waits on it by it)
    judging: bool = False  # pending only for its checks' judgements: the image is kept, never retried

    @property
    def outputs(self) -> list[str]:
        """The output paths this outcome stands for (a pending one's, or its entries')."""
        return self.paths if self.paths is not None else [str(e.get("path")) for e in self.entries]

    @property
    def usable(self) -> bool:
        """Can a later step build on it? Also an image kept because offline never writes over it."""
        return self.status in ("generated", "up_to_date", "modified", "pending") or (
            self.kept is not None and self.status == "skipped" and all(e.get("sha256") for e in self.entries))
