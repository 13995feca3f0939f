"""Power meters. Sources on a Linux device (INA3221, INA2xx, tegrastats) are read by the agent on
the device (edgekd/agent/device_power.py); USB/serial analysers attached to the host are read
here (lpm01a.py). Either way the result is a PowerTrace, and energy.py attributes energy to the
inferences between the device's own markers."""

from edgekd.measure.power.base import PowerMeter, PowerTrace

__all__ = ["PowerMeter", "PowerTrace"]
