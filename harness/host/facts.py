"""The host side of a run: tools checked or installed, virtiofsd, the accelerator, versions.

Everything here happens once per run, before any kernel is fetched or booted.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.boot.vng import vng_executable
from harness.host.accel import AccelProbe, probe_accel
from harness.host.prereqs import MATRIX_TOOLS, SUITE_TOOLS, ensure_tools
from harness.host.virtiofsd import Virtiofsd, ensure_virtiofsd

Say = Callable[[str], None]


@dataclass
class HostFacts:
    accel: AccelProbe
    virtiofsd: Virtiofsd
    qemu: str
    vng: str
    host: str
    started: str

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
            "qemu": self.qemu,
            "virtme_ng": self.vng,
            "host": self.host,
            "host_kernel": platform.release(),
            "started": self.started,
        }


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def prepare_host(cache: Path, mirror: str | None, accel: str, say: Say) -> HostFacts:
    ensure_tools((*MATRIX_TOOLS, *SUITE_TOOLS), say)
    vfsd = ensure_virtiofsd(cache, mirror, say)
    say(f"virtiofsd {vfsd.version} ({vfsd.origin}): {vfsd.path}")
    probe = probe_accel(accel)
    say(f"accelerator: [bold]{probe.accel}[/bold] ({probe.reason})")
    vng = vng_executable()
    return HostFacts(
        accel=probe,
        virtiofsd=vfsd,
        qemu=first_line(["qemu-system-x86_64", "--version"]),
        vng=first_line([vng, "--version"]),
        host=platform.node(),
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
