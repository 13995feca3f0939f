"""The conversion chain: torch -> ONNX -> (onnx2tf SavedModel) -> TFLite fp32/fp16/int8 -> device
formats (Edge TPU, TensorRT/ONNX, C for microcontrollers), with an accuracy ledger at every hop.

One module per hop, each a pure function `src2dst(input, out_dir, options) -> path`:
torch2onnx, onnx2tflite, tflite2edgetpu, onnx2trt (and tflite2c, owned by the firmware side).
`parity` checks each hop against the previous one, `ops` inventories a .tflite and checks it
against a target's runtime, and `api.convert_run` chooses the chain from the target.
Nothing here imports torch or TensorFlow at import time.
"""
