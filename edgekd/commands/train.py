"""`edgekd train` (teachers, or a student without KD) and `edgekd distill` (students with KD)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

RecipeOpt = typer.Option(..., "--recipe", "-r", help="Recipe name (see edgekd/recipes/) or path to a recipe TOML.")
SetOpt = typer.Option(None, "--set", help="Override a recipe key, e.g. --set train.epochs=3 (repeatable).")
OutOpt = typer.Option(None, "--out", "-o", help="Artifact directory (default runs/<recipe>/01-train or 02-distill).")
ResumeOpt = typer.Option(True, "--resume/--no-resume", help="Resume from the output directory's last checkpoint.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['stage']}: {result['out']}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        if key == "firing_rates":
            rates = list(value.values())
            shown = f"{len(rates)} layers, mean {sum(rates) / max(len(rates), 1):.3f}" if rates else "-"
        elif isinstance(value, float):
            shown = f"{value:.4f}"
        else:
            shown = str(value)
        table.add_row(key, shown)
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        recipe: str = RecipeOpt,
        overrides: Optional[List[str]] = SetOpt,
        out: Optional[Path] = OutOpt,
        model: str = typer.Option("teacher", "--model", help="'teacher' (default) or 'student' (the student without KD)."),
        resume: bool = ResumeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Train a recipe's teacher (or its student alone) and write an artifact directory."""
        from edgekd.distill.api import train_recipe

        _print_result(train_recipe(recipe, overrides or [], out, model=model, resume=resume, progress=not as_json), as_json)

    @app.command("distill")
    def distill(
        recipe: str = RecipeOpt,
        teacher: List[Path] = typer.Option(..., "--teacher", "-t", help="Run directory of the trained teacher (edgekd "
                                           "train); repeat for several teachers (per batch the lowest-CE one)."),
        overrides: Optional[List[str]] = SetOpt,
        out: Optional[Path] = OutOpt,
        resume: bool = ResumeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Distill a recipe's student from a trained teacher with the recipe's KD losses."""
        from edgekd.distill.api import distill_recipe

        teachers = teacher[0] if len(teacher) == 1 else list(teacher)
        _print_result(distill_recipe(recipe, teachers, overrides or [], out, resume=resume, progress=not as_json), as_json)
