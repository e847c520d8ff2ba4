"""A step's `checks:` and `on_fail:` -> typed check specs, validated; rendered per unit.

Pure: it reads only the headers of the image files a check names. What does not
depend on the unit (kinds, names, references between steps, fractions, the ask
model, template syntax) is checked once per step by `read_checks`; templates
(a question, a reference path) are rendered per unit by `StepChecks.plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .. import models
from ..errors import Problem
from ..imaging.io import ImageInputError, probe
from ..recipe import API_KINDS, Recipe, Source, Step, exists, locate, quoted, suggest
from ..templating import GLOBALS, Compiled, RenderError, compile_template, did_you_mean, render
from ..yamlload import PathKey, format_path

CheckKind = Literal["size", "format", "transparent", "unchanged", "similar", "ask"]
Severity = Literal["error", "warn"]
KINDS: tuple[CheckKind, ...] = ("size", "format", "transparent", "unchanged", "similar", "ask")
ASK_ONLY = ("with", "model")
CONTEXT_NAMES = frozenset({"item", "key", "matrix", "vars", "recipe", "step", "steps"})  # as in prompts
CONFINED_HINT = ("paths are relative to the recipe and must stay inside the project root: "
                 "the nearest folder above with a pipeline.yaml, else the recipe's folder")

# Models an `ask` may name, and whether they see images (the Responses API's input_image).
# Kept here, beside the only code that reads it, rather than in the image-model table.
ASK_MODELS: Mapping[str, bool] = {
    "gpt-5.5": True, "gpt-5.5-mini": True, "gpt-5.2": True, "gpt-5.1": True,
    "gpt-5": True, "gpt-5-mini": True, "gpt-5-nano": True,
    "gpt-4.1": True, "gpt-4.1-mini": True, "gpt-4.1-nano": True, "gpt-4o": True, "gpt-4o-mini": True,
    "o3": True, "o4-mini": True, "o1": True,
    "o3-mini": False, "o1-mini": False, "gpt-3.5-turbo": False,
}
VISION_EXAMPLE = "gpt-5.5"

Fail = Callable[[tuple[str, int, int], PathKey, str, str | None], None]  # (at, path, message, hint)


@dataclass(frozen=True)
class ImageSpec:
    """An image a check names: an earlier step's output (`step`, `index`) or a path (a template)."""

    at: PathKey
    step: str | None = None
    index: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class CheckSpec:
    """One check as the recipe writes it; `kind` says which of the optional fields are set."""

    name: str
    kind: CheckKind
    severity: Severity
    at: PathKey  # ("steps", i, "checks", j)
    size: tuple[int, int] | None = None  # size
    format: str | None = None  # format: png | jpeg | webp
    min: float | None = None  # transparent, unchanged, similar
    max: float | None = None  # transparent
    source: ImageSpec | None = None  # unchanged.from, similar.to
    region: ImageSpec | None = None  # unchanged.outside (a mask; its opaque pixels are kept)
    question: str | None = None  # ask (a template)
    refs: tuple[ImageSpec, ...] = ()  # ask: with
    model: str | None = None  # ask: the check's model, else the recipe's ask_model

    @property
    def paid(self) -> bool:
        return self.kind == "ask"


@dataclass(frozen=True)
class CheckImage:
    """A check's image for one unit: an earlier step's output, or a file inside the project."""

    role: Literal["from", "outside", "to", "with"]
    step: str | None = None
    index: int = 0
    path: Path | None = None


@dataclass(frozen=True)
class PlannedCheck:
    """A check of one task: its spec, its rendered question and its resolved images."""

    spec: CheckSpec
    question: str | None = None
    images: tuple[CheckImage, ...] = ()

    def image(self, role: str) -> CheckImage | None:
        return next((i for i in self.images if i.role == role), None)

    @property
    def references(self) -> tuple[CheckImage, ...]:
        return tuple(i for i in self.images if i.role == "with")


@dataclass(frozen=True)
class _Template:
    compiled: Compiled | None  # None: it failed to compile or uses a name that never exists
    path: PathKey
    at: Callable[[int | None], tuple[str, int, int]]


