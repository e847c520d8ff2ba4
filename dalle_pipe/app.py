"""What each command does, as library functions the CLI calls: load -> plan -> run -> summarise."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Problem, RecipeError, UsageError
from .plan import Plan, build_plan
from .prices import PriceTable, estimate_request, load_prices
from .providers.base import Provider
from .recipe import Overrides, Project, Recipe, load_targets
from .runner import RecipeResult, RunOptions, TaskReport, check_selection, estimate, run_plan


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
        results.append(result)
        if result.interrupted:
            break
    return results


def _needs_requests(plan: Plan) -> bool:
    return plan.recipe.provider.name != "offline" and any(t.is_api for t in plan.tasks)


def exit_code(results: list[RecipeResult], opts: RunOptions) -> int:
    """0 all done; 1 failures or work found by --check; 130 interrupted."""
    if any(r.interrupted for r in results):
        return EXIT_INTERRUPTED
    if opts.mode == "check" and any(r.count("pending") for r in results):
        return EXIT_FAILED
    if any(r.count("failed") or (r.stop_reason and r.stop_reason != "interrupted") for r in results):
        return EXIT_FAILED
    return EXIT_OK


def plan_summary(loaded: Loaded, prices: PriceTable) -> list[dict[str, Any]]:
    """Per recipe and step: units, requests, images, up to date, to make, estimated cost."""
    out = []
    for plan in loaded.plans:
        result = run_plan(plan, RunOptions(mode="dry"), prices, provider_name(plan.recipe), None)
        steps: dict[str, dict[str, Any]] = {}
        for step in plan.recipe.steps:
            steps[step.id] = {"step": step.id, "kind": step.kind, "model": None, "units": 0, "requests": 0,
                              "images": 0, "up_to_date": 0, "to_make": 0, "cost_usd": 0.0,
                              "batch_cost_usd": 0.0}
        for r in result.reports:
            row = steps[r.task.step.id]
            row["model"] = r.task.model
            if not r.task.enabled:
                continue
            row["units"] += 1
            if r.task.is_api:
                responses = plan.recipe.provider.api == "responses" and plan.recipe.provider.name == "openai"
                row["requests"] += r.task.n if responses else 1  # the Responses route makes one call per image
            row["images"] += r.task.n
            if r.outcome.status in ("up_to_date", "modified"):
                row["up_to_date"] += r.task.n
            else:
                row["to_make"] += r.task.n
                if r.task.is_api and plan.recipe.provider.name != "offline":
                    from .batch import batchable  # only generations are batched: edits stay at the sync price

                    for batch, col in ((False, "cost_usd"), (batchable(r.task), "batch_cost_usd")):
                        c = estimate_request(prices, r.task.model or "", r.task.kind,
                                             r.task.params, batch=batch)
                        row[col] = None if c is None or row[col] is None else round(row[col] + c, 6)
        total_keys = ("units", "requests", "images", "up_to_date", "to_make")
        total: dict[str, Any] = {k: sum(s[k] for s in steps.values()) for k in total_keys}
        for col in ("cost_usd", "batch_cost_usd"):
            vals = [s[col] for s in steps.values()]
            total[col] = None if any(v is None for v in vals) else round(sum(vals), 6)
        out.append({"recipe": plan.recipe.name, "provider": plan.recipe.provider.name,
                    "output_dir": str(plan.recipe.output_dir), "units": len(plan.units),
                    "steps": list(steps.values()), "total": total,
                    "estimate_all_usd": estimate(plan, prices)})
    return out


def get_prices(path: Path | None) -> PriceTable:
    return load_prices(path)
