"""Artifact directories: every stage writes its outputs plus a manifest.json.

The manifest records what went in (paths + sha256), the fully resolved parameters, the tool
versions, what came out (paths + sha256), metrics and timestamps. It is written last and
atomically, so an interrupted stage leaves no manifest and is redone on the next run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekd.errors import ArtifactError, NotFoundError

MANIFEST_NAME = "manifest.json"
SCHEMA = "edgekd.manifest/1"

# Tool versions are read from package metadata, so recording them imports nothing heavy.
TRACKED_PACKAGES = (
    "edgekd",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnx2tf",
    "tensorflow",
    "ai-edge-litert",
    "tflite-runtime",
    "tflite-micro",
)


# ---------------------------------------------------------------- atomic writes and hashing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths: the only non-JSON things stages put in manifests.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's sorted (relative path, file hash) list."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode())
            digest.update(sha256_file(item).encode())
        return digest.hexdigest()
    raise NotFoundError(f"cannot hash '{path}': no such file or directory")


# ---------------------------------------------------------------- environment


def tool_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of the tools that shape results, without importing them."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    sha = git_sha(Path(__file__).resolve().parent.parent)
    if sha:
        versions["edgekd_git"] = sha
    if extra:
        versions.update(extra)
    return versions


def git_sha(repo: Path) -> str | None:
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- manifests


@dataclass
class Manifest:
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "stage": self.stage,
            "inputs": self.inputs,
            "params": self.params,
            "tools": self.tools,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "started": self.started,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "manifest") -> Manifest:
        missing = [k for k in ("schema", "stage", "params", "outputs") if k not in data]
        if missing:
            raise ArtifactError(
                f"{source}: not an edgekd manifest (missing {', '.join(missing)})",
                hint="point at a directory written by an edgekd stage",
            )
        return cls(
            stage=data["stage"],
            params=dict(data.get("params", {})),
            inputs=dict(data.get("inputs", {})),
            outputs=dict(data.get("outputs", {})),
            metrics=dict(data.get("metrics", {})),
            tools=dict(data.get("tools", {})),
            started=data.get("started", ""),
            finished=data.get("finished", ""),
            schema=data["schema"],
        )


def read_manifest(directory: str | os.PathLike) -> Manifest:
    directory = Path(directory)
    path = directory / MANIFEST_NAME if directory.is_dir() else directory
    if not path.exists():
        if directory.is_dir():
            raise ArtifactError(
                f"'{directory}' has no {MANIFEST_NAME}: the stage did not finish",
                hint="rerun the stage; an interrupted stage leaves no manifest and is redone",
            )
        raise NotFoundError(f"no artifact directory '{directory}'", hint="check the path (see 'ls runs/')")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    return Manifest.from_dict(data, source=str(path))


def describe_files(paths: Mapping[str, str | os.PathLike], base: Path | None = None) -> dict[str, dict[str, str]]:
    """{name: {path, sha256}} with paths relative to `base` when they lie under it."""
    described = {}
    for name, p in paths.items():
        p = Path(p)
        shown = p
        if base is not None:
            with contextlib.suppress(ValueError):
                shown = p.resolve().relative_to(base.resolve())
        described[name] = {"path": shown.as_posix(), "sha256": sha256_path(p)}
    return described


class StageDir:
    """An artifact directory being written. Use through `stage_dir(...)`."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self._outputs: dict[str, Path] = {}

    def file(self, name: str) -> Path:
        """Path for an output file inside the directory (registered as an output)."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        self._outputs[name] = p
        return p

    def add_output(self, name: str, path: str | os.PathLike) -> None:
        self._outputs[name] = Path(path)

    def set_metrics(self, **metrics: Any) -> None:
        self.manifest.metrics.update(metrics)

    def _finish(self) -> None:
        missing = [n for n, p in self._outputs.items() if not p.exists()]
        if missing:
            raise ArtifactError(f"stage '{self.manifest.stage}' did not write its outputs: {', '.join(missing)}")
        self.manifest.outputs = describe_files(self._outputs, base=self.path)
        self.manifest.finished = now_iso()
        atomic_write_json(self.path / MANIFEST_NAME, self.manifest.to_dict())


@contextlib.contextmanager
def stage_dir(
    path: str | os.PathLike,
    stage: str,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike] | None = None,
) -> Iterator[StageDir]:
    """Write a stage's artifact directory; the manifest appears only if the body succeeds.

    An existing manifest is removed first, so a failed redo never leaves a stale one that
    claims the new (partial) outputs.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (path / MANIFEST_NAME).unlink()
    manifest = Manifest(
        stage=stage,
        params=dict(params or {}),
        inputs=describe_files(inputs or {}),
        tools=tool_versions(),
        started=now_iso(),
    )
    sd = StageDir(path, manifest)
    yield sd
    sd._finish()


def is_up_to_date(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike] | None = None,
) -> bool:
    """True when `path` holds a finished stage with the same params and input hashes,
    and its outputs still match their recorded hashes."""
    path = Path(path)
    if not (path / MANIFEST_NAME).exists():
        return False
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        return False
    if _normalise(manifest.params) != _normalise(dict(params)):
        return False
    if inputs is not None:
        try:
            current = describe_files(inputs)
        except NotFoundError:
            return False
        if {k: v["sha256"] for k, v in current.items()} != {k: v.get("sha256") for k, v in manifest.inputs.items()}:
            return False
    for out in manifest.outputs.values():
        p = path / out["path"]
        if not p.exists() or sha256_path(p) != out["sha256"]:
            return False
    return True


def _normalise(obj: Any) -> Any:
    # Round-trip through JSON so tuples/lists and numpy scalars compare equal to what was stored.
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def format_manifest(manifest: Manifest, directory: str | os.PathLike) -> str:
    """Human-readable view of a manifest for `edgekd inspect`."""
    lines = [f"{directory}  [{manifest.stage}]  schema {manifest.schema}"]
    lines.append(f"  started  {manifest.started or '-'}")
    lines.append(f"  finished {manifest.finished or '-'}")

    def section(title: str, items: Iterable[tuple[str, str]]) -> None:
        items = list(items)
        lines.append(f"  {title}:" + ("" if items else " (none)"))
        lines.extend(f"    {k}: {v}" for k, v in items)

    section("inputs", ((k, f"{v.get('path')}  sha256:{v.get('sha256', '')[:12]}") for k, v in manifest.inputs.items()))
    section("params", _flatten(manifest.params))
    section("outputs", ((k, f"{v.get('path')}  sha256:{v.get('sha256', '')[:12]}") for k, v in manifest.outputs.items()))
    section("metrics", _flatten(manifest.metrics))
    section("tools", manifest.tools.items())
    return "\n".join(lines)


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        text = json.dumps(obj, default=_json_default) if not isinstance(obj, str) else obj
        if len(text) > 100:
            text = text[:97] + "..."
        yield prefix or "(value)", text
