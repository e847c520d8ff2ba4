"""Recipe -> plan: every unit's tasks, rendered and checked. Pure; reads only input files' headers.

Every problem is collected with its place: a template failing for a row names
the file, the step, the field and the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import models
from .catalog import KeySpec, Row, Unit, expand_units, inline_rows, read_rows
from .errors import Problem
from .imaging.io import ImageInputError, probe
from .recipe import API_KINDS, Recipe, Source, Step, confine, display_path, suggest
from .templating import Compiled, RenderError, compile_expression, compile_template, evaluate, render
from .yamlload import PathKey, format_path

NON_PARAM_KEYS = {"prompt", "prompt_file", "image", "mask", "model", "fit", "description"}
VARIATION_PARAMS = {"n", "size", "response_format", "safety_identifier"}
MAX_FAILING_UNITS = 3  # per template field, then a count
RESERVED = {"manifest.json", "report.html"}


@dataclass(frozen=True)
class InputRef:
    """An input of a task: an earlier step's output(s) or a file."""

    role: str  # image | mask | background | from_alpha | size_of
    step: str | None = None
    index: int | None = None  # None with a step: all of its images
    path: Path | None = None  # a file, resolved inside the project


@dataclass
class Task:
    """One step of one unit: `step@key`."""

    recipe: Recipe
    step: Step
    unit: Unit
    enabled: bool
    model: str | None
    params: dict[str, Any]
    prompt: str | None
    prompt_template: Compiled | None
    images: list[InputRef]
    mask: InputRef | None
    outputs: list[str]  # relative to output_dir
    fmt: str
    size: tuple[int, int] | None

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
        return [*self.images, *([self.mask] if self.mask else [])]


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
    return {**defaults, **body}


def default_output(key: str, step_id: str, ext: str, n: int, index: int) -> str:
    name = f"{step_id}-{index}.{ext}" if n > 1 else f"{step_id}.{ext}"
    return f"{key}/{name}" if key else name


