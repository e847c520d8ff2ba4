"""The JSON Schemas of recipes and pipelines, and a checker with short, human messages.

The schemas ship as package data (``dalle_pipe/data/*.schema.json``; ``schemas/`` holds
byte-identical copies for editors). Validation uses a local-only registry: no ``$ref`` is
ever fetched from the network.

jsonschema's raw errors for ``oneOf``/``anyOf`` are trees of every branch's failures; here
each one is resolved to the branch the document clearly meant (by the kind key present, or
by the value's type), so that each real problem becomes exactly one :class:`SchemaIssue`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SchemaIssue", "SchemaKind", "check", "load_schema", "registry", "schema_text"]

SchemaKind = Literal["recipe", "pipeline"]

_FILES: dict[str, str] = {"recipe": "recipe.schema.json", "pipeline": "pipeline.schema.json"}

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class SchemaIssue:
    """One problem the schema finds.

    `path` points at the node the problem is about (``("steps", 1, "edit", "mask")``). For
    an unknown key, or a key that conflicts with another, `path` ends with that key and
    `at_key` is true: report it at the key's position rather than its value's.
    """

    path: PathKey
    message: str
    hint: str | None = None
    at_key: bool = False


# --------------------------------------------------------------------------- loading


def _file(kind: str) -> str:
    try:
        return _FILES[kind]
    except KeyError:
        raise ValueError(f"unknown schema {kind!r} (expected 'recipe' or 'pipeline')") from None


@functools.cache
def schema_text(kind: SchemaKind) -> str:
    """The schema's JSON text, exactly as shipped (what ``dalle-pipe schema`` prints)."""
    return resources.files("dalle_pipe").joinpath("data", _file(kind)).read_text(encoding="utf-8")


@functools.cache
def _schema(kind: SchemaKind) -> dict[str, Any]:
    data = json.loads(schema_text(kind))
    if not isinstance(data, dict):  # pragma: no cover - the shipped files are objects
        raise ValueError(f"{_file(kind)} is not a JSON object")
    return data


def load_schema(kind: SchemaKind) -> dict[str, Any]:
    """The parsed schema (a fresh copy of the cached one: the caller may change it)."""
    return copy.deepcopy(_schema(kind))


def _refuse_remote(uri: str) -> Resource[Any]:
    raise LookupError(f"refusing to fetch {uri!r}: dalle-pipe only resolves its own schemas")


@functools.cache
def registry() -> Registry[Any]:
    """A registry holding just our two schemas; anything else is refused, never fetched."""
    pairs = []
    kinds: tuple[SchemaKind, ...] = ("recipe", "pipeline")
    for kind in kinds:
        contents = _schema(kind)
        resource: Resource[Any] = Resource.from_contents(contents, default_specification=DRAFT202012)
        pairs.append((str(contents["$id"]), resource))
    # mypy does not see attrs' field alias `retrieve` (for the private `_retrieve`).
    reg: Registry[Any] = Registry(retrieve=_refuse_remote)  # type: ignore[call-arg]
    return reg.with_resources(pairs).crawl()


@functools.cache
def _validator(kind: SchemaKind) -> Any:
    return Draft202012Validator(_schema(kind), registry=registry())


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Raw:
    issue: SchemaIssue
    is_type: bool = False
    missing: tuple[str, ...] = ()  # keys any of which would satisfy a "missing" issue
    suggestion: str | None = None  # an unknown key's closest allowed key


def check(kind: SchemaKind, data: object) -> list[SchemaIssue]:
    """Every schema problem of `data` (a parsed recipe or pipeline), de-duplicated, sorted by path."""
    root = _schema(kind)
    raws: list[_Raw] = []
    for error in _validator(kind).iter_errors(data):
        raws.extend(_explain(error, root))
    return _finish(raws)


def _finish(raws: list[_Raw]) -> list[SchemaIssue]:
    typed = {r.issue.path for r in raws if r.is_type}
    suggested: dict[PathKey, set[str]] = {}
    for r in raws:
        if r.suggestion is not None:
            suggested.setdefault(r.issue.path[:-1], set()).add(r.suggestion)
    kept: list[SchemaIssue] = []
    for r in raws:
        path = r.issue.path
        if not r.is_type and not r.issue.at_key and path in typed:
            continue  # the value has the wrong type: that is the one problem to report
        if r.missing and suggested.get(path, set()) & set(r.missing):
            continue  # "unknown key 'promt' (did you mean 'prompt'?)" already says it
        kept.append(r.issue)
    unique = list(dict.fromkeys(kept))
    unique.sort(key=lambda i: (_path_sort_key(i.path), i.message, i.hint or ""))
    return unique


def _path_sort_key(path: PathKey) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in path)


