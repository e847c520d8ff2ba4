"""The one sandboxed Jinja environment: strict, bounded, with no attribute tricks.

A template may read its context and build small values, nothing more:

- attributes and items whose name starts with `_` are refused when the template is
  compiled (`''.__class__`, `cycler.__init__.__globals__`), as are `include`,
  `import`, `extends` and recursive loops;
- every value a template builds (strings, lists, mappings, big integers) is
  bounded, checked before it is built where it could be large (`'x' * 10**9`,
  `'x'|center(10**9)`, `'%999999999d' % 1`, `[l, l]` nested);
- every render has a budget counted in work, never in time, so the result is the same on
  every machine: loop iterations (all loops together), calls (macros, methods, filters),
  the depth of nested macro calls (a macro calling itself twice per level), the characters
  and items all of its built values add up to, and its output;
- a validation (every render of one plan, all rows) shares one more budget of work:
  see :func:`validation_budget`.

Everything that goes wrong becomes a :class:`RenderError` with a user-facing message.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import Context, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, missing

MAX_SOURCE = 100_000  # characters of template text
MAX_OUTPUT = 100_000  # characters a single render may produce
MAX_VALUE = 100_000  # characters + items a value built by a template may hold
MAX_REPEAT = MAX_VALUE  # longest string `'x' * n` may build
MAX_INT_BITS = 4_096  # bits of an integer a template may compute
MAX_LOOP = 2_000  # loop iterations per render, all loops together
MAX_RANGE = MAX_LOOP  # items of range()
MAX_CALLS = 10_000  # calls per render: macros, functions, methods, filters
MAX_DEPTH = 50  # macro calls nested inside one another
MAX_BUILT = 1_000_000  # characters + items of all the values one render builds, added up
MAX_VALIDATION_WORK = 50_000_000  # loop iterations + calls of every render of one validation


@dataclass
class _Budget:
    """What one render may still spend."""

    loops: int = MAX_LOOP
    calls: int = MAX_CALLS
    depth: int = 0
    built: int = MAX_BUILT


@dataclass
class Budget:
    """The work every render of one validation may still spend (loop iterations + calls)."""

    left: int = MAX_VALIDATION_WORK
    limit: int = MAX_VALIDATION_WORK

    @property
    def spent(self) -> int:
        return self.limit - self.left


_FUEL: contextvars.ContextVar[_Budget] = contextvars.ContextVar("dalle_pipe_template_fuel")
_SHARED: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("dalle_pipe_validation_fuel",
                                                                        default=None)


@contextlib.contextmanager
def validation_budget(limit: int | None = None) -> Iterator[Budget]:
    """Every render inside shares `limit` (default MAX_VALIDATION_WORK) units of work (loop
    iterations + calls), on top of each render's own budget: a catalog whose every row spends
    its whole render budget stops too."""
    limit = MAX_VALIDATION_WORK if limit is None else limit
    budget = Budget(limit, limit)
    token = _SHARED.set(budget)
    try:
        yield budget
    finally:
        _SHARED.reset(token)


class RenderError(Exception):
    """A template failed to compile or render; `message` is user-facing, `line` is 1-based within it."""

    def __init__(self, message: str, line: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


class _Refused(SecurityError):
    """A template tried to build something too large or do something not allowed."""


class _OutOfFuel(_Refused):
    """Loops or calls ran past their budget."""


class _OutOfShared(_Refused):
    """The validation's shared budget ran out."""


class _Missing(UndefinedError):
    """An undefined value was used: keeps what was looked up in what, for the message."""

    def __init__(self, message: str | None, obj: Any, name: Any) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name


class _Undefined(StrictUndefined):
    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None,
                 exc: type[TemplateError] = UndefinedError) -> None:
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]
        if exc is UndefinedError:
            self._undefined_exception = functools.partial(_Missing, obj=obj, name=name)  # type: ignore[assignment]


# --------------------------------------------------------------------------- bounds


