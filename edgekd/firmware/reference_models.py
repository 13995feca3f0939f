"""Small int8 models built directly in TensorFlow, for testing and benchmarking the firmware.

They stand in for the real students until the torch -> ONNX -> TFLite chain produces them:
MCU-sized, random weights, converted with TFLite's converter to full int8 (int8 in/out,
representative dataset), with the op patterns the students have:

- `cnn_ops`     every CNN op the runtime has (conv, depthwise, pooling, add, sub, mul, pad,
                concatenation, transpose, mean, reshape, fully connected, logistic, ...)
- `eye_snn`     unrolled LIF spiking CNN over T steps (the eye student's pattern: CONV_2D,
                FULLY_CONNECTED, ADD, SUB, MUL, GREATER_EQUAL, CAST, CONCATENATION, TRANSPOSE,
                PAD, MEAN, RESHAPE, QUANTIZE)
- `eye_snn_floor` the same with the spike as the students export it, floor(u / 1024) + 1
                (SUB, MUL, DEQUANTIZE, FLOOR, QUANTIZE, ADD; see edgekd.models.neurons)
- `skeleton_sgcn` unrolled spiking graph convolution over a skeleton sequence (C, T, V)
- `face_cnn`    channel-cut residual CNN with squeeze-excitation on a 48x48 face
- `two_streams` two inputs (joints and bones of a skeleton sequence) fused before a LIF layer
                with a clamped input current, like the skeleton student's modality streams

TensorFlow is imported inside the functions (this module is only imported by tests/benchmarks).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_NAMES = ("cnn_ops", "eye_snn", "eye_snn_floor", "skeleton_sgcn", "face_cnn", "misc_ops", "two_streams")


@dataclass
class ReferenceModel:
    name: str
    tflite: bytes
    input_shape: tuple[int, ...]
    description: str

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / f"{self.name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.tflite)
        return path


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def to_int8_tflite(fn, input_shape: tuple[int, ...] | list[tuple[int, ...]],
                   sample: Callable[[np.random.Generator], np.ndarray],
                   calib: int = 32, seed: int = 0, per_tensor_dense: bool = False) -> bytes:
    """Full-integer int8 conversion of a tf.function taking float32 input(s): one shape, or a
    list of shapes (then `sample` draws each input in turn)."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], None)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    shapes = input_shape if isinstance(input_shape, list) else [input_shape]

    def rep():
        for _ in range(calib):
            yield [sample(rng).astype(np.float32).reshape(shape) for shape in shapes]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if per_tensor_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return conv.convert()


