"""`edgekd firmware ...`: microcontroller firmware from an int8 .tflite (build, check, deploy, run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

firmware_app = typer.Typer(help="Microcontroller firmware: C int8 runtime + generated model, serial protocol.",
                           no_args_is_help=True)

TargetOpt = typer.Option(..., "--target", "-t", help="An mcu target (edgekd targets list), e.g. qemu-mps2-an386.")
OutOpt = typer.Option(None, "--out", "-o", help="Build folder (default runs/firmware/<model>-<target>).")
RefOpt = typer.Option(None, "--reference", help="Whose int8 arithmetic to reproduce: tflite (TFLite's reference kernels), "
                            "tflite-cpu (the same rounding once, as TFLite's default CPU kernels do: an "
                            "int8_exact student then matches them bit for bit) or tflm (TFLite Micro). Default: "
                            "tflite-cpu for a model edgekd convert made from an int8_exact student, else tflite.")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")
TargetsDirOpt = typer.Option(None, "--targets-dir", help="Extra folder of target TOML files.")
DebugOpt = typer.Option(False, "--debug", help="Record all serial traffic to <out>/serial-traffic.log.")


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, "-" if v is None else str(v))
    Console(highlight=False).print(table)


def _size_rows(sizes: dict[str, Any], limits: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    limits = limits or {}
    flash_lim = f" of {limits['flash_bytes']}" if limits.get("flash_bytes") else ""
    ram_lim = f" of {limits['ram_bytes']}" if limits.get("ram_bytes") else ""
    return [
        ("flash (bytes)", f"{sizes['flash_bytes']}{flash_lim}"),
        ("  model (weights + call table)", sizes.get("model_flash_bytes")),
        ("  runtime + protocol + board code", sizes.get("runtime_code_bytes")),
        ("  C library / soft-float", sizes.get("library_bytes")),
        ("RAM (bytes)", f"{sizes['ram_bytes']}{ram_lim}"),
        ("  activation arena", sizes.get("arena_bytes")),
        ("  stack reserved", sizes.get("stack_bytes")),
    ]


@firmware_app.command("check")
def check(
    model: Path = typer.Argument(..., help="An int8 .tflite model."),
    reference: Optional[str] = RefOpt,
    tflm: bool = typer.Option(True, "--tflm/--no-tflm", help="Also report TFLite Micro's arena for the model."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Also compare every op with the interpreter on these "
                                          "inputs (.npy/.npz, as for run): names the ops that compute differently."),
    samples: int = typer.Option(5, "--samples", help="Inputs used by the per-op comparison."),
    as_json: bool = JsonOpt,
) -> None:
    """Can the firmware runtime run this model? Ops, arena plan, TFLite Micro's arena; per op, the
    interpreter's results (--inputs)."""
    from edgekd.firmware.api import check_model, load_inputs

    res = check_model(model, reference=reference, with_tflm=tflm, inputs=load_inputs(inputs) if inputs else None,
                      samples=samples)
    if as_json:
        _print_json(res)
    else:
        rows: list[tuple[str, Any]] = [("ops", ", ".join(f"{k} x{v}" for k, v in res["ops"].items())),
                                       ("supported", res["supported"])]
        rows += [(f"  op #{p['op_index']} {p['op']}", p["message"]) for p in res["problems"]]
        if res["supported"]:
            rows += [("edgekd arena (bytes)", res["arena_bytes"]), ("constants (bytes)", res["weight_bytes"])]
        t = res.get("tflm") or {}
        if t:
            rows.append(("TFLite Micro arena (bytes)", t.get("arena_bytes") if t.get("available") else t.get("error")))
        per_op = res.get("ops_vs_interpreter")
        if per_op is not None:
            rows.append((f"ops vs {res['compared_with']}", f"{res['reference']} flavour, runs that differ / runs"))
            for name, e in sorted(per_op.items()):
                first = e["first_difference"]
                where = (f" (first: op #{first['op_index']}, {first['elements']} of {first['of']} values, "
                         f"up to {first['max_abs']} steps)" if first else "")
                rows.append((f"  {name}", f"{e['differ']} / {e['runs']}{where}"))
        _kv_table(str(model), rows)
    if not res["supported"]:
        raise typer.Exit(1)


