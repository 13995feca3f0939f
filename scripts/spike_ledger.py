"""Full-int8 ledger of trained spiking students, with the spikes int8 moves per LIF layer.

For each run directory (written by `edgekd train`/`edgekd distill`): the conversion `edgekd
convert RUN --target local --formats tflite-int8` (reused when up to date), then from its
parity.json the fp32 and int8 accuracy on the validation split, the top-1 agreement int8 vs
fp32, the near-ties (samples whose fp32 top-2 margin is below one int8 output step) and the
agreement beyond them; and from `edgekd.convert.parity.layer_report` on the first --layer-samples
held-out samples, the share of spikes int8 moved in each LIF layer (first and last time step,
and the mean over the steps). A measuring tool, not a benchmark (it takes trained runs, so no
--quick): used for the spike-margin measurements in docs/int8-spiking.md:

    python scripts/spike_ledger.py base=runs/issue6/eye-base margin=runs/issue6/eye-margin \\
        --out runs/issue6/ledger.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def spike_layers(flips: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> list[dict[str, Any]]:
    """The report's spike tensors (one per LIF layer and time step) grouped into layers by their
    shape (each LIF layer of a CNN has its own), in graph order within a layer (= time order);
    layers in the order of their first step."""
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for f in sorted(flips, key=lambda f: f["index"]):
        groups.setdefault(shapes[f["tensor"]], []).append(f)
    out = []
    for i, part in enumerate(groups.values()):
        rates = [f["flip_rate"] for f in part]
        out.append({"layer": i, "shape": list(shapes[part[0]["tensor"]]), "steps": len(part),
                    "firing_rate": sum(f["firing_rate"] for f in part) / len(part),
                    "flip_first": rates[0], "flip_last": rates[-1], "flip_mean": sum(rates) / len(rates),
                    "flip_max": max(rates)})
    return out


def ledger(run_dir: str, layer_samples: int, log: Any) -> dict[str, Any]:
    from edgekd.convert.api import convert_run, find_model_dir, held_out_from
    from edgekd.convert.layout import IO_FILE, ModelIO
    from edgekd.convert.ops import inventory
    from edgekd.convert.parity import PARITY_FILE, layer_report
    from edgekd.distill.api import load_recipe_data
    from edgekd.models import load_model

    # limits opened so that every artifact is written; the recipe's limits are checked below
    summary = convert_run(run_dir, "local", formats=["tflite-int8"], max_accuracy_drop=100.0, min_agreement=0.0, log=log)
    out = Path(summary["out"])
    parity = json.loads((out / PARITY_FILE).read_text())
    hop = next(h for h in parity["hops"] if h["target"] == "tflite-int8")
    first = parity["hops"][0]
    run = find_model_dir(run_dir)
    recipe = run.recipe
    model = load_model(run.model_dir)
    names = list(model.input_names)
    held = held_out_from(load_recipe_data(recipe).validation, names, 1000, recipe.seed)
    sample = {k: v[:layer_samples] for k, v in held.inputs.items()}
    io = ModelIO.load(out / IO_FILE)
    report = layer_report(out / "model.fp32.tflite", out / "model.int8.tflite", io, sample)
    flips = report["spike_flips"]
    shapes = {t.name: tuple(t.shape) for t in inventory(out / "model.int8.tflite").tensors}
    return {
        "run": str(run.model_dir), "convert": str(out), "validation_samples": hop["samples"],
        "acc_torch_fp32": first["accuracy_source"], "acc_tflite_fp32": hop["accuracy_source"],
        "acc_tflite_int8": hop["accuracy_target"], "agreement": hop["agreement"],
        "near_ties": hop["near_ties"], "agreement_beyond_ties": hop["agreement_beyond_ties"],
        "output_step": hop["output_step"],
        "int8_within_recipe_limits": bool(hop["agreement"] >= recipe.convert.min_agreement
                                          and -hop["accuracy_delta"] <= recipe.convert.max_accuracy_drop),
        "layer_samples": layer_samples, "spike_tensors": [f["tensor"] for f in flips],
        "layers": spike_layers(flips, shapes),
    }


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def main(argv: list[str] | None = None) -> int:
    from edgekd.artifacts import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--layer-samples", type=int, default=32, help="held-out samples for the per-layer spike report")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    results = {}
    for item in args.runs:
        name, _, run_dir = item.partition("=")
        if not run_dir:
            ap.error(f"expected NAME=RUN_DIR, got '{item}'")
        results[name] = ledger(run_dir, args.layer_samples, lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
        if args.out:  # after every run: the finished ones survive a failure
            atomic_write_json(args.out, results)
    print("| run | fp32 acc | int8 acc | agreement | near-ties | agreement beyond ties | spikes moved per LIF layer "
          "(first step / last step / mean over steps) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        layers = "; ".join(f"L{lay['layer'] + 1}: {pct(lay.get('flip_first'))} / {pct(lay.get('flip_last'))} / "
                           f"{pct(lay.get('flip_mean'))} %" for lay in r["layers"])
        print(f"| {name} | {pct(r['acc_torch_fp32'])} | {pct(r['acc_tflite_int8'])} | "
              f"{pct(r['agreement'])} | {pct(r['near_ties'])} | {pct(r['agreement_beyond_ties'])} | {layers} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
