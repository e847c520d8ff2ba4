"""Recipe -> plan: every unit's tasks, rendered and checked. Pure; reads only input files' headers.

Every problem is collected with its place: a template failing for a row names
the file, the step, the field and the row. What does not depend on the unit
(compiling templates, references between steps, the capability table, request
parameters, output format) is done once per step; only rendering is per unit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import models
from .catalog import (
    UNITS_HINT,
    FailureLog,
    KeySpec,
    Row,
    TooManyRows,
    Unit,
    catalog_format,
    expand_units,
    inline_rows,
    read_rows,
)
from .config.checks import PlannedCheck, StepChecks, read_checks
from .errors import Problem
from .imaging.geometry import check_mask
from .imaging.io import ImageInputError, probe
from .recipe import (
    API_KINDS,
    Recipe,
    Source,
    Step,
    display_path,
    exists,
    is_file,
    locate,
    output_dir_problem,
    quoted,
    suggest,
)
from .templating import (
    GLOBALS,
    Compiled,
    RenderError,
    compile_expression,
    compile_template,
    did_you_mean,
    evaluate,
    render,
    validation_budget,
)
from .yamlload import PathKey, format_path, read_text

CONFINED_HINT = ("paths are relative to the recipe and must stay inside the project root: "
                 "the nearest folder above with a pipeline.yaml, else the recipe's folder")
NON_PARAM_KEYS = {"prompt", "prompt_file", "image", "mask", "markup", "model", "fit", "description"}
VARIATION_PARAMS = {"n", "size", "response_format", "safety_identifier", "extra_params"}
RESERVED = {"manifest.json", "report.html"}  # compared lower-cased: Manifest.JSON is reserved too
RESERVED_FOLDERS = {".dalle-pipe", ".thumbs"}
WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                             *(f"COM{i}" for i in "123456789\u00b9\u00b2\u00b3"),
                             *(f"LPT{i}" for i in "123456789\u00b9\u00b2\u00b3")})
MAX_NAME_BYTES = 255
TREE_HINT = "dalle-pipe writes only real folders inside output_dir; remove the symlink or change output"
IMAGE_KEYS = ("image", "mask", "markup", "background", "size_of", "from_alpha")
CONTEXT_NAMES = frozenset({"item", "key", "matrix", "vars", "recipe", "step", "steps"})
OUTPUT_NAMES = CONTEXT_NAMES | {"index", "ext"}
MAX_PROMPT_FILE_BYTES = 1024 * 1024
UNIT_PARTS = frozenset({"catalog", "items", "matrix", "vars"})  # when one is broken, no unit can be rendered
REQUEST_PARTS = frozenset({"model", "params", "provider"})  # when one is broken, no request can be checked

At = Callable[[int | None], tuple[str, int, int]]  # a template's line -> (file, line, col)


@dataclass(frozen=True)
class InputRef:
    """An input of a task: an earlier step's output(s) or a file."""

    role: str  # image | mask | background | from_alpha | size_of
    step: str | None = None
    index: int | None = None  # None with a step: all of its images
    path: Path | None = None  # a file, resolved inside the project


@dataclass(slots=True)
class Task:
    """One step of one unit: `step@key`."""

    recipe: Recipe
    step: Step
    unit: Unit
    enabled: bool
    model: str | None
    params: dict[str, Any]  # shared by the tasks of a step: never changed
    prompt: str | None
    prompt_template: Compiled | None
    images: list[InputRef]
    mask: InputRef | None
    outputs: list[str]  # relative to output_dir
    fmt: str
    size: tuple[int, int] | None
    markup: InputRef | None = None  # an edit's markup (GPT Image 2.5)
    checks: tuple[PlannedCheck, ...] = ()  # run on each image it makes
    retry: int = 0  # on_fail: more tries when an error check fails

    @property
    def id(self) -> str:
        return f"{self.step.id}@{self.unit.key}" if self.unit.key else self.step.id

    @property
    def kind(self) -> str:
        return self.step.kind

    @property
    def is_api(self) -> bool:
        return self.step.kind in API_KINDS

    @property
    def n(self) -> int:
        return len(self.outputs)

    @property
    def inputs(self) -> list[InputRef]:
        return [*self.images, *([self.mask] if self.mask else []), *([self.markup] if self.markup else [])]


@dataclass
class Plan:
    recipe: Recipe
    units: list[Unit]
    tasks: list[Task]  # unit by unit, steps in order
    warnings: list[Problem] = field(default_factory=list)

    def tasks_of(self, unit_index: int) -> list[Task]:
        k = len(self.recipe.steps)
        return self.tasks[unit_index * k:(unit_index + 1) * k]


def step_params(recipe: Recipe, step: Step) -> dict[str, Any]:
    """The request parameters of an API step: recipe (and pipeline) defaults, then the step's own."""
    body = {k: v for k, v in step.body.items() if k not in NON_PARAM_KEYS}
    defaults = dict(recipe.params)
    if step.kind == "variation":
        defaults = {k: v for k, v in defaults.items() if k in VARIATION_PARAMS}
    merged = {**defaults, **body}
    extra = {**(defaults.get("extra_params") or {}), **(body.get("extra_params") or {})}
    if extra:  # a step's extra_params adds to the recipe's (api helper: issue 13)
        merged["extra_params"] = extra
    return merged


