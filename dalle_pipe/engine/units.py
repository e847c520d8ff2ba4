"""Which units a run covers (--items, --shard, --limit), the limits it runs under, and the plan's list price."""

from __future__ import annotations

import dataclasses
import hashlib

from ..catalog import Unit
from ..errors import UsageError
from ..plan import Plan
from ..prices import PriceTable
from ..recipe import Recipe, suggest
from ..throttle import Limits
from .estimate import sum_costs, task_cost
from .results import RunOptions


def select_units(plan: Plan, opts: RunOptions) -> list[int]:
    """Indices of the units this run covers (--items, --shard, --limit)."""
    chosen = list(range(len(plan.units)))
    if opts.items:
        wanted = set(opts.items)
        chosen = [i for i in chosen if _matches(plan.units[i], wanted)]
    if opts.shard:
        k, n = opts.shard
        chosen = [i for i in chosen if _shard_of(plan.units[i].key, n) == k - 1]
    if opts.limit is not None:
        chosen = chosen[: opts.limit]
    return chosen


def _matches(unit: Unit, wanted: set[str]) -> bool:
    return unit.key in wanted or any(unit.key.startswith(w + "/") for w in wanted)


def _shard_of(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def check_selection(plans: list[Plan], opts: RunOptions) -> None:
    """--only names steps that exist; --items names keys that exist: else a usage error."""
    steps = sorted({s.id for p in plans for s in p.recipe.steps})
    for sid in opts.only:
        if sid not in steps:
            raise UsageError(f"--only {sid}: no step {sid!r}", suggest(sid, steps) or f"steps: {', '.join(steps)}")
    if opts.items:
        keys = {u.key for p in plans for u in p.units}
        heads = {k.split("/")[0] for k in keys}
        for item in opts.items:
            if item not in keys and item not in heads and not any(k.startswith(item + "/") for k in keys):
                raise UsageError(f"--items {item}: no unit with that key",
                                 suggest(item, sorted(heads | keys)) or None)


def limits_for(recipe: Recipe, opts: RunOptions) -> Limits:
    t = dict(recipe.throttle)
    share = opts.shard[1] if opts.shard else 1  # each of n shards takes 1/n of the account's rates
    rpm, ipm = t.get("requests_per_minute"), t.get("images_per_minute")
    lim = Limits(requests_per_minute=rpm / share if rpm else rpm, images_per_minute=ipm / share if ipm else ipm,
                 concurrency=int(t.get("concurrency", 4)), max_retries=int(t.get("max_retries", 6)),
                 timeout_s=float(t.get("timeout_s", 300)))
    if opts.concurrency:
        lim = Limits(lim.requests_per_minute, lim.images_per_minute, min(lim.concurrency, opts.concurrency)
                     if "concurrency" in t else opts.concurrency, lim.max_retries, lim.timeout_s)
    # ports: the cap on a server-requested wait (throttle.max_wait_s), carried over the rebuild above.
    lim = dataclasses.replace(lim, max_wait_s=float(t.get("max_wait_s", lim.max_wait_s)))
    return lim


def estimate(plan: Plan, prices: PriceTable, units: list[int] | None = None, *, batch: bool = False,
             provider: str | None = None) -> float | None:
    """The list-price cost of every paid request in the plan (None when some price is unknown)."""
    name = provider or plan.recipe.provider.name
    costs = [task_cost(prices, task, name, batch=batch)
             for i in (units if units is not None else range(len(plan.units)))
             for task in plan.tasks_of(i) if task.is_api and task.enabled]
    return sum_costs(costs)
