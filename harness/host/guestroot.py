"""A root filesystem for guests of another architecture than the host's.

An x86_64 guest runs on the host's own root, read-only over virtio-fs; an arm64 guest cannot
run the host's binaries, so it boots into a Debian root of its own architecture, built with the
archive's own tool (mmdebstrap, from the mirror of the host's apt sources, its maintainer
scripts run through qemu-user and binfmt_misc). The root holds what the guest side needs: the
root's own Python 3 and pytest (Debian 12's: pytest 7.2, pluggy 1.0, which the guest side
supports), the tools the suites call, and the mount points where this checkout, the suites
and the kernel's results are mapped in at boot (``--rodir``/``--rwdir guest=host``), so nothing
of the checkout is copied. Each kernel's modules are hard-linked in before it boots.

The root is cached under its package list, built beside its final place and renamed into it
whole, with ``provenance.json`` (the suite, the mirror, every installed package and version)
inside: an interrupted build never leaves a root that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PrerequisiteError
from harness.fetch.archive import DEBIAN_ARCH, mmdebstrap_keyring
from harness.host.prereqs import Tool, ensure_tools

Say = Callable[[str], None]
SUITE = "bookworm"
# The root's own packages: the guest side (python3, pytest and its timeout plugin) and what
# the guest and the suites call (modprobe, mkfs.ext4, mount, findmnt, losetup, mkfs.erofs,
# mksquashfs, udev for the virtio console links, busybox for virtme-ng's init).
PACKAGES = (
    "python3",
    "python3-pytest",
    "python3-pytest-timeout",
    "busybox-static",
    "udev",
    "kmod",
    "util-linux",
    "mount",
    "e2fsprogs",
    "erofs-utils",
    "squashfs-tools",
)
# Where the guest finds this checkout, the suites and its results directory.
GUEST_REPO = "/opt/mountcompat"
GUEST_SUITES = "/opt/mountcompat-suites"
GUEST_RESULTS = "/opt/mountcompat-results"
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
QEMU_SYSTEM = {"x86_64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
TOOLS = (
    Tool(
        "qemu-system-aarch64",
        "runs arm64 guests",
        "qemu-system-arm",
        "qemu-system-aarch64-core",
        "qemu-system-aarch64",
    ),
    Tool(
        "qemu-aarch64-static",
        "runs the arm64 root's programs while mmdebstrap builds it",
        "qemu-user-static",
        "qemu-user-static",
        "qemu-user-static",
    ),
    Tool(
        "update-binfmts",
        "registers qemu-user with binfmt_misc",
        "binfmt-support",
        "binfmt-support",
        "binfmt-support",
    ),
    Tool("mmdebstrap", "builds the arm64 root", "mmdebstrap", "mmdebstrap", "mmdebstrap"),
    Tool(
        "arch-test",
        "lets mmdebstrap check that the host can run arm64 binaries",
        "arch-test",
        "arch-test",
        "arch-test",
    ),
)
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def host_arch() -> str:
    return HOST_ARCH.get(os.uname().machine, os.uname().machine)


@dataclass(frozen=True)
class GuestRoot:
    path: Path
    arch: str
    suite: str
    packages: tuple[dict[str, str], ...]

    @property
    def python(self) -> str:
        return "/usr/bin/python3"

    def provenance(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "arch": self.arch,
            "suite": self.suite,
            "packages": list(self.packages),
        }


def ensure_binfmt(arch: str, say: Say) -> None:
    """binfmt_misc mounted (it may not be) and qemu-user registered for ``arch``."""
    if not (BINFMT / "status").exists():
        say("mounting binfmt_misc (qemu-user runs foreign binaries through it)")
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    name = "qemu-aarch64" if arch == "arm64" else f"qemu-{arch}"
    if not (BINFMT / name).exists():
        subprocess.run(["update-binfmts", "--enable", name], capture_output=True, check=False)
    if not (BINFMT / name).exists():
        raise PrerequisiteError(
            f"binfmt_misc has no {name} entry: `update-binfmts --enable {name}` did not help"
        )


# Commands virtme-ng's init calls that the root's packages do not give (poweroff comes with
# systemd-sysv on Debian): busybox's applets stand in. Without poweroff the init exits at the
# end of the run and the kernel panics ("Attempted to kill init").
BUSYBOX_APPLETS = ("poweroff", "reboot")


def root_key(arch: str) -> str:
    recipe = f"{SUITE} {arch} {' '.join(sorted(PACKAGES))} {' '.join(BUSYBOX_APPLETS)}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def installed_packages(root: Path) -> tuple[dict[str, str], ...]:
    """Every package of the root and its version, read from its dpkg database."""
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "-W",
            "-f",
            "${Package} ${Version}\\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(
        {"name": name, "version": version}
        for name, version in (line.split(" ", 1) for line in out.splitlines() if line)
    )


def ensure_root(arch: str, cache: Path, mirror: str, say: Say) -> GuestRoot:
    final = cache / "roots" / f"{SUITE}-{arch}-{root_key(arch)}"
    recorded = final / "provenance.json"
    if recorded.exists():
        data = json.loads(recorded.read_text())
        return GuestRoot(final / "root", arch, data["suite"], tuple(data["packages"]))
    ensure_tools(TOOLS, say)
    ensure_binfmt(arch, say)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        say(f"building a Debian {SUITE} {arch} root for the {arch} guests (a few minutes, once)")
        subprocess.run(
            [
                "mmdebstrap",
                f"--arch={DEBIAN_ARCH[arch]}",
                "--variant=apt",
                *mmdebstrap_keyring(),
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(tmp / "root"),
                mirror,
            ],
            check=True,
            capture_output=True,
        )
        for mount_point in (GUEST_REPO, GUEST_SUITES, GUEST_RESULTS):
            (tmp / "root" / mount_point.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for applet in BUSYBOX_APPLETS:
            link = tmp / "root" / "usr/sbin" / applet
            if not link.exists():
                link.symlink_to("/bin/busybox")
        packages = installed_packages(tmp / "root")
        (tmp / "provenance.json").write_text(
            json.dumps({"suite": SUITE, "mirror": mirror, "packages": list(packages)}, indent=1)
        )
        os.replace(tmp, final)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        stderr = exc.stderr.decode(errors="replace")[-2000:] if exc.stderr else ""
        raise PrerequisiteError(f"mmdebstrap could not build the {arch} root: {stderr}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return GuestRoot(final / "root", arch, SUITE, packages)


def install_modules(root: GuestRoot, modules: Path, release: str) -> None:
    """The kernel's modules where virtme-ng looks for them in a root of its own
    (usr/lib/modules/<release>), hard-linked from the kernel's tree, and indexed."""
    where = root.path / "usr/lib/modules" / release
    if (where / "modules.dep").exists():
        return
    tmp = where.with_name(f".{release}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(modules, tmp, copy_function=os.link, symlinks=True)
    shutil.rmtree(where, ignore_errors=True)  # what a failed earlier depmod left
    os.replace(tmp, where)
    subprocess.run(["depmod", "-b", str(root.path), release], check=True, capture_output=True)