def default_output(key: str, step_id: str, ext: str, n: int, index: int) -> str:
    """`{{ key }}/{{ step }}.{{ ext }}`, `-{{ index }}` before the extension when n > 1, no `key/` when empty."""
    name = f"{step_id}-{index}.{ext}" if n > 1 else f"{step_id}.{ext}"
    return f"{key}/{name}" if key else name


# --------------------------------------------------------------------------- per step


@dataclass
class _Template:
    path: PathKey
    compiled: Compiled | None  # None: it failed to compile or uses a name that never exists
    at: At
    uses_broken: bool = False  # it reads a step that failed the schema (rendered with a placeholder)


@dataclass
class _StepInfo:
    """Everything about a step that does not depend on the unit."""

    step: Step
    prompt: _Template | None = None
    output: _Template | None = None
    when: _Template | None = None
    images: dict[PathKey, _Template] = field(default_factory=dict)  # literal (templated) paths
    refs: dict[PathKey, dict[str, Any]] = field(default_factory=dict)  # {step: ID} that are valid
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # as sent (API) or the body (local steps)
    merged: dict[str, Any] = field(default_factory=dict)  # as the recipe sets them (API)
    fmt: str = "png"
    n: int = 1
    max_prompt: int | None = None
    fixed: tuple[str, tuple[int, int] | None] | None = None  # format and size when no input decides them
    fields: list[tuple[PathKey, Any]] = field(default_factory=list)  # its IMAGE fields

    @property
    def prompt_steps(self) -> Compiled | None:
        """The prompt's template when it reads `steps` (rendered again once they are made)."""
        c = self.prompt.compiled if self.prompt is not None else None
        return c if c is not None and c.uses("steps") else None


def build_plan(recipe: Recipe) -> tuple[Plan | None, list[Problem]]:
    """Expand a recipe into its tasks, checking everything that needs no network.

    All its templates, every row, share one budget of work (templating.validation_budget)."""
    with validation_budget():
        return _build_plan(recipe)


def _build_plan(recipe: Recipe) -> tuple[Plan | None, list[Problem]]:
    out: list[Problem] = []
    unwritable = output_dir_problem(recipe)
    if unwritable is not None:
        out.append(unwritable)
    src = recipe.source
    base_ctx: dict[str, Any] = {"vars": dict(recipe.vars), "recipe": {"name": recipe.name}}
    # A part that failed the schema is left out; what depends on it is not checked (no false problems).
    rows = _rows(recipe, out) if not recipe.broken & UNIT_PARTS else None
    cat = recipe.catalog or {}
    spec = KeySpec(cat.get("key"), src.at(("catalog", "key")), cat.get("where"), src.at(("catalog", "where")))
    units: list[Unit] = []
    if not recipe.broken & UNIT_PARTS:
        units, found = expand_units(rows, spec, recipe.matrix, src.at, base_ctx, limit=recipe.max_units,
                                    limit_at=("matrix",) if recipe.matrix else ("catalog", "path")
                                    if recipe.catalog else ("items",))
        out += found
    if rows is not None and not units and not any(p.severity == "error" for p in out):
        where = ("catalog", "where") if rows and recipe.catalog and "where" in recipe.catalog else \
            ("catalog", "path") if recipe.catalog else ("items",)
        out.append(src.problem(where, f"where keeps none of the {len(rows)} rows: nothing to make" if rows
                               else "the catalog has no rows: nothing to make", severity="warning"))
    infos = [_prepare(recipe, step, out) for step in recipe.steps]
    _check_references(recipe, infos, out)
    _check_capabilities(recipe, infos, out)
    checks, found = read_checks(recipe, {info.step.id: info.n for info in infos},
                                {i.step.id: (i.fmt, models.parse_size(i.merged.get("size")))
                                 for i in infos if i.model is not None})  # an auto size is the model's choice
    out += found
    planner = _Planner(recipe, infos, base_ctx, checks)
    tasks: list[Task] = []
    for unit in units:
        tasks.extend(planner.unit(unit))
    out += planner.failures.problems(len(units))
    out = list(dict.fromkeys(out))  # a recipe-level setting is said once, not once per step
    if any(p.severity == "error" for p in out) or not recipe.complete:
        return None, out
    return Plan(recipe, units, tasks, [p for p in out if p.severity == "warning"]), out


