"""The one sandboxed Jinja environment: strict, bounded, with no attribute tricks."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 100_000  # characters a single render may produce
MAX_REPEAT = 100_000  # longest string `'x' * n` may build


class RenderError(Exception):
    """A template failed to compile or render; `message` is user-facing, `line` is 1-based within it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * max(times, 0) > MAX_REPEAT:
                        raise SecurityError("repetition would build a value that is too large")
            return operator.mul(left, right)
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        return super().call_binop(context, operator_, left, right)


_ENV = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class Compiled:
    source: str
    names: frozenset[str]  # top-level names it uses
    template: Any

    def uses(self, name: str) -> bool:
        return name in self.names


@lru_cache(maxsize=4096)
def compile_template(source: str) -> Compiled:
    """Compile a template (cached by source). Raises RenderError on syntax errors."""
    try:
        ast = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise RenderError(f"template syntax error: {exc.message}", exc.lineno) from None
    names = frozenset(meta.find_undeclared_variables(ast))
    return Compiled(source, names, _ENV.from_string(ast))


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Compiled:
    """A `where`/`when` condition: a bare expression, or a `{{ … }}` template read as a boolean."""
    if "{{" in source or "{%" in source:
        return compile_template(source)
    try:
        ast = _ENV.parse("{{ (" + source + ") }}")
    except TemplateSyntaxError as exc:
        raise RenderError(f"expression syntax error: {exc.message}", 1) from None
    # A bare expression is rendered as a template whose output is the truth value.
    body = ast.body[0]
    assert isinstance(body, nodes.Output)
    wrapped = "{{ 'true' if (" + source + ") else 'false' }}"
    names = frozenset(meta.find_undeclared_variables(ast))
    return Compiled(source, names, _ENV.from_string(wrapped))


def render(compiled: Compiled, context: Mapping[str, Any]) -> str:
    """Render with a bound on output size; every failure becomes a RenderError."""
    parts: list[str] = []
    size = 0
    try:
        for chunk in compiled.template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise RenderError(f"template output exceeds {MAX_OUTPUT} characters")
            parts.append(chunk)
    except RenderError:
        raise
    except UndefinedError as exc:
        raise RenderError(_undefined_message(str(exc.message or exc)), _lineno(exc)) from None
    except SecurityError as exc:
        raise RenderError(f"not allowed in a template: {exc}", _lineno(exc)) from None
    except TemplateError as exc:
        raise RenderError(f"template error: {exc.message or exc}", _lineno(exc)) from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise RenderError(f"template error: {type(exc).__name__}: {exc}", _lineno(exc)) from None
    return "".join(parts)


def render_string(source: str, context: Mapping[str, Any]) -> str:
    return render(compile_template(source), context)


FALSE_WORDS = frozenset({"", "false", "no", "0", "off", "none", "null"})


def truth(text: str) -> bool:
    """A rendered condition's text as a boolean: false, no, 0, empty (any case) are false."""
    return text.strip().lower() not in FALSE_WORDS


def evaluate(compiled: Compiled, context: Mapping[str, Any]) -> bool:
    return truth(render(compiled, context))


def _undefined_message(raw: str) -> str:
    # jinja: "'dict object' has no attribute 'colour'" / "'item' is undefined"
    if "has no attribute" in raw:
        return f"undefined variable {raw.rsplit('has no attribute', 1)[1].strip()}"
    if raw.endswith(" is undefined"):
        return f"undefined variable {raw[: -len(' is undefined')]}"
    return f"undefined variable: {raw}"


def _lineno(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
