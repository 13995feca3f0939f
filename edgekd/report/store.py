"""The results store: every finished stage directory under a run, read back into one structure.

A run directory holds stage directories (`NN-stage/`, or `profile/<target>/`), each with its
manifest.json and the files the stage wrote. Nothing here recomputes results: the report shows
what the stages measured and recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.artifacts import MANIFEST_NAME, Manifest, read_manifest
from edgekd.errors import ArtifactError, NotFoundError


@dataclass
class StageRecord:
    path: Path
    manifest: Manifest
    files: dict[str, Any] = field(default_factory=dict)  # parsed JSON side files (results, parity, power, ...)

    @property
    def stage(self) -> str:
        return self.manifest.stage

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class RunResults:
    root: Path
    stages: list[StageRecord] = field(default_factory=list)
    incomplete: list[Path] = field(default_factory=list)  # stage dirs without a manifest (cut short)

    def by_stage(self, stage: str) -> list[StageRecord]:
        return [s for s in self.stages if s.stage == stage]


SIDE_FILES = ("results.json", "parity.json", "ops.json", "power.json", "energy.json", "summary.json", "firmware.json")


def collect_run(run_dir: str | Path) -> RunResults:
    root = Path(run_dir)
    if not root.is_dir():
        raise NotFoundError(f"no run directory '{root}'", hint="pass the folder a pipeline or quickstart wrote (e.g. runs/quickstart)")
    results = RunResults(root)
    for manifest_path in sorted(root.rglob(MANIFEST_NAME)):
        stage_dir = manifest_path.parent
        try:
            manifest = read_manifest(stage_dir)
        except ArtifactError:
            continue
        record = StageRecord(stage_dir, manifest)
        for name in SIDE_FILES:
            f = stage_dir / name
            if f.is_file():
                try:
                    record.files[name] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    continue
        results.stages.append(record)
    for results_file in sorted(root.rglob("results.json")):
        if not (results_file.parent / MANIFEST_NAME).exists():
            results.incomplete.append(results_file.parent)
    if not results.stages and not results.incomplete:
        raise ArtifactError(f"'{root}' holds no finished stage (no {MANIFEST_NAME} below it)",
                            hint="run `edgekd quickstart` or a pipeline first")
    return results
