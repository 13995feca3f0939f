"""`edgekd demo eye-camera`: live single-eye emotion recognition (edgekd.demo.eye_camera)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def _fmt(value: object, digits: int = 1, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.{digits}f} %" if pct else f"{value:.{digits}f}"
    return str(value)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eye-camera demo: {summary['status']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("model", summary["model"]["description"])
    table.add_row("source", summary["source"]["description"])
    table.add_row("frames shown", f"{summary['frames']} in {summary['wall_s']:.1f} s ({_fmt(summary['fps'])} fps)")
    table.add_row("inferences", f"{summary['inferences']} ({summary['skipped_inferences']} windows skipped, "
                                f"{summary['dropped_frames']} frames dropped)")
    lat, e2e = summary["latency_model_ms"], summary["latency_frame_to_label_ms"]
    table.add_row("model latency p50 / p90", f"{_fmt(lat.get('p50_ms'), 2)} / {_fmt(lat.get('p90_ms'), 2)} ms")
    table.add_row("frame -> label p50 / p90", f"{_fmt(e2e.get('p50_ms'), 2)} / {_fmt(e2e.get('p90_ms'), 2)} ms")
    if summary.get("power_w"):
        power = summary["power_w"]
        table.add_row(f"board power ({power['source']})", f"{power['mean']:.2f} W mean, {power['min']:.2f}-{power['max']:.2f} W")
    acc = summary.get("accuracy")
    if acc:
        table.add_row("frame accuracy (shown label)", f"{_fmt(acc['frame_accuracy'], pct=True)} of {acc['frames_scored']}")
        table.add_row("window accuracy (raw)", f"{_fmt(acc['window_accuracy'], pct=True)} of {acc['windows_scored']}")
        if acc.get("window_accuracy_by_start"):
            by_start = acc["window_accuracy_by_start"]
            table.add_row("  by window start in clip 0..", " / ".join(f"{100 * v:.0f}" for v in by_start.values()) + " %")
        table.add_row("aligned-clip accuracy", f"{_fmt(acc['aligned_accuracy'], pct=True)} of {acc['aligned_windows']}"
                                               f" (chance {_fmt(acc['chance'], pct=True)})")
    if summary.get("out"):
        table.add_row("outputs", summary["out"])
    Console(highlight=False, stderr=False).print(table)


def register(app: typer.Typer) -> None:
    demo_app = typer.Typer(help="Live demos of distilled models.", no_args_is_help=True)
    app.add_typer(demo_app, name="demo")

    @demo_app.command("eye-camera")
    def eye_camera(
        model: Path = typer.Option(..., "--model", "-m",
                                   help="Eye model: a training run directory (edgekd distill --recipe eye-mskd), "
                                        "a .tflite/.onnx, or an `edgekd convert` directory (tflite-int8 is used)."),
        source: str = typer.Option("synthetic", "--source", "-s",
                                   help="Camera index (0), device (/dev/video0), video file, or 'synthetic'."),
        target: Optional[str] = typer.Option(None, "--target", "-t",
                                             help="Run the model on this target through the agent (frames streamed to it); "
                                                  "default: in this process."),
        roi: str = typer.Option("whole", "--roi", help="Eye region: 'whole' frame (head-mounted eye camera) or 'detect' "
                                                       "(Haar eye detector, for a desk webcam)."),
        headless: bool = typer.Option(False, "--headless", help="No live view; write the outputs to --out."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write annotated video, GIF, predictions JSONL "
                                                                    "and summary here (headless default: runs/demo/...)."),
        view: str = typer.Option("auto", "--view", help="auto (window if a display exists, else web), window, web."),
        port: int = typer.Option(8765, "--port", help="Port of the web view on 127.0.0.1 (0: any free port)."),
        smoothing: float = typer.Option(0.5, "--smoothing", help="Weight of the past in the moving average of probabilities [0, 1)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads (default: 1 in this process, the target's with --target)."),
        realtime: Optional[bool] = typer.Option(None, "--realtime/--no-realtime",
                                                help="Pace files/synthetic at their frame rate, skipping what the model cannot "
                                                     "keep up with (default: on with a live view, off headless)."),
        fps: Optional[float] = typer.Option(None, "--fps", help="Synthetic stream frame rate (default 10)."),
        clips: Optional[int] = typer.Option(None, "--clips", help="Synthetic clips to play (default: 70 headless, endless live)."),
        lighting: Optional[List[str]] = typer.Option(None, "--lighting", help="Synthetic lighting (repeatable): normal, "
                                                                              "overexposed, low-light, hdr (default: all)."),
        seed: int = typer.Option(1, "--seed", help="Synthetic wearer and clips."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
        duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
        targets_dir: Optional[List[Path]] = typer.Option(None, "--targets-dir", help="Extra folder of target TOML files."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Live single-eye emotion recognition: camera, video file or synthetic eye stream."""
        from edgekd.demo.eye_camera import DemoSettings, run_eye_camera

        settings = DemoSettings(
            model=str(model), source=source, target=target, targets_dirs=[str(d) for d in targets_dir or []], roi=roi,
            headless=headless, out=str(out) if out else None, view=view, port=port, smoothing=smoothing, threads=threads,
            realtime=realtime, fps=fps, clips=clips, lightings=list(lighting or []), seed=seed, max_frames=max_frames,
            duration_s=duration,
        )
        summary = run_eye_camera(settings, log=lambda m: sys.stderr.write(f"[demo] {m}\n"))
        if as_json:
            sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        else:
            _print_summary(summary)
