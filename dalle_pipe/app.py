"""What each command does, as library functions the CLI calls: load -> plan -> run -> summarise."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import models
from .engine.bulk import bulk
from .engine.estimate import pending_cost
from .engine.results import RecipeResult, RunOptions, TaskReport
from .engine.run import run_plan
from .engine.units import check_selection
from .errors import Problem, RecipeError, UsageError, reduce_exit
from .plan import Plan, build_plan
from .prices import PriceTable, load_prices
from .providers.base import Provider
from .recipe import API_KINDS, Overrides, Project, Recipe, load_targets

if TYPE_CHECKING:  # the batch route (and the API client under it) loads only when a command uses it
    from .engine.batch import BatchRun


@dataclass
class Loaded:
    project: Project
    plans: list[Plan]
    warnings: list[Problem] = field(default_factory=list)


def load(targets: list[Path], overrides: Overrides) -> Loaded:
    """Load, check and plan every target; raise RecipeError listing every problem at once."""
    project, problems = load_targets(targets, overrides)
    plans: list[Plan] = []
    outputs: dict[Path, Recipe] = {}
    for recipe in project.recipes:
        if recipe.output_dir in outputs:
            other = outputs[recipe.output_dir]
            problems.append(recipe.source.problem(("output_dir",) if "output_dir" in recipe.source.doc.data
                                                  else ("name",), f"output_dir is also used by recipe "
                                                  f"{other.name!r}", "give each recipe its own output_dir"))
        outputs[recipe.output_dir] = recipe
        problems.extend(provider_problems(recipe))
        with bulk():  # a catalog's plan: millions of small containers, no cycles
            plan, found = build_plan(recipe)
        problems.extend(found)
        if plan is not None:
            plans.append(plan)
    if any(p.severity == "error" for p in problems):
        raise RecipeError(problems)
    return Loaded(project, plans, sorted(p for p in problems if p.severity == "warning"))


def provider_name(recipe: Recipe) -> str:
    return recipe.provider.name


def make_provider_factory(recipe: Recipe, overrides: Overrides) -> Callable[[], Provider]:
    name = recipe.provider.name

    def factory() -> Provider:
        if name == "offline":
            from .providers.offline import OfflineProvider

            return OfflineProvider()
        if name == "azure":
            # The endpoint only from --base-url or AZURE_OPENAI_ENDPOINT (never OPENAI_BASE_URL,
            # never a file); the key only from AZURE_OPENAI_API_KEY.
            from .providers.azure import AzureProvider

            return AzureProvider(recipe.provider, endpoint=overrides.base_url)
        from .providers.openai import OpenAIProvider

        return OpenAIProvider(base_url=recipe.base_url)

    return factory


def provider_problems(recipe: Recipe) -> list[Problem]:
    """What the provider setting lacks (azure's deployment, the Responses API's mainline model),
    at the provider node of the file that set it (the recipe's, else its pipeline's)."""
    config = recipe.provider
    issues = models.check_provider(config.name, config.api, mainline_model=config.model,
                                   deployment=config.deployment)
    if not issues:
        return []
    source = recipe.source
    if "provider" not in source.doc.data and recipe.pipeline is not None and "provider" in recipe.pipeline.data:
        source = recipe.pipeline.source
    node = source.doc.data.get("provider") if isinstance(source.doc.data, dict) else None
    out = []
    for issue in issues:
        path: tuple[str, ...] = ("provider",)
        if isinstance(node, dict) and issue.param in node:
            path = ("provider", str(issue.param))
        out.append(source.problem(path, issue.message, issue.hint, severity=issue.severity))
    return out


def require_key(recipe: Recipe, overrides: Overrides | None = None) -> None:
    """A run that will send requests needs the key (and azure its endpoint) from the environment."""
    name = recipe.provider.name
    if name == "offline":
        return
    var = "AZURE_OPENAI_API_KEY" if name == "azure" else "OPENAI_API_KEY"
    if not os.environ.get(var):
        raise UsageError(f"{var} is not set: recipe {recipe.name!r} needs it to send requests",
                         f"export {var}=..., or run with --offline to preview without a key")
    if name == "azure" and not ((overrides and overrides.base_url) or os.environ.get("AZURE_OPENAI_ENDPOINT")):
        raise UsageError(f"no Azure endpoint: recipe {recipe.name!r} needs AZURE_OPENAI_ENDPOINT or --base-url",
                         "export AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com")
    # ports: refuse to send the key over plain http to another machine, before anything is sent or written.
    from .providers.endpoint import check_endpoint

    var = "AZURE_OPENAI_ENDPOINT" if name == "azure" else "OPENAI_BASE_URL"
    given = overrides.base_url if overrides is not None else None
    url = (given or os.environ.get(var)) if name == "azure" else recipe.base_url
    check_endpoint(url, source=var if url == os.environ.get(var) else "--base-url")


def run(loaded: Loaded, opts: RunOptions, prices: PriceTable, overrides: Overrides,
        progress: Callable[[TaskReport], None] | None = None,
        on_wait: Callable[[str, float], None] | None = None) -> list[RecipeResult]:
    """Run every plan in order; the pipeline's limits are shared because recipes run one after another."""
    check_selection(loaded.plans, opts)
    if opts.mode == "run":
        for plan in loaded.plans:
            if _needs_requests(plan):
                require_key(plan.recipe, overrides)
    results = []
    for plan in loaded.plans:
        result = run_plan(plan, opts, prices, provider_name(plan.recipe),
                          make_provider_factory(plan.recipe, overrides), progress, on_wait)
        write_pages([result])
        results.append(result)
        if result.interrupted:
            break
    return results