def _weight(value: Any, limit: int = MAX_VALUE) -> int:
    """Characters and items of a value, nested ones counted each time they appear; stops past `limit`."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes):
            total += len(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 64
        elif isinstance(v, Mapping):
            total += len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            total += len(v)
            stack.extend(v)
        elif isinstance(v, range):
            total += len(v)
        elif isinstance(v, Namespace):  # its repr shows every attribute, nested ones each time
            attrs: dict[str, Any] = object.__getattribute__(v, "_Namespace__attrs")
            total += 1 + len(attrs)
            stack.extend(attrs.values())
        if total > limit:
            return total
    return total


def _bounded(value: Any, what: str = "value") -> Any:
    weight = _weight(value)
    if weight > MAX_VALUE:
        raise _Refused(f"a {what} of more than {MAX_VALUE} characters or items")
    _spend_built(weight)
    return value


def _spend_built(weight: int) -> None:
    budget = _budget()
    budget.built -= weight
    if budget.built < 0:
        raise _Refused(f"the values it built add up to more than {MAX_BUILT} characters or items")


def _heavy(values: Iterable[Any], what: str) -> None:
    """Refuse before stringifying a container or namespace whose text would be too large."""
    for v in values:
        if not isinstance(v, str | int | float | bool) and v is not None and _weight(v) > MAX_VALUE:
            raise _Refused(f"{what} of a value of more than {MAX_VALUE} characters or items")


def _check_int_args(args: Iterable[Any], name: str) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_VALUE:
            raise _Refused(f"{name}() with a number over {MAX_VALUE}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")


def _mapping_values(args: tuple[Any, ...]) -> list[Any]:
    return [v for a in args if isinstance(a, Mapping) for v in a.values()]


def _spec_numbers(fmt: str, pattern: re.Pattern[str]) -> int:
    """The sum of the widths and precisions a format string asks for."""
    total = 0
    for m in pattern.finditer(fmt):
        for number in re.findall(r"\d+", "".join(g or "" for g in m.groups())):
            if len(number) > 9:
                return MAX_VALUE + 1
            total += int(number)
    return total


def _check_format(fmt: str, percent: bool) -> None:
    if _spec_numbers(fmt, _PERCENT_SPEC if percent else _FORMAT_SPEC) > MAX_VALUE:
        raise _Refused(f"a format whose widths add up to more than {MAX_VALUE}")


_TEXT = (str, bytes, bytearray)


def _estimate_str_call(name: str, obj: str | bytes | bytearray, args: tuple[Any, ...]) -> int:
    """An upper bound of the length of `obj.name(*args)` for the str/bytes methods that can grow."""
    if name == "replace" and len(args) >= 2 and isinstance(args[0], _TEXT) and isinstance(args[1], _TEXT):
        old, new = args[0], args[1]
        try:
            count = len(obj) + 1 if not old else obj.count(old)  # type: ignore[arg-type]
        except TypeError:
            return 0  # str.replace with bytes: fails by itself
        return len(obj) + count * len(new)
    if name == "join" and args and isinstance(args[0], Sized):
        return _weight(args[0]) + len(obj) * len(args[0])
    if name == "expandtabs":
        width = args[0] if args and isinstance(args[0], int) else 8
        tab: Any = "\t" if isinstance(obj, str) else b"\t"
        return len(obj) + obj.count(tab) * max(width, 0)
    if name == "translate" and args:
        table = args[0]
        values = table.values() if isinstance(table, Mapping) else table if isinstance(table, list | tuple) \
            else ()
        longest = max((len(v) for v in values if isinstance(v, _TEXT)), default=1)
        return len(obj) * max(longest, 1)
    return 0


def _budget() -> _Budget:
    fuel = _FUEL.get(None)
    if fuel is None:
        fuel = _Budget()
        _FUEL.set(fuel)
    return fuel


def _spend_shared(amount: int) -> None:
    shared = _SHARED.get()
    if shared is not None:
        shared.left -= amount
        if shared.left < 0:
            raise _OutOfShared(f"this validation's templates ran more than {shared.limit} loop "
                               f"iterations and calls in all")


def _loop(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` runs through this: all loops of one render share MAX_LOOP iterations."""
    fuel = _budget()
    for value in iterable:
        fuel.loops -= 1
        if fuel.loops < 0:
            raise _OutOfFuel(f"loops ran more than {MAX_LOOP} times")
        _spend_shared(1)
        yield value


