"""One estimate: what a task's paid requests cost at list price, for every mode that shows or gates on it."""

from __future__ import annotations

from ..checks import ask
from ..plan import Task
from ..prices import PriceTable, estimate_request, mainline_estimate
from ..recipe import API_KINDS
from .decision import Outcome

FREE_PROVIDERS = frozenset({"offline"})


def task_cost(prices: PriceTable, task: Task, provider: str, *, prompt: str | None = None,
              batch: bool = False, try_only: bool = False) -> float | None:
    """The list-price cost of one task (all n images); 0 when it is free; None when a price is unknown.

    An edit counts its prompt and its input images (`input_fidelity: high` adds their tokens); the
    prompt is the rendered one when it is known, else the step's static text. A task with checks
    costs its worst case: `on_fail: {retry: N}` tries, each paying the images and every `ask` on
    each of them (`try_only`: one try).
    """
    image = _image_cost(prices, task, provider, prompt, batch)
    if not task.checks:
        return image
    checks = ask.checks_cost(prices, task.checks, task.n, free=provider in FREE_PROVIDERS)
    return ask.worst_case(image, checks, 0 if try_only else task.retry)


def pending_cost(prices: PriceTable, task: Task, out: Outcome, provider: str, *, batch: bool) -> float | None:
    """What a pending task still costs (`plan` and every `--max-cost` gate): its decision's estimate;
    `batch`: its images at the Batch API price, its retries too (each is a batch line) and its
    judgements at theirs. Judgements of a kept image, a twin and saved paid bytes cost what the
    outcome says, on either route."""
    if not batch or out.judging or out.cost == 0.0:
        return out.cost
    return task_cost(prices, task, provider, prompt=out.prompt, batch=True)


def _image_cost(prices: PriceTable, task: Task, provider: str, prompt: str | None, batch: bool) -> float | None:
    kind = task.step.kind
    if kind not in API_KINDS or provider in FREE_PROVIDERS:
        return 0.0
    text = prompt if prompt is not None else task.prompt
    inputs = edit_inputs(task)
    n = len(task.outputs)
    # The cost depends on the prompt only through its length: one computation per step and length.
    # A step's tasks share one params mapping, so its identity stands for the model, kind and route.
    params = task.params
    key = (id(params), id(prices), len(text) if text else 0, batch, inputs, n)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is params and hit[1] is prices and hit[2] is task.recipe and hit[3] == (
            task.model, kind):
        return hit[4]
    responses = task.recipe.provider.api == "responses"
    split = responses and n > 1
    if split:
        one = estimate_request(prices, task.model or "", task.kind, {**task.params, "n": 1}, batch=batch,
                               input_images=inputs, prompt=text)
        cost = None if one is None else round(one * task.n, 6)  # one call per image, each with its prompt
    else:
        cost = estimate_request(prices, task.model or "", task.kind, task.params, batch=batch,
                                input_images=inputs, prompt=text)
    if responses and cost is not None:  # each call's mainline model too (one call per image)
        cost = round(cost + n * mainline_estimate(prices, task.recipe.provider.model, text), 6)
    if len(_CACHE) > 65536:
        _CACHE.clear()
    _CACHE[key] = (params, prices, task.recipe, (task.model, kind), cost)
    return cost


_CACHE: dict[tuple[object, ...], tuple[object, PriceTable, object, tuple[str | None, str], float | None]] = {}


def edit_inputs(task: Task) -> int:
    """How many input images a task's request carries that are priced as input tokens (an edit's)."""
    return len(task.images) if task.kind == "edit" else 0


def unknown_price_message(task: Task) -> str:
    """Why a gate cannot pass: the task whose price the table does not know."""
    return (f"the price of {task.id} ({task.model}, {task.kind}) is not known, so --max-cost cannot be "
            f"checked")


def sum_costs(costs: list[float | None]) -> float | None:
    """The total of several estimates, rounded once at the end; None when any is unknown."""
    if any(c is None for c in costs):
        return None
    return round(sum(c for c in costs if c is not None), 6)
