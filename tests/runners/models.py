"""Small real int8 TFLite classifiers and evaluation sets for deploy/profile tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "student_int8.tflite"
    model_path.write_bytes(converter.convert())
    eval_path = out_dir / "eval.npz"
    np.savez(eval_path, x=x, y=y)
    return model_path, eval_path
