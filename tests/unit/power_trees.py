"""sysfs trees with the real file names of each power monitor driver, written by tests."""

from __future__ import annotations

from pathlib import Path


def jetpack4_ina3221(root: Path, total_mw: int = 2132) -> Path:
    dev = root / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    dev.mkdir(parents=True)
    for n, (name, mw) in enumerate([("POM_5V_IN", total_mw), ("POM_5V_GPU", 0), ("POM_5V_CPU", 408)]):
        (dev / f"rail_name_{n}").write_text(name + "\n")
        (dev / f"in_power{n}_input").write_text(f"{mw}\n")
        (dev / f"in_voltage{n}_input").write_text("5000\n")
        (dev / f"in_current{n}_input").write_text(f"{mw // 5}\n")
    return dev / "in_power0_input"


def jetpack5_ina3221(root: Path, volts_mv: int = 5000, total_ma: int = 665) -> tuple[Path, Path]:
    hw = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for n, (label, ma) in enumerate([("VDD_IN", total_ma), ("VDD_CPU_GPU_CV", 103), ("VDD_SOC", 206)], start=1):
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{volts_mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")
    return hw / "in1_input", hw / "curr1_input"


def ina2xx_hwmon(root: Path, chip: str = "ina219", microwatts: int | None = 1_250_000) -> Path:
    hw = root / "class/hwmon/hwmon0"
    hw.mkdir(parents=True)
    (hw / "name").write_text(chip + "\n")
    (hw / "in1_input").write_text("5000\n")
    (hw / "curr1_input").write_text("250\n")
    if microwatts is not None:
        (hw / "power1_input").write_text(f"{microwatts}\n")
    return hw
