"""The command line: each command parses, calls one library function, prints. Exit codes live here."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import EXIT_INVALID, DallePipeError, RecipeError, UsageError
from .recipe import Overrides

F = TypeVar("F", bound=Callable[..., Any])


def _fail(exc: DallePipeError) -> int:
    text = exc.format()
    click.echo(text if isinstance(exc, RecipeError) else f"error: {text}", err=True)
    from .ci_output import emit_error

    emit_error(exc)
    return exc.exit_code


def handled(fn: F) -> F:
    """Turn the tool's own errors into their message and exit code; Ctrl-C into 130. Under --json
    the error is JSON on stdout, problems as {file, line, column, path, message, hint}."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = fn(*args, **kwargs)
        except DallePipeError as exc:
            sys.exit(_json_failure(exc) if kwargs.get("as_json") else _fail(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code or 0)

    return wrapper  # type: ignore[return-value]


def var_option(fn: F) -> F:
    """--var alone: for commands that send nothing, where a variable can still change paths."""
    return click.option("--var", "var", multiple=True, metavar="K=V", help="Set a template variable.")(fn)


def _allow_insecure_http(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    from .providers.endpoint import allow_insecure_http

    allow_insecure_http(value)
    return value


def provider_options(fn: F) -> F:
    """The provider choice, for commands that send requests; plus --allow-insecure-http."""
    fn = click.option("--allow-insecure-http", is_flag=True, expose_value=False, callback=_allow_insecure_http,
                      help="Allow a plain http:// endpoint that is not this machine: this sends the API key "
                           "unencrypted.")(fn)
    return check_options(fn)


def check_options(fn: F) -> F:
    """The provider choice, for commands that send nothing but check against it (validate, plan)."""
    fn = var_option(fn)
    fn = click.option("--base-url", help="API endpoint (else OPENAI_BASE_URL, else api.openai.com).")(fn)
    fn = click.option("--provider", "provider", help="Provider for every recipe: openai, offline, azure.")(fn)
    fn = click.option("--offline", is_flag=True, help="Use the local offline renderer: no key, no network.")(fn)
    return fn


def _overrides(offline: bool, provider: str | None, base_url: str | None, var: tuple[str, ...],
               output_dir: Path | None = None) -> Overrides:
    if offline and provider and provider != "offline":
        raise UsageError("--offline and --provider disagree", "use one of them")
    name = "offline" if offline else provider
    if name is not None and name not in ("openai", "offline", "azure"):
        raise UsageError(f"unknown provider {name!r}", "use openai, offline or azure")
    variables = {}
    for item in var:
        if "=" not in item:
            raise UsageError(f"--var {item!r} is not K=V", "e.g. --var brand=Acme")
        k, v = item.split("=", 1)
        variables[k.strip()] = v
    ctx = click.get_current_context(silent=True)
    ceiling = ctx.meta.get("max_units") if ctx is not None else None
    return Overrides(provider=name, base_url=base_url, vars=variables, output_dir=output_dir,
                     **({"max_units": ceiling} if ceiling is not None else {}))


def _keep_max_units(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    if value is not None:
        ctx.meta["max_units"] = value


max_units_option = click.option(
    "--max-units", type=click.IntRange(min=1), metavar="N", expose_value=False, callback=_keep_max_units,
    help="Refuse a recipe that expands to more than N units (default 1,000,000).")


def _print_warnings(warnings: list[Any]) -> None:
    for w in warnings:
        click.echo(w.format(), err=True)


targets_arg = click.argument("targets", nargs=-1, type=click.Path(path_type=Path))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dalle-pipe")
def main() -> None:
    """dalle-pipe: declarative pipelines for OpenAI image generation.

    TARGET is a recipe or a pipeline file; none means ./pipeline.yaml.
    """
    # A run builds tens of thousands of small dicts and almost no cycles: collecting less often
    # saves about a fifth of a 30,000-task no-op rerun.
    gc.set_threshold(50_000, 20, 100)
    if os.environ.get("GITHUB_ACTIONS") == "true":  # no printed line may start a workflow command
        from .ci_output import guard_output

        click.get_current_context().with_resource(guard_output())


def _json_failure(exc: DallePipeError) -> int:
    """--json: the failure as JSON on stdout (problems as {file, line, column, path, message, hint})."""
    click.echo(json.dumps(exc.to_json(), indent=2))
    if isinstance(exc, RecipeError):
        from .ci_output import emit_error

        emit_error(exc, stream=sys.stderr)
    return exc.exit_code


@main.command()
@targets_arg
@check_options
@click.option("--json", "as_json", is_flag=True, help="Print the result and every problem as JSON.")
@max_units_option
@handled
def validate(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
             var: tuple[str, ...], as_json: bool) -> int:
    """Check everything that needs no network; exit 0 or 2."""
    from .app import load

    loaded = load(list(targets), _overrides(offline, provider, base_url, var))
    if as_json:
        click.echo(json.dumps({
            "exit_code": 0, "error": None, "problems": [], "warnings": [w.to_json() for w in loaded.warnings],
            "recipes": [{"name": p.recipe.name, "file": p.recipe.source.file, "units": len(p.units),
                         "tasks": len(p.tasks)} for p in loaded.plans]}, indent=2))
        return 0
    _print_warnings(loaded.warnings)
    n = sum(len(p.tasks) for p in loaded.plans)
    click.echo(f"ok: {len(loaded.plans)} recipe(s), {sum(len(p.units) for p in loaded.plans)} unit(s), "
               f"{n} task(s)")
    return 0


@main.command()
@targets_arg
@provider_options
@click.option("--only", multiple=True, metavar="STEP", help="Run only these steps.")
@click.option("--items", multiple=True, metavar="KEY", help="Run only these units (catalog keys).")
@click.option("--limit", type=click.IntRange(min=0), help="Run only the first N units.")
@click.option("--force", is_flag=True, help="Make images again even when up to date (old ones go to history).")
@click.option("--check", is_flag=True, help="Send nothing; exit 1 when any output is missing or out of date.")
@click.option("--dry-run", is_flag=True, help="Show what would be made; send nothing, write nothing.")
@click.option("--batch", is_flag=True, help="Send generations and edits through the Batch API (then `batch collect`).")
@click.option("--shard", metavar="I/N", help="Run shard I of N (1-based) of the units.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight at once.")
@click.option("--fail-fast", is_flag=True, help="Stop starting work at the first failure.")
@click.option("--max-cost", type=click.FloatRange(min=0), metavar="USD", help="Refuse a run estimated above this.")
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False), help="Price table JSON to use.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False), help="Write outputs here.")
@click.option("--no-space-check", is_flag=True,
              help="Send even when the output disk has less free space than the run may write.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
@max_units_option
@handled
def run(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
        var: tuple[str, ...], only: tuple[str, ...], items: tuple[str, ...], limit: int | None, force: bool,
        check: bool, dry_run: bool, batch: bool, shard: str | None, concurrency: int | None, fail_fast: bool,
        max_cost: float | None, prices: Path | None, output_dir: Path | None, no_space_check: bool,
        as_json: bool, quiet: bool) -> int:
    """Make every image that is missing or out of date."""
    from .app import exit_code, get_prices, load, notes
    from .app import run as run_all
    from .engine.results import RunOptions
    from .progress import Progress, failures, not_made, summary_line
    from .progress import as_json as summary_json

    if check and dry_run:
        raise UsageError("--check and --dry-run cannot be combined")
    if batch:
        if check or dry_run:
            raise UsageError("--batch cannot be combined with --check or --dry-run",
                             "`dalle-pipe plan` shows what a batch would cost")
        return _batch(targets, offline, provider, base_url, var, only, items, limit, force, shard, concurrency,
                      fail_fast, max_cost, prices, output_dir, as_json, quiet, collecting=False)
    overrides = _overrides(offline, provider, base_url, var, output_dir)
    table = get_prices(prices)
    loaded = load(list(targets), overrides)
    if not quiet:
        _print_warnings(loaded.warnings)
    opts = RunOptions(mode="check" if check else "dry" if dry_run else "run", force=force, only=only,
                      items=items, limit=limit, shard=_shard(shard), concurrency=concurrency,
                      fail_fast=fail_fast, max_cost=max_cost, space_check=not no_space_check)
    if opts.mode == "run" and not quiet:
        from .store import batches_dir

        for p in loaded.plans:
            if not batches_dir(p.recipe.output_dir).is_dir():
                continue  # no batch was ever sent from here: the batch route need not load
            from .engine.batch import open_requests

            if n_open := open_requests(p.recipe.output_dir):
                click.echo(f"warning: {p.recipe.name}: {n_open} request(s) are in batches not collected yet; "
                           "a direct run sends them again (run `dalle-pipe batch collect` first)", err=True)
    total = sum(len(p.tasks) for p in loaded.plans)
    bar = Progress(total, live=None if not (quiet or as_json) else False)
    try:
        results = run_all(loaded, opts, table, overrides, bar.task, bar.wait)
    finally:
        bar.close()
    code = exit_code(results, opts)
    if os.environ.get("GITHUB_ACTIONS") == "true":  # emit_run's own test: elsewhere it does nothing
        from .ci_output import emit_run

        emit_run(results, opts.mode, loaded.warnings, stream=sys.stderr if as_json else sys.stdout)
    if as_json:
        click.echo(json.dumps(summary_json(results, code), indent=2))
    elif not quiet:
        for r in results:
            click.echo(summary_line(r))
            for line in failures(r)[:20]:
                click.echo(line)
            for line in not_made(r):
                click.echo(line)
            for line in notes(r):
                click.echo(line)
            if opts.mode != "run":
                for t in r.reports:
                    if t.outcome.status == "pending":
                        click.echo(f"  to make: {t.task.id} -> {', '.join(t.task.outputs)}")
    return code


def _batch(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
           var: tuple[str, ...], only: tuple[str, ...], items: tuple[str, ...], limit: int | None, force: bool,
           shard: str | None, concurrency: int | None, fail_fast: bool, max_cost: float | None,
           prices: Path | None, output_dir: Path | None, as_json: bool, quiet: bool, *, collecting: bool) -> int:
    """`run --batch` / `batch submit` / `batch collect`."""
    from .app import get_prices, load, run_batches
    from .engine.batch import as_json as batch_json
    from .engine.batch import exit_code, summary
    from .engine.results import RunOptions
    from .progress import Progress, failures

    overrides = _overrides(offline, provider, base_url, var, output_dir)
    table = get_prices(prices)
    loaded = load(list(targets), overrides)
    if not quiet:
        _print_warnings(loaded.warnings)
    opts = RunOptions(mode="run", force=force, only=only, items=items, limit=limit, shard=_shard(shard),
                      concurrency=concurrency, fail_fast=fail_fast, max_cost=max_cost)
    bar = Progress(sum(len(p.tasks) for p in loaded.plans), live=None if not (quiet or as_json) else False)
    try:
        runs = run_batches(loaded, opts, table, overrides, bar.task, bar.wait, collecting=collecting)
    finally:
        bar.close()
    code = exit_code(runs, collect=collecting)
    if as_json:
        click.echo(json.dumps(batch_json(runs, code), indent=2))
    elif not quiet:
        for r in runs:
            click.echo(summary(r, collecting))
            for line in failures(r.result)[:20]:
                click.echo(line)
            for err in r.errors:
                click.echo(f"  submission failed: {err}")
    return code


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} is not I/N", "e.g. --shard 1/4") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N")
    return i, n


@main.command()
@targets_arg
@check_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@max_units_option
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False), help="Price table JSON to use.")
@handled
def plan(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
         var: tuple[str, ...], as_json: bool, prices: Path | None) -> int:
    """Show, per step and in total, what a run would request and what it would cost."""
    from .app import get_prices, grand_total, load, plan_summary

    table = get_prices(prices)
    loaded = load(list(targets), _overrides(offline, provider, base_url, var))
    rows = plan_summary(loaded, table)
    total = grand_total(rows)
    placeholders = sorted({m for r in rows for m in r["placeholders"]})
    if as_json:
        click.echo(json.dumps({"prices_checked": table.checked, "recipes": rows, "total": total,
                               "placeholder_prices": placeholders, "exit_code": 0, "problems": [],
                               "warnings": [w.to_json() for w in loaded.warnings]}, indent=2))
        return 0
    _print_warnings(loaded.warnings)
    for r in rows:
        click.echo(f"{r['recipe']} ({r['provider']}, {r['units']} units) -> {r['output_dir']}")
        click.echo(f"  {'step':<16}{'kind':<11}{'requests':>9}{'images':>8}{'up to date':>12}"
                   f"{'to make':>9}{'cost':>11}{'batch':>11}")
        guessed = [s for s in r["steps"] if s.get("model") and table.is_placeholder(s["model"])]
        for s in [*r["steps"], {**r["total"], "step": "total", "kind": ""}]:
            # a cost from a placeholder price (no public figure yet) says so (api helper, issue 13)
            mark = "  placeholder" if s in guessed or (s["step"] == "total" and guessed) else ""
            mark += f"  up to {s['tries']} tries" if s.get("tries", 1) > 1 else ""
            click.echo(f"  {s['step']:<16}{s['kind']:<11}{s['requests']:>9}{s['images']:>8}"
                       f"{s['up_to_date']:>12}{s['to_make']:>9}{_usd(s['cost_usd']):>11}"
                       f"{_usd(s['batch_cost_usd']):>11}{mark}")
    if len(rows) > 1:
        click.echo(f"all recipes: {total['units']} units, {total['requests']} requests, {total['images']} images, "
                   f"{total['up_to_date']} up to date, {total['to_make']} to make, "
                   f"{_usd(total['cost_usd'])} (batch {_usd(total['batch_cost_usd'])})")
    click.echo(f"prices as checked on {table.checked}")
    if placeholders:
        click.echo(f"placeholder prices (verify against your invoice): {', '.join(placeholders)}")
    return 0