def _explain(error: Any, root: dict[str, Any]) -> list[_Raw]:
    path: PathKey = tuple(error.absolute_path)
    validator = error.validator
    value = error.validator_value
    instance = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}

    if validator in ("oneOf", "anyOf"):
        return _explain_choice(error, path, root)
    if validator == "additionalProperties":
        return list(_unknown_keys(path, instance, schema, root))
    if validator == "required":
        return [
            _Raw(SchemaIssue(path, f"missing required key '{key}'"), missing=(key,))
            for key in value
            if isinstance(instance, dict) and key not in instance
        ]
    if validator == "type":
        types = [value] if isinstance(value, str) else list(value)
        return [_Raw(SchemaIssue(path, f"expected {_expected(types)}, got {_got(instance)}"), is_type=True)]
    if validator == "not" and isinstance(value, dict) and set(value) == {"required"}:
        if not isinstance(instance, dict):
            return []  # `required` holds vacuously for a non-mapping; its type error says it
        return [_conflict(path, list(value["required"]))]
    if validator == "enum":
        hint = _did_you_mean(instance, [str(v) for v in value]) if isinstance(instance, str) else None
        return [_issue(path, f"{_show(instance)} is not one of {', '.join(str(v) for v in value)}", hint)]
    if validator == "const":
        return [_issue(path, f"expected {_show(value)}, got {_show(instance)}")]
    if validator == "pattern":
        noun, hint = _PATTERNS.get(value, ("value", f"it must match {value}"))
        if "propertyNames" in error.schema_path:  # the key itself is wrong
            return [_issue((*path, instance), f"'{instance}' is not a valid {noun}", hint, at_key=True)]
        return [_issue(path, f"{_show(instance)} is not a valid {noun}", hint)]
    if validator in _BOUNDS:
        return [_issue(path, f"must be {_BOUNDS[validator]} {_num(value)}, got {_show(instance)}")]
    if validator in ("minItems", "maxItems"):
        return [_explain_count(path, validator, value, instance, schema)]
    if validator == "minLength":
        text = "must not be empty" if value == 1 else f"must be at least {value} characters long"
        return [_issue(path, text)]
    if validator == "maxLength":
        return [_issue(path, f"must be at most {value} characters long")]
    if validator == "uniqueItems":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                return [_issue(path, f"{_show(item)} is listed more than once")]
            seen.append(item)
    # Not used by our schemas; kept readable all the same.
    return [_issue(path, str(error.message)[:200])]


def _issue(path: PathKey, message: str, hint: str | None = None, *, at_key: bool = False) -> _Raw:
    return _Raw(SchemaIssue(path, message, hint, at_key))


# A "kind choice" is a oneOf of single `required`s in a schema with one of these titles: the
# object is defined by which of the keys it has (a step's kind, a shape's form).
_KIND_SUBJECTS = {"Step": "a step", "Shape": "a shape", "Markup shape": "a markup shape", "Check": "a check"}

# Hints for a value of a type no branch of a choice accepts, by the choice schema's title.
_CHOICE_HINTS = {
    "Image": "write a path or {step: ID}",
    "Images": "write a path, {step: ID}, or a list of them",
    "Provider": "write openai, offline, azure or {name: ..., api: ...}",
    "Ask": "write the question, or {question: ..., with: [...], model: ...}",
}

_PATTERNS: dict[str, tuple[str, str]] = {
    "^[a-z][a-z0-9_]*$": ("step id", "use [a-z][a-z0-9_]*"),
    "^[a-z0-9][a-z0-9_-]*$": ("name", "use [a-z0-9][a-z0-9_-]*"),
    "^(auto|[0-9]+x[0-9]+)$": ("size", "use WxH, e.g. 1024x1024, or auto"),
    "^[0-9]+x[0-9]+$": ("size", "use WxH, e.g. 1024x1024"),
    "^[0-9]+(\\.[0-9]+)?:[0-9]+(\\.[0-9]+)?$": ("aspect ratio", "use W:H, e.g. 16:9"),
    "^[A-Za-z_][A-Za-z0-9_]*$": ("variable name", "use letters, digits and _, not starting with a digit"),
}

_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}


def _explain_choice(error: Any, path: PathKey, root: dict[str, Any]) -> list[_Raw]:
    branches: list[Any] = list(error.validator_value)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if branches and all(
        isinstance(b, dict) and set(b) == {"required"} and len(b["required"]) == 1 for b in branches
    ):
        return _explain_kind_choice(error, path, [str(b["required"][0]) for b in branches], schema)
    if not error.context:  # valid under several branches: our schemas' branches are disjoint
        return [_issue(path, "matches more than one of the allowed forms")]
    groups: dict[int, list[Any]] = {}
    for sub in error.context:
        groups.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    viable = {i: errs for i, errs in groups.items() if not _mismatched(errs)}
    if not viable:
        types = list(dict.fromkeys(_expected_types(error)))
        message = f"expected {_expected(types)}, got {_got(error.instance)}"
        return [_Raw(SchemaIssue(path, message, _CHOICE_HINTS.get(str(schema.get("title")))), is_type=True)]
    # The branch the value's type fits; among several, the one it misses least.
    best = min(viable, key=lambda i: (len(viable[i]), i))
    out: list[_Raw] = []
    for sub in viable[best]:
        out.extend(_explain(sub, root))
    return out


def _mismatched(errors: Iterable[Any]) -> bool:
    """Whether a branch failed because the value's type is not one it takes at all."""
    for e in errors:
        if e.relative_path:
            continue
        if e.validator == "type":
            return True
        if e.validator in ("oneOf", "anyOf") and e.context:
            groups: dict[int, list[Any]] = {}
            for sub in e.context:
                groups.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
            if all(_mismatched(g) for g in groups.values()):
                return True
    return False


