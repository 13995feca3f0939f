"""`edgekd data ...` and `edgekd calibration ...`: what a data source holds, and calibration sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

SOURCES_HELP = "Data source: synthetic, fer2013, imagefolder, rafdb, msr-action3d, ntu, see."
OptionOpt = typer.Option(None, "--option", "-o", help="Reader option KEY=VALUE (repeatable), e.g. -o size=64 -o frames=16.")


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Datasets: what a source holds (classes, splits, shapes, skipped inputs).",
                           no_args_is_help=True)
    calibration_app = typer.Typer(help="Calibration sets for int8 quantization.", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    app.add_typer(calibration_app, name="calibration")

    @data_app.command("summary")
    def summary(
        path: Optional[Path] = typer.Argument(None, help="The dataset's folder or file (none for synthetic)."),
        task: str = typer.Option(..., "--task", help="Task: eye, skeleton or face."),
        source: str = typer.Option(..., "--source", help=SOURCES_HELP),
        option: Optional[List[str]] = OptionOpt,
        validation_fraction: float = typer.Option(0.2, help="Fraction of the training side cut for validation."),
        split_seed: int = typer.Option(0, help="Seed of the validation cut."),
        seed: int = typer.Option(0, help="Seed of synthetic data."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """Counts per class and split, array shapes, and every skipped input with the reason.

        Reader options (-o) per source are listed in docs/data.md; an unknown one is an error
        that names the valid ones."""
        from edgekd.data.api import parse_option_values
        from edgekd.data.summary import format_summary, summarize

        info = summarize(task, source, str(path) if path is not None else None, seed=seed,
                         validation_fraction=validation_fraction, split_seed=split_seed,
                         **parse_option_values(option or []))
        if as_json:
            _print_json(info)
            return
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        for part in format_summary(info):
            console.print(part)

    @calibration_app.command("build")
    def calibration_build(
        task: str = typer.Option(..., "--task", help="Task: eye, skeleton or face."),
        out: Optional[Path] = typer.Option(None, "--out", help="Artifact directory to write (manifest.json + "
                                           "calibration.npz); default runs/calibration/TASK-SOURCE."),
        source: str = typer.Option("synthetic", "--source", help=SOURCES_HELP),
        data: Optional[Path] = typer.Option(None, "--data", help="The dataset's folder or file (not for synthetic)."),
        n: int = typer.Option(500, "-n", help="Samples in the set (class-balanced)."),
        split: str = typer.Option("train", help="Split to sample from: train, validation, test or all."),
        seed: int = typer.Option(0, help="Seed of the sampling (and of synthetic data)."),
        option: Optional[List[str]] = OptionOpt,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Build a class-balanced representative set, checked for layout, dtype, range and class coverage."""
        from edgekd.data.api import parse_option_values
        from edgekd.data.calibration import build_calibration

        out = out if out is not None else Path("runs") / "calibration" / f"{task}-{source}"
        info = build_calibration(task, source, out, data=str(data) if data is not None else None, n=n, split=split,
                                 seed=seed, **parse_option_values(option or []))
        if as_json:
            _print_json(info)
            return
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["shapes"].items())
        counts = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
        typer.echo(f"wrote {info['out']}: {info['samples']} samples (asked {info['requested']}); {shapes}\n"
                   f"  per class: {counts}")

    @calibration_app.command("check")
    def calibration_check(
        directory: Path = typer.Argument(..., help="A calibration directory written by `calibration build`."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Re-check a calibration set (hashes, layout, dtype, range, class coverage)."""
        from edgekd.data.calibration import describe_calibration

        info = describe_calibration(directory)
        if as_json:
            _print_json(info)
            return
        typer.echo(f"{directory}: ok, task {info['task']}, {info['samples']} samples; "
                   + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["shapes"].items()))