def _usd(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.2f}"


@main.group()
def batch() -> None:
    """The Batch API: submit generations (half price, within 24 h), follow them, collect them.

    `dalle-pipe run --batch` (or `batch submit`) sends this wave; `batch status` shows each batch;
    `batch collect` writes what finished exactly as a direct run would, makes the steps that
    follow (masks, edits) and submits the next wave. State lives in OUTPUT_DIR/.dalle-pipe/batches/,
    so status and collect can run later, elsewhere, with only the recipe and the output folder.
    """


def _batch_common(fn: F) -> F:
    fn = click.option("--quiet", is_flag=True, help="Print only errors.")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")(fn)
    fn = click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False),
                      help="The --output-dir the run used.")(fn)
    fn = click.option("--shard", metavar="I/N", help="Only this shard's batches (and its manifest).")(fn)
    return fn


@batch.command("submit")
@targets_arg
@provider_options
@click.option("--only", multiple=True, metavar="STEP", help="Run only these steps.")
@click.option("--items", multiple=True, metavar="KEY", help="Run only these units (catalog keys).")
@click.option("--limit", type=click.IntRange(min=0), help="Run only the first N units.")
@click.option("--force", is_flag=True, help="Make images again even when up to date (old ones go to history).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Direct requests in flight at once.")
@click.option("--fail-fast", is_flag=True, help="Stop starting work at the first failure.")
@click.option("--max-cost", type=click.FloatRange(min=0), metavar="USD", help="Refuse a run estimated above this.")
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False), help="Price table JSON to use.")
@_batch_common
@handled
def batch_submit(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
                 var: tuple[str, ...], only: tuple[str, ...], items: tuple[str, ...], limit: int | None,
                 force: bool, concurrency: int | None, fail_fast: bool, max_cost: float | None,
                 prices: Path | None, shard: str | None, output_dir: Path | None, as_json: bool,
                 quiet: bool) -> int:
    """Submit this wave's generations as batches: the same as `run --batch`."""
    return _batch(targets, offline, provider, base_url, var, only, items, limit, force, shard, concurrency,
                  fail_fast, max_cost, prices, output_dir, as_json, quiet, collecting=False)