def _expected_types(error: Any) -> Iterator[str]:
    for sub in error.context or ():
        if sub.relative_path:
            continue
        if sub.validator == "type":
            yield from [sub.validator_value] if isinstance(sub.validator_value, str) else sub.validator_value
        elif sub.validator in ("oneOf", "anyOf"):
            yield from _expected_types(sub)


def _explain_kind_choice(error: Any, path: PathKey, options: list[str], schema: dict[str, Any]) -> list[_Raw]:
    instance = error.instance
    if not isinstance(instance, dict):
        return []  # the type error says it
    present = [o for o in options if o in instance]
    subject = _KIND_SUBJECTS.get(str(schema.get("title")))
    if subject is not None:
        hint = f"found {_and([f'{p}' for p in present])}" if len(present) > 1 else None
        message = f"{subject} needs exactly one of {', '.join(options)}"
        return [_Raw(SchemaIssue(path, message, hint), missing=() if present else tuple(options))]
    if not present:
        rest = " or ".join(f"'{o}'" for o in options[1:])
        return [
            _Raw(
                SchemaIssue(path, f"missing required key '{options[0]}'", f"or {rest}" if rest else None),
                missing=tuple(options),
            )
        ]
    return [_conflict(path, present)]


def _conflict(path: PathKey, keys: Sequence[str]) -> _Raw:
    quoted = _and([f"'{k}'" for k in keys])
    return _issue((*path, keys[-1]), f"{quoted} cannot be used together", "use one of them", at_key=True)


def _unknown_keys(
    path: PathKey, instance: Any, schema: dict[str, Any], root: dict[str, Any]
) -> Iterator[_Raw]:
    if not isinstance(instance, dict):
        return
    props: dict[str, Any] = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    # keys refused with a reason (GIF/SVG, streaming: "deprecated" in the schema) are not offered
    allowed = [k for k, v in props.items() if not (isinstance(v, dict) and v.get("deprecated"))]
    for key in instance:
        if key in props or (isinstance(key, str) and any(p.search(key) for p in patterns)):
            continue
        name = str(key)
        suggestion = None
        home = _belongs_in_body(name, instance, schema, root)
        if home is not None:
            hint = f"'{name}' goes inside '{home}:'"
        else:
            close = difflib.get_close_matches(name, allowed, n=1)
            suggestion = close[0] if close else None
            hint = f"did you mean '{suggestion}'?" if suggestion else f"allowed: {', '.join(allowed)}"
        yield _Raw(SchemaIssue((*path, key), f"unknown key '{name}'", hint, True), suggestion=suggestion)


def _belongs_in_body(
    key: str, step: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]
) -> str | None:
    """For a key written at a step's level that its kind's body takes (`prompt`): that kind."""
    if schema.get("title") != "Step":
        return None
    defs: dict[str, Any] = root.get("$defs", {})
    for kind in step:
        body = defs.get(f"step_{kind}")
        if isinstance(body, dict) and key in body.get("properties", {}):
            return str(kind)
    return None


def _explain_count(path: PathKey, validator: str, value: int, instance: Any, schema: dict[str, Any]) -> _Raw:
    count = len(instance) if isinstance(instance, list) else 0
    low, high = schema.get("minItems"), schema.get("maxItems")
    shape = _tuple_shape(schema)
    hint = f"write {shape}" if shape else None
    if low is not None and low == high:
        return _issue(path, f"expected {low} item{'s' if low != 1 else ''}, got {count}", hint)
    if validator == "minItems":
        if value == 1:
            return _issue(path, "must not be empty", hint)
        return _issue(path, f"needs at least {value} items, got {count}", hint)
    return _issue(path, f"takes at most {value} item{'s' if value != 1 else ''}, got {count}", hint)


def _tuple_shape(schema: dict[str, Any]) -> str | None:
    """'[x0, y0, x1, y1]' from prefixItems descriptions such as 'x0: left edge ...'."""
    items = schema.get("prefixItems")
    if not isinstance(items, list) or not items:
        return None
    names = [str(i.get("description", "")).split(":", 1)[0].strip() for i in items if isinstance(i, dict)]
    return f"[{', '.join(names)}]" if all(names) else None


# --------------------------------------------------------------------------- wording

_TYPE_NAMES = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "nothing",
}


def _expected(types: Sequence[str]) -> str:
    if list(types) == ["boolean"]:
        return "true or false"
    names = list(dict.fromkeys(_TYPE_NAMES.get(t, t) for t in types))
    if "a number" in names and "an integer" in names:
        names.remove("an integer")
    return _or(names)


def _got(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'" if len(value) <= 60 else f"'{value[:57]}...'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, int | float):
        return _num(value)
    return _got(value)


def _num(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _did_you_mean(word: str, options: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    if not close:
        lowered = [o for o in options if o.lower() == word.lower()]
        close = lowered[:1]
    return f"did you mean '{close[0]}'?" if close else None


def _or(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
