"""Datasets for the three tasks: real-format readers, synthetic generators, events, skeleton graphs
and calibration sets. The entry point is `load_dataset` (edgekd.data.api)."""

from edgekd.data.api import Dataset, SkippedItem, load_dataset, read_all

__all__ = ["Dataset", "SkippedItem", "load_dataset", "read_all"]
