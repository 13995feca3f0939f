"""`edgekd targets check`: is the target reachable and does it have what a run needs?"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.targets import CheckResult, TargetSpec

AGENT_PATH = Path(__file__).resolve().parent.parent / "agent" / "edgekd_agent.py"


def run_checks(spec: TargetSpec) -> list[CheckResult]:
    kind = spec.transport.type
    if kind in ("local", "ssh"):
        return _check_command_target(spec)
    if kind == "serial":
        return _check_serial(spec)
    return _check_qemu(spec)


def parse_agent_checks(stdout: str) -> list[CheckResult]:
    results = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if obj.get("type") == "check":
            results.append(CheckResult(obj["check"], bool(obj["ok"]), obj.get("detail", ""), obj.get("hint")))
    return results


def _check_command_target(spec: TargetSpec) -> list[CheckResult]:
    from edgekd.runners import open_transport

    results: list[CheckResult] = []
    try:
        transport = open_transport(spec)
    except EdgekdError as exc:
        return [CheckResult("transport", False, exc.message, exc.hint)]
    if spec.transport.type == "ssh":
        try:
            transport.probe_tcp()  # type: ignore[attr-defined]
        except EdgekdError as exc:
            return [CheckResult("reachable", False, exc.message, exc.hint)]
        host, port = transport.resolved_endpoint()  # type: ignore[attr-defined]
        results.append(CheckResult("reachable", True, f"{host}:{port} accepts TCP connections"))
    try:
        res = transport.run([transport.python(), "-", "check"], timeout_s=60, stdin=AGENT_PATH.read_bytes())
    except EdgekdError as exc:
        results.append(CheckResult("login" if spec.transport.type == "ssh" else "agent", False, exc.message, exc.hint))
        return results
    if spec.transport.type == "ssh":
        results.append(CheckResult("login", True, f"ran {transport.python()} on {transport.describe()}"))
    agent_results = parse_agent_checks(res.stdout)
    if not agent_results:
        detail = (res.stderr.strip() or res.stdout.strip() or f"exit {res.returncode}").splitlines()[-1]
        hint = None
        if res.returncode == 127 or "not found" in detail:
            hint = f"install Python 3 on the device, or set transport.python to its path (now '{transport.python()}')"
        results.append(CheckResult("agent", False, f"the device agent did not run: {detail}", hint))
    results.extend(agent_results)
    return results


def _check_serial(spec: TargetSpec) -> list[CheckResult]:
    from edgekd.runners.serial import SerialLink

    t = spec.transport
    # SerialLink opens without raising DTR/RTS, so checking a board never resets it.
    link = SerialLink(t.port, t.baud)  # type: ignore[union-attr]
    try:
        link.open()
    except EdgekdError as exc:
        return [CheckResult("port", False, exc.message, exc.hint)] + _toolchain_checks()
    link.close()
    return [CheckResult("port", True, f"{t.port} opens at {t.baud} baud (DTR/RTS left low)")] + _toolchain_checks()  # type: ignore[union-attr]


def _check_qemu(spec: TargetSpec) -> list[CheckResult]:
    t = spec.transport
    results = []
    binary = shutil.which(t.binary)  # type: ignore[union-attr]
    if binary is None:
        results.append(CheckResult("emulator", False, f"{t.binary} is not installed", "apt-get install qemu-system-arm"))  # type: ignore[union-attr]
    else:
        out = subprocess.run([binary, "-machine", "help"], capture_output=True, text=True, timeout=30, check=False).stdout
        machines = {line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith("Supported")}
        has = t.machine in machines  # type: ignore[union-attr]
        ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.splitlines()
        results.append(CheckResult(
            "emulator", has, f"{ver[0] if ver else binary}; machine {t.machine} {'available' if has else 'missing'}",  # type: ignore[union-attr]
            None if has else "install a newer qemu-system-arm (mps2-an386 needs QEMU 5.2 or newer)",
        ))
    results.extend(_toolchain_checks())
    return results


def _toolchain_checks() -> list[CheckResult]:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        return [CheckResult("toolchain", False, "arm-none-eabi-gcc is not installed (needed to build firmware)",
                            "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")]
    ver = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.splitlines()
    return [CheckResult("toolchain", True, ver[0] if ver else gcc)]