class _Collector:
    """Problems, with at most a few failing units per template field."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.failures: dict[tuple[str, int, int, str], int] = {}

    def add(self, p: Problem) -> None:
        self.problems.append(p)

    def unit_failure(self, src: Source, path: PathKey, unit: Unit, message: str, line: int | None = None,
                     hint: str | None = None) -> None:
        file, ln, col = src.at(path)
        key = (file, ln, col, message if not unit.key else message.split(":", 1)[0])
        count = self.failures.get(key, 0)
        self.failures[key] = count + 1
        if count < MAX_FAILING_UNITS:
            self.problems.append(Problem(file, ln, col, format_path(path), f"{unit.describe()}: {message}", hint))

    def finish(self) -> list[Problem]:
        return self.problems


def build_plan(recipe: Recipe) -> tuple[Plan | None, list[Problem]]:
    """Expand a recipe into its tasks, checking everything that needs no network."""
    out = _Collector()
    src = recipe.source
    base_ctx = {"vars": dict(recipe.vars), "recipe": {"name": recipe.name}}
    rows = _rows(recipe, out)
    cat = recipe.catalog or {}
    spec = KeySpec(cat.get("key"), src.at(("catalog", "key")), cat.get("where"), src.at(("catalog", "where")))
    units, found = expand_units(rows, spec, recipe.matrix, src.at(("matrix",)), base_ctx)
    for p in found:
        out.add(p)
    compiled = _compile_steps(recipe, out)
    _check_step_static(recipe, out)
    if any(p.severity == "error" for p in out.problems) or compiled is None:
        return None, out.finish()
    probes: dict[Path, models.InputInfo | None] = {}
    tasks: list[Task] = []
    seen_outputs: dict[str, str] = {}
    for unit in units:
        tasks.extend(_plan_unit(recipe, unit, compiled, base_ctx, probes, seen_outputs, out))
    plan = Plan(recipe, units, tasks, [p for p in out.problems if p.severity == "warning"])
    return plan, out.finish()


def _rows(recipe: Recipe, out: _Collector) -> list[Row] | None:
    src = recipe.source
    if recipe.items is not None:
        rows, found = inline_rows(recipe.items, src.file, lambda i: src.doc.positions.of(("items", i)))
        for p in found:
            out.add(p)
        return rows
    if recipe.catalog is None:
        return None
    rel = recipe.catalog["path"]
    target = confine(recipe.root, recipe.dir, rel)
    if target is None:
        out.add(src.problem(("catalog", "path"), f"catalog path {rel!r} is outside the project",
                            "paths are relative to the recipe and must stay inside the project"))
        return []
    if not target.is_file():
        out.add(src.problem(("catalog", "path"), f"catalog {rel!r} does not exist"))
        return []
    rows, found = read_rows(target, display_path(target), recipe.catalog.get("format"))
    for p in found:
        out.add(p)
    return rows


@dataclass
class _StepTemplates:
    prompt: Compiled | None = None
    prompt_path: PathKey = ()
    output: Compiled | None = None
    when: Compiled | None = None
    images: dict[PathKey, Compiled] = field(default_factory=dict)


def _compile(src: Source, path: PathKey, text: str, out: _Collector, expr: bool = False) -> Compiled | None:
    try:
        return compile_expression(text) if expr else compile_template(text)
    except RenderError as exc:
        file, line, col = src.at(path)
        if exc.line and exc.line > 1:
            line, col = line + exc.line - 1, 1
        out.add(Problem(file, line, col, format_path(path), exc.message))
        return None


def _compile_steps(recipe: Recipe, out: _Collector) -> list[_StepTemplates] | None:
    src = recipe.source
    result: list[_StepTemplates] = []
    ok = True
    for step in recipe.steps:
        t = _StepTemplates()
        body = step.body
        if "prompt" in body:
            t.prompt_path = (*step.body_path, "prompt")
            t.prompt = _compile(src, t.prompt_path, str(body["prompt"]), out)
            ok &= t.prompt is not None
        elif "prompt_file" in body:
            t.prompt_path = (*step.body_path, "prompt_file")
            target = confine(recipe.dir, recipe.dir, str(body["prompt_file"]))
            if target is None:
                out.add(src.problem(t.prompt_path, f"prompt_file {body['prompt_file']!r} is outside the "
                                    "recipe's folder", "keep prompt files beside the recipe"))
                ok = False
            elif not target.is_file():
                out.add(src.problem(t.prompt_path, f"prompt_file {body['prompt_file']!r} does not exist"))
                ok = False
            else:
                try:
                    text = target.read_text("utf-8-sig")
                except (OSError, UnicodeDecodeError) as exc:
                    out.add(src.problem(t.prompt_path, f"cannot read prompt_file: {exc}"))
                    ok = False
                else:
                    try:
                        t.prompt = compile_template(text)
                    except RenderError as exc:
                        out.add(Problem(display_path(target), exc.line or 1, 1, format_path(t.prompt_path),
                                        exc.message))
                        ok = False
        if step.output is not None:
            t.output = _compile(src, (*step.at, "output"), step.output, out)
            ok &= t.output is not None
        if step.when is not None:
            t.when = _compile(src, (*step.at, "when"), step.when, out, expr=True)
            ok &= t.when is not None
        for path, value in _image_fields(step):
            if isinstance(value, str):
                c = _compile(src, path, value, out)
                ok &= c is not None
                if c is not None:
                    t.images[path] = c
        result.append(t)
    return result if ok else None


def _image_fields(step: Step) -> list[tuple[PathKey, Any]]:
    """(path, value) of every IMAGE in a step body, lists expanded."""
    fields: list[tuple[PathKey, Any]] = []
    for key in ("image", "mask", "background", "size_of", "from_alpha"):
        if key not in step.body:
            continue
        value = step.body[key]
        if isinstance(value, list):
            fields.extend(((*step.body_path, key, i), v) for i, v in enumerate(value))
        else:
            fields.append(((*step.body_path, key), value))
    return fields


def _step_n(recipe: Recipe, step: Step) -> int:
    if step.kind not in API_KINDS:
        return 1
    n = step_params(recipe, step).get("n", 1)
    return n if isinstance(n, int) and n >= 1 else 1


def _check_step_static(recipe: Recipe, out: _Collector) -> None:
    """References between steps and the capability table: checked once per step."""
    src = recipe.source
    ids = [s.id for s in recipe.steps]
    official = models.is_official_endpoint(recipe.base_url)
    api = recipe.provider.api if recipe.provider.name in ("openai", "azure") else "images"
    for step in recipe.steps:
        for path, value in _image_fields(step):
            if not isinstance(value, dict):
                continue
            ref = value.get("step")
            in_list = isinstance(path[-1], int)
            target = recipe.step(ref) if isinstance(ref, str) else None
            if target is None:
                out.add(src.problem((*path, "step"), f"no earlier step {ref!r}", suggest(str(ref), ids[:step.index])))
                continue
            if target.index >= step.index:
                out.add(src.problem((*path, "step"), f"step {ref!r} comes later" if target.index > step.index
                                    else f"step {ref!r} cannot use its own output",
                                    "a step can only use the outputs of earlier steps"))
                continue
            n = _step_n(recipe, target)
            index = value.get("index")
            if index is None and n > 1 and not in_list:
                out.add(src.problem(path, f"step {ref!r} makes {n} images", f"add index: 0..{n - 1}"))
            elif index is not None and not 0 <= index < n:
                out.add(src.problem((*path, "index"), f"index {index} is out of range; step {ref!r} makes "
                                    f"{n} image{'s' if n > 1 else ''}", f"use 0..{n - 1}"))
        if step.kind == "mask" and not any(k in step.body for k in ("size", "size_of", "from_alpha")):
            out.add(src.problem(step.body_path, "a mask needs its size", "set size, size_of or from_alpha"))
        if step.kind in ("pad",) and not any(k in step.body for k in ("aspect", "size")):
            out.add(src.problem(step.body_path, "pad needs aspect or size"))
        if step.kind not in API_KINDS:
            continue
        model = str(step.body.get("model", recipe.model))
        params = step_params(recipe, step)
        if recipe.provider.name == "offline":
            if models.get_model(model) is None:
                out.add(_issue(recipe, step, models.ParamIssue("model", f"unknown model {model!r}")))
            issues = [i for i in models.check_request(model, step.kind, params, prompt=None,  # type: ignore[arg-type]
                                                      official=False, api="images")
                      if i.severity == "error"]
        else:
            issues = models.check_request(model, step.kind, params, prompt=None,  # type: ignore[arg-type]
                                          official=official, api=api)  # type: ignore[arg-type]
        for issue in issues:
            out.add(_issue(recipe, step, issue))


def _issue(recipe: Recipe, step: Step, issue: models.ParamIssue, unit: Unit | None = None) -> Problem:
    key = issue.param or "model"
    if key in ("prompt", "image", "mask"):
        source, path = recipe.source, (*step.body_path, key if key in step.body else "prompt_file")
        if key not in step.body and "prompt_file" not in step.body:
            path = step.body_path
    else:
        source, path = recipe.where_param(step, key)
    msg = f"{unit.describe()}: {issue.message}" if unit else issue.message
    return source.problem(path, msg, issue.hint, severity=issue.severity)


def _plan_unit(recipe: Recipe, unit: Unit, compiled: list[_StepTemplates], base_ctx: Mapping[str, Any],
               probes: dict[Path, models.InputInfo | None], seen_outputs: dict[str, str],
               out: _Collector) -> list[Task]:
    src = recipe.source
    steps_ctx: dict[str, dict[str, Any]] = {}
    ctx: dict[str, Any] = {**base_ctx, "item": dict(unit.item), "key": unit.key, "matrix": dict(unit.matrix),
                           "steps": steps_ctx}
    planned: dict[str, Task] = {}
    tasks: list[Task] = []
    for step, tpl in zip(recipe.steps, compiled, strict=True):
        ctx["step"] = step.id
        enabled = True
        if tpl.when is not None:
            try:
                enabled = evaluate(tpl.when, ctx)
            except RenderError as exc:
                out.unit_failure(src, (*step.at, "when"), unit, exc.message)
        prompt = None
        if tpl.prompt is not None:
            try:
                prompt = render(tpl.prompt, ctx)
            except RenderError as exc:
                out.unit_failure(src, tpl.prompt_path, unit, exc.message)
        images, mask, infos = _inputs(recipe, step, unit, tpl, ctx, planned, probes, out)
        model = str(step.body.get("model", recipe.model)) if step.kind in API_KINDS else None
        params = step_params(recipe, step) if step.kind in API_KINDS else dict(step.body)
        fmt, size = _predict(recipe, step, model, params, infos)
        if model is not None:
            if prompt is not None and unit is not None:
                for issue in models.check_request(model, step.kind, params, prompt=prompt,  # type: ignore[arg-type]
                                                  official=False):
                    if issue.param == "prompt":
                        out.unit_failure(src, tpl.prompt_path, unit, issue.message, hint=issue.hint)
            img_infos = [i for r, i in infos if r == "image" and i is not None]
            mask_info = next((i for r, i in infos if r == "mask"), None)
            if all(i is not None for r, i in infos if r in ("image", "mask")) and step.kind != "generate":
                for issue in models.check_inputs(model, step.kind, img_infos, mask_info):  # type: ignore[arg-type]
                    if issue.param == "mask" and step.body.get("fit") == "resize" and "size" in issue.message:
                        continue
                    out.unit_failure(src, (*step.body_path, issue.param or "image"), unit, issue.message,
                                     hint=issue.hint)
            params = models.request_params(model, step.kind, params)  # type: ignore[arg-type]
        n = int(params.get("n", 1) or 1) if step.kind in API_KINDS else 1
        ext = models.extension(fmt)
        outputs = _outputs(recipe, step, unit, tpl, ctx, n, ext, seen_outputs, out)
        task = Task(recipe, step, unit, enabled, model, params, prompt,
                    tpl.prompt if tpl.prompt is not None and tpl.prompt.uses("steps") else None,
                    images, mask, outputs, fmt, size)
        planned[step.id] = task
        tasks.append(task)
        steps_ctx[step.id] = {"path": outputs[0] if outputs else None, "paths": list(outputs),
                              "prompt": prompt, "revised_prompt": None}
    return tasks


def _inputs(recipe: Recipe, step: Step, unit: Unit, tpl: _StepTemplates, ctx: Mapping[str, Any],
            planned: Mapping[str, Task], probes: dict[Path, models.InputInfo | None],
            out: _Collector) -> tuple[list[InputRef], InputRef | None, list[tuple[str, models.InputInfo | None]]]:
    src = recipe.source
    images: list[InputRef] = []
    mask: InputRef | None = None
    infos: list[tuple[str, models.InputInfo | None]] = []
    for path, value in _image_fields(step):
        role = path[-1] if isinstance(path[-1], str) else path[-2]
        assert isinstance(role, str)
        role = "image" if role == "image" else role
        if isinstance(value, dict):
            ref_step = planned.get(value["step"])
            if ref_step is None:
                continue
            index = value.get("index")
            if index is None and isinstance(path[-1], int) and ref_step.n > 1:
                refs = [InputRef(role, ref_step.step.id, i) for i in range(ref_step.n)]
            else:
                refs = [InputRef(role, ref_step.step.id, index or 0)]
            info = None
            if ref_step.size is not None:
                info = models.InputInfo(ref_step.fmt, ref_step.size[0], ref_step.size[1], 0,
                                        ref_step.fmt in ("png", "webp"))
            for ref in refs:
                infos.append((role, info))
        else:
            try:
                rel = render(tpl.images[path], ctx).strip()
            except RenderError as exc:
                out.unit_failure(src, path, unit, exc.message)
                continue
            target = confine(recipe.root, recipe.dir, rel)
            if target is None:
                out.unit_failure(src, path, unit, f"image path {rel!r} is outside the project",
                                 hint="paths are relative to the recipe and must stay inside the project")
                continue
            if target not in probes:
                probes[target] = _probe(target)
            info = probes[target]
            if info is None:
                if not target.exists():
                    out.unit_failure(src, path, unit, f"input image {rel!r} does not exist")
                else:
                    try:
                        probe(target)
                    except ImageInputError as exc:
                        out.unit_failure(src, path, unit, f"input image {rel!r}: {exc.message}")
                continue
            refs = [InputRef(role, path=target)]
            infos.append((role, info))
        if role == "mask":
            mask = refs[0]
        else:
            images.extend(refs)
    return images, mask, infos


def _probe(path: Path) -> models.InputInfo | None:
    try:
        info = probe(path)
    except (ImageInputError, OSError):
        return None
    return models.InputInfo(info.format, info.width, info.height, info.bytes, info.has_alpha)


def _predict(recipe: Recipe, step: Step, model: str | None, params: Mapping[str, Any],
             infos: list[tuple[str, models.InputInfo | None]]) -> tuple[str, tuple[int, int] | None]:
    """The format and pixel size a step's output will have, when it can be known before running."""
    first = next((i for r, i in infos if r in ("image", "background")), None)
    first_size = (first.width, first.height) if first else None
    first_fmt = models.FORMAT_ALIASES.get(first.format, first.format) if first else "png"
    body = step.body
    if model is not None:
        return models.output_format(model, params), models.output_size(model, params, first_size)
    if step.kind == "mask":
        if "size" in body:
            return "png", models.parse_size(body["size"])
        src = next((i for r, i in infos if r in ("size_of", "from_alpha")), None)
        return "png", (src.width, src.height) if src else None
    if step.kind == "resize":
        return first_fmt, models.parse_size(body.get("size"))
    if step.kind == "convert":
        fmt = str(body.get("format", "png"))
        return models.FORMAT_ALIASES.get(fmt, fmt), first_size
    if step.kind == "crop" and first_size is not None:
        x0, y0, x1, y1 = body["box"]
        w, h = first_size
        return first_fmt, (max(1, round(x1 * w) - round(x0 * w)), max(1, round(y1 * h) - round(y0 * h)))
    if step.kind == "pad":
        if "size" in body:
            return first_fmt, models.parse_size(body["size"])
        if first_size is not None and "aspect" in body:
            from .imaging.transforms import pad_size

            return first_fmt, pad_size(first_size, str(body["aspect"]))
        return first_fmt, None
    if step.kind == "composite":
        return first_fmt, first_size
    return first_fmt, first_size


