"""`dalle-pipe clean`: only what this output folder records, and never a paid image unless purged.

Each recipe's output folder is tidied by store.clean: orphaned paid images move to history,
orphaned free ones (offline, masks, local steps) are removed, history is emptied only with
purge. Spared everywhere: every file a loaded recipe reads as an input or makes as an output
(a recipe may build on another's outputs), so one recipe's clean never takes another's files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import store
from .plan import Plan
from .recipe import Overrides


@dataclass(frozen=True)
class CleanResult:
    """What clean did (or, in a dry run, would do) in one recipe's output folder."""

    recipe: str
    output_dir: Path
    items: list[store.CleanItem]

    def count(self, action: str, *, paid: bool | None = None) -> int:
        return sum(1 for i in self.items if i.action == action and (paid is None or i.paid == paid))

    def cost(self, action: str) -> tuple[float, int]:
        """The recorded cost of the paid files of this action, and how many of them have none."""
        paid = [i for i in self.items if i.action == action and i.paid]
        return sum(i.cost_usd or 0.0 for i in paid), sum(1 for i in paid if i.cost_usd is None)


def clean_plans(plans: list[Plan], *, purge: bool = False, dry_run: bool = False,
                more_plans: Callable[[], list[Plan]] | None = None) -> list[CleanResult]:
    """Clean every plan's output folder; more_plans adds recipes of the same project whose inputs
    and outputs must be spared too (the pipeline's other recipes)."""
    everyone = [*plans, *(more_plans() if more_plans is not None else [])]
    protect = _files_in_use(everyone)
    results = []
    for plan in plans:
        out_dir = plan.recipe.output_dir
        keep = {rel for task in plan.tasks for rel in task.outputs}
        mine = {(out_dir / rel).resolve() for rel in keep}
        others = protect - mine
        if dry_run or not out_dir.is_dir():
            items = store.clean(out_dir, keep, protect=others, purge=purge, dry_run=True)
        else:
            with store.RunLock(out_dir):
                items = store.clean(out_dir, keep, protect=others, purge=purge)
                orphans = out_dir / store.STATE_DIRNAME / store.ORPHANS_NAME
                if orphans.exists():
                    orphans.unlink()
        results.append(CleanResult(plan.recipe.name, out_dir, items))
    return results


def pipeline_plans(plans: list[Plan], overrides: Overrides) -> list[Plan]:
    """The other recipes of the pipeline the cleaned recipes belong to (best effort: a recipe that
    does not load has no plan, and its files stay protected only by the record rule)."""
    from .app import load
    from .errors import DallePipeError

    pipelines = {p.recipe.pipeline.source.path for p in plans if p.recipe.pipeline is not None}
    loaded_paths = {p.recipe.source.path for p in plans}
    out: list[Plan] = []
    for path in sorted(pipelines):
        try:
            others = load([path], overrides).plans
        except DallePipeError:
            continue
        out.extend(p for p in others if p.recipe.source.path not in loaded_paths)
    return out


def _files_in_use(plans: list[Plan]) -> set[Path]:
    """Every input file any of these recipes reads and every output it makes, resolved."""
    used: set[Path] = set()
    for plan in plans:
        for task in plan.tasks:
            used.update((plan.recipe.output_dir / rel).resolve() for rel in task.outputs)
            used.update(ref.path.resolve() for ref in task.inputs if ref.path is not None)
    return used


def describe(result: CleanResult, dry_run: bool) -> list[str]:
    """The lines clean prints for one recipe: every file with its reason in a dry run, then a summary."""
    lines = []
    if dry_run:
        verbs = {"history": "would move to history", "remove": "would remove", "purge": "would delete",
                 "keep": "would keep"}
        lines += [f"{result.recipe}: {verbs[i.action]} {i.path}: {i.reason}" for i in result.items]
    moved, removed = result.count("history"), result.count("remove")
    parts = [f"{'would move' if dry_run else 'moved'} {moved} paid image(s) to history",
             f"{'would remove' if dry_run else 'removed'} {removed} free file(s)"]
    kept = result.count("keep")
    if kept:
        parts.append(f"kept {kept} file(s) no task makes (see --dry-run)" if not dry_run
                     else f"would keep {kept} file(s) no task makes")
    if any(i.action == "purge" for i in result.items):
        paid, cost = result.count("purge", paid=True), result.cost("purge")
        unknown = f", {cost[1]} of unknown cost" if cost[1] else ""
        parts.append(f"{'would delete' if dry_run else 'deleted'} {paid} paid image(s) from history "
                     f"(${cost[0]:.4f}{unknown}) and {result.count('purge', paid=False)} free file(s)")
    lines.append(f"{result.recipe}: " + "; ".join(parts))
    return lines


def as_json(results: list[CleanResult], dry_run: bool) -> dict[str, Any]:
    """`clean --json`: per recipe, every file with its action (what was done, or with dry_run what
    would be) and reason; actions are history, remove, purge (deleted from history) and keep."""
    return {"exit_code": 0, "dry_run": dry_run, "recipes": [
        {"recipe": r.recipe, "output_dir": str(r.output_dir),
         "files": [{"path": i.path, "action": i.action, "reason": i.reason, "paid": i.paid,
                    "cost_usd": i.cost_usd} for i in r.items]} for r in results]}
