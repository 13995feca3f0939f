"""edgekd: distill small (spiking) students from big teachers, quantize, convert, deploy and
measure them on real devices.

Importing edgekd is light: torch and TensorFlow are imported only inside the functions that need
them, so the CLI and the device-side tools start fast.
"""

__version__ = "0.1.0"