def _rows(recipe: Recipe, out: list[Problem]) -> list[Row] | None:
    src = recipe.source
    if recipe.items is not None:
        rows, found = inline_rows(recipe.items, src.file, lambda i: src.doc.positions.of(("items", i)))
        out += found
        return rows
    if recipe.catalog is None:
        return None
    rel = recipe.catalog["path"]
    target, why = locate(recipe.root, recipe.dir, rel)
    if target is None:
        out.append(src.problem(("catalog", "path"), f"catalog path {quoted(rel)} {why}",
                               CONFINED_HINT))
        return []
    if not is_file(target):
        out.append(src.problem(("catalog", "path"), f"catalog {quoted(rel)} does not exist"
                               if not exists(target) else f"catalog {quoted(rel)} is not a file"))
        return []
    fmt = catalog_format(target, recipe.catalog.get("format"))
    if fmt is None:
        out.append(src.problem(("catalog", "path"), f"catalog {quoted(rel)}: unknown format {target.suffix!r}",
                               "use .csv, .json, .jsonl or .yaml, or set catalog.format"))
        return []
    try:
        rows, found = read_rows(target, display_path(target), fmt, limit=recipe.max_units)
    except TooManyRows as exc:
        out.append(src.problem(("catalog", "path"), f"catalog {quoted(rel)} has {exc.count} rows, more than "
                               f"the ceiling of {exc.limit} units", UNITS_HINT))
        return []
    out += found
    return rows


def _template(src: Source, path: PathKey, text: Any, out: list[Problem], *, expr: bool = False) -> _Template:
    def at(line: int | None) -> tuple[str, int, int]:
        return src.at_line(path, line)

    try:
        compiled: Compiled | None = compile_expression(str(text)) if expr else compile_template(str(text))
    except RenderError as exc:
        out.append(Problem(*at(exc.line), format_path(path), exc.message, exc.hint))
        compiled = None
    return _Template(path, compiled, at)


def _prepare(recipe: Recipe, step: Step, out: list[Problem]) -> _StepInfo:
    """Compile a step's templates and check the names they use; work out its request."""
    src = recipe.source
    if step.broken:
        return _StepInfo(step)
    info = _StepInfo(step, fields=_image_fields(step))
    body = step.body
    if "prompt" in body:
        info.prompt = _template(src, (*step.body_path, "prompt"), body["prompt"], out)
    elif "prompt_file" in body:
        info.prompt = _prompt_file(recipe, step, out)
    if step.output is not None:
        info.output = _template(src, (*step.at, "output"), step.output, out)
    if step.when is not None:
        info.when = _template(src, (*step.at, "when"), step.when, out, expr=True)
    for path, value in info.fields:
        if isinstance(value, str):
            info.images[path] = _template(src, path, value, out)
    for tpl in (info.prompt, info.output, info.when, *info.images.values()):
        if tpl is not None and tpl.compiled is not None and not _names_ok(recipe, step, tpl, out):
            tpl.compiled = None
    for tpl in (info.output, *info.images.values()):
        if tpl is not None and tpl.uses_broken:
            tpl.compiled = None  # a placeholder path would only raise false problems
    if step.kind in API_KINDS:
        info.model = str(body.get("model", recipe.model))
        info.merged = merged = step_params(recipe, step)
        provider = recipe.provider
        api = provider.api if provider.name in ("openai", "azure") else "images"
        info.params = models.request_params(info.model, step.kind, merged, api=api)  # type: ignore[arg-type]
        if api == "responses":  # n calls of one image each: n stays in the plan (not sent)
            info.params = {"n": merged.get("n", 1), **info.params}
        n = info.params.get("n", 1)
        info.n = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10 else 1
        info.fmt = models.output_format(info.model, merged)
        spec = models.get_model(info.model)
        info.max_prompt = spec.max_prompt if spec is not None else None
        if models.parse_size(merged.get("size")) is not None or step.kind == "generate":
            info.fixed = (info.fmt, models.output_size(info.model, merged, None))
    else:
        info.params = dict(body)
    return info


def _prompt_file(recipe: Recipe, step: Step, out: list[Problem]) -> _Template:
    src = recipe.source
    path = (*step.body_path, "prompt_file")
    rel = step.body["prompt_file"]
    failed = _Template(path, None, lambda line: src.at(path))
    target, why = locate(recipe.dir, recipe.dir, str(rel))
    if target is None:
        why = "is outside the recipe's folder" if why == "is outside the project" else why
        out.append(src.problem(path, f"prompt_file {quoted(rel)} {why}", "keep prompt files beside the recipe"))
        return failed
    if not is_file(target):
        out.append(src.problem(path, f"prompt_file {quoted(rel)} does not exist"))
        return failed
    shown = display_path(target)
    text, found = read_text(target, shown, MAX_PROMPT_FILE_BYTES)
    if text is None:
        out += [Problem(*src.at(path), format_path(path), f"prompt_file {quoted(rel)}: {p.message}", p.hint)
                for p in found]
        return failed

    def at(line: int | None) -> tuple[str, int, int]:
        return shown, line or 1, 1

    try:
        return _Template(path, compile_template(text), at)
    except RenderError as exc:
        out.append(Problem(*at(exc.line), format_path(path), exc.message, exc.hint))
        return failed


