"""The `edgekd` command line. Each command parses its options, calls ONE library function and
prints the result; library modules are imported inside the commands so `--help` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from edgekd import __version__
from edgekd.errors import EdgekdError

app = typer.Typer(
    name="edgekd",
    help="Distill, quantize, convert, deploy and profile small neural networks on small devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
targets_app = typer.Typer(help="The devices edgekd knows (targets/*.toml).", no_args_is_help=True)
app.add_typer(targets_app, name="targets")

TargetsDirOpt = typer.Option(
    None, "--targets-dir", help="Extra folder of target TOML files (repeatable; also $EDGEKD_TARGETS)."
)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
) -> None:
    if debug:
        os.environ["EDGEKD_DEBUG"] = "1"


# ---------------------------------------------------------------- inspect


@app.command()
def inspect(
    directory: Path = typer.Argument(..., help="An artifact directory (holds manifest.json)."),
    as_json: bool = JsonOpt,
) -> None:
    """Print an artifact directory's manifest."""
    from edgekd.artifacts import format_manifest, read_manifest

    manifest = read_manifest(directory)
    if as_json:
        _print_json(manifest.to_dict())
    else:
        typer.echo(format_manifest(manifest, directory))


# ---------------------------------------------------------------- targets


@targets_app.command("list")
def targets_list(targets_dir: Optional[List[Path]] = TargetsDirOpt, as_json: bool = JsonOpt) -> None:
    """List every known target."""
    from edgekd.targets import list_targets, target_summary

    rows = [target_summary(t) for t in list_targets(targets_dir or [])]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    console = _console()
    wide = console.width >= 120  # the description only fits a wide terminal; `show` has it all
    table = Table(show_header=True, header_style="bold")
    for col in ("name", "kind", "engine"):
        table.add_column(col, no_wrap=True)
    table.add_column("transport", overflow="fold")
    table.add_column("power", overflow="fold")
    if wide:
        table.add_column("description", overflow="fold")
    for r in rows:
        cells = [r["name"], r["kind"], r["engine"], r["transport"], ",".join(r["power"])]
        table.add_row(*cells, *([r["description"]] if wide else []))
    console.print(table)


@targets_app.command("show")
def targets_show(
    name: str = typer.Argument(..., help="Target name or path to a target TOML file."),
    targets_dir: Optional[List[Path]] = TargetsDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one target's full description."""
    from edgekd.targets import get_target

    spec = get_target(name, targets_dir or [])
    data = spec.model_dump(mode="json", exclude_none=True)
    if as_json:
        _print_json(data)
        return
    lines = [f"{spec.name}  ({spec.kind})", f"  {spec.description}"]
    for section in ("hardware", "transport", "runtime", "power", "limits", "flash"):
        if section in data and data[section]:
            lines.append(f"  [{section}]")
            lines += [f"    {k} = {json.dumps(v)}" for k, v in data[section].items()]
    if spec.notes:
        lines.append(f"  notes: {spec.notes}")
    typer.echo("\n".join(lines))


@targets_app.command("check")
def targets_check(
    name: str = typer.Argument(..., help="Target name or path to a target TOML file."),
    targets_dir: Optional[List[Path]] = TargetsDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check that a target is reachable and has what edgekd needs; exits 1 if any check fails."""
    from edgekd.targets import all_ok, check_target, get_target

    spec = get_target(name, targets_dir or [])
    results = check_target(spec)
    if as_json:
        _print_json({"target": spec.name, "ok": all_ok(results), "checks": [r.to_dict() for r in results]})
    else:
        console = _console()
        console.print(f"target [bold]{spec.name}[/bold] ({spec.transport.type})")
        for r in results:
            mark = "[green]ok  [/green]" if r.ok else "[red]FAIL[/red]"
            console.print(f"  {mark} {r.name:<15} {r.detail}", markup=True)
            if not r.ok and r.hint:
                console.print(f"       hint: {r.hint}", markup=False)
    if not all_ok(results):
        raise typer.Exit(1)


# ---------------------------------------------------------------- command groups by area

# Each module defines register(app) and imports only typer at top level (keeps --help fast).
COMMAND_MODULES = (
    "data",
    "train",
    "convert",
    "deploy",
    "measure",
    "firmware",
    "report",
    "demo",
    "pipeline",
)


def _register_command_modules() -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        module_name = f"edgekd.commands.{name}"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(app)


_register_command_modules()


# ---------------------------------------------------------------- entry point


INTERRUPTED = "interrupted (stages keep partial results where they can; rerun to resume)\n"


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("EDGEKD_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, prog_name="edgekd", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130:  # typer turns Ctrl-C into exit 130
            sys.stderr.write(INTERRUPTED)
        return code
    except EdgekdError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
