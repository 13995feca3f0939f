"""Where the C sources of the firmware live, and the boards they support."""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.errors import NotFoundError

ENV_VAR = "EDGEKD_FIRMWARE_DIR"
RUNTIME_SOURCES = ("ekd_kernels.c",)
PROTOCOL_SOURCES = ("ekd_protocol.c", "ekd_main.c")


def firmware_dir() -> Path:
    """The firmware/ folder: $EDGEKD_FIRMWARE_DIR, else the one next to the edgekd package."""
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "firmware")
    for c in candidates:
        if (c / "src" / "ekd_kernels.c").is_file():
            return c
    raise NotFoundError(
        f"the firmware C sources were not found (looked in {', '.join(str(c) for c in candidates)})",
        hint=f"run from an edgekd checkout, or set ${ENV_VAR} to its firmware/ folder",
    )


def src_dir() -> Path:
    return firmware_dir() / "src"


def boards() -> list[str]:
    return sorted(p.name for p in (firmware_dir() / "boards").iterdir() if (p / "board.mk").is_file() or (p / "linker.ld").is_file())


def board_dir(board: str) -> Path:
    d = firmware_dir() / "boards" / board
    if not (d / "linker.ld").is_file():
        raise NotFoundError(
            f"no firmware board support '{board}' (firmware/boards/{board}/linker.ld)",
            hint=f"boards with support: {', '.join(boards())}; set flash.board in the target file",
        )
    return d
