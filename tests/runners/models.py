"""Small real int8 TFLite classifiers and evaluation sets for deploy/profile tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def full_int8(model, representative, float_io: bool = False) -> bytes:
    """A Keras model as a full-int8 TFLite flatbuffer: int8 in and out, or float in and out
    (the runtime's QUANTIZE and DEQUANTIZE ops at the edges) with float_io."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def build_int8_classifier(out_dir: Path, size: int = 16, channels: int = 8, classes: int = 4,
                          samples: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A conv classifier quantized to full int8 (int8 in/out); eval.npz labels = the float model's argmax."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((size, size, 1), batch_size=1)
    h = tf.keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    outputs = tf.keras.layers.Dense(classes)(h)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    x = rng.random((samples, size, size, 1), dtype=np.float32)
    y = model.predict(x, batch_size=1, verbose=0).argmax(axis=1)

    def representative():
        for i in range(min(32, samples)):
            yield [x[i:i + 1]]

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "student_int8.tflite"
    model_path.write_bytes(full_int8(model, representative))
    eval_path = out_dir / "eval.npz"
    np.savez(eval_path, x=x, y=y)
    return model_path, eval_path


MULTI_INPUTS = {"joints": (8, 6, 3), "bones": (8, 6, 3), "motion": (7, 6, 3)}


def build_int8_multi_input(out_dir: Path, classes: int = 4, samples: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A three-input int8 classifier and its eval.npz written as `edgekd convert` writes one:
    x_<name> per input and input_names. 'joints' and 'bones' share a shape, so only their names
    tell them apart, and input_names lists them in the opposite order to the TFLite model's own
    inputs: feeding by position would swap them. Their ranges differ ([0, 1] and [-1, 0]) and
    labels are the float model's argmax (biases centred so every class occurs), so a swap shows
    in the accuracy."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    offsets = {"joints": 0.0, "bones": -1.0, "motion": 0.0}
    inputs, pooled, data = [], [], {}
    for k, (name, shape) in enumerate(MULTI_INPUTS.items()):
        inp = tf.keras.Input(shape, batch_size=1, name=name)
        h = tf.keras.layers.Conv2D(4 + 2 * k, 3, padding="same", activation="relu")(inp)
        pooled.append(tf.keras.layers.GlobalAveragePooling2D()(h))
        inputs.append(inp)
        level = rng.random((samples, 1, 1, shape[-1]), dtype=np.float32)  # per sample and channel
        noise = 0.2 * rng.random((samples, *shape), dtype=np.float32)
        data[name] = (0.8 * level + noise + offsets[name]).astype(np.float32)
    h = tf.keras.layers.Concatenate()(pooled)
    head = tf.keras.layers.Dense(classes)
    outputs = head(h)
    model = tf.keras.Model(inputs, outputs)
    feed = [data[name] for name in MULTI_INPUTS]
    logits = model.predict(feed, batch_size=1, verbose=0)
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias - logits.mean(axis=0)])  # centred: every class is someone's argmax
    y = model.predict(feed, batch_size=1, verbose=0).argmax(axis=1)

    def representative():
        for i in range(min(32, samples)):
            yield [x[i:i + 1] for x in feed]

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "multi_int8.tflite"
    model_path.write_bytes(full_int8(model, representative))
    from ai_edge_litert.interpreter import Interpreter

    order = [d["name"].removeprefix("serving_default_").split(":")[0]
             for d in Interpreter(model_path=str(model_path)).get_input_details()]
    a, b = order.index("joints"), order.index("bones")
    order[a], order[b] = order[b], order[a]  # the same-shaped pair listed the other way round
    eval_path = out_dir / "eval.npz"
    np.savez(eval_path, **{f"x_{n}": data[n] for n in order}, input_names=np.array(order), y=y)
    return model_path, eval_path
