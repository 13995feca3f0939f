"""`edgekd diff RUN_A RUN_B`: what changed between two runs, stage by stage.

Stages are matched by their path relative to the run; for each the inputs (by sha256), the
resolved parameters, the tool versions and the metrics are compared, so a changed number comes
with the change that explains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.report.store import collect_run


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    fa, fb = _flat(a), _flat(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, "<absent>"), fb.get(key, "<absent>")
        if va != vb:
            row = {"key": key, "a": va, "b": vb}
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
                row["delta"] = vb - va
            rows.append(row)
    return rows


def diff_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    a, b = collect_run(run_a), collect_run(run_b)
    stages_a = {str(s.path.relative_to(a.root)): s for s in a.stages}
    stages_b = {str(s.path.relative_to(b.root)): s for s in b.stages}
    result: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b), "only_in_a": sorted(set(stages_a) - set(stages_b)),
                              "only_in_b": sorted(set(stages_b) - set(stages_a)), "stages": []}
    for name in sorted(set(stages_a) & set(stages_b)):
        ma, mb = stages_a[name].manifest, stages_b[name].manifest
        entry = {
            "stage": name,
            "inputs": _changes({k: v.get("sha256") for k, v in ma.inputs.items()}, {k: v.get("sha256") for k, v in mb.inputs.items()}),
            "params": _changes(ma.params, mb.params),
            "tools": _changes(ma.tools, mb.tools),
            "metrics": _changes(ma.metrics, mb.metrics),
            "outputs_changed": sorted(k for k in set(ma.outputs) | set(mb.outputs)
                                      if ma.outputs.get(k, {}).get("sha256") != mb.outputs.get(k, {}).get("sha256")),
        }
        entry["same"] = not any(entry[k] for k in ("inputs", "params", "tools", "metrics", "outputs_changed"))
        result["stages"].append(entry)
    return result


def _short(v: Any) -> str:
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def format_diff(d: dict[str, Any]) -> str:
    lines = [f"A: {d['run_a']}", f"B: {d['run_b']}"]
    for name in d["only_in_a"]:
        lines.append(f"- {name} (only in A)")
    for name in d["only_in_b"]:
        lines.append(f"+ {name} (only in B)")
    for st in d["stages"]:
        if st["same"]:
            lines.append(f"= {st['stage']}: identical")
            continue
        lines.append(f"~ {st['stage']}")
        why = [k for k in ("inputs", "params", "tools") if st[k]]
        if why:
            lines.append(f"    because: {', '.join(why)} changed")
        for section in ("inputs", "params", "tools", "metrics"):
            for row in st[section][:25]:
                delta = f"  ({row['delta']:+.4g})" if "delta" in row else ""
                lines.append(f"    {section}.{row['key']}: {_short(row['a'])} -> {_short(row['b'])}{delta}")
            if len(st[section]) > 25:
                lines.append(f"    ... {len(st[section]) - 25} more {section} changes (use --json)")
        if st["outputs_changed"]:
            lines.append(f"    outputs changed: {', '.join(st['outputs_changed'])}")
    return "\n".join(lines)
