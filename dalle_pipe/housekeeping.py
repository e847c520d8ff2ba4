"""`dalle-pipe clean`: history and outputs no recipe produces any more."""

from __future__ import annotations

from . import store
from .plan import Plan


def clean_outputs(plan: Plan) -> list[str]:
    """Remove .dalle-pipe/history and files under output_dir the recipe no longer produces."""
    out_dir = plan.recipe.output_dir
    if not out_dir.exists():
        return []
    keep = {rel for task in plan.tasks for rel in task.outputs}
    with store.RunLock(out_dir):
        removed = store.clean(out_dir, keep)
        orphans = out_dir / store.STATE_DIRNAME / "orphans.json"
        if orphans.exists():
            orphans.unlink()
    return removed