def _spend_call() -> _Budget:
    fuel = _budget()
    fuel.calls -= 1
    if fuel.calls < 0:
        raise _OutOfFuel(f"calls ran more than {MAX_CALLS} times (macros, functions, methods, filters)")
    _spend_shared(1)
    return fuel


def _concat(parts: list[Any]) -> str:
    """`a ~ b`: joined only when the result stays bounded."""
    _heavy(parts, "~")
    texts = [str(p) for p in parts]
    total = sum(len(t) for t in texts)
    if total > MAX_VALUE:
        raise _Refused(f"a string of more than {MAX_VALUE} characters")
    _spend_built(total)
    return "".join(texts)


def _range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise _Refused(f"range() of more than {MAX_RANGE} numbers")
    return rng


_GROWING_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
_GROWING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_SUM_ITEMS = 100  # `sum` of lists copies the total once per item: a few only


def _items(value: Any) -> list[Any]:
    """An iterable as a list, refused past MAX_VALUE items (a generator from `map` has no len)."""
    if isinstance(value, str | Mapping):
        return list(value)
    out = list(itertools.islice(value, MAX_VALUE + 1))
    if len(out) > MAX_VALUE:
        raise _Refused(f"a sequence of more than {MAX_VALUE} items")
    return out


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose size arguments and result are bounded."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    skip = 2 if pass_arg is not None else 1  # (context,) value, then the arguments

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend_call()
        if name in _GROWING_FILTERS:
            _check_int_args((*args[skip:], *kwargs.values()), name)
        _heavy((*args[skip - 1:], *kwargs.values()), f"{name}()")
        value = args[skip - 1] if len(args) >= skip else None
        if name == "join" and value is not None and not isinstance(value, Undefined):
            items = _items(value)
            sep = args[skip] if len(args) > skip else kwargs.get("d", "")
            if _weight(items) + len(str(sep)) * len(items) > MAX_VALUE:
                raise _Refused(f"join() would build more than {MAX_VALUE} characters")
            args = (*args[:skip - 1], items, *args[skip:])
        if name == "sum" and value is not None and not isinstance(value, Undefined):
            items = _items(value)
            if len(items) > _SUM_ITEMS and any(not isinstance(i, int | float) for i in items):
                raise _Refused(f"sum() of more than {_SUM_ITEMS} values that are not numbers")
            args = (*args[:skip - 1], items, *args[skip:])
        if name == "indent" and isinstance(value, str):
            width = args[skip] if len(args) > skip else kwargs.get("width", 4)
            if isinstance(width, int) and (value.count("\n") + 1) * width + len(value) > MAX_VALUE:
                raise _Refused(f"indent() would build more than {MAX_VALUE} characters")
        if name == "replace" and isinstance(value, str):
            rest = args[skip:]
            if _estimate_str_call("replace", value, tuple(rest)) > MAX_VALUE:
                raise _Refused(f"replace() would build more than {MAX_VALUE} characters")
        if name == "format" and isinstance(value, str):
            _check_format(value, percent=True)
        return _bounded(func(*args, **kwargs), f"{name}() result")

    return guarded


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | bytearray | list | tuple) and isinstance(times, int):
                    if _weight(seq) * max(times, 0) > MAX_REPEAT:
                        raise _Refused("repetition would build a value that is too large")
                    _spend_built(_weight(seq) * max(times, 0))
                    return operator.mul(left, right)
            if isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _Refused("a number that is too large")
            return operator.mul(left, right)
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise _Refused("exponent too large")
            if isinstance(left, int) and isinstance(right, int) and right > 0 \
                    and left.bit_length() * right > MAX_INT_BITS:
                raise _Refused("a number that is too large")
            return operator.pow(left, right)
        if operator_ == "+":
            if isinstance(left, str | bytes | bytearray | list | tuple) \
                    and isinstance(right, str | bytes | bytearray | list | tuple):
                weight = _weight(left) + _weight(right)
                if weight > MAX_VALUE:
                    raise _Refused(f"a value of more than {MAX_VALUE} characters or items")
                _spend_built(weight)
            return operator.add(left, right)
        if operator_ == "%" and isinstance(left, str | bytes):
            _check_format(left if isinstance(left, str) else left.decode("latin-1"), percent=True)
            _check_int_args(right if isinstance(right, tuple) else (right,), "%")
            _heavy(right if isinstance(right, tuple) else (right,), "%")
            return _bounded(operator.mod(left, right), "string")
        return super().call_binop(context, operator_, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        fuel = _spend_call()
        name = "namespace" if __obj is Namespace else getattr(__obj, "__name__", "function")
        target = getattr(__obj, "__self__", None)
        _heavy((*args, *kwargs.values()), f"{name}()")
        if isinstance(target, _TEXT):
            if name in _GROWING_METHODS:
                _check_int_args((*args, *kwargs.values()), name)
            if name == "join" and args and not isinstance(args[0], Sized):
                args = (_items(args[0]), *args[1:])
            if _estimate_str_call(name, target, args) > MAX_VALUE:
                raise _Refused(f"{name}() would build more than {MAX_VALUE} characters")
        if not isinstance(__obj, Macro):
            return _bounded(super().call(__context, __obj, *args, **kwargs), f"{name}() result")
        fuel.depth += 1
        if fuel.depth > MAX_DEPTH:
            raise _OutOfFuel(f"macro calls nested more than {MAX_DEPTH} deep")
        try:
            return _bounded(super().call(__context, __obj, *args, **kwargs), f"{name}() result")
        finally:
            fuel.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        _check_format(fmt, percent=False)
        nested = _NESTED_SPEC.search(fmt) is not None  # `{:{width}}`: a width is an argument
        name = value.__name__

        def bounded(*args: Any, **kwargs: Any) -> str:
            if nested:
                _check_int_args((*args, *kwargs.values(), *_mapping_values(args)), name)
            result: str = _bounded(wrapped(*args, **kwargs), f"{name}() result")
            return result

        return bounded

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A row's field wins over a mapping's method: `item.items` is the column `items`.
        if type(obj) is dict and attribute in obj:  # a row: the common case, without an ABC check
            return obj[attribute]
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _finalize(value: object) -> object:
    """A None (e.g. `steps.hero.revised_prompt` when the model returned none) renders as empty text,
    never as the word "None" inside a paid prompt. A value whose text would be too large (a
    namespace holding namespaces) is refused before it is turned into text."""
    if value is None:
        return ""
    if not isinstance(value, str | int | float) and _weight(value, MAX_OUTPUT) > MAX_OUTPUT:
        raise _Refused(f"output of a value of more than {MAX_OUTPUT} characters or items")
    return value


_ENV = _Env(undefined=_Undefined, autoescape=False, keep_trailing_newline=False, finalize=_finalize)
_ENV.globals.clear()
_ENV.globals.update({"range": _range, "dict": dict, "namespace": Namespace})
_ENV.filters = {name: _guard_filter(name, f) for name, f in _ENV.filters.items() if name != "random"}
_ENV.filters["_dp_loop"] = _loop
_ENV.filters["_dp_concat"] = _concat
_ENV.filters["_dp_value"] = _bounded
GLOBALS = frozenset(_ENV.globals)


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class Compiled:
    source: str
    names: frozenset[str]  # top-level names it uses
    template: Any
    refs: frozenset[tuple[str, str, int]] = frozenset()  # (name, attribute, line) of `name.attribute`
    # A render that ran out of loop budget: later renders fail at once instead of looping again.
    exhausted: list[RenderError] = field(default_factory=list, compare=False, hash=False)
    # Text and plain look-ups (`{{ key }}`, `{{ item.name }}`) only: rendered without Jinja when every
    # value looked up is a string (else, and for any failure, through Jinja).
    pieces: tuple[str | tuple[str, str | None], ...] | None = None
    # A condition `name.attr == value` (or `!=`): decided without Jinja when name is a row (a dict)
    # holding attr (else, and for any failure, through Jinja).
    test: tuple[str, str, str, Any] | None = None

    def uses(self, name: str) -> bool:
        return name in self.names

    def attributes(self, name: str) -> list[tuple[str, int]]:
        """`(attribute, line)` of every `name.attribute` / `name['attribute']` in the template."""
        return sorted((a, ln) for n, a, ln in self.refs if n == name)


def _refuse(node: nodes.Node, message: str) -> RenderError:
    return RenderError(message, getattr(node, "lineno", None) or 1)


_UNDERSCORE_HINT = "templates run sandboxed: names starting with '_' are off limits"
_SANDBOX_HINT = "templates run sandboxed, with bounded loops and values"
_SHARED_HINT = "every template of one validation shares one budget of work; simplify the templates"


def _check_and_rewrite(ast: nodes.Template, source: str) -> set[tuple[str, str, int]]:
    """Refuse what a recipe's template never needs; route loops and building through the bounds."""
    refs: set[tuple[str, str, int]] = set()
    node: Any
    refused: list[tuple[int, int, str]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if attr is None:
            continue
        if attr.startswith("_"):
            refused.append((node.lineno, source.find(attr), attr))
        elif isinstance(node.node, nodes.Name):
            refs.add((node.node.name, attr, node.lineno))
    for flt in ast.find_all(nodes.Filter):
        if flt.name == "attr" and flt.args and isinstance(flt.args[0], nodes.Const) \
                and str(flt.args[0].value).startswith("_"):
            refused.append((flt.lineno, source.find(str(flt.args[0].value)), str(flt.args[0].value)))
    if refused:
        line, _, attr = min(refused)
        raise RenderError(f"template error: attribute {attr!r} is not allowed", line, _UNDERSCORE_HINT)
    for kind, what in ((nodes.Include, "include"), (nodes.Import, "import"), (nodes.FromImport, "import"),
                       (nodes.Extends, "extends")):
        for found in ast.find_all(kind):
            raise _refuse(found, f"template error: {what} is not available in a recipe's templates")
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            raise _refuse(loop, "template error: recursive loops are not allowed")
        loop.iter = nodes.Filter(loop.iter, "_dp_loop", [], [], None, None, lineno=loop.lineno)
    for parent in list(ast.find_all(nodes.Node)):
        for field_name, value in parent.iter_fields():
            if isinstance(value, list):
                value[:] = [_wrap_builder(v) for v in value]
            elif isinstance(value, nodes.Node):
                setattr(parent, field_name, _wrap_builder(value))
    return refs


def _wrap_builder(node: Any) -> Any:
    if isinstance(node, nodes.Concat):
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_dp_concat", [], [], None, None,
                            lineno=node.lineno)
    if isinstance(node, nodes.List | nodes.Tuple | nodes.Dict) and not (
            isinstance(node, nodes.Tuple) and node.ctx == "store"):
        return nodes.Filter(node, "_dp_value", [], [], None, None, lineno=node.lineno)
    return node


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Compiled:
    """Compile a template (cached by source). Raises RenderError on syntax errors and refused constructs."""
    if len(source) > MAX_SOURCE:
        raise RenderError(f"template is {len(source)} characters; the limit is {MAX_SOURCE}")
    try:
        ast = _ENV.parse(source)
        names = frozenset(meta.find_undeclared_variables(ast))
        pieces = _pieces(ast)
        refs = _check_and_rewrite(ast, source)
        template = _ENV.from_string(ast)
    except TemplateSyntaxError as exc:
        message, hint = _syntax_message(exc)
        raise RenderError(message, exc.lineno, hint) from None
    except TemplateError as exc:
        raise RenderError(f"template error: {exc.message or exc}", getattr(exc, "lineno", None)) from None
    except RecursionError:
        raise RenderError("template is nested too deeply") from None
    return Compiled(source, names, template, frozenset(refs), pieces=pieces)


def _lookup(node: nodes.Node) -> tuple[str, str | None] | None:
    """`name` -> (name, None); `name.attr` -> (name, attr); anything else -> None."""
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in _SPECIAL_NAMES:
        return node.name, None
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.ctx == "load" \
            and node.node.name not in _SPECIAL_NAMES:
        return node.node.name, node.attr
    return None


_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})  # Jinja's own


