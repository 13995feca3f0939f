"""On-device measurement: latency statistics, power meters, energy (measured and theoretical)."""