def run_batches(loaded: Loaded, opts: RunOptions, prices: PriceTable, overrides: Overrides,
                progress: Callable[[TaskReport], None] | None = None,
                on_wait: Callable[[str, float], None] | None = None, *, collecting: bool = False) -> list[BatchRun]:
    """`run --batch` / `batch submit` (collecting=False) or `batch collect` over the plans, in order."""
    from .engine import batch

    check_selection(loaded.plans, opts)
    for plan in loaded.plans:
        batch.check_recipe(plan.recipe)
        require_key(plan.recipe)
    runs = []
    step = batch.collect if collecting else batch.submit
    for plan in loaded.plans:
        done = step(plan, opts, prices, make_provider_factory(plan.recipe, overrides), progress, on_wait)
        write_pages([done.result])
        runs.append(done)
        if done.result.interrupted:
            break
    return runs


def notes(result: RecipeResult) -> list[str]:
    """Warning lines for the terminal: stale approvals, images whose size differs from the one asked
    for, and images reused from another endpoint host."""
    out: list[str] = []
    hosts: dict[str, int] = {}
    for r in result.reports:
        o = r.outcome
        if not o.in_scope:
            continue
        if o.stale:
            out.append(f"warning: {r.task.id}: approved image is stale (its recipe or inputs changed): kept and "
                       f"still approved (dalle-pipe approve --revoke lets it be made again)")
        for e in o.entries:
            out.extend(f"warning: {r.task.id}: {w}" for w in e.get("warnings") or [] if o.status == "generated")
            host = e.get("endpoint_host")
            if (o.status == "up_to_date" and isinstance(host, str) and result.endpoint_host is not None
                    and host != result.endpoint_host):
                hosts[host] = hosts.get(host, 0) + 1
    for host, n in sorted(hosts.items()):
        out.append(f"note: {n} image(s) reused were made against {host}, not {result.endpoint_host}")
    if result.unplaced:
        shown = ", ".join(result.unplaced[:5]) + (f" and {len(result.unplaced) - 5} more" if len(result.unplaced) > 5
                                                  else "")
        out.append(f"note: {len(result.unplaced)} paid image(s) an earlier run saved are kept in "
                   f"{result.output_dir / '.dalle-pipe' / 'objects'}, not placed: no task of this run asks for "
                   f"them any more ({shown}); they stay there until removed by hand")
    return out


def write_pages(results: list[RecipeResult]) -> None:
    """report.html of each output folder whose manifest changed (the page never blocks a run)."""
    if os.environ.get("DALLE_PIPE_NO_REPORT") == "1" or not any(r.page_due for r in results):
        return
    from .report import write_report

    for r in results:
        if not r.page_due:
            continue
        if r.manifest is not None:
            write_report(r.output_dir, manifest=r.manifest, previous=r.previous)
        else:
            write_report(r.output_dir)
        r.manifest = r.previous = None  # a 25 MB manifest is not kept alive after its page


def _needs_requests(plan: Plan) -> bool:
    return plan.recipe.provider.name != "offline" and any(t.is_api for t in plan.tasks)


def exit_code(results: list[RecipeResult], opts: RunOptions) -> int:
    """0 all done; 1 failures or work found by --check; 130 interrupted."""
    return reduce_exit(
        interrupted=any(r.interrupted for r in results),
        failed=any(r.count("failed") or r.count("failed_checks")
                   or (r.stop_reason and r.stop_reason != "interrupted") for r in results),
        work_left=opts.mode == "check" and any(r.count("pending") for r in results))