def _pieces(ast: nodes.Template) -> tuple[str | tuple[str, str | None], ...] | None:
    """A template of text (after comments, raw blocks and whitespace control) and plain look-ups."""
    pieces: list[str | tuple[str, str | None]] = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append(child.data)
                continue
            lookup = _lookup(child)
            if lookup is None:
                return None
            pieces.append(lookup)
    return tuple(pieces)


def _substitute(pieces: tuple[str | tuple[str, str | None], ...], context: Mapping[str, Any]) -> str | None:
    """What Jinja would render for a template of `pieces`, when every value is a string; else None."""
    parts: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            parts.append(piece)
            continue
        name, attr = piece
        value = context.get(name, missing)
        if attr is not None:  # the environment's getattr: a dict's own key wins
            if type(value) is not dict:
                return None
            value = value.get(attr, missing)
        if type(value) is not str:
            return None
        parts.append(value)
    text = "".join(parts)
    return text if len(text) <= MAX_OUTPUT else None


def _test(source: str) -> tuple[str, str, str, Any] | None:
    """`name.attr == constant` (or `!=`) as (name, attr, op, constant), else None."""
    try:
        ast = _ENV.parse("{{ (" + source + ") }}")
    except (TemplateSyntaxError, RecursionError):
        return None
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output) or len(ast.body[0].nodes) != 1:
        return None
    cmp = ast.body[0].nodes[0]
    if not isinstance(cmp, nodes.Compare) or len(cmp.ops) != 1 or cmp.ops[0].op not in ("eq", "ne"):
        return None
    lookup = _lookup(cmp.expr)
    const = cmp.ops[0].expr
    if lookup is None or lookup[1] is None or not isinstance(const, nodes.Const) or not isinstance(
            const.value, str | int | float | bool | None):
        return None
    return lookup[0], lookup[1], cmp.ops[0].op, const.value


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Compiled:
    """A `where`/`when` condition: a bare expression, or a `{{ … }}` template read as a boolean."""
    if "{{" in source or "{%" in source or "{#" in source:
        return compile_template(source)
    try:
        _ENV.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        message, hint = _syntax_message(exc, "expression")
        raise RenderError(message, exc.lineno, hint) from None
    except RecursionError:
        raise RenderError("expression is nested too deeply") from None
    compiled = compile_template("{{ 'true' if (" + source + ") else 'false' }}")
    return Compiled(source, compiled.names, compiled.template, compiled.refs, test=_test(source))


