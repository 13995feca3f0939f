"""What the demo draws: the frame (scaled to a fixed height, eye box marked) beside a panel
with the emotion, its confidence, every class's probability, the latency and the real frame rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.demo.roi import Box

DISPLAY_HEIGHT = 384
PANEL_WIDTH = 280
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, GREEN, RED, AMBER, BLUE = (235, 235, 235), (150, 150, 150), (90, 200, 90), (80, 80, 230), (60, 180, 240), (230, 160, 60)


@dataclass
class OverlayState:
    classes: list[str]
    probs: np.ndarray | None = None  # smoothed probabilities; None while the buffer fills
    buffered: int = 0
    needed: int = 0
    model_ms: float | None = None
    model_p50_ms: float | None = None
    e2e_ms: float | None = None
    power_w: float | None = None
    fps: float | None = None
    source_fps: float | None = None
    skipped_inferences: int = 0
    dropped_frames: int = 0
    where: str = ""
    truth: str | None = None
    lighting: str | None = None
    eye_found: bool = True
    roi_box: Box | None = None
    roi_mode: str = "whole"


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, color=WHITE, thick: int = 1) -> None:
    import cv2

    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def scale_frame(image: np.ndarray, height: int = DISPLAY_HEIGHT) -> tuple[np.ndarray, float]:
    """The frame as BGR at `height` rows (nearest for big upscales, so small frames stay honest)."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    factor = height / bgr.shape[0]
    width = max(1, int(round(bgr.shape[1] * factor)))
    interp = cv2.INTER_NEAREST if factor >= 3 else (cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    return cv2.resize(bgr, (width, height), interpolation=interp), factor


def compose(image: np.ndarray, state: OverlayState, height: int = DISPLAY_HEIGHT) -> np.ndarray:
    """The annotated BGR frame: the scaled frame and the panel to its right."""
    import cv2

    frame, factor = scale_frame(image, height)
    if state.roi_mode == "detect" and state.roi_box is not None:
        x, y, w, h = (int(round(v * factor)) for v in state.roi_box)
        cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), GREEN if state.eye_found else AMBER, 2)
    if state.roi_mode == "detect" and not state.eye_found:
        _text(frame, "no eye found", (8, height - 10), 0.55, AMBER, 1)
    panel = np.full((height, PANEL_WIDTH, 3), 28, np.uint8)
    _text(panel, "edgekd eye-camera", (10, 22), 0.55, GREY)
    y = 60
    if state.probs is None:
        _text(panel, f"buffering {state.buffered}/{state.needed}", (10, y), 0.7, AMBER, 2)
    else:
        k = int(np.argmax(state.probs))
        label, conf = state.classes[k], float(state.probs[k])
        color = WHITE if state.truth is None else (GREEN if state.truth == label else RED)
        _text(panel, label, (10, y), 1.0, color, 2)
        _text(panel, f"{100 * conf:.0f}%", (PANEL_WIDTH - 62, y), 0.7, color, 2)
    y += 16
    for i, name in enumerate(state.classes):
        p = 0.0 if state.probs is None else float(state.probs[i])
        top = y + i * 20
        _text(panel, name, (10, top + 13), 0.42, WHITE)
        cv2.rectangle(panel, (92, top + 3), (92 + 150, top + 15), (60, 60, 60), -1)
        cv2.rectangle(panel, (92, top + 3), (92 + int(150 * p), top + 15), BLUE, -1)
        _text(panel, f"{100 * p:3.0f}", (246, top + 13), 0.38, GREY)
    y += 20 * len(state.classes) + 18
    if state.truth is not None:
        _text(panel, f"truth: {state.truth}", (10, y), 0.5, WHITE)
        y += 18
        if state.lighting:
            _text(panel, f"lighting: {state.lighting}", (10, y), 0.45, GREY)
            y += 18
    lines = []
    if state.model_ms is not None:
        p50 = f" (p50 {state.model_p50_ms:.1f})" if state.model_p50_ms is not None else ""
        lines.append(f"model {state.model_ms:.1f} ms{p50}")
    if state.e2e_ms is not None:
        lines.append(f"frame->label {state.e2e_ms:.1f} ms")
    if state.power_w is not None:
        lines.append(f"board power {state.power_w:.2f} W")
    if state.fps is not None:
        src = f" / src {state.source_fps:g}" if state.source_fps else ""
        lines.append(f"{state.fps:.1f} fps{src}")
    lines.append(f"skipped: {state.skipped_inferences} inf, {state.dropped_frames} frames")
    for line in lines:
        _text(panel, line, (10, y), 0.45, WHITE)
        y += 18
    _text(panel, state.where[:44], (10, height - 10), 0.36, GREY)
    return np.concatenate([frame, panel], axis=1)
