"""The runtime's two single-rounding requantizations against numpy, through the host compiler.

`ekd_requant_f32` is XNNPACK's: float32(acc) * float32 scale, clamped, rounded half to even;
`ekd_mbqm` built with EKD_SINGLE_ROUNDING is TFLite's TFLITE_SINGLE_ROUNDING multiply. numpy's
float32 arithmetic and np.rint (half to even) are the oracle for the first, Python integers for
the second."""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np

from edgekd.convert.tflite2c import quantize_multiplier

HARNESS = r"""
#include "ekd_kernels.h"
void requant_f32(int n, const int32_t *acc, const float *scale, int32_t zp, int32_t *out) {
  for (int i = 0; i < n; ++i) out[i] = ekd_requant_f32(acc[i], scale[i], zp, -128, 127);
}
void mbqm(int n, const int32_t *acc, const int32_t *mult, const int32_t *shift, int32_t *out) {
  for (int i = 0; i < n; ++i) out[i] = ekd_mbqm(acc[i], mult[i], shift[i]);
}
"""


def _library(tmp_path):
    from edgekd.firmware.host import HOST_CFLAGS
    from edgekd.firmware.sources import src_dir

    (tmp_path / "harness.c").write_text(HARNESS)
    lib = tmp_path / "libharness.so"
    subprocess.run(["cc", *HOST_CFLAGS, "-DEKD_SINGLE_ROUNDING=1", f"-I{src_dir()}", str(tmp_path / "harness.c"),
                    "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_float32_requantization_rounds_like_xnnpack(tmp_path, host_cc):
    lib = _library(tmp_path)
    rng = np.random.default_rng(0)
    n = 200_000
    acc = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
    scale = (10.0 ** rng.uniform(-6, -2, n)).astype(np.float32)
    # exact half steps: the ties themselves, where half-to-even and half-up part ways
    acc[:1000] = 2 * rng.integers(-200, 200, 1000) + 1
    scale[:1000] = np.float32(0.5)
    # the case found on a face student's first convolution: acc x scale is 48.50000027 in exact
    # arithmetic and 48.5 in float32
    acc[1000] = 19010
    scale[1000] = np.float32(1.0) * np.float32(0.00015611277194693685) / np.float32(0.061189766973257065)
    zp = np.int32(-3)
    out = np.empty(n, np.int32)
    lib.requant_f32(n, _ptr(acc), _ptr(scale), ctypes.c_int32(int(zp)), _ptr(out))
    want = np.clip(np.rint(acc.astype(np.float32) * scale), -128 - zp, 127 - zp).astype(np.int32) + zp
    assert np.array_equal(out, want), f"{int((out != want).sum())} of {n} differ"
    assert out[1000] == 48 + zp  # a fixed-point multiplier gives 49 here (test below)
    assert len(np.unique(out)) > 200  # the values cover the output range, not a clamp


def test_single_rounding_multiplier_is_one_rounding_of_the_exact_product(tmp_path, host_cc):
    lib = _library(tmp_path)
    rng = np.random.default_rng(1)
    n = 20_000
    acc = rng.integers(-(1 << 24), 1 << 24, n).astype(np.int32)
    reals = 10.0 ** rng.uniform(-6, 0.5, n)
    mult, shift = (np.array(v, dtype=np.int32) for v in zip(*(quantize_multiplier(float(r)) for r in reals)))
    acc[0], (mult[0], shift[0]) = 19010, quantize_multiplier(0.00015611277194693685 / 0.061189766973257065)
    out = np.empty(n, np.int32)
    lib.mbqm(n, _ptr(acc), _ptr(mult), _ptr(shift), _ptr(out))
    # round(acc * mult / 2^(31 - shift)), ties up: floor((acc * mult + 2^(30 - shift)) / 2^(31 - shift))
    want = [(int(a) * int(m) + (1 << (30 - int(s)))) >> (31 - int(s)) for a, m, s in zip(acc, mult, shift)]
    assert out.tolist() == want
    assert out[0] == 49