@batch.command("collect")
@targets_arg
@provider_options
@click.option("--concurrency", type=click.IntRange(min=1), help="Direct requests in flight at once.")
@click.option("--fail-fast", is_flag=True, help="Stop starting work at the first failure.")
@click.option("--prices", type=click.Path(path_type=Path, dir_okay=False), help="Price table JSON to use.")
@_batch_common
@handled
def batch_collect(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
                  var: tuple[str, ...], concurrency: int | None, fail_fast: bool, prices: Path | None,
                  shard: str | None, output_dir: Path | None, as_json: bool, quiet: bool) -> int:
    """Write what finished batches made, make the steps that follow, submit the next wave.

    Exit 0 when everything is done; 1 when some requests failed or batches are still running
    (run it again later); 2 on invalid input.
    """
    return _batch(targets, offline, provider, base_url, var, (), (), None, False, shard, concurrency,
                  fail_fast, None, prices, output_dir, as_json, quiet, collecting=True)


@batch.command("status")
@targets_arg
@provider_options
@_batch_common
@handled
def batch_status(targets: tuple[Path, ...], offline: bool, provider: str | None, base_url: str | None,
                 var: tuple[str, ...], shard: str | None, output_dir: Path | None, as_json: bool,
                 quiet: bool) -> int:
    """Each batch's status and request counts. Exit 0 when none is still running, else 1."""
    from .app import load
    from .engine.batch import status_all

    loaded = load(list(targets), _overrides(offline, provider, base_url, var, output_dir))
    lines = status_all(loaded.plans, _shard(shard))
    running = [s for s in lines if s.status not in ("collected", "completed", "failed", "expired", "cancelled")]
    if as_json:
        click.echo(json.dumps({"exit_code": 1 if running else 0, "batches": [
            {"recipe": s.recipe, "token": s.doc.get("token"), "batch_id": s.doc.get("batch_id"),
             "status": s.status, "wave": s.doc.get("wave"), "endpoint": s.doc.get("endpoint"),
             "request_counts": (s.info.request_counts if s.info else s.doc.get("request_counts")),
             "requests": len(s.doc.get("requests") or {})} for s in lines]}, indent=2))
    elif not quiet:
        for s in lines:
            click.echo(s.format())
        if not lines:
            click.echo("no batches")
    return 1 if running else 0