# --------------------------------------------------------------------------- rendering


def render(compiled: Compiled, context: Mapping[str, Any]) -> str:
    """Render with bounded output, values and loops; every failure becomes a RenderError."""
    if compiled.pieces is not None:
        text = _substitute(compiled.pieces, context)
        if text is not None:
            return text
    if compiled.exhausted:
        raise compiled.exhausted[0]
    parts: list[str] = []
    size = 0
    token = _FUEL.set(_Budget())
    try:
        # Template.generate without its per-render merge of the globals (a ChainMap walk) and without
        # its traceback rewriting (costly when every row fails): _lineno maps the line itself.
        template = compiled.template
        parent = dict(_ENV.globals)
        parent.update(context)
        for chunk in template.root_render_func(Context(_ENV, parent, template.name, template.blocks)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise RenderError(f"template output exceeds {MAX_OUTPUT} characters")
            parts.append(chunk)
    except RenderError:
        raise
    except _Missing as exc:
        message, hint = _missing_message(exc, context)
        raise RenderError(message, _lineno(exc, compiled), hint) from None
    except _OutOfShared as exc:
        raise RenderError(f"template error: {_sentence(exc)}", _lineno(exc, compiled), _SHARED_HINT) from None
    except _OutOfFuel as exc:
        error = RenderError(f"template error: {_sentence(exc)}", _lineno(exc, compiled), _SANDBOX_HINT)
        compiled.exhausted.append(error)
        raise error from None
    except _Refused as exc:
        raise RenderError(f"template error: {_sentence(exc)}", _lineno(exc, compiled), _SANDBOX_HINT) from None
    except SecurityError as exc:
        raise RenderError(f"template error: {_sentence(exc)}", _lineno(exc, compiled), _UNDERSCORE_HINT) from None
    except UndefinedError as exc:
        raise RenderError(f"undefined variable: {exc.message or exc}", _lineno(exc, compiled)) from None
    except TemplateError as exc:
        raise RenderError(f"template error: {exc.message or exc}", _lineno(exc, compiled)) from None
    except RecursionError:
        raise RenderError("template error: recursion too deep") from None
    except MemoryError:
        raise RenderError("template error: out of memory") from None
    except Exception as exc:  # anything a filter or method raises on odd input
        raise RenderError(f"template error: {type(exc).__name__}: {exc}", _lineno(exc, compiled)) from None
    finally:
        _FUEL.reset(token)
    return "".join(parts)


def render_string(source: str, context: Mapping[str, Any]) -> str:
    return render(compile_template(source), context)


FALSE_WORDS = frozenset({"", "false", "no", "0", "off", "none", "null"})


def truth(text: str) -> bool:
    """A rendered condition's text as a boolean: false, no, 0, empty (any case) are false."""
    return text.strip().lower() not in FALSE_WORDS


def evaluate(compiled: Compiled, context: Mapping[str, Any]) -> bool:
    test = compiled.test
    if test is not None:
        name, attr, op, const = test
        row = context.get(name)
        if type(row) is dict and attr in row:  # what the template would do, without Jinja
            return bool(row[attr] == const) if op == "eq" else bool(row[attr] != const)
    return truth(render(compiled, context))


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    match = _closest(word, tuple(str(c) for c in choices))
    return f"did you mean {match!r}?" if match else None


@lru_cache(maxsize=1024)
def _closest(word: str, choices: tuple[str, ...]) -> str | None:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None


_UNKNOWN = re.compile(r"^No (filter|test) named '(.+)'")


def _syntax_message(exc: TemplateSyntaxError, what: str = "template") -> tuple[str, str | None]:
    text = (exc.message or "invalid syntax").rstrip(".")
    unknown = _UNKNOWN.match(text)
    if unknown:
        kind, name = unknown.groups()
        known = _ENV.filters if kind == "filter" else _ENV.tests
        return f"{what} error: unknown {kind} {name!r}", did_you_mean(
            name, [k for k in known if not k.startswith("_")])
    return f"{what} syntax error: {text}", None


def _sentence(exc: BaseException) -> str:
    text = str(exc.message if isinstance(exc, TemplateError) and exc.message else exc)
    return text.rstrip(".")


_TYPE_WORDS = {"str": "a string", "int": "a number", "float": "a number", "list": "a list",
               "tuple": "a list", "bool": "a boolean", "NoneType": "nothing"}


def _missing_message(exc: _Missing, context: Mapping[str, Any]) -> tuple[str, str | None]:
    obj, name = exc.obj, exc.name
    if obj is missing:
        return f"undefined variable {name!r}", did_you_mean(str(name), [*context, *GLOBALS])
    if isinstance(obj, Mapping):
        owner = next((k for k, v in context.items() if v is obj), None)
        close = _closest(str(name), tuple(str(k) for k in obj))
        if owner is None:
            return f"undefined key {name!r}", f"did you mean {close!r}?" if close else None
        full = f"{owner}.{name}" if isinstance(name, str) else f"{owner}[{name!r}]"
        hint = f"did you mean '{owner}.{close}'?" if close else None
        if owner == "vars" and hint is None:
            hint = f"set it under vars: or with --var {name}=..."
        if owner == "item" and not obj:
            hint = "this recipe has no catalog or items"
        elif owner == "item" and hint is None:
            columns = [str(k) for k in obj]
            more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
            hint = f"this row's columns are {', '.join(columns[:20])}{more}"
        if owner == "steps" and hint is None:
            hint = "only earlier steps of the same unit are available"
        return f"undefined variable {full!r}", hint
    what = _TYPE_WORDS.get(type(obj).__name__, f"a {type(obj).__name__}")
    return f"{what} has no attribute {name!r}", None


def _lineno(exc: BaseException, compiled: Compiled) -> int | None:
    """The template line the innermost frame of compiled template code was at."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return None
    mapped: int = compiled.template.get_corresponding_lineno(line)
    return mapped
