"""The PowerMeter interface and the PowerTrace it returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PowerTrace:
    """Timestamped power samples (seconds, watts) from one source, with named markers (seconds)."""

    t: np.ndarray
    watts: np.ndarray
    source: str
    markers: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, pairs, source: str, markers: dict[str, float] | None = None) -> PowerTrace:
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        order = np.argsort(arr[:, 0], kind="stable")
        return cls(arr[order, 0], arr[order, 1], source, dict(markers or {}))

    def __len__(self) -> int:
        return int(self.t.size)

    def to_dict(self) -> dict:
        return {"source": self.source, "t": self.t.tolist(), "watts": self.watts.tolist(), "markers": self.markers}


class PowerMeter(abc.ABC):
    """A meter read from the host: start, stop, samples and markers on one clock."""

    name = "meter"

    @abc.abstractmethod
    def start(self) -> None:
        """Begin acquisition."""

    @abc.abstractmethod
    def stop(self) -> PowerTrace:
        """End acquisition and return everything sampled since start()."""

    def close(self) -> None:
        """Release the device."""

    def __enter__(self) -> PowerMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
