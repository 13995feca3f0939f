"""`edgekd report RUN_DIR`: one self-contained HTML file (inline CSS and SVG, no scripts, no network).

Sections, each always present (with a note saying why when it has no data): the accuracy ledger,
the table per target and format, Pareto plots (accuracy vs latency, vs energy), latency
histograms, power traces with the inference windows, confusion matrices, theoretical energy per
layer, training results, and the tool versions.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from edgekd.artifacts import atomic_write_text
from edgekd.report import svg
from edgekd.report.store import RunResults, StageRecord, collect_run

SECTIONS = ("ledger", "targets", "pareto", "latency", "power", "confusion", "energy", "training", "versions")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.ok{color:#2a7d2a}.bad{color:#b22}
.note{color:#666;font-style:italic}.plots{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
figcaption{font-size:.85rem;color:#555;text-align:center}.cm td{width:2.2rem;text-align:center}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, digits: int = 3, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if pct:
        return f"{100 * float(v):.2f}"
    return f"{float(v):.{digits}g}"


def _table(headers: list[str], rows: list[list[str]], table_id: str, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}" class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _ledger(run: RunResults) -> str:
    rows = []
    for conv in run.by_stage("convert"):
        parity = conv.files.get("parity.json")
        if not parity:
            continue
        hops = parity.get("hops", [])
        if hops:
            first = hops[0]
            rows.append([_e(conv.name), _e(first["source"]), _num(first.get("accuracy_source"), pct=True), "–", "–", "–", "baseline"])
        for h in hops:
            status = '<span class="ok">ok</span>' if h.get("ok") else '<span class="bad">FAIL</span>'
            delta = h.get("accuracy_delta")
            rows.append([_e(conv.name), _e(h["target"]), _num(h.get("accuracy_target"), pct=True),
                         "–" if delta is None else f"{delta:+.2f}", _num(h.get("agreement"), pct=True),
                         _num(h.get("max_abs")), status])
    for prof in run.by_stage("profile") + run.by_stage("firmware-profile"):
        s = (prof.files.get("results.json") or {}).get("summary", {}) or prof.manifest.metrics
        if "accuracy" in s:
            agree = s.get("agreement_with_host", s.get("agreement_with_tflite"))
            rows.append([_e(prof.name), f"device: {_e(prof.manifest.params.get('target', prof.name))}",
                         _num(s.get("accuracy"), pct=True), "–", _num(agree, pct=True), _num(s.get("max_abs_diff_vs_host")),
                         "on device"])
    if not rows:
        return _note("no conversion or device results in this run")
    return _table(["stage", "format / device", "accuracy %", "Δ pt", "agreement %", "max |err|", "status"], rows, "ledger-table")


def _profiles(run: RunResults) -> list[StageRecord]:
    return run.by_stage("profile") + run.by_stage("firmware-profile")


def _target_rows(run: RunResults) -> list[dict[str, Any]]:
    rows = []
    for prof in _profiles(run):
        res = prof.files.get("results.json") or {}
        s = res.get("summary", {}) or prof.manifest.metrics
        p = prof.manifest.params
        rows.append({
            "target": p.get("target", prof.name), "format": p.get("format") or Path(str(p.get("model", ""))).suffix,
            "status": res.get("status", "complete"), "size_kb": (p.get("model_bytes") or 0) / 1024 or None,
            "accuracy": s.get("accuracy"), "p50": s.get("p50_ms"), "p99": s.get("p99_ms"),
            "energy_mj": s.get("energy_mj"), "ram_kb": s.get("ram_kb"), "flash_kb": s.get("flash_kb"),
            "cycles": s.get("cycles_per_inference"), "record": prof,
            "samples": s.get("samples_done", s.get("samples")),
        })
    return rows


def _targets(run: RunResults, reference_acc: float | None, reference_samples: int | None) -> str:
    rows = _target_rows(run)
    if not rows:
        return _note("no device profiles in this run")
    out = []
    for r in rows:
        # A delta is only shown over the same samples as fp32's: the emulated board runs the first
        # 20, whose accuracy says nothing against fp32 on all of them (its agreement is in the ledger).
        same = reference_samples is None or r["samples"] is None or r["samples"] == reference_samples
        if r["accuracy"] is None or reference_acc is None:
            delta = "–"
        elif not same:
            delta = f"– ({r['samples']} of {reference_samples} samples)"
        else:
            delta = f"{100 * (r['accuracy'] - reference_acc):+.2f}"
        out.append([_e(r["target"]), _e(r["format"]), _e(r["status"]), _num(r["size_kb"]), _num(r["samples"]),
                    _num(r["accuracy"], pct=True), _e(delta), _num(r["p50"]), _num(r["p99"]), _num(r["cycles"]),
                    _num(r["energy_mj"]), _num(r["ram_kb"]), _num(r["flash_kb"])])
    return _table(["target", "format", "status", "size KiB", "samples", "accuracy %", "Δ vs fp32 pt", "p50 ms", "p99 ms",
                   "cycles/inf", "energy mJ/inf", "RAM KiB", "flash KiB"], out, "targets-table")


def _pareto(run: RunResults, estimates: list[dict[str, Any]]) -> str:
    rows = [r for r in _target_rows(run) if r["accuracy"] is not None]
    figs = []
    lat = [(r["p50"], r["accuracy"], f"{r['target']}") for r in rows if r["p50"]]
    if lat:
        figs.append(svg.scatter(lat, "pareto-latency", "accuracy vs latency (p50, log scale)", "latency p50 (ms)", "accuracy"))
    energy = [(r["energy_mj"], r["accuracy"], f"{r['target']} (measured)") for r in rows if r["energy_mj"]]
    acc_by_model = {r["target"]: r["accuracy"] for r in rows}
    best_acc = max(acc_by_model.values()) if acc_by_model else None
    for est in estimates:
        acc = est.get("accuracy", best_acc)
        if acc is not None and est.get("total_mj"):
            energy.append((est["total_mj"], acc, f"{est['model']} (estimate 45 nm)"))
    if energy:
        figs.append(svg.scatter(energy, "pareto-energy", "accuracy vs energy per inference (log scale)", "energy (mJ)", "accuracy"))
    if not figs:
        return _note("no accuracy with latency or energy to plot")
    return '<div class="plots">' + "".join(figs) + "</div>"


def _latency(run: RunResults) -> str:
    figs = []
    for prof in _profiles(run):
        samples = prof.path / "samples.jsonl"
        if not samples.is_file():
            continue
        values: list[float] = []
        for line in samples.read_text().splitlines():
            obj = json.loads(line)
            if obj.get("type") == "latency":
                values.extend(obj["invoke_ms"])
        if values:
            cut = sorted(values)[: max(1, int(0.99 * len(values)))]  # the slowest 1 % would squash the plot
            figs.append(svg.histogram(cut, f"latency-{prof.name}", f"{prof.name}: invoke() latency, {len(values)} runs (≤ p99)", "ms"))
    return '<div class="plots">' + "".join(figs) + "</div>" if figs else _note("no per-inference latencies recorded")


def _power(run: RunResults) -> str:
    figs = []
    for prof in _profiles(run):
        p = prof.files.get("power.json")
        if not p or not p.get("samples"):
            continue
        samples = p["idle"] + p["samples"]
        t, w = [s[0] for s in samples], [s[1] for s in samples]
        m = p.get("markers", {})
        windows = [(m["window_start"], m["window_end"])] if "window_start" in m and "window_end" in m else []
        figs.append(svg.trace(t, w, windows, f"power-{prof.name}", f"{prof.name}: {p.get('source')} power, timed window shaded"))
    return '<div class="plots">' + "".join(figs) + "</div>" if figs else _note(
        "no power samples: the targets of this run have no power source (see each target's [power])")


def _confusion(run: RunResults) -> str:
    parts = []
    for prof in _profiles(run):
        s = (prof.files.get("results.json") or {}).get("summary", {})
        cm = s.get("confusion")
        if not cm:
            continue
        peak = max(max(row) for row in cm) or 1
        rows = []
        for i, row in enumerate(cm):
            cells = [f'<td style="background:rgba(31,119,180,{v / peak:.2f})">{v}</td>' for v in row]
            rows.append(f"<tr><th>{i}</th>{''.join(cells)}</tr>")
        head = "".join(f"<th>{j}</th>" for j in range(len(cm)))
        parts.append(f'<div><b>{_e(prof.name)}</b> (rows: true class, columns: predicted)<table id="confusion-{_e(prof.name)}" '
                     f'class="cm"><tr><th></th>{head}</tr>{"".join(rows)}</table></div>')
    return '<div class="plots">' + "".join(parts) + "</div>" if parts else _note("no labelled evaluation on a device")


def _estimates(run: RunResults) -> list[dict[str, Any]]:
    return [s.files["energy.json"] for s in run.stages if "energy.json" in s.files]


def _energy(estimates: list[dict[str, Any]]) -> str:
    if not estimates:
        return _note("no theoretical energy estimate in this run")
    parts = []
    for est in estimates:
        rows = [[_e(layer["name"]), _e(layer["op"]), _num(layer.get("input_rate")), f"{layer['macs']:,.0f}",
                 f"{layer['ops']:,.0f}", _num(layer["energy_uj"])] for layer in est["layers"]]
        parts.append(f"<h3>{_e(est['model'])}: {est['total_mj']:.4g} mJ per sample — {_e(est['label'])}</h3>")
        parts.append(_table(["layer", "op", "input rate", "MACs", "ops", "µJ"], rows, f"energy-{_e(est['model'])}"))
        parts.append(svg.bars([layer["name"] for layer in est["layers"]], [layer["energy_uj"] for layer in est["layers"]],
                              f"energy-bars-{_e(est['model'])}", f"{est['model']}: estimated energy per layer", "µJ"))
    return "".join(parts)


def _training(run: RunResults) -> str:
    rows = []
    for st in run.by_stage("train") + run.by_stage("distill"):
        m = st.manifest.metrics
        arch = st.manifest.params.get("model", {}).get("arch", "")
        rates = m.get("firing_rates") or {}
        mean_rate = sum(rates.values()) / len(rates) if rates else None
        rows.append([_e(st.name), _e(st.stage), _e(arch), f"{m.get('parameters', 0):,}", _num(m.get("val_accuracy"), pct=True),
                     _num(m.get("val_uar"), pct=True), _e(m.get("epochs", "")), _num(mean_rate)])
    if not rows:
        return _note("no training stages in this run")
    return _table(["stage dir", "stage", "architecture", "parameters", "val accuracy %", "val UAR %", "epochs",
                   "mean firing rate"], rows, "training-table")


def _versions(run: RunResults) -> str:
    tools: dict[str, set[str]] = {}
    for st in run.stages:
        for k, v in st.manifest.tools.items():
            tools.setdefault(k, set()).add(str(v))
    rows = [[_e(k), _e(", ".join(sorted(v)))] for k, v in sorted(tools.items())]
    return _table(["tool", "version"], rows, "versions-table") if rows else _note("no tool versions recorded")


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/report.html (or `out`) and return its path."""
    run = collect_run(run_dir)
    estimates = _estimates(run)
    reference = reference_samples = None
    for conv in run.by_stage("convert"):
        hops = (conv.files.get("parity.json") or {}).get("hops", [])
        if hops and hops[0].get("accuracy_source") is not None:
            reference, reference_samples = hops[0]["accuracy_source"], hops[0].get("samples")
    body = {
        "ledger": ("Accuracy ledger", "torch fp32 → ONNX → TFLite fp32 → int8 → each device", _ledger(run)),
        "targets": ("Targets and formats", "", _targets(run, reference, reference_samples)),
        "pareto": ("Pareto: accuracy vs latency and energy", "", _pareto(run, estimates)),
        "latency": ("Latency histograms", "", _latency(run)),
        "power": ("Power traces", "", _power(run)),
        "confusion": ("Confusion matrices", "", _confusion(run)),
        "energy": ("Theoretical energy per layer", "estimate (45 nm): MAC 4.6 pJ, AC 0.9 pJ", _energy(estimates)),
        "training": ("Training", "", _training(run)),
        "versions": ("Tool versions", "", _versions(run)),
    }
    incomplete = "".join(f"<li>{_e(p)}</li>" for p in run.incomplete)
    sections = "".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{_note(sub) if sub else ""}{content}</section>'
        for key, (title, sub, content) in body.items()
    )
    page = (
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgekd report: {_e(Path(run_dir).name)}</title>"
        f"<style>{CSS}</style></head><body><h1>edgekd report: {_e(Path(run_dir).resolve().name)}</h1>"
        f"<p>{_e(Path(run_dir).resolve())} · {len(run.stages)} stages · generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"
        + (f'<p class="bad">Incomplete stages (kept, not counted):</p><ul>{incomplete}</ul>' if incomplete else "")
        + sections + "</body></html>"
    )
    out_path = Path(out) if out else Path(run_dir) / "report.html"
    return atomic_write_text(out_path, page)
