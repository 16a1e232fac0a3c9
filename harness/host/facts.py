"""The host side of a run: tools checked or installed, virtiofsd, the accelerator, versions.

Everything here happens once per run, before any kernel is fetched or booted.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.boot.vng import vng_executable
from harness.host.accel import AccelProbe, guest_accel, probe_accel
from harness.host.guestroot import host_arch
from harness.host.prereqs import MATRIX_TOOLS, SUITE_TOOLS, ensure_tools, first_line
from harness.host.qemu import Qemu, ensure_qemu, tool_dirs
from harness.host.virtiofsd import Virtiofsd, ensure_virtiofsd

Say = Callable[[str], None]


@dataclass
class HostFacts:
    accel: AccelProbe
    virtiofsd: Virtiofsd
    qemu: Qemu
    vng: str
    host: str
    started: str

    def accel_for(self, arch: str) -> str:
        return guest_accel(self.accel.accel, arch, host_arch())

    def tool_dirs(self, arch: str, accel: str) -> tuple[Path, ...]:
        return tool_dirs(self.qemu, self.virtiofsd, arch, accel)

    def qemu_line(self, arch: str) -> str:
        return self.qemu.line(arch, self.accel_for(arch))

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerator": self.accel.accel,
            "accelerator_reason": self.accel.reason,
            "virtiofsd": {
                "path": str(self.virtiofsd.path),
                "version": self.virtiofsd.version,
                "origin": self.virtiofsd.origin,
                "packages": list(self.virtiofsd.packages),
            },
            "qemu": self.qemu_line(host_arch()),
            "qemu_emulators": self.qemu.to_json(),
            "virtme_ng": self.vng,
            "host": self.host,
            "host_kernel": platform.release(),
            "started": self.started,
        }


def prepare_host(
    cache: Path,
    mirror: str | None,
    accel: str,
    say: Say,
    qemu_choice: str = "auto",
    archs: tuple[str, ...] = ("x86_64",),
) -> HostFacts:
    ensure_tools((*MATRIX_TOOLS, *SUITE_TOOLS), say)
    vfsd = ensure_virtiofsd(cache, mirror, say)
    say(f"virtiofsd {vfsd.version} ({vfsd.origin}): {vfsd.path}")
    qemu = ensure_qemu(cache, mirror, qemu_choice, archs, say)
    lines = sorted({qemu.line(arch, "tcg") for arch in archs})
    say(f"QEMU for emulated guests: {qemu.origin} ({qemu.reason}): {'; '.join(lines)}")
    # KVM guests run under the host's QEMU (Qemu's docstring), so the probe asks that one.
    probe = probe_accel(accel)
    say(f"accelerator: [bold]{probe.accel}[/bold] ({probe.reason})")
    vng = vng_executable()
    return HostFacts(
        accel=probe,
        virtiofsd=vfsd,
        qemu=qemu,
        vng=first_line([vng, "--version"]),
        host=platform.node(),
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
