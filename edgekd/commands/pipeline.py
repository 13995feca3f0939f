"""`edgekd quickstart` and `edgekd run`: every stage, in order, skipping what is up to date."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def quickstart(
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/quickstart-<task>)."),
        task: str = typer.Option("eye", "--task", help="eye | skeleton | face"),
        seed: int = typer.Option(0, "--seed"),
        target: List[str] = typer.Option(["local", "qemu-mps2-an386"], "--target", "-t"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Distill, quantize, convert, deploy to this host and an emulated Cortex-M4, profile, report."""
        from edgekd.pipeline import quickstart as run_quickstart

        result = run_quickstart(task, out, seed, target, log=_log)
        _finish(result, as_json)

    @app.command("run")
    def run_cmd(
        recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe name or TOML path."),
        target: List[str] = typer.Option(["local"], "--target", "-t"),
        set_: List[str] = typer.Option([], "--set", help="Override a recipe key: --set train.epochs=3"),
        out: Optional[Path] = typer.Option(None, "--out"),
        runs: int = typer.Option(200, "--runs", help="Timed inferences per target."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Run any recipe through the same stages as quickstart."""
        from edgekd.pipeline import run_pipeline

        result = run_pipeline(recipe, target, set_, out, log=_log, runs=runs)
        _finish(result, as_json)


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _finish(result, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(v, pct=False):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{100 * v:.1f} %" if pct else f"{v:.4g}"
        return str(v)

    table = Table(title=f"edgekd: {result.run_dir}", header_style="bold")
    for col in ("stage", "status", "s", "result"):
        table.add_column(col, overflow="fold")
    for s in result.stages:
        m = s.metrics
        bits = []
        for key, label, pct in (("val_accuracy", "val acc", True), ("teacher_val_accuracy", "teacher", True),
                                ("parameters", "params", False), ("fp32_accuracy", "fp32", True),
                                ("int8_accuracy", "int8", True), ("accuracy", "device acc", True),
                                ("agreement_with_host", "agree", True), ("agreement_with_tflite", "agree", True),
                                ("p50_ms", "p50 ms", False), ("cycles_per_inference", "cycles", False),
                                ("flash_kb", "flash KiB", False), ("ram_kb", "RAM KiB", False),
                                ("energy_mj", "mJ", False), ("total_mj", "est. mJ", False)):
            if m.get(key) is not None:
                bits.append(f"{label} {fmt(m[key], pct)}")
        table.add_row(s.name, s.status, f"{s.seconds:.0f}", ", ".join(bits))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"report: {result.report}   total {result.seconds:.0f} s", markup=False)
