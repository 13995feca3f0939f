"""The three tasks: input specs, classes and metrics. `get_task(name)` returns a TaskSpec."""

from __future__ import annotations

from typing import Any

from edgekd.errors import UsageError, did_you_mean

TASK_NAMES = ("eye", "skeleton", "face")


def get_task(name: str, **shape: Any):  # -> edgekd.tasks.base.TaskSpec
    """The TaskSpec of `name`; keyword arguments set shapes (frames, size, joints, persons)."""
    if name == "eye":
        from edgekd.tasks.eye import spec
    elif name == "skeleton":
        from edgekd.tasks.skeleton import spec
    elif name == "face":
        from edgekd.tasks.face import spec
    else:
        raise UsageError(f"unknown task '{name}'{did_you_mean(name, TASK_NAMES)}", hint=f"tasks: {', '.join(TASK_NAMES)}")
    return spec(**shape)
