"""The ``vng`` command line, built by a pure function, and the environment it runs in.

virtme-ng is used as a program, never imported: its ``run.py`` reads dozens of options in one
function and exits from helpers, so the only stable interface is its command line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from harness.guest import SCRATCH_DISK_BYTES

# Stand-ins in a command line for what reproduce.sh makes anew at each run.
VNG_ARCH = {"x86_64": "x86_64", "arm64": "arm64"}
RESULTS_TOKEN = "@RESULTS@"
DISK_TOKEN = "@DISK@"
COMMAND_STARTED = "mountcompat-guest: @command-started"
# The characters virtme-run accepts in a --rwdir/--rodir path (its _SAFE_PATH_PATTERN: no =,
# which separates guest=host), blank aside: vng pastes these options into a shell command
# unquoted, and a blank splits the path in two ("unrecognized arguments"). No quoting of ours
# survives both.
SHAREABLE_PATH = re.compile(r"[A-Za-z0-9_+/.-]+")


@dataclass(frozen=True)
class GuestPlan:
    """What to boot and run: everything that decides the vng command line."""

    name: str
    vmlinuz: Path
    results: Path  # shared read-write with the guest; nothing else of the host is
    guest_command: tuple[str, ...]
    accel: str  # "kvm" or "tcg"
    cpus: int = 1
    memory: str = "2G"
    append: str = ""
    cwd: Path | None = None
    scratch_disk: Path | None = None  # a raw image the guest formats for its "disk" backing
    tcg_cpu: str | None = None  # QEMU's -cpu under TCG
    qemu_opts: str = ""  # more of QEMU's command line, under KVM and TCG alike
    extra_dirs: tuple[Path, ...] = ()  # host directories the guest reads (suites of the user's)
    arch: str = "x86_64"
    # A root of the guest's own architecture; the guest then sees the host's directories
    # where ``guest_paths`` says (host path -> path in the guest), not at their host paths.
    root: Path | None = None
    guest_paths: tuple[tuple[Path, str], ...] = ()


def unshareable(path: Path) -> str | None:
    """Why vng cannot share ``path`` with a guest, or None."""
    text = str(path)
    if SHAREABLE_PATH.fullmatch(text):
        return None
    bad = sorted({c for c in text if not SHAREABLE_PATH.fullmatch(c)})
    return (
        f"holds {', '.join(map(repr, bad))}; vng shares a directory only if its path is "
        "letters, digits and _ + - . /"
    )


def _share(plan: GuestPlan, host: Path) -> str:
    """A directory as --rwdir/--rodir takes it: the path alone (the host's root, the same
    path in the guest), or guest=host into a root of the guest's own."""
    for shared, guest in plan.guest_paths:
        if shared == host:
            return f"{guest}={host}"
    return str(host)


def tcg_kernel_args(accel: str, arch: str) -> list[str]:
    """Kernel arguments an emulated x86_64 guest needs. On a busy host the emulated timer can
    miss the kernel's early check of the IO-APIC timer, which then panics at 0.05 s ("IO-APIC
    + timer doesn't work!", seen on 5.10 with four TCG guests on two cores): a check meant for
    broken boards, which ``no_timer_check`` skips, as libguestfs does for its appliance."""
    return ["no_timer_check"] if accel == "tcg" and arch == "x86_64" else []


def preemption_args(config: Path | None) -> list[str]:
    """``preempt=full`` where the kernel's config lets the mode be chosen at boot
    (CONFIG_PREEMPT_DYNAMIC): with one vCPU, only a kernel that preempts a task inside a
    syscall lets another run during a path lookup, and the openat2 EAGAIN retry is shown only
    against such a race. What the suites check of the mount API does not depend on when the
    scheduler preempts."""
    if config is None:
        return []
    try:
        text = config.read_text(errors="replace")
    except OSError:
        return []
    return ["preempt=full"] if "\nCONFIG_PREEMPT_DYNAMIC=y\n" in text else []


def bare_boot_command(
    vmlinuz: Path,
    accel: str,
    cpus: int,
    tcg_cpu: str | None,
    arch: str,
    root: Path | None,
    append: str = "",
    qemu_opts: str = "",
) -> list[str]:
    """``vng --run <vmlinuz> --exec true``: the boot alone, as the harness boots it (with
    the kernel's own command line and QEMU options from kernels.yaml)."""
    command = [vng_executable(), "--run", str(vmlinuz), "--cpus", str(cpus)]
    if root is not None:
        command += ["--arch", VNG_ARCH[arch], "--root", str(root)]
    if accel == "tcg":
        command.append("--disable-kvm")
    command += _qemu_opts(accel, tcg_cpu, qemu_opts)
    if args := " ".join(filter(None, [append, *tcg_kernel_args(accel, arch)])):
        command += ["--append", args]
    return [*command, "--exec", "true"]


