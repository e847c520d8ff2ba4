"""Pipeline and recipe files -> schema check -> merged, frozen Recipe values.

Settings merge as command line > recipe > pipeline, except throttle: the
pipeline's limits are the account's and a recipe may only lower them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .catalog import MAX_UNITS
from .errors import Problem
from .yamlload import (
    MAX_FILE_BYTES,
    Document,
    PathKey,
    decode_text,
    format_path,
    load_file,
    load_text,
    read_bounded,
)

PIPELINE_FILE = "pipeline.yaml"
STEP_KINDS = ("generate", "edit", "variation", "mask", "markup", "resize", "pad", "crop", "convert", "composite")
API_KINDS = ("generate", "edit", "variation")
DEFAULT_MODEL = "gpt-image-2"
RATE_KEYS = ("images_per_minute", "requests_per_minute", "concurrency")


@dataclass(frozen=True)
class Overrides:
    """What the command line sets: it wins over every file."""

    provider: str | None = None  # "offline", "openai", "azure"
    base_url: str | None = None
    vars: Mapping[str, str] = field(default_factory=dict)
    output_dir: Path | None = None
    several: bool = False  # --output-dir DIR with several recipes writes DIR/<name>
    max_units: int = MAX_UNITS  # --max-units: the ceiling on units per recipe


@dataclass(frozen=True)
class ProviderConfig:
    name: str = "openai"  # openai | offline | azure
    api: str = "images"  # images | responses
    model: str | None = None  # the Responses API's mainline model
    deployment: str | None = None
    api_version: str | None = None


@dataclass(frozen=True)
class Source:
    """A loaded file: its path, how messages name it, and where each of its nodes is."""

    path: Path
    file: str
    doc: Document
    sha256: str = ""

    def at(self, path: PathKey, *, at_key: bool = False) -> tuple[str, int, int]:
        line, col = self.doc.positions.of(path, at_key=at_key)
        return self.file, line, col

    def at_line(self, path: PathKey, line: int | None) -> tuple[str, int, int]:
        """Where line `line` of the template at `path` is (its start when that cannot be known)."""
        return (self.file, *self.doc.positions.of_line(path, line))

    def problem(self, path: PathKey, message: str, hint: str | None = None, *,
                at_key: bool = False, severity: str = "error") -> Problem:
        return Problem(*self.at(path, at_key=at_key), format_path(path), message, hint,
                       "warning" if severity == "warning" else "error")


@dataclass(frozen=True)
class Pipeline:
    source: Source
    root: Path
    recipes: tuple[Path, ...]
    data: Mapping[str, Any]
    broken: frozenset[str] = frozenset()  # keys that failed the schema (left out of `data`)


@dataclass(frozen=True)
class Step:
    index: int
    id: str
    kind: str
    body: Mapping[str, Any]
    output: str | None
    when: str | None
    checks: tuple[Mapping[str, Any], ...] = ()  # as written; typed and validated by config/checks.py
    on_fail: Mapping[str, Any] | None = None
    broken: bool = False  # it failed the schema: only its id is known (its problems are said already)

    @property
    def at(self) -> PathKey:
        return ("steps", self.index)

    @property
    def body_path(self) -> PathKey:
        return ("steps", self.index, self.kind)


@dataclass(frozen=True)
class Recipe:
    source: Source
    root: Path
    name: str
    sha256: str
    provider: ProviderConfig
    model: str
    params: Mapping[str, Any]  # pipeline < recipe
    throttle: Mapping[str, Any]  # merged, rates lowered only
    vars: Mapping[str, Any]  # pipeline < recipe < command line
    catalog: Mapping[str, Any] | None
    items: tuple[Any, ...] | None
    matrix: Mapping[str, tuple[Any, ...]]
    output_dir: Path
    steps: tuple[Step, ...]
    pipeline: Pipeline | None
    base_url: str | None
    throttle_stated: bool
    ask_model: str | None = None  # the default model of `ask` checks (recipe > pipeline; no hidden default)
    # Top-level keys whose values failed the schema ("" for the document itself). A recipe with a
    # broken part is checked everywhere else, so that every problem shows in one pass, but never planned.
    broken: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        return not self.broken and not any(s.broken for s in self.steps)
    max_units: int = MAX_UNITS

    @property
    def dir(self) -> Path:
        return self.source.path.parent

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def where_param(self, step: Step, key: str) -> tuple[Source, PathKey]:
        """Where a merged setting came from: the step body, the recipe, or the pipeline."""
        if key in step.body:
            return self.source, (*step.body_path, key)
        top = "model" if key == "model" else "params"
        rdata = self.source.doc.data
        if top == "model" and "model" in rdata:
            return self.source, ("model",)
        if top == "params" and key in (rdata.get("params") or {}):
            return self.source, ("params", key)
        if self.pipeline is not None:
            pdata = self.pipeline.data
            if top == "model" and "model" in pdata:
                return self.pipeline.source, ("model",)
            if top == "params" and key in (pdata.get("params") or {}):
                return self.pipeline.source, ("params", key)
        return self.source, step.body_path


def display_path(path: Path) -> str:
    """How messages name a file: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def project_root(recipe_path: Path) -> Path:
    """The nearest folder upward from the recipe holding pipeline.yaml; else the recipe's folder."""
    start = recipe_path.resolve().parent
    for folder in (start, *start.parents):
        if is_file(folder / PIPELINE_FILE):
            return folder
    return start


