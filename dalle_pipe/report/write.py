"""Writing ``report.html``: for one output folder, or for each target of ``dalle-pipe report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import store
from ..errors import RecipeError, UsageError
from ..recipe import Overrides, load_targets
from .build import build_shots
from .manifests import load_manifests
from .page import page_parts


def write_report(output_dir: Path, *, manifest: dict[str, Any] | None = None,
                 previous: dict[str, Any] | None = None) -> Path:
    """Write ``output_dir/report.html`` (atomically) from its manifest(s); return its path.

    A run with one manifest passes it (and the previous one) in: parsing 25 MB of JSON twice more
    while the run's own copies are alive would double the peak memory of a 10,000-unit run.
    """
    output_dir = Path(output_dir)
    # Shards finishing together take turns: each reads every manifest, then writes the page.
    with store.RunLock(output_dir, "lock.report", wait=True):
        if manifest is None:
            manifest, previous = load_manifests(output_dir)
        if manifest is None:
            raise UsageError(f"no {store.MANIFEST_NAME} in {output_dir}", "run the recipe first")
        shots, gone = build_shots(output_dir, manifest, previous)
        path = output_dir / store.REPORT_NAME
        store.atomic_write_chunks(path, page_parts(manifest, shots, gone))
    return path


def output_dirs(targets: list[Path], overrides: Overrides) -> list[tuple[str, Path]]:
    """(recipe name, output_dir) of each target: an output folder as is, a recipe or pipeline file
    loaded (none means ./pipeline.yaml). Only the recipe is read: the page needs no plan."""
    dirs = [(t.name, t) for t in targets if t.is_dir()]
    files = [t for t in targets if not t.is_dir()]
    if files or not targets:
        project, problems = load_targets(files, overrides)
        if any(p.severity == "error" for p in problems):
            raise RecipeError(problems)
        dirs += [(r.name, r.output_dir) for r in project.recipes]
    return dirs


def rebuild_reports(targets: list[Path], overrides: Overrides) -> list[tuple[str, Path]]:
    """`dalle-pipe report`: rewrite report.html of each target's output_dir, under its run lock.

    A target is a recipe or pipeline file (none means ./pipeline.yaml), or an output folder.
    """
    written, missing = [], []
    for name, out_dir in output_dirs(targets, overrides):
        if not store.manifest_files(out_dir):
            missing.append(f"{name} ({out_dir})")
            continue
        with store.RunLock(out_dir):
            written.append((name, write_report(out_dir)))
    if missing:
        raise UsageError(f"no {store.MANIFEST_NAME} yet for {', '.join(missing)}"
                         + (f"; wrote {len(written)} other report(s)" if written else ""),
                         "run the recipe first")
    return written