@dataclass
class StepChecks:
    """The checks of one step and its retry budget; `plan` renders them for a unit."""

    step: Step
    specs: tuple[CheckSpec, ...] = ()
    retry: int = 0
    templates: dict[PathKey, _Template] = field(default_factory=dict)  # by the check's key
    _files: dict[str, tuple[Path | None, str, str | None]] = field(default_factory=dict)

    @property
    def tries(self) -> int:
        """The worst case: the first try and every retry."""
        return 1 + self.retry

    def plan(self, ctx: Mapping[str, Any], root: Path, base: Path, fail: Fail) -> tuple[PlannedCheck, ...]:
        """The checks of one unit: questions rendered, image paths rendered and found."""
        out: list[PlannedCheck] = []
        for spec in self.specs:
            question = self._render((*spec.at, "ask"), ctx, fail) if spec.kind == "ask" else None
            if question == "":
                tpl = self.templates[(*spec.at, "ask")]
                fail(tpl.at(None), tpl.path, "the question renders empty", "a judgement needs a question")
                question = None
            images: list[CheckImage] = []
            roles: list[tuple[Literal["from", "outside", "to", "with"], ImageSpec | None]] = [
                ("to" if spec.kind == "similar" else "from", spec.source), ("outside", spec.region),
                *(("with", r) for r in spec.refs)]
            whole = True
            for role, ref in roles:
                if ref is None:
                    continue
                if ref.step is not None:
                    images.append(CheckImage(role, step=ref.step, index=ref.index or 0))
                    continue
                found = self._file(ref, ctx, root, base, fail)
                if found is None:
                    whole = False
                else:
                    images.append(CheckImage(role, path=found))
            if whole and (spec.kind != "ask" or question is not None):
                out.append(PlannedCheck(spec, question, tuple(images)))
        return tuple(out)

    def _render(self, path: PathKey, ctx: Mapping[str, Any], fail: Fail) -> str | None:
        tpl = self.templates.get(path)
        if tpl is None or tpl.compiled is None:
            return None
        try:
            return render(tpl.compiled, ctx).strip()
        except RenderError as exc:
            fail(tpl.at(exc.line), tpl.path, exc.message, exc.hint)
            return None

    def _file(self, ref: ImageSpec, ctx: Mapping[str, Any], root: Path, base: Path, fail: Fail) -> Path | None:
        rel = self._render(ref.at, ctx, fail)
        if rel is None:
            return None
        tpl = self.templates[ref.at]
        if rel not in self._files:
            self._files[rel] = _find(root, base, rel)
        target, message, hint = self._files[rel]
        if target is None:
            fail(tpl.at(None), ref.at, message, hint)
        return target


def _find(root: Path, base: Path, rel: str) -> tuple[Path | None, str, str | None]:
    """A check's image file: (path, "", None), or (None, message, hint) saying why it cannot be used."""
    target, why = locate(root, base, rel)
    if target is None:
        return None, f"image {quoted(rel)} {why}", CONFINED_HINT
    if not exists(target):
        return None, f"image {quoted(rel)} does not exist", None
    try:
        probe(target)
    except ImageInputError as exc:
        return None, f"image {quoted(rel)}: {exc.reason}", exc.hint
    except (OSError, ValueError) as exc:
        return None, f"image {quoted(rel)}: cannot read it ({exc})", None
    return target, "", None


Known = Mapping[str, tuple[str, tuple[int, int] | None]]  # step id -> (format, size) its images surely have


def read_checks(recipe: Recipe, n_of: Mapping[str, int], known: Known | None = None
                ) -> tuple[list[StepChecks], list[Problem]]:
    """Every step's checks, typed and validated once (not per unit). `n_of`: images per step id;
    `known`: the format and size of a step's images when the request fixes them (a size or format
    check that can never pass is an error: every try would be paid for nothing)."""
    out: list[Problem] = []
    result = [_read_step(recipe, step, n_of, out) for step in recipe.steps]
    for found in result:
        fixed = (known or {}).get(found.step.id)
        if fixed is not None:
            _always_failing(recipe, found, fixed, out)
    return result, out


def _always_failing(recipe: Recipe, found: StepChecks, fixed: tuple[str, tuple[int, int] | None],
                    out: list[Problem]) -> None:
    fmt, size = fixed
    for spec in found.specs:
        if spec.kind == "size" and spec.size is not None and size is not None and spec.size != size:
            out.append(recipe.source.problem((*spec.at, "size"), f"this step makes {size[0]}x{size[1]} images, "
                                             f"so the check always fails", "check the size the step asks for"))
        if spec.kind == "format" and spec.format is not None and spec.format != fmt:
            out.append(recipe.source.problem((*spec.at, "format"), f"this step makes {fmt} images, so the check "
                                             "always fails", "check the step's output_format"))