@firmware_app.command("build")
def build(
    model: Path = typer.Argument(..., help="An int8 .tflite model."),
    target: str = TargetOpt,
    out: Optional[Path] = OutOpt,
    reference: Optional[str] = RefOpt,
    stack: int = typer.Option(1024, "--stack", help="Stack bytes to reserve (the board reports the high-water mark)."),
    tflm: bool = typer.Option(True, "--tflm/--no-tflm", help="Compare with TFLite Micro's arena."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the build folder is up to date."),
    targets_dir: Optional[List[Path]] = TargetsDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Generate C from the model and build the firmware; flash and RAM against the target's limits."""
    from edgekd.firmware.api import build_mcu

    res = build_mcu(model, target, out, reference=reference, stack_bytes=stack, with_tflm=tflm,
                    targets_dir=targets_dir or [], force=force)
    if as_json:
        _print_json(res)
        return
    rows: list[tuple[str, Any]] = [("target / board", f"{res['target']} / {res['board']}"),
                                   ("model id", res["model_id"]), ("arithmetic of", res["reference"]),
                                   ("firmware", res["elf"])]
    rows += _size_rows(res["sizes"], res.get("limits"))
    t = res.get("tflm") or {}
    if t:
        rows.append(("TFLite Micro arena (bytes)", t.get("arena_bytes") if t.get("available") else t.get("error")))
    _kv_table(f"firmware for {model.name}", rows)


@firmware_app.command("size")
def size(build_dir: Path = typer.Argument(..., help="A firmware build folder."), as_json: bool = JsonOpt) -> None:
    """Flash and RAM of a built firmware (from its ELF and linker map)."""
    from edgekd.firmware.build import load_build

    b = load_build(build_dir)
    if as_json:
        _print_json(b.to_dict())
    else:
        _kv_table(str(build_dir), [("target / board", f"{b.target} / {b.board}")] + _size_rows(b.sizes))


@firmware_app.command("deploy")
def deploy(
    model: Path = typer.Argument(..., help="An int8 .tflite model."),
    target: str = TargetOpt,
    out: Optional[Path] = OutOpt,
    reference: Optional[str] = RefOpt,
    flash: bool = typer.Option(True, "--flash/--no-flash", help="Flash a real board first (qemu always boots the build)."),
    targets_dir: Optional[List[Path]] = TargetsDirOpt,
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Build, check the limits, flash (or boot under qemu) and handshake with the board."""
    from edgekd.firmware.api import deploy_mcu

    res = deploy_mcu(model, target, out, reference=reference, flash=flash, targets_dir=targets_dir or [], debug=debug)
    if as_json:
        _print_json(res)
        return
    mem = res.get("memory_on_board") or {}
    _kv_table(f"{model.name} on {res['target']}", [
        ("connection", f"{res['connection'].get('transport')} {res['connection'].get('port')}"),
        ("firmware", res["profile"]["profile"]), ("model", res["profile"]["model"]),
        ("extensions", ", ".join(res["caps"]) or "none"),
        ("flash / RAM (bytes)", f"{res['build']['sizes']['flash_bytes']} / {res['build']['sizes']['ram_bytes']}"),
        ("stack used (bytes)", mem.get("stack_used")),
    ])


@firmware_app.command("run")
def run(
    model: Path = typer.Argument(..., help="An int8 .tflite model."),
    target: str = TargetOpt,
    inputs: Path = typer.Option(..., "--inputs", help=".npy (or .npz) with [N, *input_shape]: int8, or float to quantize; an eval.npz with several inputs."),
    labels: Optional[Path] = typer.Option(None, "--labels", help=".npy with N integer labels (for accuracy)."),
    out: Optional[Path] = OutOpt,
    reference: Optional[str] = RefOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N inputs."),
    timing_runs: int = typer.Option(20, "--timing-runs", help="Inferences for the timing run (0: skip)."),
    flash: bool = typer.Option(True, "--flash/--no-flash", help="Flash a real board first."),
    targets_dir: Optional[List[Path]] = TargetsDirOpt,
    debug: bool = DebugOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run evaluation inputs on the board: agreement with TFLite int8, accuracy, cycles, flash, RAM."""
    import numpy as np

    from edgekd.firmware.api import load_inputs, profile_mcu

    x = load_inputs(inputs)
    y = np.load(labels) if labels else None
    if limit:
        x = {k: v[:limit] for k, v in x.items()} if isinstance(x, dict) else x[:limit]
        y = y[:limit] if y is not None else None
    res = profile_mcu(model, target, x, labels=y, out_dir=out, reference=reference, timing_runs=timing_runs,
                      flash=flash, targets_dir=targets_dir or [], debug=debug, progress=not as_json)
    if as_json:
        _print_json(res)
    else:
        t = res.get("timing") or {}
        per = (f"{t['instructions_per_inference']:.0f} instructions (qemu -icount)" if "instructions_per_inference" in t
               else f"{t['cycles_per_inference']:.0f} cycles, {t.get('us_p50', 0):.1f} us" if "cycles_per_inference" in t
               else f"{t.get('mean_us')} us" if t else None)
        _kv_table(f"{model.name} on {res['target']}", [
            ("inputs done / failed", f"{res['n_done']} / {res['n_failed']}"),
            (f"bit-exact with {res['compared_with']}", f"{res.get('bit_exact_inputs')} of {res['n_done']}"),
            ("top-1 agreement", res.get("top1_agreement")),
            ("accuracy", res.get("accuracy")),
            ("per inference", per),
            ("flash / RAM (bytes)", f"{res['flash_bytes']} / {res['ram_bytes']}"),
            ("results", res["profile_json"]),
        ])
        for e in res["events"][:10]:
            typer.echo(f"  event: {e}", err=True)
    if res["n_failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(firmware_app, name="firmware")
