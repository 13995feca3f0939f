"""`edgekd deploy` and `edgekd profile` (Linux and host targets)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

ArtifactArg = typer.Argument(..., help="A .tflite/.onnx model, or a directory written by `edgekd convert`.")
EvalOpt = typer.Option(None, "--eval", help="Evaluation set .npz in the model's input layout: x (or x_<name> per input "
                                            "and input_names, as `edgekd convert` writes it), y labels.")
TargetsDirOpt = typer.Option(None, "--targets-dir", help="Extra folder of target TOML files (repeatable).")


def register(app: typer.Typer) -> None:
    @app.command()
    def deploy(
        artifact: Path = ArtifactArg,
        target: str = typer.Option("local", "--target", "-t", help="Target name (see `edgekd targets list`)."),
        eval_set: Optional[Path] = EvalOpt,
        targets_dir: Optional[List[Path]] = TargetsDirOpt,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Check the device, then copy the agent, the model and the evaluation inputs (only what changed)."""
        from edgekd.runners.deploy import deploy as deploy_model

        result = deploy_model(artifact, target, targets_dir or [], eval_set)
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
            return
        typer.echo(f"deployed to {result.target}:{result.workdir}")
        if result.inputs:
            typer.echo(f"  inputs     {result.inputs_check}")
        for path in result.sent:
            typer.echo(f"  sent       {path}")
        for path in result.unchanged:
            typer.echo(f"  unchanged  {path}")

    @app.command()
    def profile(
        artifact: Path = ArtifactArg,
        target: List[str] = typer.Option(["local"], "--target", "-t", help="Target name; repeat to run several in parallel."),
        runs: int = typer.Option(100, "--runs", help="Timed inferences, at least."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed inferences first."),
        min_time: float = typer.Option(1.0, "--min-time", help="Seconds of timed inferences, at least."),
        eval_set: Optional[Path] = EvalOpt,
        power: bool = typer.Option(False, "--power", help="Also measure power/energy with the target's power sources."),
        out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default runs/profile-<time>)."),
        targets_dir: Optional[List[Path]] = TargetsDirOpt,
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Run the model on each target: on-device accuracy, agreement with the host, latency."""
        from edgekd.measure.api import ProfileSettings, profile as run_profile

        results = run_profile(artifact, target, ProfileSettings(runs=runs, warmup=warmup, min_time_s=min_time, power=power),
                              eval_set, out, targets_dir or [])
        if as_json:
            sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2, default=str) + "\n")
        else:
            _print_table(results)
        if any(r.status != "complete" for r in results):
            raise typer.Exit(1)


STATUS_LABEL = {"complete": "ok", "incomplete": "partial", "failed": "FAILED"}


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v, pct=False):
        if v is None:
            return "-"
        return f"{100 * v:.1f}" if pct else f"{v:.3g}"

    table = Table(header_style="bold", caption="latency: invoke() only, ms; acc/agree in %")
    with_energy = any("energy" in r.summary for r in results)
    columns = ["target", "status", "n", "acc", "agree", "first", "p50", "p99", "CoV"] + (["mJ/inf"] if with_energy else [])
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "status") else "right")
    for r in results:
        s = r.summary
        table.add_row(
            r.target, STATUS_LABEL.get(r.status, r.status), f"{s.get('samples_done', 0)}/{s.get('samples_total', '?')}",
            fmt(s.get("accuracy"), True), fmt(s.get("agreement_with_host"), True), fmt(s.get("first_ms")),
            fmt(s.get("p50_ms")), fmt(s.get("p99_ms")), fmt(s.get("latency_cov")),
            *([fmt(s.get("energy_mj"))] if with_energy else []),
        )
    console = Console(highlight=False)
    console.print(table)
    for r in results:
        if r.error:
            console.print(f"[red]{r.target}[/red]: {r.error}", markup=True)
            if r.hint:
                console.print(f"  hint: {r.hint}", markup=False)
        if r.summary.get("energy_note"):
            console.print(f"{r.target}: energy not reported: {r.summary['energy_note']}", markup=False)
        if r.out_dir:
            console.print(f"{r.target}: results in {r.out_dir}", markup=False)