def _qemu_opts(accel: str, tcg_cpu: str | None, qemu_opts: str) -> list[str]:
    """vng's --qemu-opts: under TCG the CPU model (a later -cpu overrides the "-cpu max"
    that vng gives QEMU), and kernels.yaml's qemu_opts."""
    words = [f"-cpu {tcg_cpu}" if accel == "tcg" and tcg_cpu else "", qemu_opts]
    opts = " ".join(filter(None, words))
    return [f"--qemu-opts={opts}"] if opts else []


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
    ]
    if plan.root is not None:
        command += ["--arch", VNG_ARCH[plan.arch], "--root", str(plan.root)]
    command += ["--rwdir", _share(plan, plan.results)]
    for directory in plan.extra_dirs:
        command += ["--rodir", _share(plan, directory)]
    if plan.accel == "tcg":
        command.append("--disable-kvm")
    command += _qemu_opts(plan.accel, plan.tcg_cpu, plan.qemu_opts)
    if plan.cwd is not None:
        command += ["--cwd", str(plan.cwd)]
    if append := " ".join([*filter(None, [plan.append]), *tcg_kernel_args(plan.accel, plan.arch)]):
        command += ["--append", append]
    if plan.scratch_disk is not None:
        command += ["--disk", str(plan.scratch_disk)]
    # The shell's first word marks the moment the guest's command starts, before Python's own
    # start-up (a third of a second under TCG) and the guest runner's work.
    command += ["--exec", f"echo {COMMAND_STARTED}; exec {shlex.join(plan.guest_command)}"]
    return command


def vng_environment(
    tool_dirs: Iterable[Path], tmpdir: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """PATH with the chosen virtiofsd and QEMU first (vng looks them up there first), and a
    private TMPDIR so the sockets and pid files of virtiofsd go where the run cleans up."""
    env = dict(os.environ if base is None else base)
    path = [str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    path[:0] = [str(d) for d in tool_dirs]
    env["PATH"] = ":".join(path)
    env["TMPDIR"] = str(tmpdir)
    return env


def _shell_word(word: str) -> str:
    """A word of the command for sh, with the stand-ins turned into the script's variables
    (RESULTS holds only SHAREABLE_PATH's characters: the script checks)."""
    quoted = shlex.quote(word)
    inside = quoted.startswith("'")
    for token, var in ((RESULTS_TOKEN, "RESULTS"), (DISK_TOKEN, "DISK")):
        quoted = quoted.replace(token, f"'\"${var}\"'" if inside else f'"${var}"')
    return quoted


REPRODUCE = """#!/bin/sh
# Boots kernel {name} and runs the suites again, exactly as the matrix did.
#   sh reproduce.sh [RESULTS_DIR]
# The guest writes into RESULTS_DIR (default: a new temporary directory), never into the
# results this script came with. The scratch disk of the "disk" backing is made anew.
set -eu
RESULTS=${{1:-$(mktemp -d "${{TMPDIR:-/tmp}}/mountcompat-reproduce.XXXXXX")}}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
case $RESULTS in
    *[!A-Za-z0-9_+/.-]*)
        why="vng shares a directory only if its path is letters, digits and _ + - . /"
        echo "$RESULTS: $why" >&2
        exit 2;;
esac
work=$(mktemp -d "${{TMPDIR:-/tmp}}/mountcompat-disk.XXXXXX")
trap 'rm -rf "$work"' EXIT
DISK=$work/scratch.img
truncate -s {disk_bytes} "$DISK"
export PATH={path}
export TMPDIR=$work
echo "results go to $RESULTS" >&2
{command}
"""


def reproduce_script(plan: GuestPlan, vng: str, env: dict[str, str]) -> str:
    """A shell script that boots this plan's kernel again by hand, into a fresh results
    directory and with a fresh scratch disk, so it works long after the run that wrote it."""
    stand_in = replace(
        plan,
        results=Path(RESULTS_TOKEN),
        scratch_disk=Path(DISK_TOKEN) if plan.scratch_disk is not None else None,
        guest_command=tuple(
            RESULTS_TOKEN if word == str(plan.results) else word for word in plan.guest_command
        ),
        guest_paths=tuple(
            (Path(RESULTS_TOKEN) if host == plan.results else host, guest)
            for host, guest in plan.guest_paths
        ),
    )
    command = build_vng_command(stand_in, vng)
    return REPRODUCE.format(
        name=plan.name,
        disk_bytes=SCRATCH_DISK_BYTES,
        path=shlex.quote(env["PATH"]),
        command=" ".join(_shell_word(word) for word in command),
    )
