"""The ``vng`` command line, built by a pure function, and the environment it runs in.

virtme-ng is used as a program, never imported: its ``run.py`` reads dozens of options in one
function and exits from helpers, so the only stable interface is its command line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# The guest tells the scratch disk from any other by this exact size.
SCRATCH_DISK_BYTES = (2 << 30) + (7 << 20)


@dataclass(frozen=True)
class GuestPlan:
    """What to boot and run: everything that decides the vng command line."""

    name: str
    vmlinuz: Path
    results: Path  # shared read-write with the guest; nothing else of the host is
    guest_command: tuple[str, ...]
    accel: str  # "kvm" or "tcg"
    cpus: int = 2
    memory: str = "2G"
    append: str = ""
    cwd: Path | None = None
    scratch_disk: Path | None = None  # a raw image the guest formats for its "disk" backing
    tcg_cpu: str | None = None  # QEMU's -cpu under TCG


def vng_executable() -> str:
    """The vng of this interpreter's environment (the project's own virtualenv)."""
    beside = Path(sys.executable).parent / "vng"
    return str(beside) if beside.exists() else (shutil.which("vng") or "vng")


def build_vng_command(plan: GuestPlan, vng: str = "vng") -> list[str]:
    command = [
        vng,
        "--verbose",  # the console (kernel messages, panics) comes back on stderr
        "--run",
        str(plan.vmlinuz),
        "--name",
        f"mountcompat-{plan.name}",
        "--cpus",
        str(plan.cpus),
        "--memory",
        plan.memory,
        "--rwdir",
        str(plan.results),
    ]
    if plan.accel == "tcg":
        command.append("--disable-kvm")
        if plan.tcg_cpu:
            # A later -cpu overrides the "-cpu max" that vng gives QEMU.
            command.append(f"--qemu-opts=-cpu {plan.tcg_cpu}")
    if plan.cwd is not None:
        command += ["--cwd", str(plan.cwd)]
    if plan.append:
        command += ["--append", plan.append]
    if plan.scratch_disk is not None:
        command += ["--disk", str(plan.scratch_disk)]
    command += ["--exec", shlex.join(plan.guest_command)]
    return command


def vng_environment(
    virtiofsd_dir: Path | None, tmpdir: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """PATH with the chosen virtiofsd first (vng looks it up there first), and a private TMPDIR
    so the sockets and pid files of virtiofsd go where the run cleans up."""
    env = dict(os.environ if base is None else base)
    path = [str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    if virtiofsd_dir is not None:
        path.insert(0, str(virtiofsd_dir))
    env["PATH"] = ":".join(path)
    env["TMPDIR"] = str(tmpdir)
    return env


def reproduce_script(command: list[str], env: dict[str, str]) -> str:
    """A shell script that runs this kernel's guest again by hand, exactly as the harness did."""
    return (
        "#!/bin/sh\n"
        "# Boots this kernel and runs the suites exactly as the matrix did.\n"
        f"export PATH={shlex.quote(env['PATH'])}\n"
        f"exec {shlex.join(command)}\n"
    )
