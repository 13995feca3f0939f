"""`edgekd report` and `edgekd diff`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run_dir: Path = typer.Argument(..., help="A run directory (e.g. runs/quickstart)."),
        out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default RUN_DIR/report.html)."),
    ) -> None:
        """Write one self-contained HTML report over every stage of a run."""
        from edgekd.report.html import render_report

        typer.echo(f"report: {render_report(run_dir, out)}")

    @app.command()
    def diff(
        run_a: Path = typer.Argument(..., help="First run directory."),
        run_b: Path = typer.Argument(..., help="Second run directory."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Explain what changed between two runs: inputs, params, versions, metrics."""
        from edgekd.report.diff import diff_runs, format_diff

        d = diff_runs(run_a, run_b)
        if as_json:
            sys.stdout.write(json.dumps(d, indent=2, default=str) + "\n")
        else:
            typer.echo(format_diff(d))
