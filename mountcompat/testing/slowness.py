"""How much slower than a real machine this one is, for scaling timeouts (never for asserting).

Under TCG every instruction is emulated: the harness says so on the guest's kernel command
line (``mountcompat.accel=tcg``); without that, QEMU's emulated CPU model gives it away.
"""

from __future__ import annotations

from pathlib import Path

TCG_FACTOR = 10.0


def running_under_tcg(proc: Path = Path("/proc")) -> bool:
    try:
        cmdline = (proc / "cmdline").read_text()
    except OSError:
        cmdline = ""
    if "mountcompat.accel=tcg" in cmdline.split():
        return True
    if "mountcompat.accel=kvm" in cmdline.split():
        return False
    try:
        cpuinfo = (proc / "cpuinfo").read_text()
    except OSError:
        return False
    return "QEMU Virtual CPU" in cpuinfo or "QEMU TCG CPU" in cpuinfo


def timeout_factor() -> float:
    return TCG_FACTOR if running_under_tcg() else 1.0
