"""The live view: an OpenCV window when this machine has a display and OpenCV a GUI, otherwise a
small web page on 127.0.0.1 (an MJPEG stream of the annotated frames and the current label).

Web routes: `/` the page, `/stream.mjpg` multipart JPEG frames, `/frame.jpg` the latest frame,
`/state.json` the current label, confidence, latency and frame rate.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from edgekd.errors import MissingDependencyError, UsageError, did_you_mean

VIEWS = ("auto", "window", "web", "none")
WINDOW_TITLE = "edgekd eye-camera"


def display_available() -> bool:
    """A display to open a window on (X11/Wayland on Linux; assumed on macOS and Windows)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def opencv_gui_available() -> bool:
    """False for the headless OpenCV build (its imshow raises 'not implemented'). Only probed with a
    display present: a GUI build without one can abort the process."""
    import cv2

    try:
        cv2.namedWindow("edgekd-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("edgekd-probe")
        return True
    except cv2.error:
        return False


class View:
    kind = "none"
    url: str | None = None

    def show(self, frame: np.ndarray, state: dict[str, Any]) -> bool:
        """Show a BGR frame; False when the user closed the view (stop the demo)."""
        return True

    def close(self) -> None:
        pass


class WindowView(View):
    kind = "window"

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE)

    def show(self, frame: np.ndarray, state: dict[str, Any]) -> bool:
        self.cv2.imshow(WINDOW_TITLE, frame)
        key = self.cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        return self.cv2.getWindowProperty(WINDOW_TITLE, self.cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        self.cv2.destroyWindow(WINDOW_TITLE)
        self.cv2.waitKey(1)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>edgekd eye-camera</title>
<style>body{background:#181818;color:#ddd;font-family:sans-serif;margin:1.5em}
#label{font-size:2em;margin:.3em 0}#info{color:#999}</style></head><body>
<h3>edgekd eye-camera</h3><img src="/stream.mjpg" alt="live view">
<div id="label">-</div><div id="info"></div>
<script>
async function poll(){try{const s=await (await fetch('/state.json')).json();
document.getElementById('label').textContent=s.label?`${s.label} ${Math.round(100*s.confidence)}%`:'buffering';
document.getElementById('info').textContent=`model ${s.model_ms?s.model_ms.toFixed(1):'-'} ms, `+
`${s.fps?s.fps.toFixed(1):'-'} fps, frame ${s.frame}`+(s.power_w?`, board ${s.power_w.toFixed(2)} W`:'')+
(s.truth?`, truth ${s.truth}`:'');}catch(e){}
setTimeout(poll,300)}poll();
</script></body></html>"""


class WebView(View):
    """A threaded HTTP server on 127.0.0.1 serving the newest annotated frame."""

    kind = "web"

    def __init__(self, port: int = 8765, host: str = "127.0.0.1", jpeg_quality: int = 85):
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._state: dict[str, Any] = {"label": None, "frame": None}
        self._seq = 0
        self._closing = False
        self.jpeg_quality = jpeg_quality
        view = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the terminal for the demo's own lines
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif path == "/state.json":
                    with view._cond:
                        body = json.dumps(view._state).encode()
                    self._send(body, "application/json")
                elif path == "/frame.jpg":
                    jpeg = view.wait_frame(0, 5.0)[0]
                    if jpeg is None:
                        self.send_error(503, "no frame yet")
                    else:
                        self._send(jpeg, "image/jpeg")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self.send_error(404)

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while True:
                        jpeg, seen = view.wait_frame(seen, 1.0)
                        if view._closing:
                            return
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the browser went away

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise UsageError(f"cannot serve the live view on {host}:{port}: {exc.strerror or exc}",
                             hint="pick another --port, or --port 0 for any free one") from None
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def wait_frame(self, seen: int, timeout_s: float) -> tuple[bytes | None, int]:
        """The newest JPEG once there is one newer than `seen` (or after the time-out)."""
        with self._cond:
            if self._seq <= seen and not self._closing:
                self._cond.wait(timeout_s)
            return (self._jpeg if self._seq > seen else None), self._seq

    def show(self, frame: np.ndarray, state: dict[str, Any]) -> bool:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if ok:
            with self._cond:
                self._jpeg = jpeg.tobytes()
                self._state = dict(state)
                self._seq += 1
                self._cond.notify_all()
        return True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()


def open_view(kind: str, port: int = 8765, log: Callable[[str], None] | None = None) -> View:
    """'auto': a window when there is a display and a GUI build of OpenCV, else the web page."""
    if kind not in VIEWS:
        raise UsageError(f"unknown --view '{kind}'{did_you_mean(kind, VIEWS)}", hint="auto, window, web or none")
    if kind == "none":
        return View()
    if kind in ("auto", "window"):
        has_display = display_available()
        gui = has_display and opencv_gui_available()
        if gui:
            return WindowView()
        if kind == "window":
            why = "no display ($DISPLAY is not set)" if not has_display else "this OpenCV build has no GUI (opencv-python-headless)"
            raise MissingDependencyError(f"cannot open a window: {why}",
                                         hint="use --view web (a page on 127.0.0.1) or --headless --out DIR; for windows "
                                              "install opencv-python instead of opencv-python-headless")
        if log:
            log("no display or no OpenCV GUI: showing the live view as a web page instead")
    return WebView(port)
