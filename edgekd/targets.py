"""Targets as data: one TOML file per device, validated by TargetSpec.

Lookup order for a name: every folder given with --targets-dir, then the folders in
$EDGEKD_TARGETS (os.pathsep-separated), then the targets shipped with edgekd. The first file
named NAME.toml wins, so a user can override a shipped target.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from edgekd.config import Strict, load_toml
from edgekd.errors import ConfigError, NotFoundError, did_you_mean

ENV_VAR = "EDGEKD_TARGETS"

Engine = Literal["tflite", "edgetpu", "onnxruntime", "tensorrt", "firmware"]
ModelFormat = Literal[
    "tflite-fp32",
    "tflite-fp16",
    "tflite-dynamic-int8",
    "tflite-int8",
    "edgetpu",
    "onnx",
    "tensorrt",
    "c-int8",
]
PowerSource = Literal["ina3221", "tegrastats", "ina219", "ina260", "lpm01a", "ppk2", "joulescope", "none"]

# Which model formats each engine can run: a target listing a format its engine cannot run
# is rejected rather than silently skipped.
ENGINE_FORMATS: dict[str, set[str]] = {
    "tflite": {"tflite-fp32", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8"},
    "edgetpu": {"edgetpu", "tflite-int8"},
    "onnxruntime": {"onnx"},
    "tensorrt": {"tensorrt", "onnx"},
    "firmware": {"c-int8"},
}
CPU_FALLBACK_FORMATS = ENGINE_FORMATS["tflite"] | ENGINE_FORMATS["onnxruntime"]


class SshTransport(Strict):
    type: Literal["ssh"]
    host: str = Field(min_length=1, description="host name, address or ~/.ssh/config alias")
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    workdir: str = "~/edgekd"
    identity_file: str | None = None
    ssh_config: str | None = Field(None, description="an ssh_config file used instead of ~/.ssh/config (ssh -F)")
    connect_timeout_s: float = Field(10.0, gt=0)
    python: str = "python3"


class LocalTransport(Strict):
    type: Literal["local"]
    workdir: str | None = None
    python: str | None = None


class SerialTransport(Strict):
    type: Literal["serial"]
    port: str = Field(min_length=1, description="e.g. /dev/ttyACM0")
    baud: int = Field(115200, gt=0)
    timeout_s: float = Field(5.0, gt=0)


class QemuTransport(Strict):
    type: Literal["qemu"]
    machine: str = "mps2-an386"
    cpu: str = "cortex-m4"
    binary: str = "qemu-system-arm"
    icount_shift: int | None = Field(0, ge=0, le=10, description="-icount shift: 2^shift ns per instruction")
    boot_timeout_s: float = Field(20.0, gt=0)


Transport = Annotated[
    Union[SshTransport, LocalTransport, SerialTransport, QemuTransport],
    Field(discriminator="type"),
]


class Hardware(Strict):
    cpu: str
    cores: int = Field(ge=1)
    clock_mhz: float | None = Field(None, gt=0)
    ram_mb: float = Field(gt=0)
    flash_kb: int | None = Field(None, gt=0)
    accelerator: str | None = None
    os: str | None = None
    arch: str | None = None


class Runtime(Strict):
    engine: Engine
    formats: list[ModelFormat] = Field(min_length=1)
    threads: int = Field(1, ge=1)
    version: str | None = Field(None, description="what the device image ships, for the record")


class Power(Strict):
    sources: list[PowerSource] = Field(default_factory=lambda: ["none"])
    sample_hz: float = Field(100.0, gt=0)
    hwmon_path: str | None = None
    i2c_bus: int | None = Field(None, ge=0)
    i2c_address: int | None = Field(None, ge=0, le=127)
    serial_port: str | None = None
    shunt_ohms: float | None = Field(None, gt=0)
    sysfs_root: str = Field("/sys", description="where the device's sysfs is read (a copy of it in tests)")
    idle_s: float = Field(1.0, ge=0.1, description="seconds of idle baseline before each run")


class Limits(Strict):
    ram_kb: int | None = Field(None, gt=0)
    flash_kb: int | None = Field(None, gt=0)
    model_kb: int | None = Field(None, gt=0)


class Flash(Strict):
    command: list[str] = Field(min_length=1, description="argv; {elf} and {bin} are replaced by the built files")
    cflags: list[str] = Field(default_factory=list)
    board: str | None = Field(None, description="firmware/boards/ folder; default: the qemu machine, else the target name")


class TargetSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    kind: Literal["linux", "mcu", "host"]
    transport: Transport
    runtime: Runtime
    hardware: Hardware | None = None
    power: Power = Field(default_factory=Power)
    limits: Limits = Field(default_factory=Limits)
    flash: Flash | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        runnable = set(ENGINE_FORMATS[self.runtime.engine])
        if self.kind != "mcu":
            runnable |= CPU_FALLBACK_FORMATS  # the agent runs these on the CPU of any Linux device
        unsupported = [f for f in self.runtime.formats if f not in runnable]
        if unsupported:
            raise ValueError(
                f"runtime.formats {unsupported} cannot run on a {self.kind} target with engine "
                f"'{self.runtime.engine}' (it runs {sorted(runnable)})"
            )
        if self.kind == "mcu" and self.transport.type not in ("serial", "qemu"):
            raise ValueError(f"an mcu target needs transport.type 'serial' or 'qemu', not '{self.transport.type}'")
        if self.kind == "mcu" and self.runtime.engine != "firmware":
            raise ValueError("an mcu target runs runtime.engine = 'firmware'")
        if self.kind == "linux" and self.transport.type not in ("ssh", "local"):
            raise ValueError(f"a linux target needs transport.type 'ssh' or 'local', not '{self.transport.type}'")
        return self


# ---------------------------------------------------------------- catalog


def shipped_targets_dir() -> Path:
    """The targets/ folder that ships with edgekd (repository checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "targets", here / "_targets"):
        if candidate.is_dir():
            return candidate
    return here.parent / "targets"


