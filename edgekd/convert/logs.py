"""Keep converters' and runtimes' own printing out of our stdout/stderr.

TensorFlow, onnx2tf, the TFLite runtimes and TFLite Micro print from C++ straight to file
descriptors 1 and 2; only redirecting the descriptors catches that. Used around the calls
that print, never around our own output.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def capture_native_output(log_path: str | os.PathLike | None) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 (Python and C++ alike) to a log
    file (appended), or to /dev/null when `log_path` is None, while the block runs."""
    target = Path(log_path) if log_path is not None else Path(os.devnull)
    if log_path is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(target, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
