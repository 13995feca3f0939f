"""The agent quantizes float evaluation inputs exactly as the device's TFLite runtime quantizes a
float input (its own QUANTIZE op), ties included; the host's accuracy ledger uses the same rule."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def float_input_int8_model():
    """A float-in int8 model: its first op is TFLite's QUANTIZE of the float input."""
    import tensorflow as tf

    from tests.runners.models import full_int8

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((64,), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(inp))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 64)).astype(np.float32)]

    return full_int8(model, representative, float_io=True)


@pytest.mark.parametrize("resolver", ["AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"])  # XNNPACK, built-in kernels
def test_agent_quantize_matches_the_runtimes_quantize_op(float_input_int8_model, resolver):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekd.agent.edgekd_agent import quantize
    from edgekd.convert.runtime import quantize as ledger_quantize

    interp = Interpreter(model_content=float_input_int8_model, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=getattr(OpResolverType, resolver))
    interp.allocate_tensors()
    op = [o for o in interp._get_ops_details() if o["op_name"] == "QUANTIZE"][0]
    out = [t for t in interp.get_tensor_details() if t["index"] == op["outputs"][0]][0]
    scale, zero = out["quantization"]
    rng = np.random.default_rng(1)
    k = np.arange(-140, 140, dtype=np.float32)
    x = np.concatenate([(k + 0.5) * np.float32(scale), k * np.float32(scale),  # exact halves and whole steps
                        rng.uniform(-1.2, 1.2, 464).astype(np.float32)]).reshape(-1, 64)
    runtime = []
    for row in x:
        interp.set_tensor(interp.get_input_details()[0]["index"], row[None])
        interp.invoke()
        runtime.append(interp.get_tensor(out["index"]).copy())
    runtime = np.concatenate(runtime)
    np.testing.assert_array_equal(quantize(x, scale, zero, np.int8), runtime)
    np.testing.assert_array_equal(ledger_quantize(x, {"dtype": np.int8, "quantization": (scale, zero), "name": "x"}), runtime)
    # the ties are there: rounding x / scale half away from zero would disagree on some of them
    q = x / np.float32(scale)
    away = np.clip(np.where(q >= 0, np.floor(q + 0.5), -np.floor(-q + 0.5)) + zero, -128, 127)
    assert (away != runtime).any()