@main.command()
@click.argument("kind", type=click.Choice(["recipe", "pipeline"]), default="recipe")
@handled
def schema(kind: str) -> int:
    """Print the JSON Schema of a recipe or a pipeline file."""
    from .schema import schema_text

    click.echo(schema_text(kind), nl=False)
    return 0


@main.command()
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              metavar="OUT.png", help="The mask to write: a PNG (JPEG has no alpha channel).")
@click.option("--circle", multiple=True, metavar="CX,CY,R",
              help="A circle: centre CX,CY in fractions of the width and height; radius R in fractions of "
                   "min(width, height), so it stays round.")
@click.option("--ellipse", multiple=True, metavar="X0,Y0,X1,Y1",
              help="The ellipse inside the box from X0,Y0 (top-left) to X1,Y1 (bottom-right), in fractions of "
                   "the width and height.")
@click.option("--rect", multiple=True, metavar="X0,Y0,X1,Y1",
              help="A rectangle from X0,Y0 (top-left) to X1,Y1 (bottom-right), in fractions of the width and "
                   "height.")
@click.option("--polygon", multiple=True, metavar="X,Y,X,Y,...",
              help="A polygon through at least 3 points X,Y, in fractions of the width and height.")
@click.option("--from-alpha", type=click.Path(path_type=Path, dir_okay=False), metavar="IMAGE",
              help="Also mark the fully transparent pixels of this image (scaled to IMAGE's size).")
