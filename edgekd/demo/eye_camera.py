"""`edgekd demo eye-camera`: live single-eye emotion recognition on an eye camera.

Each frame: eye region (roi.py) -> gray, resized to the model's H x W, in [0, 1] -> a rolling
buffer of the last T frames (T+1 when the model also takes events, which are synthesised from
the frames) -> the model (backends.py: in-process, or on a target through the agent) ->
probabilities smoothed over time (exponential moving average) -> the emotion, its confidence,
the latency and the real frame rate drawn on the frame (overlay.py) -> a window or a local web
page (view.py), and with --out an annotated video, a GIF, a JSONL of predictions and a summary.

Real time: in a live run the model works on its own thread; a frame that arrives while it is
busy is shown with the latest result and its window is not inferred (counted as skipped), and
a file or synthetic source paced at its frame rate drops frames the loop cannot keep up with
(counted as dropped). Nothing stops the demo but the end of the source, --max-frames,
--duration, closing the view or Ctrl-C. Headless runs on a file or the synthetic stream are
not paced: every frame and every window is processed, so the stream accuracy is reproducible.

Stream accuracy (synthetic source: each clip's emotion is the truth of its frames):
- frame accuracy: the label shown on each frame (smoothed) vs the truth of that frame;
- window accuracy: each raw prediction vs the majority truth of the frames it saw;
- aligned accuracy: the raw predictions whose window is exactly one clip (what the model was
  trained on; comparable with its validation accuracy).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.demo.backends import Backend, Prediction, history_length, open_backend
from edgekd.demo.overlay import OverlayState, compose
from edgekd.demo.roi import ROI_MODES, open_roi, preprocess, to_gray
from edgekd.demo.sources import FrameSource, open_source
from edgekd.demo.view import View, open_view
from edgekd.errors import UsageError

Log = Callable[[str], None]


@dataclass
class DemoSettings:
    model: str
    source: str = "synthetic"
    target: str | None = None
    targets_dirs: Sequence[str] = ()
    roi: str = "whole"
    headless: bool = False
    out: str | None = None
    view: str = "auto"  # auto | window | web | none (headless)
    port: int = 8765
    smoothing: float = 0.5  # weight of the previous smoothed probabilities (0: no smoothing)
    threads: int | None = None
    realtime: bool | None = None  # None: paced when a live view is shown (always for cameras)
    fps: float | None = None  # synthetic stream rate (default 10)
    clips: int | None = None  # synthetic clips (default: 70 headless, endless live)
    lightings: Sequence[str] = ()
    seed: int = 1
    max_frames: int | None = None
    duration_s: float | None = None
    gif_fps: float = 10.0
    gif_max_frames: int = 300

    def check(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise UsageError(f"--smoothing must be in [0, 1), got {self.smoothing:g}",
                             hint="0 shows each window's own prediction; 0.5 averages over about the last 2")
        if self.roi not in ROI_MODES:
            open_roi(self.roi)  # raises with a did-you-mean
        if self.headless and self.view not in ("auto", "none"):
            raise UsageError(f"--headless shows no live view, but --view {self.view} asks for one",
                             hint="leave out one of the two")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be 0-65535, got {self.port}")
        for name, value in (("--max-frames", self.max_frames), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UsageError(f"--duration must be positive, got {self.duration_s:g}")


# ---------------------------------------------------------------- inference on its own thread


@dataclass
class WindowRequest:
    history: np.ndarray  # (T or T+1, H, W)
    end_frame: int  # source index of the window's last frame
    t_capture: float  # when that frame was read
    truth: int | None  # majority truth of the window's T frames
    aligned: bool  # the T frames are exactly one synthetic clip
    lighting: str | None
    start_pos: int | None = None  # position in its clip of the window's first frame (0 with aligned)


@dataclass
class WindowResult:
    request: WindowRequest
    prediction: Prediction
    e2e_ms: float  # last frame read -> probabilities available


class InferenceWorker:
    """One request at a time; `submit` refuses while busy (the caller skips that window)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._cond = threading.Condition()
        self._request: WindowRequest | None = None
        self._results: list[WindowResult | BaseException] = []
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                request, self._request = self._request, None
            try:
                result: WindowResult | BaseException = run_window(self.backend, request)
            except BaseException as exc:  # re-raised on the demo's thread
                result = exc
            with self._cond:
                self._results.append(result)
                self._busy = False

    def submit(self, request: WindowRequest) -> bool:
        with self._cond:
            if self._busy:
                return False
            self._busy = True
            self._request = request
            self._cond.notify()
            return True

    def take(self) -> list[WindowResult]:
        with self._cond:
            results, self._results = self._results, []
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    def wait_idle(self, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            with self._cond:
                if not self._busy:
                    return
            time.sleep(0.005)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()


def run_window(backend: Backend, request: WindowRequest) -> WindowResult:
    prediction = backend.predict(request.history)
    return WindowResult(request, prediction, (time.perf_counter() - request.t_capture) * 1e3)


# ---------------------------------------------------------------- outputs


class DemoOutputs:
    """annotated.mp4 (or .avi), annotated.gif, predictions.jsonl (one line per shown frame, written
    as it goes), frame.png (a well-predicted annotated frame) and summary.json."""

    def __init__(self, out_dir: Path, fps: float, gif_fps: float, gif_max_frames: int, gif_width: int = 360):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("annotated.mp4", "annotated.avi", "annotated.gif", "frame.png", "summary.json"):
            (out_dir / stale).unlink(missing_ok=True)
        self.fps = fps
        self.jsonl_path = out_dir / "predictions.jsonl"
        self._jsonl = open(self.jsonl_path, "w")
        self._video: Any = None
        self.video_path: Path | None = None
        self._gif_every = max(1, int(round(fps / gif_fps)))
        self._gif_max = gif_max_frames
        self._gif_width = gif_width
        self._gif: list[Any] = []
        self._count = 0
        self._best: tuple[float, np.ndarray] | None = None

    def _open_video(self, frame: np.ndarray) -> None:
        import cv2

        size = (frame.shape[1], frame.shape[0])
        for name, fourcc in (("annotated.mp4", "mp4v"), ("annotated.avi", "MJPG")):
            writer = cv2.VideoWriter(str(self.out_dir / name), cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
            if writer.isOpened():
                self._video, self.video_path = writer, self.out_dir / name
                return
            writer.release()
        raise UsageError("OpenCV could not open a video writer (mp4v nor MJPG)",
                         hint="install opencv-python-headless from PyPI (its wheels include FFmpeg)")

    def write(self, annotated: np.ndarray, record: dict[str, Any], png_score: float | None) -> None:
        import cv2

        if self._video is None:
            self._open_video(annotated)
        self._video.write(annotated)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._count % self._gif_every == 0 and len(self._gif) < self._gif_max:
            h, w = annotated.shape[:2]
            small = cv2.resize(annotated, (self._gif_width, int(round(h * self._gif_width / w))), interpolation=cv2.INTER_AREA)
            self._gif.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))  # palettes are made at the end, off the live loop
        if png_score is not None and (self._best is None or png_score > self._best[0]):
            self._best = (png_score, annotated.copy())
        self._count += 1

    def finish(self, summary: dict[str, Any]) -> dict[str, Path]:
        import cv2

        from edgekd.artifacts import atomic_write_bytes, atomic_write_json

        self.close()
        files: dict[str, Path] = {"predictions": self.jsonl_path}
        if self.video_path is not None:
            files["video"] = self.video_path
        if self._gif:
            gif = self.out_dir / "annotated.gif"
            tmp = gif.with_name(".annotated.gif.tmp")
            from PIL import Image

            frames = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for f in self._gif]
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                              duration=int(round(1000 * self._gif_every / self.fps)), loop=0)
            tmp.replace(gif)
            files["gif"] = gif
        if self._best is not None:
            ok, png = cv2.imencode(".png", self._best[1])
            if ok:
                files["frame"] = atomic_write_bytes(self.out_dir / "frame.png", png.tobytes())
        files["summary"] = atomic_write_json(self.out_dir / "summary.json", summary)
        return files

    def close(self) -> None:
        if not self._jsonl.closed:
            self._jsonl.close()
        if self._video is not None:
            self._video.release()
            self._video = None


