"""KVM or TCG, decided by starting a tiny guest, never by the existence of /dev/kvm.

The probe boots a 512-byte boot sector that writes to QEMU's isa-debug-exit port, so QEMU
exits with a status only a guest that really ran can produce. On some hosts /dev/kvm exists
but QEMU aborts (``failed to set MSR 0x10a``) or the guest dies with ``KVM internal error``;
both end the probe without that status, and the harness falls back to TCG.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

EXIT_CODE = 0x31
# mov al, 0x31 ; out 0xf4, al ; hlt   -- then the boot signature.
BOOT_SECTOR = bytes([0xB0, EXIT_CODE, 0xE6, 0xF4, 0xF4]).ljust(510, b"\0") + b"\x55\xaa"
# isa-debug-exit turns the byte written into the exit status (value << 1) | 1.
EXPECTED_STATUS = (EXIT_CODE << 1) | 1


@dataclass(frozen=True)
class AccelProbe:
    accel: str  # "kvm" or "tcg"
    reason: str


def probe_command(image: Path, kvm: bool, qemu: str = "qemu-system-x86_64") -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg"]
    return [
        qemu,
        *accel,
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "32",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive",
        f"file={image},format=raw,if=ide",
    ]


def _run_probe(image: Path, kvm: bool, timeout: float, qemu: str) -> tuple[bool, str]:
    try:
        result = subprocess.run(
            probe_command(image, kvm, qemu),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"the probe guest did not exit within {timeout:.0f} s"
    except OSError as exc:
        return False, f"cannot start qemu: {exc}"
    if result.returncode == EXPECTED_STATUS:
        return True, "a probe guest ran"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    return False, (lines[0] if lines else f"qemu exited with {result.returncode}")


def guest_accel(run_accel: str, arch: str, host: str) -> str:
    """A guest of another architecture than the host's is always emulated."""
    return run_accel if arch == host else "tcg"


def probe_accel(
    requested: str = "auto", timeout: float = 20.0, qemu: str = "qemu-system-x86_64"
) -> AccelProbe:
    """``requested`` is auto, kvm or tcg; kvm is honoured only if the probe guest runs
    (under ``qemu``, the emulator the guests will have)."""
    if requested == "tcg":
        return AccelProbe("tcg", "TCG requested")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelProbe("tcg", "/dev/kvm is missing or not accessible")
    with tempfile.TemporaryDirectory(prefix="mountcompat-kvm-probe.") as tmp:
        image = Path(tmp) / "boot.img"
        image.write_bytes(BOOT_SECTOR)
        ok, why = _run_probe(image, kvm=True, timeout=timeout, qemu=qemu)
    if ok:
        return AccelProbe("kvm", "a KVM probe guest ran")
    return AccelProbe("tcg", f"KVM is unusable here: {why}")
