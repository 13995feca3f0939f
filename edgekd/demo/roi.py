"""The eye region and the student's preprocessing.

`whole`: the whole frame (a head-mounted eye camera sees only the eye). `detect`: OpenCV's
bundled Haar eye cascade finds the eye in a desk webcam's frame; the box is smoothed over time
and held for a while when the detector misses, and the whole frame is used until a first eye
is found. The crop is converted to gray, resized to the model's H x W (INTER_AREA) and scaled
to [0, 1], as the eye readers do with dataset frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.errors import MissingDependencyError, UsageError, did_you_mean

ROI_MODES = ("whole", "detect")
Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass
class Region:
    box: Box
    found: bool  # False: detection mode without an eye (the whole frame or a held box is used)


def to_gray(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def preprocess(gray: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Crop `box` from a uint8 gray frame, resize to size=(H, W), float32 in [0, 1]."""
    import cv2

    x, y, w, h = box
    crop = gray[y:y + h, x:x + w]
    height, width = size
    if crop.shape != (height, width):
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return crop.astype(np.float32) / np.float32(255.0)


class WholeFrame:
    mode = "whole"

    def locate(self, gray: np.ndarray) -> Region:
        return Region((0, 0, gray.shape[1], gray.shape[0]), True)


class HaarEyeDetector:
    """The largest eye the cascade finds, as a square crop with margin (brow included)."""

    mode = "detect"
    CASCADE = "haarcascade_eye.xml"

    def __init__(self, margin: float = 1.8, smoothing: float = 0.6, hold_frames: int = 15, detect_width: int = 480):
        import cv2

        path = cv2.data.haarcascades + self.CASCADE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise MissingDependencyError(f"OpenCV's eye cascade could not be loaded from {path}",
                                         hint="reinstall opencv-python-headless (it bundles the Haar cascades)")
        self.margin, self.smoothing, self.hold_frames, self.detect_width = margin, smoothing, hold_frames, detect_width
        self._box: np.ndarray | None = None  # smoothed (cx, cy, side)
        self._missed = 0

    def locate(self, gray: np.ndarray) -> Region:
        import cv2

        height, width = gray.shape
        scale = min(1.0, self.detect_width / width)
        small = cv2.resize(gray, (int(width * scale), int(height * scale))) if scale < 1.0 else gray
        min_side = max(12, int(0.06 * small.shape[1]))
        eyes = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(eyes):
            x, y, w, h = max(eyes, key=lambda e: e[2] * e[3]) / scale
            found = np.array([x + w / 2, y + h / 2, max(w, h) * self.margin])
            self._box = found if self._box is None else self.smoothing * self._box + (1 - self.smoothing) * found
            self._missed = 0
        else:
            self._missed += 1
            if self._missed > self.hold_frames:
                self._box = None
        if self._box is None:
            return Region((0, 0, width, height), False)
        cx, cy, side = self._box
        side = int(min(side, width, height))
        x0 = int(np.clip(cx - side / 2, 0, width - side))
        y0 = int(np.clip(cy - side / 2, 0, height - side))
        return Region((x0, y0, side, side), self._missed == 0)


def open_roi(mode: str) -> WholeFrame | HaarEyeDetector:
    if mode == "whole":
        return WholeFrame()
    if mode == "detect":
        return HaarEyeDetector()
    raise UsageError(f"unknown --roi '{mode}'{did_you_mean(mode, ROI_MODES)}",
                     hint="whole (a head-mounted eye camera, the default) or detect (find the eye in a desk webcam's frame)")
