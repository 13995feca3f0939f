"""`edgekd convert RUN_DIR --target NAME`: the conversion chain with its accuracy ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def convert(
        run_dir: Path = typer.Argument(..., help="A run directory written by `edgekd train`/`edgekd distill` (arch.json + model.pt)."),
        target: str = typer.Option("local", "--target", "-t", help="Target name (see `edgekd targets list`) or a target TOML file."),
        formats: Optional[List[str]] = typer.Option(
            None, "--formats", "-f",
            help="Formats to make (repeat or comma-separate): onnx, tflite-fp32, tflite-fp16, tflite-dynamic-int8, "
                 "tflite-int8, edgetpu, tensorrt, c-int8. Default: the target's runtime.formats."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Artifact directory (default: next to the run's stage, NN-convert-TARGET)."),
        calibration: Optional[Path] = typer.Option(None, "--calibration", help="A calibration set directory (`edgekd calibration build`); default: a class-balanced sample of the training split."),
        per_channel: Optional[bool] = typer.Option(None, "--per-channel/--per-tensor", help="int8 weight quantization granularity (default: the recipe's; Edge TPU: per-tensor)."),
        quantizer: str = typer.Option("tensorflow", "--quantizer", help="tensorflow (TFLiteConverter on onnx2tf's SavedModel) or onnx2tf (its own int8 output; TensorFlow's converter where it fails)."),
        eval_samples: Optional[int] = typer.Option(None, "--eval-samples", min=1, help="Held-out validation samples for the ledger (default 1000)."),
        max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", min=0.0, help="Points an int8 hop may lose (default: the recipe's convert.max_accuracy_drop)."),
        min_agreement: Optional[float] = typer.Option(None, "--min-agreement", min=0.0, max=1.0, help="Top-1 agreement an int8 hop must keep (default: the recipe's convert.min_agreement)."),
        force: bool = typer.Option(False, "--force", help="Convert again even if an up-to-date result exists."),
        targets_dir: Optional[List[Path]] = typer.Option(None, "--targets-dir", help="Extra folder of target TOML files (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Convert a trained model for a target (ONNX, TFLite fp32/fp16/int8, Edge TPU, TensorRT, C), checking every hop."""
        from edgekd.convert.api import convert_run

        wanted = [f.strip() for item in (formats or []) for f in item.split(",") if f.strip()] or None

        def log(message: str) -> None:
            sys.stderr.write(f"[convert] {message}\n")
            sys.stderr.flush()

        result = convert_run(run_dir, target, wanted, out, targets_dir or [], calibration, per_channel, quantizer,
                             eval_samples, max_accuracy_drop, min_agreement, force, log=log)
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
            return
        _print_result(result)


def _print_result(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    state = " (up to date, reused)" if result.get("skipped") else ""
    console.print(f"[bold]{result['out']}[/bold]  target {result['target']}{state}")
    table = Table(show_header=True, header_style="bold", title="accuracy ledger")
    for col in ("format", "accuracy %", "UAR %", "agreement with previous %", "max |err|", "ok"):
        table.add_column(col, justify="right" if col != "format" else "left")

    def pct(v: object) -> str:
        return f"{100 * v:.2f}" if isinstance(v, (int, float)) else "-"

    for row in result.get("ledger", []):
        err = row.get("max_abs")
        table.add_row(row["format"], pct(row.get("accuracy")), pct(row.get("uar")), pct(row.get("agreement_with_previous")),
                      f"{err:.3g}" if isinstance(err, (int, float)) else "-", "yes" if row.get("ok") else "NO")
    console.print(table)
    for fmt, info in result.get("formats", {}).items():
        size = info.get("bytes")
        console.print(f"  {fmt:<20} {size if size is not None else '-':>10} B  {info['path']}", markup=False)
    for note in result.get("notes", []):
        console.print(f"  note: {note}", markup=False)