# ---------------------------------------------------------------- the loop


@dataclass
class StreamTally:
    """What the summary reports, gathered as the stream goes."""

    frames: int = 0
    inferences: int = 0
    skipped_inferences: int = 0
    dropped_frames: int = 0
    model_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    frame_hits: list[bool] = field(default_factory=list)
    window_hits: list[bool] = field(default_factory=list)
    window_starts: list[int | None] = field(default_factory=list)
    aligned: list[tuple[bool, str | None, int]] = field(default_factory=list)  # (hit, lighting, truth)
    eye_found: int = 0


def _accuracy(hits: Sequence[bool]) -> float | None:
    return float(np.mean(hits)) if len(hits) else None


def _window_request(history: deque, meta: deque, frames: int) -> WindowRequest:
    window = list(meta)[-frames:]
    truths = [m.truth for m in window if m.truth is not None]
    truth = Counter(truths).most_common(1)[0][0] if truths else None
    clips = {m.clip for m in window}
    aligned = (len(clips) == 1 and None not in clips and [m.clip_pos for m in window] == list(range(frames)))
    last = window[-1]
    return WindowRequest(np.stack(history), last.index, last.t_capture, truth, aligned, last.lighting, window[0].clip_pos)


def _summary(tally: StreamTally, wall_s: float, backend: Backend, source: FrameSource, settings: DemoSettings,
             realtime: bool, status: str, view: View) -> dict[str, Any]:
    from edgekd.measure.latency import latency_stats

    classes = backend.info.classes
    by_lighting: dict[str, list[bool]] = {}
    by_class: dict[str, list[bool]] = {}
    for hit, lighting, truth in tally.aligned:
        by_lighting.setdefault(lighting or "-", []).append(hit)
        by_class.setdefault(classes[truth], []).append(hit)
    by_start: dict[int, list[bool]] = {}
    for hit, start in zip(tally.window_hits, tally.window_starts):
        if start is not None:
            by_start.setdefault(start, []).append(hit)
    model = latency_stats(tally.model_ms, backend.info.first_ms)
    e2e = latency_stats(tally.e2e_ms)
    return {
        "status": status,
        "model": backend.info.to_dict() | {"description": backend.info.describe()},
        "source": {"spec": settings.source, "description": source.describe(), "fps": source.fps},
        "settings": {"roi": settings.roi, "smoothing": settings.smoothing, "realtime": realtime, "view": view.kind,
                     "threads": backend.info.threads, "seed": settings.seed if settings.source == "synthetic" else None},
        "frames": tally.frames,
        "dropped_frames": tally.dropped_frames,
        "inferences": tally.inferences,
        "skipped_inferences": tally.skipped_inferences,
        "wall_s": round(wall_s, 3),
        "fps": tally.frames / wall_s if wall_s > 0 else None,
        "inferences_per_s": tally.inferences / wall_s if wall_s > 0 else None,
        "latency_model_ms": model,
        "latency_frame_to_label_ms": e2e,
        "power_w": {"mean": float(np.mean(tally.power_w)), "min": float(np.min(tally.power_w)),
                    "max": float(np.max(tally.power_w)), "samples": len(tally.power_w),
                    "source": (backend.info.power or {}).get("source"),
                    "note": "the board's newest power sample at each inference (total board power, not per inference)"}
        if tally.power_w else None,
        "eye_found_fraction": tally.eye_found / tally.frames if tally.frames else None,
        "accuracy": {
            "frame_accuracy": _accuracy(tally.frame_hits),
            "frames_scored": len(tally.frame_hits),
            "window_accuracy": _accuracy(tally.window_hits),
            "windows_scored": len(tally.window_hits),
            # by where the window starts in a clip: 0 = the window is one whole clip
            "window_accuracy_by_start": {str(k): _accuracy(v) for k, v in sorted(by_start.items())},
            "aligned_accuracy": _accuracy([a[0] for a in tally.aligned]),
            "aligned_windows": len(tally.aligned),
            "aligned_accuracy_by_lighting": {k: _accuracy(v) for k, v in sorted(by_lighting.items())},
            "aligned_recall_by_class": {k: _accuracy(v) for k, v in sorted(by_class.items())},
            "chance": 1.0 / len(classes),
        } if tally.window_hits or tally.frame_hits else None,
    }


