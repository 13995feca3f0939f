"""Build the firmware for a target: generate the model's C, compile it with the runtime, the
protocol and the board support using arm-none-eabi-gcc (-Os plus the board's cflags), and
measure flash and RAM from the ELF and the linker map. The sizes are checked against the
target's limits before anything is flashed; a model that cannot fit fails with the numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.artifacts import atomic_write_json, is_up_to_date, read_manifest, stage_dir
from edgekd.errors import ConversionError, DeviceError, MissingDependencyError, UsageError
from edgekd.firmware.sources import board_dir, firmware_dir, src_dir
from edgekd.targets import TargetSpec, get_target

STAGE = "firmware"
COMMON_CFLAGS = ["-Os", "-std=c99", "-ffunction-sections", "-fdata-sections", "-ffp-contract=off",
                 "-fno-common", "-Wall", "-Wextra", "-Wno-unused-parameter", "-g0"]
LINK_FLAGS = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections"]
DEFAULT_STACK = 1024  # the kernels use ~200-350 bytes (measured); edgekd-mem reports the high-water mark
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".ARM.extab", ".data")
RAM_SECTIONS = (".data", ".bss", ".stack", ".heap")


@dataclass
class FirmwareBuild:
    out_dir: Path
    elf: Path
    bin: Path
    map: Path
    target: str
    board: str
    sizes: dict[str, int]
    model: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "elf": str(self.elf), "bin": str(self.bin), "map": str(self.map),
                "target": self.target, "board": self.board, "sizes": self.sizes,
                "model_id": self.model.get("model_id"), "arena_bytes": self.model.get("arena_bytes"),
                "weight_bytes": self.model.get("weight_bytes"), "ops": self.model.get("ops"),
                "reference": self.model.get("reference")}


def resolve_target(target: TargetSpec | str, targets_dir: list[str | os.PathLike] | None = None) -> TargetSpec:
    spec = get_target(target, targets_dir or []) if isinstance(target, str) else target
    if spec.kind != "mcu":
        raise UsageError(f"target '{spec.name}' is a {spec.kind} target; firmware is for mcu targets",
                         hint="pick an mcu target, e.g. qemu-mps2-an386 (edgekd targets list)")
    if spec.flash is None:
        raise UsageError(f"target '{spec.name}' has no [flash] section (cflags and flash command)",
                         hint="add [flash] with command = [...] and cflags = [...] to its TOML file")
    return spec


def board_for(spec: TargetSpec) -> str:
    """The firmware/boards/ folder for a target: flash.board, else the emulated machine, else the name."""
    board = getattr(spec.flash, "board", None) if spec.flash else None
    if board:
        return board
    if spec.transport.type == "qemu":
        return spec.transport.machine  # type: ignore[union-attr]
    return spec.name


def toolchain(tool: str) -> str:
    exe = shutil.which(f"arm-none-eabi-{tool}")
    if exe is None:
        raise MissingDependencyError(
            f"arm-none-eabi-{tool} is not installed (needed to build microcontroller firmware)",
            hint="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi (or scripts/install-system-deps.sh)",
        )
    return exe


def _limit_bytes(kb: int | None) -> int | None:
    return kb * 1024 if kb else None


def precheck_fit(metadata: dict[str, Any], spec: TargetSpec, stack_bytes: int) -> None:
    """Before compiling: weights must fit flash, arena + stack must fit RAM (lower bounds)."""
    flash_limit = _limit_bytes(spec.limits.flash_kb)
    ram_limit = _limit_bytes(spec.limits.ram_kb)
    weights, arena = int(metadata["weight_bytes"]), int(metadata["arena_bytes"])
    if flash_limit and weights > flash_limit:
        raise ConversionError(
            f"the model's constants alone need {weights} bytes ({weights / 1024:.1f} KiB) of flash; "
            f"target '{spec.name}' has {flash_limit} bytes ({spec.limits.flash_kb} KiB)",
            hint="use a smaller student (fewer channels) or a target with more flash",
        )
    if ram_limit and arena + stack_bytes > ram_limit:
        raise ConversionError(
            f"the activation arena ({arena} bytes) plus the stack ({stack_bytes} bytes) need "
            f"{arena + stack_bytes} bytes ({(arena + stack_bytes) / 1024:.1f} KiB) of RAM; target '{spec.name}' "
            f"has {ram_limit} bytes ({spec.limits.ram_kb} KiB)",
            hint="use a smaller input or fewer channels, or a target with more RAM",
        )


def check_fit(sizes: dict[str, int], spec: TargetSpec) -> None:
    """After linking: the ELF's flash and RAM against the target's limits (with the numbers)."""
    flash_limit = _limit_bytes(spec.limits.flash_kb)
    ram_limit = _limit_bytes(spec.limits.ram_kb)
    problems = []
    if flash_limit and sizes["flash_bytes"] > flash_limit:
        problems.append(f"flash: {sizes['flash_bytes']} bytes needed, {flash_limit} available "
                        f"({sizes['flash_bytes'] - flash_limit} over)")
    if ram_limit and sizes["ram_bytes"] > ram_limit:
        problems.append(f"RAM: {sizes['ram_bytes']} bytes needed (arena {sizes.get('arena_bytes', 0)}, "
                        f"stack {sizes.get('stack_bytes', 0)}), {ram_limit} available ({sizes['ram_bytes'] - ram_limit} over)")
    if problems:
        raise ConversionError(
            f"the firmware does not fit target '{spec.name}': " + "; ".join(problems),
            hint="use a smaller student (fewer channels, smaller input) or a target with more memory; nothing was flashed",
        )


def parse_size_output(text: str) -> dict[str, int]:
    """`arm-none-eabi-size -A` -> {section: bytes}."""
    sections: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    return sections


_MAP_ENTRY = re.compile(r"^\s+(\.[\w.$-]+)?\s*(0x[0-9a-fA-F]+)\s+(0x[0-9a-fA-F]+)\s+(\S+\.o\S*|\S+\.a\(\S+\))\s*$")


def parse_map(text: str) -> dict[str, dict[str, int]]:
    """Input-section sizes from a GNU ld map, grouped by object file and kind (text/rodata/data/bss)."""
    out: dict[str, dict[str, int]] = {}
    pending: str | None = None
    in_discard = False
    marker = text.find("Linker script and memory map")
    if marker >= 0:
        text = text[marker:]  # skip the "Discarded input sections" list
    for line in text.splitlines():
        if line.startswith("/DISCARD/"):
            in_discard = True
            continue
        if in_discard and line and not line.startswith(" "):
            in_discard = False
        if in_discard:
            continue
        stripped = line.strip()
        if re.match(r"^\.[\w.$-]+$", stripped) and line.startswith(" "):
            pending = stripped  # a long section name: address, size and file follow on the next line
            continue
        m = _MAP_ENTRY.match(line)
        if not m:
            pending = None if stripped else pending
            continue
        section = m.group(1) or pending
        pending = None
        if not section:
            continue
        size = int(m.group(3), 16)
        if size == 0:
            continue
        obj = os.path.basename(m.group(4))
        kind = ("text" if section.startswith(".text") else "rodata" if section.startswith(".rodata")
                else "data" if section.startswith(".data") else "bss" if section.startswith(".bss") else None)
        if kind:
            out.setdefault(obj, {}).setdefault(kind, 0)
            out[obj][kind] += size
    return out


def measure(elf: Path, map_path: Path, stack_bytes: int) -> dict[str, int]:
    proc = subprocess.run([toolchain("size"), "-A", str(elf)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConversionError(f"arm-none-eabi-size failed: {proc.stderr.strip()}")
    sec = parse_size_output(proc.stdout)
    flash = sum(v for k, v in sec.items() if k in FLASH_SECTIONS)
    ram = sum(v for k, v in sec.items() if k in RAM_SECTIONS)
    by_obj = parse_map(map_path.read_text(errors="replace")) if map_path.is_file() else {}
    model_obj = by_obj.get("model.o", {})
    runtime = sum(by_obj.get(o, {}).get("text", 0) for o in by_obj if o.startswith(("ekd_", "board")))
    libs = sum(v.get("text", 0) + v.get("rodata", 0) for o, v in by_obj.items() if "(" in o)
    return {
        "flash_bytes": flash,
        "ram_bytes": ram,
        "text_bytes": sec.get(".text", 0),
        "data_bytes": sec.get(".data", 0),
        "bss_bytes": sec.get(".bss", 0),
        "stack_bytes": sec.get(".stack", stack_bytes),
        "model_flash_bytes": model_obj.get("rodata", 0) + model_obj.get("text", 0),
        "arena_bytes": model_obj.get("bss", 0),
        "runtime_code_bytes": runtime,
        "library_bytes": libs,
    }


_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


def compile_firmware(spec: TargetSpec, board: str, model_c: Path, out_dir: Path, stack_bytes: int,
                     extra_cflags: list[str] | None = None) -> tuple[Path, Path, Path]:
    gcc = toolchain("gcc")
    bdir = board_dir(board)
    elf, bin_path, map_path = out_dir / "firmware.elf", out_dir / "firmware.bin", out_dir / "firmware.map"
    objdir = out_dir / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    cflags = list(spec.flash.cflags) + COMMON_CFLAGS + [f"-I{src_dir()}", f"-I{bdir}"] + list(extra_cflags or [])  # type: ignore[union-attr]
    sources = [src_dir() / "ekd_kernels.c", src_dir() / "ekd_protocol.c", *sorted(bdir.glob("*.c")), model_c]
    objects = []
    for src in sources:
        obj = objdir / (src.stem + ".o")
        proc = subprocess.run([gcc, *cflags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ConversionError(f"compiling {src.name} for {board} failed:\n{proc.stderr[-3000:]}",
                                  hint="this is a bug in edgekd's firmware or code generator; please report it with the model")
        objects.append(str(obj))
    link = [gcc, *spec.flash.cflags, *LINK_FLAGS, f"-Wl,-Map={map_path}", f"-Wl,--defsym=_stack_size={stack_bytes}",  # type: ignore[union-attr]
            "-T", str(bdir / "linker.ld"), *objects, "-o", str(elf)]
    proc = subprocess.run(link, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        over = _OVERFLOW.findall(proc.stderr)
        if over:
            detail = "; ".join(f"{region} overflowed by {n} bytes" for region, n in over)
            raise ConversionError(
                f"the firmware does not fit board '{board}' of target '{spec.name}': {detail}",
                hint="use a smaller student or a board with more memory; nothing was flashed",
            )
        raise ConversionError(f"linking the firmware failed:\n{proc.stderr[-3000:]}")
    proc = subprocess.run([toolchain("objcopy"), "-O", "binary", str(elf), str(bin_path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConversionError(f"objcopy failed: {proc.stderr.strip()}")
    return elf, bin_path, map_path


def build_firmware(model: str | os.PathLike, target: TargetSpec | str, out_dir: str | os.PathLike, *,
                   reference: str = "tflite", stack_bytes: int = DEFAULT_STACK, model_id: str | None = None,
                   targets_dir: list[str | os.PathLike] | None = None, force: bool = False) -> FirmwareBuild:
    """Model (.tflite, int8) + target -> firmware.elf/.bin/.map, model.c/json, sizes.json, manifest.

    Order of checks: unsupported ops (named) -> size lower bounds -> compile -> exact sizes vs limits.
    A finished build with the same inputs and parameters is reused.
    """
    from edgekd.convert.tflite2c import check_reference, generate_c, load_graph, runtime_cflags

    spec = resolve_target(target, targets_dir)
    board = board_for(spec)
    board_dir(board)  # fail early on a board without support
    model = Path(model)
    out = Path(out_dir)
    check_reference(reference)
    params = {"target": spec.name, "board": board, "reference": reference, "stack_bytes": stack_bytes,
              "cflags": list(spec.flash.cflags) + COMMON_CFLAGS, "model_id": model_id,  # type: ignore[union-attr]
              "firmware_sources": _sources_digest()}
    if not force and is_up_to_date(out, params, {"model": model}):
        return _load_build(out, spec, board, params)
    graph = load_graph(model)
    gen = generate_c(graph, model_id=model_id, reference=reference)  # names unsupported ops before any build
    precheck_fit(gen.metadata, spec, stack_bytes)
    with stage_dir(out, STAGE, params=params, inputs={"model": model}) as sd:
        sd.manifest.tools["arm-none-eabi-gcc"] = _tool_version(toolchain("gcc"))
        model_c = sd.file("model.c")
        model_c.write_text(gen.model_c)
        atomic_write_json(sd.file("model.json"), gen.metadata)
        elf, bin_path, map_path = compile_firmware(spec, board, model_c, out, stack_bytes,
                                                   extra_cflags=runtime_cflags(reference))
        sizes = measure(elf, map_path, stack_bytes)
        try:
            check_fit(sizes, spec)
        except ConversionError:
            for p in (elf, bin_path):  # an image that does not fit must not be flashable
                p.unlink(missing_ok=True)
            raise
        atomic_write_json(sd.file("sizes.json"), sizes)
        for p in (elf, bin_path, map_path):
            sd.add_output(p.name, p)
        sd.set_metrics(**sizes, model_id=gen.metadata["model_id"])
    return FirmwareBuild(out, elf, bin_path, map_path, spec.name, board, sizes, gen.metadata, params)


def _load_build(out: Path, spec: TargetSpec, board: str, params: dict[str, Any]) -> FirmwareBuild:
    sizes = json.loads((out / "sizes.json").read_text())
    meta = json.loads((out / "model.json").read_text())
    return FirmwareBuild(out, out / "firmware.elf", out / "firmware.bin", out / "firmware.map", spec.name, board, sizes, meta, params)


def _tool_version(exe: str) -> str:
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout.splitlines() or ["unknown"])[0].strip()


def _sources_digest() -> str:
    """A hash of the firmware C sources, so a changed runtime rebuilds."""
    import hashlib

    digest = hashlib.sha256()
    root = firmware_dir()
    for p in sorted(list((root / "src").glob("*")) + list((root / "boards").rglob("*"))):
        if p.is_file():
            digest.update(p.relative_to(root).as_posix().encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def load_build(out_dir: str | os.PathLike) -> FirmwareBuild:
    """A finished build directory (with its manifest)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest.stage != STAGE:
        raise UsageError(f"{out} holds a '{manifest.stage}' stage, not a firmware build")
    spec = resolve_target(manifest.params["target"])
    return _load_build(out, spec, manifest.params["board"], manifest.params)


def flash_firmware(build: FirmwareBuild, spec: TargetSpec, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the target's flash command ({elf}/{bin} replaced); qemu targets boot the ELF instead."""
    check_fit(build.sizes, spec)
    if spec.transport.type == "qemu":
        return {"flashed": False, "reason": "emulated board: the ELF is booted by qemu"}
    argv = [a.replace("{elf}", str(build.elf)).replace("{bin}", str(build.bin)) for a in spec.flash.command]  # type: ignore[union-attr]
    if shutil.which(argv[0]) is None:
        raise MissingDependencyError(f"the flash tool '{argv[0]}' of target '{spec.name}' is not installed",
                                     hint="install it (e.g. apt-get install stlink-tools for st-flash) or edit flash.command")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"flashing did not finish within {timeout_s:g} s: {' '.join(argv)}",
                          hint="is the board connected and its debugger free?") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DeviceError(f"flashing failed (exit {proc.returncode}): {' | '.join(tail)}",
                          hint="check the USB cable and that no other program uses the debugger")
    return {"flashed": True, "command": argv}