def _names_ok(recipe: Recipe, step: Step, tpl: _Template, out: list[Problem]) -> bool:
    """Names a template uses that can never be defined here: one problem each, not one per unit."""
    assert tpl.compiled is not None
    c = tpl.compiled
    allowed = OUTPUT_NAMES if tpl.path[-1] == "output" else CONTEXT_NAMES
    found: list[Problem] = []

    def add(line: int | None, message: str, hint: str | None) -> None:
        found.append(Problem(*tpl.at(line), format_path(tpl.path), message, hint))

    for name in sorted(c.names - allowed - GLOBALS):
        hint = ("'index' and 'ext' exist only in output" if name in OUTPUT_NAMES
                else did_you_mean(name, sorted(allowed)))
        add(None, f"undefined variable {name!r}", hint)
    ids = [s.id for s in recipe.steps]
    earlier = ids[:step.index]
    hidden = False
    for attr, line in c.attributes("steps"):
        if attr in earlier and recipe.steps[earlier.index(attr)].broken:
            tpl.uses_broken = True  # a step that failed the schema: what it makes is unknown
            continue
        if attr not in ids and _unnamed_broken(recipe, step.index):
            hidden = True  # perhaps the step whose id failed the schema: not a problem of its own
            continue
        if attr in earlier:
            continue
        if attr == step.id:
            hint = "a template sees the earlier steps, not its own"
        elif attr in ids:
            hint = f"step {attr!r} comes later; a template sees only earlier steps"
        else:
            close = did_you_mean(attr, earlier)
            hint = close.replace("'", "'steps.", 1) if close else "no step has this id"
        add(line, f"undefined variable 'steps.{attr}'", hint)
    if recipe.broken & UNIT_PARTS and "vars" not in recipe.broken:
        # No unit can be rendered to find them, but vars are known: say which ones are missing now.
        for attr, line in c.attributes("vars"):
            if attr not in recipe.vars:
                add(line, f"undefined variable 'vars.{attr}'",
                    (did_you_mean(attr, list(recipe.vars)) or "").replace("'", "'vars.", 1)
                    or f"set it under vars: or with --var {attr}=...")
    for attr, line in c.attributes("matrix"):
        if attr not in recipe.matrix:
            close = did_you_mean(attr, list(recipe.matrix))
            add(line, f"undefined variable 'matrix.{attr}'",
                close.replace("'", "'matrix.", 1) if close else "the matrix has no such name")
    out += found
    return not found and not hidden


def _unnamed_broken(recipe: Recipe, before: int) -> bool:
    """Whether an earlier step failed the schema without a usable id (any unknown id may be its)."""
    return any(s.broken and not s.id for s in recipe.steps[:before])


def _image_fields(step: Step) -> list[tuple[PathKey, Any]]:
    """(path, value) of every IMAGE in a step body, lists expanded."""
    fields: list[tuple[PathKey, Any]] = []
    for key in IMAGE_KEYS:
        if key not in step.body or (key == "background" and step.kind != "composite"):
            continue  # elsewhere `background` is the request parameter (transparent | opaque | auto)
        value = step.body[key]
        if isinstance(value, list):
            fields.extend(((*step.body_path, key, i), v) for i, v in enumerate(value))
        else:
            fields.append(((*step.body_path, key), value))
    return fields


def _check_references(recipe: Recipe, infos: list[_StepInfo], out: list[Problem]) -> None:
    """`{step: ID}` inputs: an earlier step, with an index in range when it makes several images."""
    src = recipe.source
    ids = [s.id for s in recipe.steps]
    for info in infos:
        step = info.step
        if step.broken:
            continue
        for path, value in _image_fields(step):
            if not isinstance(value, dict):
                continue
            ref = value.get("step")
            in_list = isinstance(path[-1], int)
            target = recipe.step(ref) if isinstance(ref, str) else None
            if target is not None and target.broken and target.index < step.index:
                continue  # it failed the schema: what it makes is unknown (said already)
            if target is None and _unnamed_broken(recipe, step.index):
                continue  # perhaps the step whose id failed the schema
            if target is None:
                out.append(src.problem((*path, "step"), f"no earlier step {ref!r}",
                                       suggest(str(ref), ids[:step.index])))
                continue
            if target.index >= step.index:
                out.append(src.problem((*path, "step"), f"step {ref!r} comes later" if target.index > step.index
                                       else f"step {ref!r} cannot use its own output",
                                       "a step can only use the outputs of earlier steps"))
                continue
            n = infos[target.index].n
            index = value.get("index")
            if index is None and n > 1 and not in_list:
                out.append(src.problem(path, f"step {ref!r} makes {n} images", f"add index: 0..{n - 1}"))
                continue
            if index is not None and not (isinstance(index, int) and 0 <= index < n):
                out.append(src.problem((*path, "index"), f"index {index} is out of range; step {ref!r} makes "
                                       f"{n} image{'s' if n > 1 else ''}", f"use 0..{n - 1}"))
                continue
            info.refs[path] = value
        body = step.body
        if step.kind in ("mask", "markup") and not any(k in body for k in ("size", "size_of", "from_alpha")):
            out.append(src.problem(step.body_path, "a mask needs its size", "set size, size_of or from_alpha"))
        if step.kind == "mask":
            for issue in check_mask(body.get("shapes") or [], invert=body.get("invert") is True,
                                    from_alpha="from_alpha" in body):
                out.append(src.problem((*step.body_path, *issue.path), issue.message, issue.hint))
        if step.kind == "pad" and not any(k in body for k in ("aspect", "size")):
            out.append(src.problem(step.body_path, "pad needs aspect or size"))