def default_out_dir() -> Path:
    return Path("runs") / "demo" / f"eye-camera-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_eye_camera(settings: DemoSettings, log: Log | None = None) -> dict[str, Any]:
    """Run the demo until the source ends (or a limit, the view closing, Ctrl-C); the summary."""
    log = log or (lambda _m: None)
    settings.check()
    view_kind = "none" if settings.headless else settings.view
    out_dir = Path(settings.out) if settings.out else (default_out_dir() if settings.headless else None)
    backend = open_backend(settings.model, settings.target, settings.targets_dirs, settings.threads)
    stack = contextlib.ExitStack()
    try:
        stack.callback(backend.close)
        info = backend.info
        log(f"model: {info.describe()}; input {info.frames} frames of {info.height}x{info.width}"
            + (" + events synthesised from the frames" if info.needs_events else "")
            + (f"; first inference {info.first_ms:.1f} ms" if info.first_ms is not None else ""))
        clips = settings.clips
        if clips is None and settings.source == "synthetic" and view_kind == "none":
            clips = 70  # headless: 10 clips of each emotion
        source = stack.enter_context(open_source(settings.source, frames=info.frames, size=info.height, fps=settings.fps,
                                                 seed=settings.seed, clips=clips, lightings=settings.lightings or None))
        if settings.source == "synthetic" and info.height != info.width:
            raise UsageError(f"the synthetic stream renders square frames; the model takes {info.height}x{info.width}")
        if source.live and settings.realtime is False:
            raise UsageError("--no-realtime cannot apply to a camera: it delivers frames in real time",
                             hint="record a video file first and run the demo on it")
        realtime = source.live or (settings.realtime if settings.realtime is not None else view_kind != "none")
        log(f"source: {source.describe()}; {'real time' if realtime else 'every frame, not paced'}")
        view = open_view(view_kind, settings.port, log)
        stack.callback(view.close)
        if view.url:
            log(f"live view: {view.url}  (Ctrl-C to stop)")
        outputs = None
        if out_dir is not None:
            outputs = DemoOutputs(out_dir, source.fps, settings.gif_fps, settings.gif_max_frames)
            stack.callback(outputs.close)
        worker = InferenceWorker(backend) if realtime else None
        if worker is not None:
            stack.callback(worker.stop)
        tally, status, wall_s = StreamTally(), "complete", 0.0
        started = time.perf_counter()
        try:
            status = _loop(settings, backend, source, open_roi(settings.roi), view, outputs, worker, realtime, tally)
        except KeyboardInterrupt:
            status = "interrupted"
        wall_s = time.perf_counter() - started
        if worker is not None:
            worker.wait_idle(5.0)
        tally.dropped_frames += source.dropped
        summary = _summary(tally, wall_s, backend, source, settings, realtime, status, view)
        if outputs is not None:
            summary["out"] = str(out_dir)
            _write_artifact(out_dir, outputs, summary, settings, backend)  # type: ignore[arg-type]
        return summary
    finally:
        stack.close()