def search_path(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    dirs = [Path(d).expanduser() for d in extra_dirs]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(d).expanduser() for d in env.split(os.pathsep) if d.strip()]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise NotFoundError(
            f"targets folder '{missing[0]}' does not exist",
            hint=f"check --targets-dir and ${ENV_VAR}",
        )
    return dirs + [shipped_targets_dir()]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path


def catalog(extra_dirs: Sequence[str | os.PathLike] = ()) -> dict[str, CatalogEntry]:
    """name -> file, first folder wins."""
    entries: dict[str, CatalogEntry] = {}
    for folder in search_path(extra_dirs):
        for path in sorted(folder.glob("*.toml")):
            entries.setdefault(path.stem, CatalogEntry(path.stem, path))
    return entries


def load_target_file(path: str | os.PathLike) -> TargetSpec:
    path = Path(path)
    spec = load_toml(TargetSpec, path)
    if spec.name != path.stem:
        raise ConfigError(
            f"{path}: 'name' is '{spec.name}' but the file is named '{path.stem}.toml'",
            hint=f"rename the file to {spec.name}.toml or set name = \"{path.stem}\"",
        )
    return spec


def get_target(name: str, extra_dirs: Sequence[str | os.PathLike] = ()) -> TargetSpec:
    if name.endswith(".toml") or os.sep in name:
        return load_target_file(name)
    entries = catalog(extra_dirs)
    if name not in entries:
        raise NotFoundError(
            f"unknown target '{name}'{did_you_mean(name, entries)}",
            hint=f"known targets: {', '.join(sorted(entries))}; add one as a TOML file with --targets-dir or ${ENV_VAR}",
        )
    return load_target_file(entries[name].path)


def list_targets(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[TargetSpec]:
    """Every target in the catalog; the first invalid file raises its ConfigError."""
    return [load_target_file(e.path) for e in catalog(extra_dirs).values()]


def target_summary(spec: TargetSpec) -> dict[str, Any]:
    t = spec.transport
    where = {
        "ssh": lambda: f"ssh {t.user + '@' if getattr(t, 'user', None) else ''}{getattr(t, 'host', '')}"
        + (f":{t.port}" if getattr(t, "port", None) else ""),
        "local": lambda: "this host",
        "serial": lambda: f"serial {getattr(t, 'port', '')} @ {getattr(t, 'baud', '')}",
        "qemu": lambda: f"qemu {getattr(t, 'machine', '')}",
    }[t.type]()
    return {
        "name": spec.name,
        "kind": spec.kind,
        "engine": spec.runtime.engine,
        "transport": where,
        "formats": list(spec.runtime.formats),
        "power": list(spec.power.sources),
        "description": spec.description,
    }


# ---------------------------------------------------------------- checks


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def check_target(spec: TargetSpec) -> list[CheckResult]:
    """Reachability and runtime checks for a target; never raises for a failed check."""
    from edgekd.runners import checks  # transports live in runners/

    return checks.run_checks(spec)


def all_ok(results: Iterable[CheckResult]) -> bool:
    return all(r.ok for r in results)