def _check_capabilities(recipe: Recipe, infos: list[_StepInfo], out: list[Problem]) -> None:
    """The capability table, once per API step: what the endpoint would refuse."""
    provider = recipe.provider
    if recipe.broken & REQUEST_PARTS:
        return  # the model, the parameters or the provider failed the schema: said already
    # The offline renderer previews what the real endpoint will be asked: check as for it.
    official = provider.name != "azure" and models.is_official_endpoint(recipe.base_url)
    api = provider.api if provider.name in ("openai", "azure") else "images"
    for info in infos:
        step = info.step
        if info.model is None:
            continue
        issues = models.check_request(info.model, step.kind, info.merged, prompt=None,  # type: ignore[arg-type]
                                      official=official, api=api)  # type: ignore[arg-type]
        if "markup" in step.body:
            issues += models.check_markup(info.model, step.kind, api=api,  # type: ignore[arg-type]
                                          has_mask="mask" in step.body)
        for issue in issues:
            problem = _issue(recipe, step, issue)
            if problem not in out:  # a recipe-level setting: once at its own line, not once per step
                out.append(problem)


def _issue(recipe: Recipe, step: Step, issue: models.ParamIssue) -> Problem:
    key = issue.param or "model"
    if key in ("prompt", "image", "mask", "markup"):
        source, path = recipe.source, (*step.body_path, key if key in step.body else "prompt_file")
        if key not in step.body and "prompt_file" not in step.body:
            path = step.body_path
    else:
        source, path = recipe.where_param(step, key)
    return source.problem(path, issue.message, issue.hint, severity=issue.severity)


# --------------------------------------------------------------------------- per unit