def _write_artifact(out_dir: Path, outputs: DemoOutputs, summary: dict[str, Any], settings: DemoSettings,
                    backend: Backend) -> None:
    from edgekd.artifacts import stage_dir

    model_path = backend.info.path
    inputs = {"model": model_path / "model.pt" if model_path.is_dir() else model_path}
    params = {k: v for k, v in asdict(settings).items() if k not in ("out",)}
    with stage_dir(out_dir, "demo-eye-camera", params=params, inputs=inputs) as sd:
        for name, path in outputs.finish(summary).items():
            sd.add_output(name, path)
        metrics = {"frames": summary["frames"], "fps": summary["fps"], "inferences": summary["inferences"],
                   "skipped_inferences": summary["skipped_inferences"], "dropped_frames": summary["dropped_frames"],
                   "latency_model_p50_ms": summary["latency_model_ms"].get("p50_ms"),
                   "latency_frame_to_label_p50_ms": summary["latency_frame_to_label_ms"].get("p50_ms")}
        if summary["accuracy"]:
            metrics.update({k: v for k, v in summary["accuracy"].items() if not isinstance(v, dict)})
        sd.set_metrics(**metrics)


def _loop(settings: DemoSettings, backend: Backend, source: FrameSource, roi: Any, view: View,
          outputs: DemoOutputs | None, worker: InferenceWorker | None, realtime: bool, tally: StreamTally) -> str:
    info = backend.info
    classes = info.classes
    need = history_length(info)
    history: deque = deque(maxlen=need)
    meta: deque = deque(maxlen=need)
    smoothed: np.ndarray | None = None
    latest: WindowResult | None = None
    shown_times: deque = deque(maxlen=30)
    started = time.perf_counter()
    first_index: int | None = None
    paced = realtime and not source.live
    period = 1.0 / source.fps

    while True:
        if settings.max_frames is not None and tally.frames >= settings.max_frames:
            return "max-frames"
        if settings.duration_s is not None and time.perf_counter() - started >= settings.duration_s:
            return "duration"
        frame = source.read()
        if frame is None:
            return "complete"
        if first_index is None:
            first_index, started = frame.index, time.perf_counter()
        if paced:
            due = started + (frame.index - first_index) * period
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
                frame.t_capture = time.perf_counter()  # the frame "arrives" when it is due
            elif now - due > period:  # a frame behind: drop it, as a camera would
                tally.dropped_frames += 1
                continue

        gray = to_gray(frame.image)
        region = roi.locate(gray)
        tally.eye_found += int(region.found)
        history.append(preprocess(gray, region.box, (info.height, info.width)))
        meta.append(frame)

        new_results: list[WindowResult] = []
        if len(history) == need:
            request = _window_request(history, meta, info.frames)
            if worker is None:
                new_results.append(run_window(backend, request))
            elif not worker.submit(request):
                tally.skipped_inferences += 1
        if worker is not None:
            new_results += worker.take()
        for result in new_results:
            probs = result.prediction.probs
            smoothed = probs if smoothed is None else settings.smoothing * smoothed + (1 - settings.smoothing) * probs
            latest = result
            tally.inferences += 1
            tally.model_ms.append(result.prediction.model_ms)
            tally.e2e_ms.append(result.e2e_ms)
            if result.prediction.power_w is not None:
                tally.power_w.append(result.prediction.power_w)
            req = result.request
            if req.truth is not None:
                hit = int(np.argmax(probs)) == req.truth
                tally.window_hits.append(hit)
                tally.window_starts.append(req.start_pos)
                if req.aligned:
                    tally.aligned.append((hit, req.lighting, req.truth))

        now = time.perf_counter()
        shown_times.append(now)
        fps = (len(shown_times) - 1) / (shown_times[-1] - shown_times[0]) if len(shown_times) > 1 else None
        label = classes[int(np.argmax(smoothed))] if smoothed is not None else None
        truth = classes[frame.truth] if frame.truth is not None else None
        if label is not None and truth is not None:
            tally.frame_hits.append(label == truth)
        tally.frames += 1
        model_p50 = float(np.median(tally.model_ms[-100:])) if tally.model_ms else None
        state = OverlayState(
            classes=classes, probs=smoothed, buffered=len(history), needed=need,
            model_ms=latest.prediction.model_ms if latest else None, model_p50_ms=model_p50,
            e2e_ms=latest.e2e_ms if latest else None, power_w=latest.prediction.power_w if latest else None,
            fps=fps, source_fps=source.fps,
            skipped_inferences=tally.skipped_inferences, dropped_frames=tally.dropped_frames + source.dropped,
            where=info.describe(), truth=truth, lighting=frame.lighting, eye_found=region.found, roi_box=region.box,
            roi_mode=settings.roi,
        )
        annotated = compose(frame.image, state)
        confidence = float(np.max(smoothed)) if smoothed is not None else None
        record = {
            "frame": frame.index, "t_s": round(now - started, 4), "truth": truth, "lighting": frame.lighting,
            "clip": frame.clip, "label": label, "confidence": None if confidence is None else round(confidence, 4),
            "probs": None if smoothed is None else [round(float(p), 4) for p in smoothed],
            "new_result": bool(new_results),
            "raw_label": classes[int(np.argmax(latest.prediction.probs))] if latest else None,
            "window_end": latest.request.end_frame if latest else None,
            "window_truth": classes[latest.request.truth] if latest and latest.request.truth is not None else None,
            "aligned": latest.request.aligned if latest else None,
            "model_ms": round(latest.prediction.model_ms, 3) if latest else None,
            "e2e_ms": round(latest.e2e_ms, 3) if latest else None,
            "power_w": latest.prediction.power_w if latest else None,
            "fps": round(fps, 2) if fps else None, "eye_found": region.found,
        }
        if outputs is not None:
            png_score = None
            if label is not None and new_results:
                png_score = confidence if truth is None else (confidence + 1.0 if label == truth else confidence - 1.0)
                png_score += 0.5 if frame.lighting == "normal" else 0.0  # the README's frame: the eye clearly visible
            outputs.write(annotated, record, png_score)
        web_state = {k: record[k] for k in ("frame", "label", "confidence", "truth", "model_ms", "e2e_ms", "fps", "power_w")}
        if not view.show(annotated, web_state):
            return "closed"