def locate(root: Path, base: Path, rel: str) -> tuple[Path | None, str | None]:
    """`rel` resolved from `base`, symlinks followed, and kept inside `root`: (path, None) or (None, why)."""
    if not isinstance(rel, str) or not rel.strip():
        return None, "is empty"
    if "\x00" in rel:
        return None, "contains a NUL character"
    try:
        top = root.resolve()
        lexical = Path(os.path.normpath(base.resolve() / rel))
        target = lexical.resolve()
    except (OSError, ValueError, RuntimeError):
        return None, "is not a valid path"
    if not _inside(target, top):
        if _inside(lexical, top):
            return None, "leads outside the project through a symlink"
        return None, "is outside the project"
    return target, None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def quoted(text: object, limit: int = 80) -> str:
    """A value quoted for a message, shortened when long."""
    value = str(text)
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def is_file(path: Path) -> bool:
    """Path.is_file that never raises (names too long, odd characters)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    """Path.exists that never raises."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _load_source(path: Path, problems: list[Problem]) -> Source | None:
    file = display_path(path)
    raw, found = read_bounded(path, file, MAX_FILE_BYTES)
    text, more = decode_text(raw, file) if raw is not None else (None, [])
    problems.extend([*found, *more])
    if raw is None or text is None:
        return None
    doc, found = load_text(text, file)
    problems.extend(found)
    if doc is None:
        return None
    return Source(path, file, doc, hashlib.sha256(raw).hexdigest())


def _schema_problems(kind: str, src: Source) -> tuple[list[Problem], list[PathKey]]:
    """The schema's problems to show (some are said already), and the path of every one."""
    out = []
    broken = src.doc.broken
    issues = schema.check(kind, src.doc.data)  # type: ignore[arg-type]
    for issue in issues:
        if any(issue.path[:len(b)] == b for b in broken):
            continue  # a value the YAML loader refused (a tag, a recursive alias): said once already
        out.append(src.problem(issue.path, issue.message, issue.hint, at_key=issue.at_key))
    return out, [issue.path for issue in issues]


def _broken_parts(paths: list[PathKey]) -> tuple[set[str], set[int]]:
    """The top-level keys and the steps that the schema's problems are in."""
    top: set[str] = set()
    steps: set[int] = set()
    for path in paths:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
            steps.add(path[1])
        else:
            top.add(str(path[0]) if path else "")
    return top, steps


def is_pipeline_data(data: Any) -> bool:
    return isinstance(data, dict) and "recipes" in data and "steps" not in data


