"""Tiny inline-SVG plots, so a report is one self-contained HTML file (no network, no JS)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

W, H, PAD = 520, 300, 48
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _scale(lo: float, hi: float, a: float, b: float):
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    return lambda v: a + (v - lo) * (b - a) / (hi - lo)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _axes(x_lo, x_hi, y_lo, y_hi, xlabel, ylabel, log_x=False) -> tuple[list[str], object, object]:
    fx = _scale(x_lo, x_hi, PAD, W - 12)
    fy = _scale(y_lo, y_hi, H - PAD, 12)
    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 12}" y2="{H - PAD}" stroke="#333"/>',
             f'<line x1="{PAD}" y1="12" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>']
    for t in _ticks(x_lo, x_hi):
        label = _fmt(10 ** t) if log_x else _fmt(t)
        parts.append(f'<text x="{fx(t):.1f}" y="{H - PAD + 16}" font-size="11" text-anchor="middle">{label}</text>')
    for t in _ticks(y_lo, y_hi):
        parts.append(f'<text x="{PAD - 6}" y="{fy(t) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(t)}</text>')
        parts.append(f'<line x1="{PAD}" y1="{fy(t):.1f}" x2="{W - 12}" y2="{fy(t):.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{(PAD + W) / 2}" y="{H - 8}" font-size="12" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{H / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {H / 2})">'
                 f'{html.escape(ylabel)}</text>')
    return parts, fx, fy


def _svg(parts: list[str], figure_id: str, title: str) -> str:
    body = "".join(parts)
    return (f'<figure id="{figure_id}" class="plot"><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(title)}">{body}</svg>'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def scatter(points: Sequence[tuple[float, float, str]], figure_id: str, title: str, xlabel: str, ylabel: str,
            log_x: bool = True, pareto: bool = True) -> str:
    """Labelled points; with pareto=True the front (lower x, higher y) is drawn as a line."""
    pts = [(math.log10(x) if log_x else x, y, label) for x, y, label in points if x > 0 or not log_x]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    parts, fx, fy = _axes(min(xs) - 0.1, max(xs) + 0.1, min(0.0, min(ys)), max(1.0, max(ys)), xlabel, ylabel, log_x)
    if pareto:
        front, best = [], -math.inf
        for x, y, _ in sorted(pts):
            if y > best:
                front.append((x, y))
                best = y
        if len(front) > 1:
            path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in front)
            parts.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    for i, (x, y, label) in enumerate(pts):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="5" fill="{color}"><title>{html.escape(label)}</title></circle>')
        parts.append(f'<text x="{fx(x) + 7:.1f}" y="{fy(y) - 6:.1f}" font-size="11">{html.escape(label)}</text>')
    return _svg(parts, figure_id, title)


def histogram(values: Sequence[float], figure_id: str, title: str, xlabel: str, bins: int = 30) -> str:
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1e-9
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    parts, fx, fy = _axes(lo, hi, 0, max(counts), xlabel, "count")
    for i, c in enumerate(counts):
        x0, x1 = fx(lo + i * width), fx(lo + (i + 1) * width)
        parts.append(f'<rect x="{x0:.1f}" y="{fy(c):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" height="{fy(0) - fy(c):.1f}" fill="#1f77b4"/>')
    return _svg(parts, figure_id, title)


def trace(t: Sequence[float], w: Sequence[float], windows: Sequence[tuple[float, float]], figure_id: str, title: str) -> str:
    t0 = min(t)
    ts = [x - t0 for x in t]
    parts, fx, fy = _axes(0, max(ts), 0, max(w) * 1.1, "time (s)", "power (W)")
    for a, b in windows:
        parts.append(f'<rect x="{fx(a - t0):.1f}" y="12" width="{max(fx(b - t0) - fx(a - t0), 1):.1f}" '
                     f'height="{H - PAD - 12}" fill="#ffdd88" opacity="0.5"><title>inference window</title></rect>')
    step = max(1, len(ts) // 1500)
    path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in list(zip(ts, w))[::step])
    parts.append(f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-width="1"/>')
    return _svg(parts, figure_id, title)


def bars(labels: Sequence[str], values: Sequence[float], figure_id: str, title: str, ylabel: str) -> str:
    parts, fx, fy = _axes(0, len(values), 0, max(values) * 1.1 if values else 1, "", ylabel)
    width = (W - 12 - PAD) / max(len(values), 1)
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = PAD + i * width
        parts.append(f'<rect x="{x0 + 2:.1f}" y="{fy(v):.1f}" width="{width - 4:.1f}" height="{fy(0) - fy(v):.1f}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"><title>{html.escape(label)}: {v:.4g}</title></rect>')
        parts.append(f'<text x="{x0 + width / 2:.1f}" y="{H - PAD + 28}" font-size="9" text-anchor="middle">'
                     f'{html.escape(label[-14:])}</text>')
    return _svg(parts, figure_id, title)