@click.option("--invert", is_flag=True, help="Edit everything except the shapes.")
@click.option("--feather", type=click.FloatRange(min=0), default=0.0, metavar="PX", show_default=True,
              help="Soften the edge: a linear ramp PX pixels wide, centred on the edge.")
@click.option("--allow-empty", is_flag=True, help="Write the mask even if it leaves nothing to edit.")
@handled
def mask(image: Path, out: Path, circle: tuple[str, ...], ellipse: tuple[str, ...], rect: tuple[str, ...],
         polygon: tuple[str, ...], from_alpha: Path | None, invert: bool, feather: float, allow_empty: bool) -> int:
    """Make an RGBA PNG mask the size of IMAGE: transparent where the image is to be edited.

    Coordinates are fractions of IMAGE's width and height, from 0,0 (top-left) to 1,1
    (bottom-right): 0.5,0.5 is the centre. Shapes may overhang the image but must touch it.
    Shapes are repeatable and unioned, then --invert, then --feather.
    """
    from .maskcmd import make_mask, parse_shapes

    shapes = parse_shapes(circle, ellipse, rect, polygon)
    w, h = make_mask(image, out, shapes, from_alpha=from_alpha, invert=invert, feather=feather,
                     allow_empty=allow_empty)
    click.echo(f"wrote {out} ({w}x{h})")
    return 0


