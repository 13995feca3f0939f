"""Subprocess entry point: quantize/convert a SavedModel with TensorFlow's TFLiteConverter.

    python -m edgekd.convert.tf_worker JOB.json

JOB: {"saved_model", "outputs": {mode: path}, "per_channel", "calibration": npz or null,
"spiking": null | "spikes" | "integer" | "exact" (int8 of a spiking student: pin the ranges the
model sets, edgekd.convert.spiking_ranges), "result": path}. The calibration arrays are already in the
SavedModel's (channel-last) layout, keyed by input name. Writes {mode: {"ok", "error"?, "bytes"?}} to "result". Runs in
its own process so TensorFlow's logs go to the caller's log file and its memory is freed.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _signature_inputs(saved_model: str) -> list[str]:
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)
    fn = loaded.signatures["serving_default"]
    return list(fn.structured_input_signature[1].keys())


def _matching_key(sig_name: str, keys: list[str]) -> str:
    import re

    for k in keys:
        if k == sig_name or re.sub(r"[^0-9A-Za-z_]", "_", k) == sig_name:
            return k
    if len(keys) == 1:
        return keys[0]
    raise KeyError(f"no calibration array for signature input '{sig_name}' (have {keys})")


def convert(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    results: dict[str, Any] = {}
    try:
        cal = dict(np.load(job["calibration"])) if job.get("calibration") else None
        sig_inputs = _signature_inputs(job["saved_model"]) if cal is not None else []
    except Exception as exc:  # every mode fails with the same reason
        traceback.print_exc()
        return {mode: {"ok": False, "error": f"{type(exc).__name__}: {exc}"} for mode in job["outputs"]}

    def representative():
        assert cal is not None
        keys = list(cal)
        mapping = {s: _matching_key(s, keys) for s in sig_inputs}
        n = len(cal[keys[0]])
        for i in range(n):
            # dict keyed by signature input name: order-proof for multi-input models
            yield {s: cal[k][i : i + 1].astype(np.float32) for s, k in mapping.items()}

    for mode, out in job["outputs"].items():
        try:
            conv = tf.lite.TFLiteConverter.from_saved_model(job["saved_model"])
            if mode == "fp16":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.target_spec.supported_types = [tf.float16]
            elif mode == "dynamic-int8":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
            elif mode == "int8":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = representative
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
                if not job.get("per_channel", True):
                    conv._experimental_disable_per_channel = True  # per-tensor weights (Edge TPU)
            elif mode != "fp32":
                raise ValueError(f"unknown mode {mode}")
            extra: dict[str, Any] = {}
            if mode == "int8" and job.get("spiking"):
                model, extra["pinned_ranges"] = _quantize_spiking(conv, representative, job.get("per_channel", True),
                                                                  job["spiking"])
            else:
                model = conv.convert()
            tmp = Path(out).with_suffix(".partial")
            tmp.write_bytes(model)
            os.replace(tmp, out)
            results[mode] = {"ok": True, "bytes": len(model), **extra}
        except Exception as exc:  # reported to the parent with the converter's message
            traceback.print_exc()
            results[mode] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return results


def _quantize_spiking(conv: Any, representative: Any, per_channel: bool, kind: str) -> tuple[bytes, dict[str, Any]]:
    """Calibrate, pin the ranges a spiking student sets (edgekd.convert.spiking_ranges), then
    quantize: the converter's own two steps with the ranges edited in between."""
    import itertools

    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    from edgekd.convert.spiking_ranges import drop_identity_rounds, pin_spiking_ranges

    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    samples = itertools.islice(representative(), 32)
    pinned, report = pin_spiking_ranges(calibrated, samples, integer_membrane=kind in ("integer", "exact"),
                                        int8_exact=kind == "exact")
    model = tf_convert.mlir_quantize(pinned, disable_per_channel=not per_channel, input_data_type=tf.int8,
                                     output_data_type=tf.int8)
    model, dropped = drop_identity_rounds(model)
    return model, {**report.to_dict(), "identity_rounds_dropped": dropped}


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    results = convert(job)
    Path(job["result"]).write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