class _Planner:
    """Plans unit after unit, with the caches that make 10,000 rows cheap."""

    def __init__(self, recipe: Recipe, infos: list[_StepInfo], base_ctx: Mapping[str, Any],
                 checks: list[StepChecks]) -> None:
        self.recipe = recipe
        self.infos = infos
        self.checks = checks
        self.base_ctx = base_ctx
        self.failures = FailureLog("units")
        self.seen_outputs: dict[str, str] = {}
        self.probes: dict[Path, models.InputInfo | ImageInputError | None] = {}
        self.located: dict[str, tuple[Path | None, str | None]] = {}
        self.checked: dict[tuple[Any, ...], list[models.ParamIssue]] = {}  # (step, (role, id of facts)...)
        self.predicted: dict[tuple[Any, ...], tuple[str, tuple[int, int] | None]] = {}
        self.seen_folders: dict[str, str] = {}  # folded folder of an output -> the first task writing in it
        self.links = SymlinkFinder(recipe.output_dir)
        self.wiring = [_wiring(info, infos) for info in infos]
        self.prompt_steps = [info.prompt_steps for info in infos]
        self.known: dict[tuple[str, tuple[int, int]], models.InputInfo] = {}  # an earlier step's output
        self.extensions: dict[str, str] = {}

    def fail(self, tpl_at: tuple[str, int, int], path: PathKey, unit: Unit, message: str,
             hint: str | None = None) -> None:
        self.failures.add(tpl_at, format_path(path), unit.describe(), message, hint)

    def unit(self, unit: Unit) -> list[Task]:
        steps_ctx: dict[str, dict[str, Any]] = {}
        ctx: dict[str, Any] = {**self.base_ctx, "item": unit.item, "key": unit.key, "matrix": unit.matrix,
                               "steps": steps_ctx}
        planned: dict[str, Task] = {}
        tasks: list[Task] = []
        for info in self.infos:
            step = info.step
            if step.broken:
                if step.id:  # a placeholder, so that prompts reading it still show their other problems
                    text = f"[{step.id}]"
                    steps_ctx[step.id] = {"path": text, "paths": [text], "prompt": text, "revised_prompt": text}
                continue
            ctx["step"] = step.id
            enabled = True
            if info.when is not None and info.when.compiled is not None:
                try:
                    enabled = evaluate(info.when.compiled, ctx)
                except RenderError as exc:
                    self.fail(info.when.at(exc.line), info.when.path, unit, exc.message, exc.hint)
            prompt = None
            images: list[InputRef] = []
            mask: InputRef | None = None
            markup: InputRef | None = None
            inputs: list[tuple[str, models.InputInfo | None]] = []
            if enabled:
                if info.prompt is not None and info.prompt.compiled is not None:
                    try:
                        prompt = render(info.prompt.compiled, ctx)
                    except RenderError as exc:
                        self.fail(info.prompt.at(exc.line), info.prompt.path, unit, exc.message, exc.hint)
                    else:
                        self._check_prompt(info, unit, prompt)
                images, mask, inputs, complete, markup = self._inputs(info, unit, ctx, planned)
                if complete:
                    self._check_inputs(info, unit, inputs)
            fmt, size = self._predict(info, inputs)
            outputs = self._outputs(info, unit, ctx, fmt, enabled)
            task = Task(self.recipe, step, unit, enabled, info.model, info.params, prompt,
                        self.prompt_steps[step.index], images, mask, outputs, fmt, size, markup)
            step_checks = self.checks[step.index]
            if enabled and step_checks.specs:
                task.checks = step_checks.plan(ctx, self.recipe.root, self.recipe.dir,
                                               lambda at, path, msg, hint: self.fail(at, path, unit, msg, hint))
                task.retry = step_checks.retry
            planned[step.id] = task
            tasks.append(task)
            steps_ctx[step.id] = {"path": outputs[0] if outputs else None, "paths": outputs,
                                  "prompt": prompt, "revised_prompt": None}
        return tasks

    def _check_prompt(self, info: _StepInfo, unit: Unit, prompt: str) -> None:
        if info.model is None or info.prompt is None:
            return
        if info.max_prompt is not None and (len(prompt) > info.max_prompt or not prompt.strip()):
            for issue in models.check_request(info.model, info.step.kind, {}, prompt=prompt,  # type: ignore[arg-type]
                                              official=False):
                if issue.param == "prompt" and issue.severity == "error":
                    self.fail(info.prompt.at(None), info.prompt.path, unit, issue.message, issue.hint)

    def _check_inputs(self, info: _StepInfo, unit: Unit, inputs: list[tuple[str, models.InputInfo | None]]) -> None:
        step = info.step
        if info.model is None or step.kind == "generate":
            return
        # Input facts are shared objects (one per probed file, one per earlier step's format and size):
        # the same objects give the same issues, checked once.
        key = (step.index, *[(r, id(i)) for r, i in inputs])
        issues = self.checked.get(key)
        if issues is None:
            issues = self.checked[key] = self._input_issues(info, inputs)
        for issue in issues:
            if issue.param == "mask" and step.body.get("fit") == "resize" and "size" in issue.message:
                continue
            path = (*step.body_path, issue.param or "image")
            self.fail(self.recipe.source.at(path), path, unit, issue.message, issue.hint)

    def _input_issues(self, info: _StepInfo, inputs: list[tuple[str, models.InputInfo | None]]
                      ) -> list[models.ParamIssue]:
        assert info.model is not None
        step = info.step
        if any(i is None for r, i in inputs if r in ("image", "mask")):
            return []  # unknown until run (or already reported)
        imgs = tuple(i for r, i in inputs if r == "image" and i is not None)
        mask = next((i for r, i in inputs if r == "mask"), None)
        markup = next((i for r, i in inputs if r == "markup"), None)
        issues = models.check_inputs(info.model, step.kind, list(imgs), mask)  # type: ignore[arg-type]
        if markup is not None:  # its size and alpha; the model, route and mask: _check_capabilities
            issues += [i for i in models.check_markup(
                info.model, step.kind, markup=markup, first=imgs[0] if imgs else None)  # type: ignore[arg-type]
                if i.message.startswith("markup ")]
        return issues

    def _inputs(self, info: _StepInfo, unit: Unit, ctx: Mapping[str, Any], planned: Mapping[str, Task]
                ) -> tuple[list[InputRef], InputRef | None, list[tuple[str, models.InputInfo | None]], bool,
                           InputRef | None]:
        """The inputs of a task, what is known of each, and whether every one of them could be resolved."""
        complete = True
        images: list[InputRef] = []
        mask: InputRef | None = None
        markup: InputRef | None = None
        infos: list[tuple[str, models.InputInfo | None]] = []
        for path, role, wired in self.wiring[info.step.index]:
            if wired is not None:
                target, refs = wired
                if refs is None:
                    complete = False
                    continue  # reported once by _check_references
                ref_task = planned[target]
                known = None
                if ref_task.size is not None:
                    shape = (ref_task.fmt, ref_task.size)
                    known = self.known.get(shape)
                    if known is None:
                        known = self.known[shape] = models.InputInfo(
                            ref_task.fmt, ref_task.size[0], ref_task.size[1], 0, ref_task.fmt in ("png", "webp"))
                infos.extend((role, known) for _ in refs)
            else:
                tpl = info.images.get(path)
                complete, was = False, complete  # until the file is found and readable
                if tpl is None or tpl.compiled is None:
                    continue
                try:
                    rel = render(tpl.compiled, ctx).strip()
                except RenderError as exc:
                    self.fail(tpl.at(exc.line), path, unit, exc.message, exc.hint)
                    continue
                found = self._file(rel)
                if isinstance(found, str):
                    self.fail(tpl.at(None), path, unit, found,
                              CONFINED_HINT
                              if "outside" in found else None)
                    continue
                target_path, probed = found
                if isinstance(probed, ImageInputError):
                    self.fail(tpl.at(None), path, unit, f"input image {quoted(rel)}: {probed.reason}", probed.hint)
                    continue
                complete = was
                refs = (InputRef(role, path=target_path),)
                infos.append((role, probed))
            if role == "mask":
                mask = refs[0]
            elif role == "markup":
                markup = refs[0]
            else:
                images.extend(refs)
        return images, mask, infos, complete, markup

    def _file(self, rel: str) -> str | tuple[Path, models.InputInfo | ImageInputError]:
        """A literal input file: (path, what its header says) or why it cannot be used."""
        if rel not in self.located:
            self.located[rel] = locate(self.recipe.root, self.recipe.dir, rel)
        target, why = self.located[rel]
        if target is None:
            return f"image path {quoted(rel)} {why}"
        if target not in self.probes:
            self.probes[target] = _probe(target)
        probed = self.probes[target]
        if probed is None:
            return f"input image {quoted(rel)} does not exist"
        return target, probed

    def _predict(self, info: _StepInfo, inputs: list[tuple[str, models.InputInfo | None]]
                 ) -> tuple[str, tuple[int, int] | None]:
        if info.fixed is not None:
            return info.fixed
        key = (info.step.index, *[(r, id(i)) for r, i in inputs])  # shared input facts: see _check_inputs
        found = self.predicted.get(key)
        if found is None:
            found = self.predicted[key] = _predict(info, inputs)
        return found

    def _outputs(self, info: _StepInfo, unit: Unit, ctx: dict[str, Any], fmt: str, enabled: bool) -> list[str]:
        step = info.step
        ext = self.extensions.get(fmt)
        if ext is None:
            ext = self.extensions[fmt] = models.extension(fmt)
        n = info.n
        paths: list[str] = []
        task_id = f"{step.id}@{unit.key}" if unit.key else step.id
        tpl = info.output
        for index in range(n):
            if tpl is None:
                rel = default_output(unit.key, step.id, ext, n, index)
            elif tpl.compiled is None:
                return []
            else:
                ctx["index"], ctx["ext"] = index, ext
                try:
                    rel = render(tpl.compiled, ctx).strip()
                except RenderError as exc:
                    if enabled:
                        self.fail(tpl.at(exc.line), tpl.path, unit, exc.message, exc.hint)
                    continue
                finally:
                    del ctx["index"], ctx["ext"]
                bad = _bad_output(rel)
                if bad and enabled:
                    self.fail(tpl.at(None), tpl.path, unit, f"output path {quoted(rel)} {bad}",
                              "outputs are relative paths inside output_dir")
                    continue
                rel = PurePosixPath(rel).as_posix()
            if not enabled:
                paths.append(rel)
                continue
            folded = rel.lower()
            other = self.seen_outputs.get(folded)
            if other is not None and other.split(" ")[0] != task_id:  # the same id twice is reported once
                where = tpl.path if tpl is not None else step.at
                self.fail(self.recipe.source.at(where), where, unit,
                          f"output path {quoted(rel)} is also written by {other}",
                          "two tasks may not write one path (case-insensitively); use {{ key }} and "
                          "{{ index }} in output")
                continue
            clash = self._tree_clash(rel, folded, task_id if n == 1 else f"{task_id} (image {index})")
            if clash:
                where = tpl.path if tpl is not None else step.at
                self.fail(self.recipe.source.at(where), where, unit, f"output path {quoted(rel)} {clash[0]}",
                          clash[1])
                continue
            paths.append(rel)
        return paths

    def _tree_clash(self, rel: str, folded: str, who: str) -> tuple[str, str] | None:
        """An output that is another's folder, or that passes through a symlink; else records it."""
        link = self.links.first_link(rel)
        if link is not None:
            return f"passes through a symlink inside output_dir ({link!r})", TREE_HINT
        if folded in self.seen_folders:
            return (f"is a folder of {self.seen_folders[folded]}'s output",
                    "an output may not be another output's folder")
        parent = folded.rpartition("/")[0]
        # A folder already recorded has had all of its folders recorded, none of them an output
        # (an output is never recorded as a folder, nor a folder as an output): nothing to look at.
        if parent and parent not in self.seen_folders:
            folders = []
            while parent:
                if parent in self.seen_outputs:
                    return (f"is inside {parent!r}, an output of {self.seen_outputs[parent]}",
                            "an output may not be another output's folder")
                folders.append(parent)
                parent = parent.rpartition("/")[0]
            for folder in folders:
                self.seen_folders.setdefault(folder, who)
        self.seen_outputs[folded] = who
        return None


