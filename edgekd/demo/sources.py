"""Frame sources for the live demo: a camera (index or /dev/videoN), a video file, or the
built-in synthetic eye stream (one synthetic wearer, clips with known emotions: the ground truth).

A source yields `Frame`s with uint8 images (grayscale (H, W) or BGR (H, W, 3)) until it ends.
A camera that delivers nothing for `stall_timeout_s` is an error; single failed reads are
counted as dropped frames and the demo goes on.
"""

from __future__ import annotations

import glob
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import DataError, DeviceError, NotFoundError, UsageError

SYNTHETIC = "synthetic"


@dataclass
class Frame:
    image: np.ndarray  # uint8, (H, W) gray or (H, W, 3) BGR
    index: int  # position in the source (dropped frames count too)
    t_capture: float  # time.perf_counter() when the frame was read
    truth: int | None = None  # class index of the synthetic clip the frame belongs to
    lighting: str | None = None
    clip: int | None = None  # synthetic clip number
    clip_pos: int | None = None  # position of the frame in its clip


class FrameSource:
    """Base: `read()` gives the next frame or None at the end; `live` sources run in real time."""

    kind = "source"
    name = ""
    fps = 30.0
    live = False
    dropped = 0  # frames the source lost before we saw them (cameras: an estimate)

    def read(self) -> Frame | None:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({self.fps:g} fps)"

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def list_video_devices() -> list[str]:
    """The video devices of this machine (Linux /dev/video*), for error messages."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


def _devices_text() -> str:
    found = list_video_devices()
    return f"video devices found: {', '.join(found)}" if found else "no video devices found (/dev/video* is empty)"


class _QuietOpenCV:
    """Silence OpenCV's own warnings while probing a device (we raise a clearer error)."""

    def __enter__(self) -> _QuietOpenCV:
        import cv2

        self._cv2 = cv2
        try:
            self._level = cv2.getLogLevel()
            cv2.setLogLevel(0)  # silent; restored on exit
        except AttributeError:  # builds without the logging bindings
            self._level = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._level is not None:
            self._cv2.setLogLevel(self._level)


class CameraSource(FrameSource):
    kind = "camera"
    live = True

    def __init__(self, device: int | str, stall_timeout_s: float = 5.0):
        import cv2

        self.name = str(device)
        if isinstance(device, str) and not Path(device).exists():
            raise NotFoundError(f"no camera device '{device}'; {_devices_text()}",
                                hint="pass one of them with --source, or --source synthetic to run without a camera")
        with _QuietOpenCV():
            self.cap = cv2.VideoCapture(device)
            opened = self.cap.isOpened()
        if not opened:
            self.cap.release()
            what = f"index {device}" if isinstance(device, int) else f"'{device}'"
            raise NotFoundError(
                f"no camera could be opened at {what}; {_devices_text()}",
                hint="check the cable and permissions (the user needs the 'video' group), pass another "
                     "--source 0|/dev/videoN, or --source synthetic to run without a camera",
            )
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of stale ones
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 1000.0 else 30.0
        self.stall_timeout_s = stall_timeout_s
        self.index = 0
        self.started: float | None = None

    def read(self) -> Frame | None:
        deadline = time.perf_counter() + self.stall_timeout_s
        while True:
            ok, image = self.cap.read()
            now = time.perf_counter()
            if ok and image is not None:
                break
            self.dropped += 1
            if now > deadline:
                raise DeviceError(f"camera {self.name} delivered no frame for {self.stall_timeout_s:g} s; {_devices_text()}",
                                  hint="the camera was unplugged or is used by another program")
            time.sleep(0.01)
        if self.started is None:
            self.started = now
        # The driver drops what we are too slow to take; estimate it from the nominal rate.
        expected = int((now - self.started) * self.fps) + 1
        self.dropped = max(self.dropped, expected - (self.index + 1))
        frame = Frame(image, self.index + self.dropped, now)
        self.index += 1
        return frame

    def close(self) -> None:
        self.cap.release()