def plan_summary(loaded: Loaded, prices: PriceTable) -> list[dict[str, Any]]:
    """Per recipe and step: units, requests, images, up to date, to make, estimated cost.

    The costs are the decisions' own (the same `--max-cost` gates on), summed unrounded and
    rounded once; `placeholders` names the models whose prices are placeholders.
    """
    from .engine.batch import batchable

    out = []
    for plan in loaded.plans:
        provider = provider_name(plan.recipe)
        result = run_plan(plan, RunOptions(mode="dry"), prices, provider, None)
        steps: dict[str, dict[str, Any]] = {}
        sums: dict[str, dict[str, float | None]] = {}
        for step in plan.recipe.steps:
            steps[step.id] = {"step": step.id, "kind": step.kind, "model": None, "units": 0, "requests": 0,
                              "images": 0, "up_to_date": 0, "to_make": 0, "cost_usd": 0.0,
                              "batch_cost_usd": 0.0}
            sums[step.id] = {"cost_usd": 0.0, "batch_cost_usd": 0.0}
        active: set[str] = set()
        placeholders: set[str] = set()
        responses = plan.recipe.provider.api == "responses" and plan.recipe.provider.name == "openai"
        batched: dict[str, bool] = {}  # step -> whether its tasks go through the Batch API
        for r in result.reports:
            task, outcome = r.task, r.outcome
            sid = task.step.id
            row = steps[sid]
            row["model"] = task.model
            if task.checks:  # the worst case: on_fail retries, each paying the image and its judgements
                row["tries"] = max(int(row.get("tries", 1)), task.retry + 1)
            if not task.enabled:
                continue
            active.add(task.unit.key)
            row["units"] += 1
            n = len(task.outputs)
            is_api = task.step.kind in API_KINDS
            if is_api:
                row["requests"] += n if responses else 1  # the Responses route makes one call per image
            row["images"] += n
            status = outcome.status
            if status in ("up_to_date", "modified", "failed_checks") or outcome.kept is not None:
                row["up_to_date"] += n  # kept: not made again (also another provider's image, offline)
                continue
            if status != "pending":
                continue  # skipped or failed: not made either
            row["to_make"] += n
            if provider == "offline" or status != "pending":
                continue  # (a local step to make costs its `ask` judgements, as the gate counts them)
            if task.model not in placeholders:
                price = prices.models.get(task.model or "")
                if price is not None and price.placeholder:
                    placeholders.add(task.model or "")
            acc = sums[sid]
            in_batch = batched.get(sid)
            if in_batch is None:
                in_batch = batched[sid] = batchable(task)
            batch = pending_cost(prices, task, outcome, provider, batch=in_batch)
            for col, cost in (("cost_usd", outcome.cost), ("batch_cost_usd", batch)):
                had = acc[col]
                acc[col] = None if had is None or cost is None else had + cost
        for sid, acc in sums.items():
            for col, val in acc.items():
                steps[sid][col] = None if val is None else round(val, 6)
        total_keys = ("requests", "images", "up_to_date", "to_make")
        total: dict[str, Any] = {k: sum(s[k] for s in steps.values()) for k in total_keys}
        total["units"] = len(active)
        for col in ("cost_usd", "batch_cost_usd"):
            vals = [acc[col] for acc in sums.values()]
            total[col] = None if any(v is None for v in vals) else round(sum(v or 0.0 for v in vals), 6)
        out.append({"recipe": plan.recipe.name, "provider": plan.recipe.provider.name,
                    "output_dir": str(plan.recipe.output_dir), "units": len(plan.units),
                    "steps": list(steps.values()), "total": {"units": total.pop("units"), **total},
                    "placeholders": sorted(placeholders),
                    "estimate_all_usd": result.estimate_usd})  # every unit: a dry run selects them all
    return out


def grand_total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan's totals across recipes (costs None when any is unknown)."""
    keys = ("units", "requests", "images", "up_to_date", "to_make")
    total: dict[str, Any] = {k: sum(r["total"][k] for r in rows) for k in keys}
    for col in ("cost_usd", "batch_cost_usd"):
        vals = [r["total"][col] for r in rows]
        total[col] = None if any(v is None for v in vals) else round(sum(vals), 6)
    return total


def get_prices(path: Path | None) -> PriceTable:
    return load_prices(path)