_MISSING = ""  # a folder state: it does not exist (so nothing below it does)
_REAL = "/"  # a folder state: it exists and is not a symlink


class SymlinkFinder:
    """Which output paths pass through a symlink inside an output folder. Only the paths the plan
    names are looked at (one lstat per new folder, and one per file in a folder that exists),
    never the whole tree, so a huge --output-dir costs nothing more; nothing is looked at when
    the output folder does not exist yet."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.base = os.path.join(folder, "")
        self.absent = not os.path.isdir(folder)  # nothing inside can be a symlink
        self.folders: dict[str, str] = {}  # folder -> _MISSING, _REAL, or the symlink on its way

    def first_link(self, rel: str) -> str | None:
        if self.absent:
            return None
        parent = rel.rpartition("/")[0]
        state = self._folder(parent) if parent else _REAL
        if state == _REAL:
            state = self._look(rel)
        return state if state not in (_MISSING, _REAL) else None

    def _folder(self, prefix: str) -> str:
        state = self.folders.get(prefix)
        if state is None:
            parent = prefix.rpartition("/")[0]
            state = self._folder(parent) if parent else _REAL
            if state == _REAL:
                state = self._look(prefix)
            self.folders[prefix] = state
        return state

    def _look(self, prefix: str) -> str:
        try:
            mode = os.lstat(self.base + prefix).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return _MISSING
        except (OSError, ValueError):
            return _REAL  # unreadable here: the write reports it
        return prefix if stat.S_ISLNK(mode) else _REAL


_Wired = tuple[str, tuple[InputRef, ...] | None] | None  # (step id, its refs; None: not valid); None: a file


def _wiring(info: _StepInfo, infos: list[_StepInfo]) -> list[tuple[PathKey, str, _Wired]]:
    """A step's IMAGE fields, once: (path, role, what an earlier step's output gives it)."""
    out: list[tuple[PathKey, str, _Wired]] = []
    for path, value in info.fields:
        role = str(path[-1] if isinstance(path[-1], str) else path[-2])
        if not isinstance(value, dict):
            out.append((path, role, None))
            continue
        ref = info.refs.get(path)
        if ref is None:
            out.append((path, role, ("", None)))
            continue
        sid = str(ref["step"])
        index = ref.get("index")
        # the task a unit's plan holds under that id: the last earlier step with it that is planned
        n = [i for i in infos[:info.step.index] if i.step.id == sid and not i.step.broken][-1].n
        if index is None and isinstance(path[-1], int) and n > 1:
            refs = tuple(InputRef(role, sid, i) for i in range(n))
        else:
            refs = (InputRef(role, sid, index or 0),)
        out.append((path, role, (sid, refs)))
    return out


def _probe(path: Path) -> models.InputInfo | ImageInputError | None:
    """What a file's header says; None when there is no such file."""
    if not exists(path):
        return None
    try:
        info = probe(path, decode=True)  # decoded whole: short or corrupt pixel data is refused now
    except ImageInputError as exc:
        return exc
    except (OSError, ValueError) as exc:
        return ImageInputError(path, f"cannot read it ({exc})")
    return models.InputInfo(info.format, info.width, info.height, info.bytes, info.has_alpha)