def _read_step(recipe: Recipe, step: Step, n_of: Mapping[str, int], out: list[Problem]) -> StepChecks:
    src = recipe.source
    raw = step.checks
    found = StepChecks(step)
    if step.on_fail is not None:
        found.retry = int(step.on_fail.get("retry", 0))
        where = (*step.at, "on_fail")
        if not raw:
            out.append(src.problem(where, "on_fail without checks: nothing can fail",
                                   "add checks: to this step, or remove on_fail", at_key=True))
        elif step.kind not in API_KINDS and found.retry > 0:
            out.append(src.problem(where, f"retrying a {step.kind} step makes the same image again",
                                   "on_fail retries generate, edit and variation steps", at_key=True))
        elif found.retry > 0 and all(c.get("severity", "error") == "warn" for c in raw):
            out.append(src.problem(where, "every check is severity warn, so on_fail never retries",
                                   at_key=True, severity="warning"))
    kinds = [next((k for k in KINDS if k in c), None) for c in raw]
    names: dict[str, PathKey] = {}
    specs: list[CheckSpec] = []
    for j, (body, kind) in enumerate(zip(raw, kinds, strict=True)):
        if kind is None:
            continue  # the schema said it
        at: PathKey = (*step.at, "checks", j)
        same = [i for i, k in enumerate(kinds) if k == kind]
        name = str(body.get("name") or (kind if len(same) == 1 else f"{kind}-{same.index(j) + 1}"))
        if name in names:
            out.append(src.problem((*at, "name") if "name" in body else at,
                                   f"check name {name!r} is used twice in this step",
                                   f"{format_path(names[name])} has it too; name one differently"))
        names.setdefault(name, at)
        spec = _spec(recipe, step, body, kind, name, at, n_of, found, out)
        if spec is not None:
            specs.append(spec)
    found.specs = tuple(specs)
    return found


def _spec(recipe: Recipe, step: Step, body: Mapping[str, Any], kind: CheckKind, name: str, at: PathKey,
          n_of: Mapping[str, int], found: StepChecks, out: list[Problem]) -> CheckSpec | None:
    src = recipe.source
    severity: Severity = "warn" if body.get("severity") == "warn" else "error"
    value = body[kind]
    if kind != "ask":
        for key in ASK_ONLY:
            if key in body:
                out.append(src.problem((*at, key), f"'{key}' is only for ask checks",
                                       f"this is a {kind} check", at_key=True))
    spec = CheckSpec(name, kind, severity, at)
    here = (*at, kind)
    if kind == "size":
        size = models.parse_size(value)
        if size is None or 0 in size:
            out.append(src.problem(here, f"size {quoted(value)} has a zero side", "use WxH, e.g. 1024x1024"))
            return None
        return replace(spec, size=size)
    if kind == "format":
        return replace(spec, format=models.FORMAT_ALIASES.get(str(value), str(value)))
    if kind == "transparent":
        low, high = value.get("min"), value.get("max")
        if low is not None and high is not None and low > high:
            out.append(src.problem((*here, "min"), f"min {low} is above max {high}",
                                   "the fraction must be at least min and at most max"))
            return None
        return replace(spec, min=low, max=high)
    if kind in ("unchanged", "similar"):
        key = "from" if kind == "unchanged" else "to"
        source = _image(recipe, step, found, (*here, key), value[key], n_of, out)
        region = _image(recipe, step, found, (*here, "outside"), value["outside"], n_of, out) \
            if "outside" in value else None
        if source is None or ("outside" in value and region is None):
            return None
        return replace(spec, min=float(value["min"]), source=source, region=region)
    return _ask(recipe, step, body, spec, n_of, found, out)


def _ask(recipe: Recipe, step: Step, body: Mapping[str, Any], spec: CheckSpec, n_of: Mapping[str, int],
         found: StepChecks, out: list[Problem]) -> CheckSpec | None:
    src = recipe.source
    at = spec.at
    value = body["ask"]
    inner: Mapping[str, Any] = value if isinstance(value, dict) else {}
    question_at: PathKey = (*at, "ask", "question") if inner else (*at, "ask")
    question = str(inner.get("question", value))
    for key in ASK_ONLY:
        if key in inner and key in body:
            out.append(src.problem((*at, key), f"'{key}' is given twice: beside ask and inside it",
                                   "keep one", at_key=True))
    model_at: PathKey = (*at, "ask", "model") if "model" in inner else (*at, "model")
    model = inner.get("model", body.get("model"))
    with_at: PathKey = (*at, "ask", "with") if "with" in inner else (*at, "with")
    refs_raw = inner.get("with", body.get("with")) or []
    ok = _template(recipe, step, found, (*at, "ask"), question_at, question, out)
    refs = [_image(recipe, step, found, (*with_at, i), r, n_of, out) for i, r in enumerate(refs_raw)]
    where: tuple[Source, PathKey] = (src, model_at)
    if model is None:
        model = recipe.ask_model
        where = _ask_model_source(recipe)
    if model is None:
        out.append(src.problem((*at, "ask"), "an ask check needs a model; there is no default",
                               f"set model: on the check, or ask_model: at the top of the recipe, "
                               f"naming a vision model such as {VISION_EXAMPLE}"))
        return None
    if not _vision_ok(recipe, str(model), where, out) or not ok or any(r is None for r in refs):
        return None
    return replace(spec, question=question, refs=tuple(r for r in refs if r is not None), model=str(model))