class VideoFileSource(FrameSource):
    kind = "file"

    def __init__(self, path: str | Path):
        import cv2

        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"no video file '{path}'",
                                hint="give a camera index (0), a device (/dev/video0), a video file or 'synthetic'")
        self.name = str(path)
        with _QuietOpenCV():
            self.cap = cv2.VideoCapture(str(path))
            ok, image = self.cap.read() if self.cap.isOpened() else (False, None)
        if not ok or image is None:
            self.cap.release()
            raise DataError(f"cannot read video '{path}': OpenCV found no decodable frame in it",
                            hint="check that the file is a complete video (e.g. play it with ffplay) in a format "
                                 "OpenCV's FFmpeg reads (mp4/H.264, avi/MJPG, ...)")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 1.0 <= fps <= 1000.0 else 25.0
        self._pending: np.ndarray | None = image
        self.index = 0

    def read(self) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self.cap.read()
            if not ok or image is None:
                return None
        frame = Frame(image, self.index, time.perf_counter())
        self.index += 1
        return frame

    def close(self) -> None:
        self.cap.release()


class SyntheticEyeSource(FrameSource):
    """The synthetic eye stream (edgekd.data.synthetic_eye): clips of T frames of one wearer,
    as 8-bit grayscale frames at the model's resolution, with the clip's emotion as truth.
    Clips are rendered ahead on a thread, so a live run does not stall while a batch renders."""

    kind = "synthetic"
    name = SYNTHETIC

    def __init__(self, frames: int, size: int, fps: float = 10.0, seed: int = 1, clips: int | None = None,
                 lightings: Sequence[str] | None = None, prefetch_clips: int = 64):
        from edgekd.data.synthetic_eye import LIGHTINGS, synthetic_eye_stream

        if fps <= 0:
            raise UsageError(f"--fps must be positive, got {fps:g}")
        if clips is not None and clips < 1:
            raise UsageError(f"--clips must be at least 1, got {clips}")
        self.fps = float(fps)
        self.frames_per_clip = frames
        self.size = size
        self.lightings = list(lightings or LIGHTINGS)
        stream = synthetic_eye_stream(seed=seed, frames=frames, size=size, lightings=self.lightings, clips=clips)
        self._clips: queue.Queue = queue.Queue(maxsize=prefetch_clips)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._render, args=(stream,), daemon=True)
        self._thread.start()
        self._frames: Iterator[Frame] = self._iterate()

    def _render(self, stream: Iterator[tuple[np.ndarray, int, str]]) -> None:
        try:
            for item in stream:
                while not self._stop.is_set():
                    try:
                        self._clips.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # surfaces in read()
            self._clips.put(exc)
            return
        self._clips.put(None)

    def _iterate(self) -> Iterator[Frame]:
        index, clip = 0, 0
        while True:
            item = self._clips.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            frames, label, lighting = item
            for pos in range(len(frames)):
                image = np.round(np.clip(frames[pos], 0.0, 1.0) * 255.0).astype(np.uint8)
                yield Frame(image, index, time.perf_counter(), truth=label, lighting=lighting, clip=clip, clip_pos=pos)
                index += 1
            clip += 1

    def read(self) -> Frame | None:
        frame = next(self._frames, None)
        if frame is not None:
            frame.t_capture = time.perf_counter()
        return frame

    def describe(self) -> str:
        return f"synthetic eye stream ({self.size}x{self.size}, {self.frames_per_clip}-frame clips, {self.fps:g} fps)"

    def close(self) -> None:
        self._stop.set()


def open_source(spec: str, *, frames: int, size: int, fps: float | None = None, seed: int = 1,
                clips: int | None = None, lightings: Sequence[str] | None = None) -> FrameSource:
    """'synthetic', a camera index ('0'), a device ('/dev/video0') or a video file."""
    spec = str(spec).strip()
    if spec == SYNTHETIC:
        return SyntheticEyeSource(frames, size, fps=fps or 10.0, seed=seed, clips=clips, lightings=lightings)
    extra = [name for name, value in (("--clips", clips), ("--lighting", lightings)) if value]
    if extra:
        raise UsageError(f"{' and '.join(extra)} apply to --source synthetic only, not '{spec}'")
    if fps is not None:
        raise UsageError(f"--fps sets the synthetic stream's rate; '{spec}' has its own",
                         hint="leave out --fps for cameras and video files")
    if spec.isdigit():
        return CameraSource(int(spec))
    if spec.startswith("/dev/video"):
        return CameraSource(spec)
    return VideoFileSource(spec)