def _predict(info: _StepInfo, inputs: list[tuple[str, models.InputInfo | None]]
             ) -> tuple[str, tuple[int, int] | None]:
    """The format and pixel size a step's output will have, when it can be known before running."""
    step, body = info.step, info.step.body
    roles = ("background",) if step.kind == "composite" else ("image",)
    first = next((i for r, i in inputs if r in roles), None)
    first_size = (first.width, first.height) if first else None
    first_fmt = models.FORMAT_ALIASES.get(first.format, first.format) if first else "png"
    if first_fmt not in ("png", "jpeg", "webp"):
        first_fmt = "png"
    if info.model is not None:
        return info.fmt, models.output_size(info.model, info.merged, first_size)
    if step.kind in ("mask", "markup"):
        if "size" in body:
            return "png", models.parse_size(body["size"])
        src = next((i for r, i in inputs if r in ("size_of", "from_alpha")), None)
        return "png", (src.width, src.height) if src else None
    if step.kind == "resize":
        return first_fmt, models.parse_size(body.get("size"))
    if step.kind == "convert":
        fmt = str(body.get("format", "png"))
        return models.FORMAT_ALIASES.get(fmt, fmt), first_size
    if step.kind == "crop" and first_size is not None and isinstance(body.get("box"), list):
        x0, y0, x1, y1 = body["box"]
        w, h = first_size
        return first_fmt, (max(1, round(x1 * w) - round(x0 * w)), max(1, round(y1 * h) - round(y0 * h)))
    if step.kind == "pad":
        if "size" in body:
            return first_fmt, models.parse_size(body["size"])
        if first_size is not None and "aspect" in body:
            return first_fmt, _pad_size(first_size, str(body["aspect"]))
        return first_fmt, None
    return first_fmt, first_size


def _pad_size(size: tuple[int, int], aspect: str) -> tuple[int, int] | None:
    """The smallest canvas of aspect `W:H` that holds an image of `size`."""
    try:
        aw, ah = (float(x) for x in aspect.split(":"))
    except ValueError:
        return None
    if aw <= 0 or ah <= 0:
        return None
    w, h = size
    if w / h < aw / ah:
        return max(w, round(h * aw / ah)), h
    return w, max(h, round(w * ah / aw))


def _bad_output(rel: str) -> str | None:
    if not rel:
        return "is empty"
    if "\\" in rel or "\x00" in rel:
        return "has a backslash or NUL"
    p = PurePosixPath(rel)
    if p.is_absolute() or rel.startswith("~"):
        return "is absolute"
    if ".." in p.parts:
        return "escapes output_dir"
    if rel.endswith("/") or not p.parts or p.name in (".", ""):
        return "is not a file name"
    if p.parts[0].lower() in RESERVED_FOLDERS or p.as_posix().lower() in RESERVED:
        return "is reserved by dalle-pipe"
    for part in p.parts:
        bad = bad_name(part)
        if bad:
            return bad
    return None


def bad_name(part: str) -> str | None:
    """Why one file or folder name cannot be written on every system, or None."""
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        return "has a control character (a line break, a tab...)"
    if part.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return f"uses {part!r}, a Windows device name"
    if part.endswith((".", " ")):
        return f"has a name ending in a dot or a space ({part!r})"
    if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"has a name over {MAX_NAME_BYTES} bytes"
    return None
