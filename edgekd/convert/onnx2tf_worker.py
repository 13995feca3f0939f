"""Subprocess entry point: run onnx2tf's command line, optionally stopping once the SavedModel
is written.

    python -m edgekd.convert.onnx2tf_worker [--savedmodel-only] ONNX2TF_ARGS...

onnx2tf always converts its Keras model to float32 and float16 .tflite files after writing
the SavedModel (with TensorFlow's Flex ops allowed). When TensorFlow's converter makes the
TFLite files from the SavedModel anyway (the "tensorflow" quantizer), those two conversions
are wasted: on an unrolled spiking student they are over half of onnx2tf's time. With
--savedmodel-only, this process makes TFLiteConverter's constructors stop onnx2tf there.
This only changes the worker process itself, which exits right after.
"""

from __future__ import annotations

import sys


class _SavedModelWritten(BaseException):
    """Raised where onnx2tf would start its own TFLite conversion (BaseException: onnx2tf's
    `except Exception` fallbacks do not swallow it)."""


def main(argv: list[str]) -> int:
    savedmodel_only = "--savedmodel-only" in argv
    args = [a for a in argv if a != "--savedmodel-only"]
    import onnx2tf

    if savedmodel_only:
        import tensorflow as tf

        def stop(*_args: object, **_kwargs: object) -> None:
            raise _SavedModelWritten()

        tf.lite.TFLiteConverter.from_keras_model = stop  # type: ignore[assignment]
        tf.lite.TFLiteConverter.from_concrete_functions = stop  # type: ignore[assignment]
    sys.argv = ["onnx2tf", *args]
    try:
        result = onnx2tf.main()
    except _SavedModelWritten:
        print("edgekd: SavedModel written; onnx2tf's own TFLite conversion skipped", flush=True)
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
