"""Code generation, the arena planner, the firmware build and its size checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from edgekd.convert import tflite2c
from edgekd.errors import ConversionError


# ---------------------------------------------------------------- TFLite's arithmetic (no TensorFlow)


@pytest.mark.parametrize("m, expected", [
    (0.5, (1 << 30, 0)),
    (1.0, (1 << 30, 1)),
    (0.25, (1 << 30, -1)),
    (0.0, (0, 0)),
    (2.0 ** -40, (0, 0)),  # flushed to zero like tflite::QuantizeMultiplier
])
def test_quantize_multiplier_known_values(m, expected):
    assert tflite2c.quantize_multiplier(m) == expected


def test_quantize_multiplier_reconstructs_the_scale():
    rng = np.random.default_rng(0)
    for m in rng.uniform(1e-6, 4.0, 500):
        q, shift = tflite2c.quantize_multiplier(float(m))
        assert (1 << 30) <= q < (1 << 31)
        assert math.isclose(q * 2.0 ** (shift - 31), m, rel_tol=2 ** -30)


def test_round_half_away_from_zero():
    assert [tflite2c.round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994)] == [1, 2, 3, -1, -2, 0]


def test_affine_detection_of_data_movement():
    idx = np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1)
    base, strides, dims = tflite2c._affine(idx)
    assert (base, strides, dims) == (0, [1, 12, 4], [4, 2, 3])
    assert tflite2c._affine(np.array([0, 2, 1])) is None  # a real gather needs a table


# ---------------------------------------------------------------- codegen, errors, planning


@pytest.fixture(scope="module")
def softmax_model(model_dir):
    from edgekd.firmware.reference_models import unsupported_softmax_model

    path = model_dir / "softmax.tflite"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(unsupported_softmax_model())
    return path


def test_unsupported_op_is_named_before_anything_is_built(softmax_model, tmp_path, arm_gcc):
    from edgekd.firmware.build import build_firmware

    path = softmax_model
    with pytest.raises(ConversionError) as err:
        build_firmware(path, "qemu-mps2-an386", tmp_path / "fw")
    assert "SOFTMAX" in err.value.message
    assert "supported ops" in err.value.hint
    assert not (tmp_path / "fw" / "firmware.elf").exists()
    assert not (tmp_path / "fw" / "model.c").exists()


def test_check_ops_lists_each_problem(softmax_model):
    from edgekd.firmware.api import check_model

    res = check_model(softmax_model, with_tflm=False)
    assert res["supported"] is False
    assert [p["op"] for p in res["problems"]] == ["SOFTMAX"]


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"hello world, not a flatbuffer")
    with pytest.raises(ConversionError, match="TFL3"):
        tflite2c.load_graph(bad)


def test_arena_plan_reuses_memory_without_overlapping_live_tensors(ref_model):
    graph = tflite2c.load_graph(ref_model("eye_snn"))
    low = tflite2c._Lowering(graph, "tflite")
    low.lower()
    bufs, arena = tflite2c.plan_arena(graph, low.calls, low.root)
    total = sum(b.size for b in bufs.values())
    assert arena < total / 3, f"arena {arena} vs {total} bytes of activations: no reuse?"
    items = list(bufs.values())
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            live_together = not (a.last < b.first or b.last < a.first)
            apart = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
            assert apart or not live_together, f"tensors {a.tensor} and {b.tensor} share memory while both live"
    for i in graph.inputs:  # inputs stay for repeated inference
        b = bufs[low.root(i)]
        assert b.first == -1 and b.last == len(low.calls)


C_ARRAY = re.compile(r"static const (\w+) (\w+)\[(\d+)\] __attribute__\(\(aligned\(\d+\)\)\) = \{\n(.*?)\n\};", re.S)
C_SIZES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4, "double": 8}


def test_weights_shared_by_the_unrolled_time_steps_are_emitted_once(ref_model):
    """The unrolled LIF CNN runs each conv T times on one weight tensor: one const array in the
    C, every conv call points at it, and no two emitted arrays are equal."""
    graph = tflite2c.load_graph(ref_model("eye_snn"))
    gen = tflite2c.generate_c(graph)
    arrays = C_ARRAY.findall(gen.model_c)
    contents = [(ctype, body) for ctype, _, _, body in arrays]
    assert len(contents) == len(set(contents)), "an array is emitted twice"
    convs = [op for op in graph.operators if op.op == "CONV_2D"]
    filters = {op.inputs[1] for op in convs}
    assert len(convs) > len(filters)  # the model does reuse its weights over time steps
    used = set(re.findall(r"\.filter = (\w+)", gen.model_c))
    declared = {name for _, name, _, _ in arrays}
    assert used <= declared and len(used) == len(filters) + sum(op.op == "FULLY_CONNECTED" for op in graph.operators)
    assert gen.metadata["weight_bytes"] == sum(C_SIZES[ctype] * int(n) for ctype, _, n, _ in arrays)
    repeats = sum(graph.tensors[op.inputs[1]].nbytes for op in convs) - sum(graph.tensors[f].nbytes for f in filters)
    assert gen.metadata["shared_weight_bytes"] >= repeats > 0
    # fewer parameter blocks than kernel calls: identical ones are shared as well
    assert len(re.findall(r"static const ekd_\w+_t p\d+ = ", gen.model_c)) < gen.metadata["kernel_calls"]


def test_generated_source_and_metadata(ref_model, tmp_path):
    meta = tflite2c.write_model_sources(ref_model("cnn_ops"), tmp_path)
    code = (tmp_path / "model.c").read_text()
    assert "void ekd_model_invoke(void)" in code and "static const int8_t w" in code
    assert json.loads((tmp_path / "model.json").read_text())["arena_bytes"] == meta["arena_bytes"]
    assert meta["inputs"][0]["shape"] == [1, 12, 12, 3] and meta["inputs"][0]["dtype"] == "int8"


# ---------------------------------------------------------------- firmware builds and sizes


def test_build_for_the_emulated_board(ref_model, tmp_path, arm_gcc):
    from edgekd.firmware.build import build_firmware

    b = build_firmware(ref_model("face_cnn"), "qemu-mps2-an386", tmp_path / "fw")
    s = b.sizes
    assert b.elf.is_file() and b.bin.is_file() and b.map.is_file()
    assert s["arena_bytes"] == b.model["arena_bytes"]  # the map sees the planned arena
    assert s["model_flash_bytes"] >= b.model["weight_bytes"]
    assert s["ram_bytes"] >= s["arena_bytes"] + s["stack_bytes"]
    assert s["flash_bytes"] == b.bin.stat().st_size  # what gets flashed is what was counted
    manifest = json.loads((tmp_path / "fw" / "manifest.json").read_text())
    assert manifest["stage"] == "firmware" and manifest["metrics"]["flash_bytes"] == s["flash_bytes"]
    again = build_firmware(ref_model("face_cnn"), "qemu-mps2-an386", tmp_path / "fw")
    assert again.elf.stat().st_mtime == b.elf.stat().st_mtime  # up to date: not rebuilt


def test_build_for_the_real_board_compiles_and_links(ref_model, tmp_path, arm_gcc):
    """nucleo-l4r5zi: its own startup, clock, LPUART and linker script (2 MiB flash at 0x08000000)."""
    from edgekd.firmware.build import build_firmware

    b = build_firmware(ref_model("eye_snn"), "nucleo-l4r5zi", tmp_path / "fw")
    assert b.board == "nucleo-l4r5zi"
    assert 0 < b.sizes["flash_bytes"] < 2048 * 1024 and b.sizes["ram_bytes"] < 640 * 1024


def _tiny_target(tmp_path: Path, flash_kb: int, ram_kb: int) -> Path:
    src = (Path(__file__).resolve().parents[2] / "targets" / "qemu-mps2-an386.toml").read_text()
    text = src.replace('name = "qemu-mps2-an386"', 'name = "tiny-mcu"')
    text = text.replace("[limits]\nflash_kb = 4096\nram_kb = 4096", f"[limits]\nflash_kb = {flash_kb}\nram_kb = {ram_kb}")
    path = tmp_path / "targets" / "tiny-mcu.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


def test_model_too_large_for_ram_fails_with_the_numbers(ref_model, tmp_path, arm_gcc):
    from edgekd.firmware.build import build_firmware

    targets = _tiny_target(tmp_path, flash_kb=1024, ram_kb=4)
    with pytest.raises(ConversionError) as err:
        build_firmware(ref_model("face_cnn"), "tiny-mcu", tmp_path / "fw", targets_dir=[targets])
    msg = err.value.message
    assert "RAM" in msg and "4096 bytes" in msg and "tiny-mcu" in msg
    assert not (tmp_path / "fw" / "firmware.elf").exists()


def test_model_too_large_for_flash_fails_with_the_numbers(ref_model, tmp_path, arm_gcc):
    from edgekd.firmware.build import build_firmware

    targets = _tiny_target(tmp_path, flash_kb=12, ram_kb=1024)  # the weights fit, code + weights do not
    with pytest.raises(ConversionError) as err:
        build_firmware(ref_model("face_cnn"), "tiny-mcu", tmp_path / "fw", targets_dir=[targets])
    msg = err.value.message
    assert "flash" in msg and "12288 available" in msg and "over" in msg
    assert "nothing was flashed" in err.value.hint
    assert not (tmp_path / "fw" / "firmware.elf").exists() and not (tmp_path / "fw" / "firmware.bin").exists()


def test_map_parser_on_the_real_map(ref_model, tmp_path, arm_gcc):
    from edgekd.firmware.build import build_firmware, parse_map

    b = build_firmware(ref_model("cnn_ops"), "qemu-mps2-an386", tmp_path / "fw")
    by_obj = parse_map(b.map.read_text())
    assert by_obj["model.o"]["bss"] == b.model["arena_bytes"]
    assert by_obj["ekd_kernels.o"]["text"] > 1000


def test_cli_check_and_build(ref_model, softmax_model, tmp_path, arm_gcc, capsys):
    from edgekd.cli import main

    assert main(["firmware", "check", str(softmax_model), "--no-tflm"]) == 1
    assert "SOFTMAX" in capsys.readouterr().out

    assert main(["firmware", "build", str(ref_model("cnn_ops")), "--target", "qemu-mps2-an386",
                 "--out", str(tmp_path / "fw"), "--no-tflm", "--json"]) == 0
    assert (tmp_path / "fw" / "firmware.elf").is_file()
    assert main(["firmware", "size", str(tmp_path / "fw"), "--json"]) == 0