@main.command()
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The PNG to write.")
@click.option("--circle", multiple=True, metavar="CX,CY,R", help="A circle: centre and radius, fractions.")
@click.option("--ellipse", multiple=True, metavar="X0,Y0,X1,Y1", help="An ellipse in a box, fractions.")
@click.option("--rect", multiple=True, metavar="X0,Y0,X1,Y1", help="A rectangle, fractions.")
@click.option("--polygon", multiple=True, metavar="X,Y,X,Y,...", help="A polygon, fractions.")
@click.option("--arrow", multiple=True, metavar="X0,Y0,X1,Y1", help="An arrow from X0,Y0 to X1,Y1, fractions.")
@click.option("--color", default="#ff0000", show_default=True, help="Stroke colour: #rgb, #rrggbb or #rrggbbaa.")
@click.option("--width", type=float, default=8.0, show_default=True, help="Stroke width in pixels.")
@click.option("--fill", is_flag=True, help="Fill closed shapes too.")
@handled
def markup(image: Path, out: Path, circle: tuple[str, ...], ellipse: tuple[str, ...], rect: tuple[str, ...],
           polygon: tuple[str, ...], arrow: tuple[str, ...], color: str, width: float, fill: bool) -> int:
    """Draw a markup the size of IMAGE: visible strokes on a transparent PNG that guide an edit.

    Coordinates are fractions of IMAGE's width and height from the top-left (a circle's radius: of the
    shorter side), as in a markup step. Send it as an edit's `markup` (GPT Image 2.5 models).
    """
    from .maskcmd import make_markup, parse_markup_shapes

    shapes = parse_markup_shapes(circle, ellipse, rect, polygon, arrow)
    w, h = make_markup(image, out, shapes, color=color, width=width, fill=fill)
    click.echo(f"wrote {out} ({w}x{h})")
    return 0


@main.command()
@targets_arg
@click.option("--var", "var", multiple=True, metavar="K=V",
              help="Set a template variable (variables can change output paths).")