def load_pipeline(path: Path, problems: list[Problem]) -> Pipeline | None:
    src = _load_source(path, problems)
    if src is None:
        return None
    found, failed = _schema_problems("pipeline", src)
    problems.extend(found)
    broken, _ = _broken_parts(failed)
    if not isinstance(src.doc.data, dict) or "recipes" in broken or "recipes" not in src.doc.data:
        return None
    # The recipes are still checked; what they would inherit from a broken key is not.
    data = {k: v for k, v in src.doc.data.items() if k not in broken}
    root = path.resolve().parent
    recipes: list[Path] = []
    for i, rel in enumerate(data.get("recipes", [])):
        target, why = locate(root, root, rel)
        if target is None:
            problems.append(src.problem(("recipes", i), f"recipe path {quoted(rel)} {why}",
                                        "paths must stay inside the folder of pipeline.yaml"))
        elif not is_file(target):
            problems.append(src.problem(("recipes", i), f"recipe {quoted(rel)} does not exist"))
        elif target in recipes:
            problems.append(src.problem(("recipes", i), f"recipe {quoted(rel)} is listed twice"))
        else:
            recipes.append(target)
    return Pipeline(src, root, tuple(recipes), data, frozenset(broken))


def _provider(value: Any) -> ProviderConfig:
    if value is None:
        return ProviderConfig()
    if isinstance(value, str):
        return ProviderConfig(name=value)
    return ProviderConfig(
        name=value.get("name", "openai"), api=value.get("api", "images"), model=value.get("model"),
        deployment=value.get("deployment"), api_version=value.get("api_version"),
    )