def _w(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    return rng.normal(0.0, scale if scale is not None else 1.0 / np.sqrt(max(1, fan_in)), shape).astype(np.float32)


def _lif(tf, v, current, beta: float, threshold: float, floor_spike: bool = False):
    """One LIF step with reset by subtraction: v <- beta*v + I; s = v >= thr; v <- v - s*thr.
    floor_spike: s = floor((v - thr) / 1024) + 1, the students' exported Heaviside."""
    v = v * beta + current
    if floor_spike:
        spike = tf.floor((v - threshold) * (1.0 / 1024.0)) + 1.0
    else:
        spike = tf.cast(v >= threshold, tf.float32)
    v = v - spike * threshold
    return spike, v


def eye_snn(T: int = 4, H: int = 16, W: int = 16, channels: int = 8, classes: int = 3, seed: int = 0,
            floor_spike: bool = False) -> ReferenceModel:
    """Frame-based spiking CNN over T eye frames, input [1, T, H, W] in [0, 1]."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    w1 = _w(rng, 3, 3, 1, channels, scale=0.6)
    w2 = _w(rng, 3, 3, channels, channels, scale=0.35)
    oh, ow = H // 4, W // 4
    wf = _w(rng, oh * ow * channels, classes, scale=0.2)

    @tf.function(input_signature=[tf.TensorSpec([1, T, H, W], tf.float32)])
    def model(x):
        frames = tf.transpose(x, [0, 2, 3, 1])  # NHWT
        v1 = tf.zeros([1, H // 2, W // 2, channels])
        v2 = tf.zeros([1, oh, ow, channels])
        outs = []
        for t in range(T):
            xt = tf.pad(frames[:, :, :, t:t + 1], [[0, 0], [1, 1], [1, 1], [0, 0]])
            s1, v1 = _lif(tf, v1, tf.nn.conv2d(xt, w1, strides=2, padding="VALID"), 0.9, 0.5, floor_spike)
            s1p = tf.pad(s1, [[0, 0], [1, 1], [1, 1], [0, 0]])
            s2, v2 = _lif(tf, v2, tf.nn.conv2d(s1p, w2, strides=2, padding="VALID"), 0.9, 0.5, floor_spike)
            outs.append(tf.reshape(s2, [1, 1, oh * ow * channels]))
        rate = tf.reduce_mean(tf.concat(outs, axis=1), axis=1)
        return tf.matmul(rate, wf)

    tfl = to_int8_tflite(model, (1, T, H, W), lambda r: r.uniform(0, 1, (1, T, H, W)), seed=seed)
    name = "eye_snn_floor" if floor_spike else "eye_snn"
    return ReferenceModel(name, tfl, (1, T, H, W), f"LIF spiking CNN, T={T}, {H}x{W} eye frames, {classes} classes"
                          + (", floor-form spike" if floor_spike else ""))


def eye_snn_floor(**kwargs) -> ReferenceModel:
    return eye_snn(floor_spike=True, **kwargs)


def skeleton_sgcn(T: int = 4, V: int = 20, C: int = 3, hidden: int = 16, classes: int = 10, seed: int = 0) -> ReferenceModel:
    """Spiking graph convolution over a skeleton sequence, input [1, C, T, V] (NTU layout, one person)."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    adj = np.eye(V, dtype=np.float32)
    for j in range(V - 1):  # a chain skeleton with self loops, row-normalised
        adj[j, j + 1] = adj[j + 1, j] = 1.0
    adj /= adj.sum(1, keepdims=True)
    w_in = _w(rng, C, hidden, scale=0.8)
    w_out = _w(rng, V * hidden, classes, scale=0.15)

    @tf.function(input_signature=[tf.TensorSpec([1, C, T, V], tf.float32)])
    def model(x):
        seq = tf.transpose(x, [0, 2, 3, 1])  # [1, T, V, C]
        v = tf.zeros([1, V, hidden])
        outs = []
        for t in range(T):
            xt = tf.reshape(seq[:, t], [V, C])
            feat = tf.matmul(xt, w_in)                     # per-joint features [V, hidden]
            agg = tf.matmul(adj, feat)                     # graph aggregation A @ X
            s, v = _lif(tf, v, tf.reshape(agg, [1, V, hidden]), 0.8, 0.5)
            outs.append(tf.reshape(s, [1, 1, V * hidden]))
        rate = tf.reduce_mean(tf.concat(outs, axis=1), axis=1)
        return tf.matmul(rate, w_out)

    tfl = to_int8_tflite(model, (1, C, T, V), lambda r: r.normal(0, 1, (1, C, T, V)), seed=seed)
    return ReferenceModel("skeleton_sgcn", tfl, (1, C, T, V), f"spiking GCN, T={T}, V={V} joints, {classes} classes")


def two_streams(T: int = 4, V: int = 12, C: int = 3, hidden: int = 8, classes: int = 5,
                seed: int = 0) -> ReferenceModel:
    """Two inputs [1, C, T, V] (joints, bones), projected, summed and fed to a LIF layer."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    w_j, w_b = _w(rng, C, hidden, scale=0.8), _w(rng, C, hidden, scale=0.5)
    w_out = _w(rng, V * hidden, classes, scale=0.15)
    spec = tf.TensorSpec([1, C, T, V], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def model(joints, bones):
        j, b = tf.transpose(joints, [0, 2, 3, 1]), tf.transpose(bones, [0, 2, 3, 1])  # [1, T, V, C]
        v = tf.zeros([1, V, hidden])
        outs = []
        for t in range(T):
            cur = tf.matmul(tf.reshape(j[:, t], [V, C]), w_j) + tf.matmul(tf.reshape(b[:, t], [V, C]), w_b)
            cur = tf.clip_by_value(cur, -1.5, 1.5)  # the LIF current clamp (MINIMUM/MAXIMUM with a constant)
            s, v = _lif(tf, v, tf.reshape(cur, [1, V, hidden]), 0.8, 0.5)
            outs.append(tf.reshape(s, [1, 1, V * hidden]))
        return tf.matmul(tf.reduce_mean(tf.concat(outs, axis=1), axis=1), w_out)

    shape = (1, C, T, V)
    tfl = to_int8_tflite(model, [shape, shape], lambda r: r.normal(0, 1, shape), seed=seed)
    return ReferenceModel("two_streams", tfl, shape, f"two input streams fused into a LIF layer, T={T}, V={V}")


def face_cnn(size: int = 48, width: int = 8, classes: int = 7, seed: int = 0) -> ReferenceModel:
    """Channel-cut residual CNN with squeeze-excitation, input [1, size, size, 1]."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    L = tf.keras.layers
    inp = L.Input((size, size, 1), batch_size=1)
    x = L.Conv2D(width, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.MaxPooling2D(2)(x)
    y = L.Conv2D(width, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(width, 3, padding="same")(y)
    se = L.GlobalAveragePooling2D()(y)
    se = L.Dense(max(2, width // 4), activation="relu")(se)
    se = L.Dense(width, activation="sigmoid")(se)
    y = L.Multiply()([y, L.Reshape((1, 1, width))(se)])
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(classes)(x)
    keras_model = tf.keras.Model(inp, out)
    fn = tf.function(lambda t: keras_model(t), input_signature=[tf.TensorSpec([1, size, size, 1], tf.float32)])
    tfl = to_int8_tflite(fn, (1, size, size, 1), lambda r: r.uniform(0, 1, (1, size, size, 1)), seed=seed)
    return ReferenceModel("face_cnn", tfl, (1, size, size, 1), f"residual CNN with SE, {size}x{size} face, {classes} classes")


def cnn_ops(seed: int = 0) -> ReferenceModel:
    """A CNN that uses every CNN op of the runtime at least once, input [1, 12, 12, 3]."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    L = tf.keras.layers
    inp = L.Input((12, 12, 3), batch_size=1)
    a = L.Conv2D(8, 3, padding="same", activation="relu")(inp)                       # CONV_2D SAME + relu
    b = L.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2,
                          activation="relu6")(a)                                       # DEPTHWISE stride 2
    b = L.ZeroPadding2D(((1, 0), (0, 1)))(b)                                           # PAD
    c = L.Conv2D(16, 3, dilation_rate=2, padding="same")(b)                            # dilated conv
    d = L.Conv2D(16, 1)(b)
    e = L.Add()([c, d])                                                                # ADD
    f = L.Subtract()([c, d])                                                           # SUB
    g = L.Multiply()([e, f])                                                           # MUL
    h = L.Maximum()([e, g])                                                            # MAXIMUM
    m = L.MaxPooling2D(2, padding="same")(h)                                           # MAX_POOL
    p = L.AveragePooling2D(3, strides=1, padding="same")(m)                            # AVERAGE_POOL SAME
    q = L.Concatenate(axis=-1)([m, p])                                                 # CONCATENATION
    r = L.Permute((2, 1, 3))(q)                                                        # TRANSPOSE
    s = L.Activation("sigmoid")(r)                                                     # LOGISTIC
    t = L.Conv2D(8, 3, strides=2, padding="valid", activation="relu")(s)
    u = L.GlobalAveragePooling2D()(t)                                                  # MEAN
    w = L.Dense(12, activation="relu")(u)                                              # FULLY_CONNECTED
    out = L.Dense(5)(L.Reshape((12,))(w))                                              # RESHAPE
    keras_model = tf.keras.Model(inp, out)
    fn = tf.function(lambda x: keras_model(x), input_signature=[tf.TensorSpec([1, 12, 12, 3], tf.float32)])
    tfl = to_int8_tflite(fn, (1, 12, 12, 3), lambda r: r.normal(0, 1, (1, 12, 12, 3)), seed=seed)
    return ReferenceModel("cnn_ops", tfl, (1, 12, 12, 3), "every CNN op of the runtime")


def misc_ops(seed: int = 0) -> ReferenceModel:
    """The data-movement and elementwise ops the students may bring through onnx2tf: split, unpack,
    pack, slice, gather, squeeze/expand, tanh, leaky relu, hard swish, minimum, grouped conv, a
    per-tensor fully connected layer. Input [1, 8, 8, 4]."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    wg = _w(rng, 3, 3, 2, 8, scale=0.4)   # grouped conv: 4 input channels in 2 groups
    wd = _w(rng, 8 * 8 * 2, 6, scale=0.2)

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def model(x):
        g = tf.nn.conv2d(x, wg, strides=1, padding="SAME")                 # CONV_2D with groups
        a, b = tf.split(g, 2, axis=3)                                     # SPLIT
        rows = tf.unstack(a, axis=1)                                      # UNPACK
        r = tf.stack([rows[0], rows[3], rows[7]], axis=1)                 # PACK
        t = tf.math.tanh(tf.slice(b, [0, 1, 0, 0], [1, 3, 8, 4]))         # SLICE, TANH
        u = tf.nn.leaky_relu(r, alpha=0.2) + tf.nn.relu6(t) * 0.5         # LEAKY_RELU, ADD, MUL
        v = tf.gather(u, [2, 0, 1], axis=1)                               # GATHER (constant indices)
        w = tf.minimum(v, tf.nn.silu(v))                                  # MINIMUM, LOGISTIC/MUL (swish)
        hs = w * tf.nn.relu6(w + 3.0) / 6.0                               # hard swish pattern
        y = tf.concat([hs, tf.squeeze(tf.expand_dims(v, 0), 0)], axis=2)  # EXPAND_DIMS/SQUEEZE
        y = tf.reshape(y[:, :, ::2, :], [1, -1])                          # STRIDED_SLICE with a step
        return tf.matmul(y, wd[: 3 * 8 * 4])

    tfl = to_int8_tflite(model, (1, 8, 8, 4), lambda r: r.normal(0, 1, (1, 8, 8, 4)), seed=seed,
                         per_tensor_dense=True)
    return ReferenceModel("misc_ops", tfl, (1, 8, 8, 4), "data movement and elementwise ops")


def elementwise(n: int = 4096, seed: int = 0) -> ReferenceModel:
    """Two inputs [1, n] on different scales through ADD, SUB and MUL (each result on its own
    calibrated scale): where XNNPACK's add and mul arithmetic and TFLite's part ways."""
    tf = _tf()
    spec = tf.TensorSpec([1, n], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def model(a, b):
        s = a + 0.37 * b
        d = 1.9 * a - b
        return s * d + (s - 0.61 * d)

    shape = (1, n)
    tfl = to_int8_tflite(model, [shape, shape], lambda r: r.normal(0, 1, shape), seed=seed)
    return ReferenceModel("elementwise", tfl, shape, f"ADD, SUB, MUL of two [1, {n}] inputs")


BUILDERS: dict[str, Callable[..., ReferenceModel]] = {
    "cnn_ops": cnn_ops,
    "eye_snn": eye_snn,
    "eye_snn_floor": eye_snn_floor,
    "skeleton_sgcn": skeleton_sgcn,
    "face_cnn": face_cnn,
    "misc_ops": misc_ops,
    "elementwise": elementwise,
    "two_streams": two_streams,
}


def build(name: str, **kwargs) -> ReferenceModel:
    return BUILDERS[name](**kwargs)


def build_cached(name: str, folder: str | os.PathLike, **kwargs) -> Path:
    """`folder/<name>.tflite`, converted once (tests and benchmarks share the file)."""
    path = Path(folder) / f"{name}.tflite"
    if not path.is_file():
        model = build(name, **kwargs)
        tmp = path.with_suffix(".tflite.partial")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(model.tflite)
        os.replace(tmp, path)
    return path


def unsupported_softmax_model() -> bytes:
    """A full-int8 model ending in SOFTMAX, an op the firmware runtime does not have."""
    tf = _tf()
    w = np.random.default_rng(0).normal(0, 0.5, (8, 4)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def model(x):
        return tf.nn.softmax(tf.matmul(x, w))

    return to_int8_tflite(model, (1, 8), lambda r: r.normal(0, 1, (1, 8)))


def random_int8_inputs(input_shape: tuple[int, ...], n: int, seed: int = 1) -> np.ndarray:
    """n int8 input tensors covering the whole int8 range: [n, *input_shape]."""
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n, *input_shape), dtype=np.int8)