def _ask_model_source(recipe: Recipe) -> tuple[Source, PathKey]:
    if "ask_model" in recipe.source.doc.data or recipe.pipeline is None:
        return recipe.source, ("ask_model",)
    return recipe.pipeline.source, ("ask_model",)


def _vision_ok(recipe: Recipe, model: str, where: tuple[Source, PathKey], out: list[Problem]) -> bool:
    src, path = where
    vision = sorted(m for m, sees in ASK_MODELS.items() if sees)
    if models.get_model(model) is not None:
        out.append(src.problem(path, f"{model} is an image model; ask needs a vision model that answers in text",
                               f"use a model such as {VISION_EXAMPLE}"))
        return False
    sees = ASK_MODELS.get(model)
    if sees is False:
        out.append(src.problem(path, f"{model} cannot see images", f"use a vision model such as {VISION_EXAMPLE}"))
        return False
    if sees is None:
        official = recipe.provider.name != "azure" and models.is_official_endpoint(recipe.base_url)
        close = suggest(model, vision)
        hint = close or f"known vision models: {', '.join(vision)}"
        if official:
            out.append(src.problem(path, f"unknown model {model!r} for ask", hint))
            return False
        out.append(src.problem(path, f"model {model!r} is not in the table: cannot tell whether it sees images",
                               hint, severity="warning"))
    return True


def _image(recipe: Recipe, step: Step, found: StepChecks, path: PathKey, value: Any,
           n_of: Mapping[str, int], out: list[Problem]) -> ImageSpec | None:
    """`{step: ID}` (an earlier step, index in range) or a path template."""
    src = recipe.source
    if isinstance(value, str):
        ok = _template(recipe, step, found, path, path, value, out)
        return ImageSpec(path, path=value) if ok else None
    ref, index = value.get("step"), value.get("index")
    ids = [s.id for s in recipe.steps]
    target = recipe.step(ref) if isinstance(ref, str) else None
    if target is None:
        out.append(src.problem((*path, "step"), f"no earlier step {ref!r}", suggest(str(ref), ids[:step.index])))
        return None
    if target.index >= step.index:
        out.append(src.problem((*path, "step"), f"step {ref!r} comes later" if target.index > step.index
                               else f"step {ref!r} is the step being checked",
                               "a check compares with the outputs of earlier steps"))
        return None
    n = n_of.get(str(ref), 1)
    if index is None and n > 1:
        out.append(src.problem(path, f"step {ref!r} makes {n} images", f"add index: 0..{n - 1}"))
        return None
    if index is not None and not 0 <= index < n:
        out.append(src.problem((*path, "index"), f"index {index} is out of range; step {ref!r} makes "
                               f"{n} image{'s' if n > 1 else ''}", f"use 0..{n - 1}"))
        return None
    return ImageSpec(path, step=str(ref), index=index)


def _template(recipe: Recipe, step: Step, found: StepChecks, key: PathKey, path: PathKey, text: str,
              out: list[Problem]) -> bool:
    """Compile a check's template (stored under `key`) and check the names it uses."""
    src = recipe.source

    def at(line: int | None) -> tuple[str, int, int]:
        return src.at_line(path, line)

    try:
        compiled = compile_template(text)
    except RenderError as exc:
        out.append(Problem(*at(exc.line), format_path(path), exc.message, exc.hint))
        found.templates[key] = _Template(None, path, at)
        return False
    problems: list[Problem] = []
    for name in sorted(compiled.names - CONTEXT_NAMES - GLOBALS):
        problems.append(Problem(*at(None), format_path(path), f"undefined variable {name!r}",
                                did_you_mean(name, sorted(CONTEXT_NAMES))))
    earlier = [s.id for s in recipe.steps[:step.index]]
    for attr, line in compiled.attributes("steps"):
        if attr not in earlier:
            hint = "a check's template sees the earlier steps, not its own" if attr == step.id else \
                (did_you_mean(attr, earlier) or "no earlier step has this id")
            problems.append(Problem(*at(line), format_path(path), f"undefined variable 'steps.{attr}'", hint))
    for attr, line in compiled.attributes("matrix"):
        if attr not in recipe.matrix:
            problems.append(Problem(*at(line), format_path(path), f"undefined variable 'matrix.{attr}'",
                                    did_you_mean(attr, list(recipe.matrix)) or "the matrix has no such name"))
    out.extend(problems)
    found.templates[key] = _Template(None if problems else compiled, path, at)
    return not problems