def merge_throttle(pipeline: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Rates and concurrency: the lower of the two; retries and timeout: the recipe wins."""
    out = dict(pipeline)
    for key, value in recipe.items():
        if key in RATE_KEYS and key in out:
            out[key] = min(out[key], value)
        else:
            out[key] = value
    return out


def load_recipe(
    path: Path, overrides: Overrides, problems: list[Problem], pipeline: Pipeline | None = None,
) -> Recipe | None:
    """Load one recipe; inherits from the pipeline at its project root when that file lists it."""
    src = _load_source(path, problems)
    if src is None:
        return None
    found, failed = _schema_problems("recipe", src)
    problems.extend(found)
    data = src.doc.data
    if not isinstance(data, dict):
        return None
    broken, broken_steps = _broken_parts(failed)
    if broken or broken_steps:
        # Check the parts that passed the schema as if the broken ones were not there.
        data = {k: v for k, v in data.items() if k not in broken}
    root = pipeline.root if pipeline else project_root(path)
    if pipeline is None and is_file(root / PIPELINE_FILE):
        # Inherit from the project's pipeline.yaml when it lists this recipe. Its own problems
        # matter only then, or when it is too broken to tell.
        found_here: list[Problem] = []
        candidate = load_pipeline(root / PIPELINE_FILE, found_here)
        if candidate is None or path.resolve() in candidate.recipes:
            problems.extend(found_here)
        if candidate is not None and path.resolve() in candidate.recipes:
            pipeline = candidate
    pdata: Mapping[str, Any] = pipeline.data if pipeline else {}
    if pipeline is not None and pipeline.broken:
        # What this recipe would have inherited from a broken pipeline key is unknown: not checked.
        inherited = {k: k for k in ("params", "throttle", "vars")} | {"output_root": "output_dir"}
        own = {"model": "model", "provider": "provider"}
        broken |= {inherited[k] for k in pipeline.broken if k in inherited}
        broken |= {own[k] for k in pipeline.broken if k in own and k not in data}
        broken.add("pipeline")  # never planned

    provider = _provider(data.get("provider", pdata.get("provider")))
    if overrides.provider:
        # --offline keeps the route: offline mirrors the Responses route's shape (revised prompts)
        keep_route = overrides.provider in (provider.name, "offline")
        provider = ProviderConfig(name=overrides.provider, api=provider.api if keep_route else "images",
                                  model=provider.model,
                                  deployment=provider.deployment, api_version=provider.api_version)
    variables = {**(pdata.get("vars") or {}), **(data.get("vars") or {}), **overrides.vars}
    throttle = merge_throttle(pdata.get("throttle") or {}, data.get("throttle") or {})
    for key in RATE_KEYS:
        mine, account = (data.get("throttle") or {}).get(key), (pdata.get("throttle") or {}).get(key)
        if mine is not None and account is not None and mine > account and pipeline is not None:
            problems.append(src.problem(("throttle", key), f"{key} {mine} is above the pipeline's {account}; "
                                        f"{account} applies", "the pipeline's limits are the account's: a "
                                        "recipe may only lower them", severity="warning"))
    stated = any(k in throttle for k in ("images_per_minute", "requests_per_minute"))

    steps = []
    for i, raw in enumerate(data.get("steps") or []):
        if i in broken_steps:
            step_id = raw.get("id") if isinstance(raw, dict) else None
            steps.append(Step(i, step_id if isinstance(step_id, str) else "", "", {}, None, None, broken=True))
            continue
        kind = next(k for k in STEP_KINDS if k in raw)
        steps.append(Step(i, raw["id"], kind, raw[kind] or {}, raw.get("output"), raw.get("when"),
                          tuple(raw.get("checks") or ()), raw.get("on_fail")))
    _check_step_ids(src, steps, problems)

    name = str(data.get("name") or path.stem)
    output_dir = _output_dir(src, {**data, "name": name}, pipeline, root, overrides, problems)
    base_url = overrides.base_url or os.environ.get("OPENAI_BASE_URL") or None
    return Recipe(
        source=src, root=root, name=name, sha256=src.sha256,
        provider=provider, model=data.get("model") or pdata.get("model") or DEFAULT_MODEL,
        params={**(pdata.get("params") or {}), **(data.get("params") or {})},
        throttle=throttle, vars=variables, catalog=data.get("catalog"),
        items=tuple(data["items"]) if "items" in data else None,
        matrix={k: tuple(v) for k, v in (data.get("matrix") or {}).items()},
        output_dir=output_dir or root / "out" / name, steps=tuple(steps), pipeline=pipeline,
        base_url=base_url, throttle_stated=stated, ask_model=data.get("ask_model") or pdata.get("ask_model"),
        broken=frozenset(broken), max_units=overrides.max_units,
    )


def _check_step_ids(src: Source, steps: list[Step], problems: list[Problem]) -> None:
    seen: dict[str, Step] = {}
    for step in steps:
        if not step.id:
            continue
        if step.id in seen:
            problems.append(src.problem((*step.at, "id"), f"duplicate step id {step.id!r}",
                                        f"steps[{seen[step.id].index}] has it too"))
        seen.setdefault(step.id, step)


def _output_dir(src: Source, data: Mapping[str, Any], pipeline: Pipeline | None, root: Path,
                overrides: Overrides, problems: list[Problem]) -> Path | None:
    if overrides.output_dir is not None:
        base = overrides.output_dir.resolve()
        return base / data["name"] if overrides.several else base
    if "output_dir" in data:
        target, why = locate(root, src.path.parent, data["output_dir"])
        if target is None:
            problems.append(src.problem(("output_dir",), f"output_dir {quoted(data['output_dir'])} {why}",
                                        "use a path inside the project, or --output-dir"))
        elif target == root.resolve():
            problems.append(src.problem(("output_dir",), "output_dir is the project folder itself",
                                        "use a folder of its own, e.g. out/" + data["name"]))
        return target
    if pipeline is not None and "output_root" in pipeline.data:
        target, why = locate(root, root, pipeline.data["output_root"])
        if target is None:
            problems.append(pipeline.source.problem(("output_root",), f"output_root "
                                                    f"{quoted(pipeline.data['output_root'])} {why}",
                                                    "use a path inside the project, or --output-dir"))
            return None
        base, shown = target, f"{pipeline.data['output_root']}/out/{data['name']}"
    else:
        base, shown = root, f"out/{data['name']}"
    # The default folder is held to the rule an explicit output_dir is: a symlink on the way
    # (out/ -> /elsewhere) may not take the outputs out of the project.
    default, why = locate(root, base, f"out/{data['name']}")
    if default is None:
        problems.append(src.problem(("name",), f"the default output folder {quoted(shown)} {why}",
                                    "set output_dir to a folder inside the project, or use --output-dir"))
        return None
    return default


def suggest(word: str, choices: list[str]) -> str | None:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


@dataclass(frozen=True)
class Project:
    """Every recipe a command works on, in order."""

    recipes: tuple[Recipe, ...]
    pipeline: Pipeline | None


def load_targets(targets: list[Path], overrides: Overrides) -> tuple[Project, list[Problem]]:
    """Load the command's targets (recipes or pipeline files; none means ./pipeline.yaml)."""
    problems: list[Problem] = []
    defaulted = not targets
    if not targets:
        targets = [Path(PIPELINE_FILE)]
    recipes: list[Recipe] = []
    pipeline: Pipeline | None = None
    paths: list[tuple[Path, Pipeline | None]] = []
    for target in targets:
        if _is_dir(target):
            target = target / PIPELINE_FILE
        if not is_file(target):
            problems.append(Problem(display_path(target), 1, 1, "", "no such file",
                                    "name a recipe or a pipeline.yaml" if defaulted else None))
            continue
        if target.name == PIPELINE_FILE or _looks_like_pipeline(target):
            pipeline = load_pipeline(target, problems)
            if pipeline is not None:
                paths.extend((p, pipeline) for p in pipeline.recipes)
        else:
            paths.append((target, None))
    unique: dict[Path, tuple[Path, Pipeline | None]] = {}
    for path, pipe in paths:
        unique.setdefault(path.resolve(), (path, pipe))
    paths = list(unique.values())
    several = len(paths) > 1
    ov = dataclasses.replace(overrides, several=several)
    names: dict[str, Recipe] = {}
    for path, pipe in paths:
        recipe = load_recipe(path, ov, problems, pipe)
        if recipe is None:
            continue
        if recipe.name in names:
            problems.append(recipe.source.problem(("name",), f"recipe name {recipe.name!r} is used twice",
                                                  f"also in {names[recipe.name].source.file}"))
            continue
        names[recipe.name] = recipe
        recipes.append(recipe)
    problems.extend(nested_output_dirs(recipes))
    return Project(tuple(recipes), pipeline), list(dict.fromkeys(problems))


def nested_output_dirs(recipes: list[Recipe]) -> list[Problem]:
    """Two recipes whose output folders nest: each would take the other's files for its own
    (clean, reports, manifests)."""
    out: list[Problem] = []
    for i, later in enumerate(recipes):
        for earlier in recipes[:i]:
            a, b = earlier.output_dir, later.output_dir
            if a in b.parents or b in a.parents:  # the same folder twice: app.load says so
                how = "is inside the output folder of" if a in b.parents else "holds the output folder of"
                path = ("output_dir",) if "output_dir" in later.source.doc.data else ("name",)
                out.append(later.source.problem(path, f"output folder {quoted(display_path(b))} {how} recipe "
                                                f"{earlier.name!r}", "give every recipe a folder of its own"))
                break
    return out


def output_dir_problem(recipe: Recipe) -> Problem | None:
    """A clear problem when the recipe's output folder cannot be written: read-only, or missing
    under something that is not a writable folder. Checks only; creates nothing."""
    folder = recipe.output_dir
    path = ("output_dir",) if "output_dir" in recipe.source.doc.data else ("name",)
    probe = folder
    while not os.path.exists(probe):  # a dangling symlink: its confinement is checked elsewhere
        if probe.parent == probe:
            break
        probe = probe.parent
    shown = quoted(display_path(folder))
    if not _is_dir(probe):
        return recipe.source.problem(path, f"output folder {shown} cannot be made: "
                                     f"{quoted(display_path(probe))} is not a folder",
                                     "use --output-dir, or set output_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is read-only" if probe == folder else f"cannot be made: {quoted(display_path(probe))} is read-only"
        return recipe.source.problem(path, f"output folder {shown} {what}",
                                     "make it writable, or use --output-dir to write elsewhere")
    return None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _looks_like_pipeline(path: Path) -> bool:
    doc, _ = load_file(path, str(path))
    return doc is not None and is_pipeline_data(doc.data)