@click.option("--purge", is_flag=True, help="Also empty history: deletes paid images for good, saying what they cost.")
@click.option("--dry-run", is_flag=True, help="List every file clean would touch, with its reason; change nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every file clean touched (with --dry-run: would touch) and why, as JSON.")
@handled
def clean(targets: tuple[Path, ...], var: tuple[str, ...], purge: bool, dry_run: bool, as_json: bool) -> int:
    """Tidy output folders: only files their own manifests record, never an input.

    Outputs no task makes any more: paid ones move to .dalle-pipe/history/, free ones (offline
    images, masks, local steps) are removed. History is emptied only with --purge.
    """
    from .app import load
    from .housekeeping import as_json as clean_json
    from .housekeeping import clean_plans, describe, pipeline_plans

    overrides = _overrides(False, None, None, var)
    loaded = load(list(targets), overrides)
    results = clean_plans(loaded.plans, purge=purge, dry_run=dry_run,
                          more_plans=lambda: pipeline_plans(loaded.plans, overrides))
    if as_json:
        click.echo(json.dumps(clean_json(results, dry_run), indent=2))
        return 0
    for result in results:
        for line in describe(result, dry_run):
            click.echo(line)
    return 0


@main.command()
@targets_arg
@var_option
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False),
              help="The --output-dir the run used.")
@handled
def report(targets: tuple[Path, ...], var: tuple[str, ...], output_dir: Path | None) -> int:
    """Rebuild the review page (report.html) of each recipe's output folder.

    A TARGET may also be an output folder that holds a manifest.json.
    """
    from .recipe import display_path
    from .report import rebuild_reports

    overrides = _overrides(False, None, None, var, output_dir)
    for name, path in rebuild_reports(list(targets), overrides):
        click.echo(f"{name}: wrote {display_path(path)}")
    return 0


@main.command()
@click.argument("selectors", nargs=-1, metavar="KEY[/STEP]...")
@click.option("--recipe", "recipes", multiple=True, type=click.Path(path_type=Path),
              metavar="TARGET", help="Recipe or pipeline file (default ./pipeline.yaml).")
@click.option("--revoke", is_flag=True, help="Withdraw the approval: the next run may make them again.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False),
              help="The --output-dir the run used.")
@var_option
@handled
def approve(selectors: tuple[str, ...], recipes: tuple[Path, ...], revoke: bool, output_dir: Path | None,
            var: tuple[str, ...]) -> int:
    """Approve images: no later run regenerates them (a changed recipe only marks them stale)."""
    from .approve import approve as approve_all

    done = approve_all(list(recipes), _overrides(False, None, None, var, output_dir), selectors,
                       revoke=revoke)
    verb = "unapproved" if revoke else "approved"
    for a in done:
        click.echo(f"{a.recipe}: {verb if a.changed else 'already ' + verb} {a.task} ({a.path})")
        if a.offline and a.changed and not revoke:
            click.echo(f"warning: {a.task}: this is an offline placeholder; `run --check` against a real "
                       f"provider fails on it until it is made again", err=True)
    return 0


@main.command()
@click.argument("folder", default=".", type=click.Path(path_type=Path, file_okay=False))
@handled
def init(folder: Path) -> int:
    """Start a project in FOLDER (default .): a pipeline, an example recipe, a catalog, schemas."""
    from .scaffold import init_project

    for rel in init_project(folder):
        click.echo(f"wrote {folder / rel}")
    go = "" if folder == Path(".") else f"cd {folder} && "
    click.echo(f"next: {go}dalle-pipe validate && dalle-pipe run --offline   (a preview: no key, no network)")
    return 0


def run_main() -> None:  # pragma: no cover - console entry for `python -m`
    main(prog_name="dalle-pipe")


if __name__ == "__main__":  # pragma: no cover
    run_main()
    sys.exit(EXIT_INVALID)
