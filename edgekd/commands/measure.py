"""`edgekd energy`: the theoretical energy estimate of a trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def energy(
        run_dir: Path = typer.Argument(..., help="A directory written by `edgekd train` or `edgekd distill`."),
        samples: int = typer.Option(256, "--samples", help="Validation samples to measure firing rates on."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Theoretical energy per sample from operation counts and measured firing rates (45 nm estimate)."""
        from edgekd.measure.energy import energy_of_run, format_estimate

        est = energy_of_run(str(run_dir), limit=samples)
        if as_json:
            sys.stdout.write(json.dumps(est.to_dict(), indent=2) + "\n")
        else:
            typer.echo(format_estimate(est))