def _outputs(recipe: Recipe, step: Step, unit: Unit, tpl: _StepTemplates, ctx: dict[str, Any], n: int,
             ext: str, seen: dict[str, str], out: _Collector) -> list[str]:
    src = recipe.source
    paths: list[str] = []
    for index in range(n):
        if tpl.output is None:
            rel = default_output(unit.key, step.id, ext, n, index)
        else:
            try:
                rel = render(tpl.output, {**ctx, "index": index, "ext": ext}).strip()
            except RenderError as exc:
                out.unit_failure(src, (*step.at, "output"), unit, exc.message)
                continue
            bad = _bad_output(rel)
            if bad:
                out.unit_failure(src, (*step.at, "output"), unit, f"output path {rel!r} {bad}",
                                 hint="outputs are relative paths inside output_dir")
                continue
        folded = rel.lower()
        task_id = f"{step.id}@{unit.key}" if unit.key else step.id
        if folded in seen:
            where = (*step.at, "output") if step.output is not None else step.at
            out.unit_failure(src, where, unit, f"output path {rel!r} is also written by {seen[folded]}",
                             hint="two tasks may not write one path (case-insensitively); "
                             "use {{ key }} and {{ index }} in output")
            continue
        seen[folded] = task_id
        paths.append(rel)
    return paths


def _bad_output(rel: str) -> str | None:
    if not rel:
        return "is empty"
    if "\\" in rel or "\x00" in rel:
        return "has a backslash or NUL"
    p = PurePosixPath(rel)
    if p.is_absolute():
        return "is absolute"
    if any(part in ("..", ".") for part in p.parts) or rel.endswith("/"):
        return "escapes output_dir or is not a file name"
    if p.parts[0] == ".dalle-pipe" or rel in RESERVED or p.parts[0] == ".thumbs":
        return "is reserved by dalle-pipe"
    return None
