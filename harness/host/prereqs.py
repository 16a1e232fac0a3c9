"""Host tools the matrix needs, checked before anything boots.

On a Debian or Ubuntu host running as root, missing packages are installed with apt-get, saying
what is installed; anywhere else the run stops with the exact command to run. Setting
``MOUNTCOMPAT_NO_INSTALL=1`` turns the installation off and gives the command instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PrerequisiteError

Say = Callable[[str], None]
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
APT_LOCK_WAIT = 600  # seconds


@dataclass(frozen=True)
class Tool:
    command: str
    why: str
    debian: str
    fedora: str
    arch: str
    alternatives: tuple[str, ...] = ()  # other commands that do as well
    library: bool = False  # ``command`` is a shared library's soname, not a program
    # The run goes on without it, saying what is lost (``command`` may then be a file's path).
    optional: bool = False


# Everything virtme-ng and the suites call on the host (the guest sees the host's binaries).
MATRIX_TOOLS = (
    Tool(
        "qemu-system-x86_64",
        "runs the guests",
        "qemu-system-x86",
        "qemu-system-x86-core",
        "qemu-system-x86",
    ),
    Tool(
        "busybox", "virtme-ng builds its initramfs with it", "busybox-static", "busybox", "busybox"
    ),
    Tool(
        "udevadm",
        "gives the guest its /dev/virtio-ports links (else vng loses the output)",
        "udev",
        "systemd-udev",
        "systemd",
    ),
    Tool("depmod", "virtme-ng indexes distribution modules", "kmod", "kmod", "kmod"),
    Tool("file", "virtme-ng reads the kernel version from the image", "file", "file", "file"),
    Tool(
        "strings",
        "virtme-ng's second way to read the kernel version",
        "binutils",
        "binutils",
        "binutils",
    ),
    Tool("gpgv", "checks the Debian archive's signature", "gpgv", "gnupg2", "gnupg"),
    Tool("zstd", "decompresses kernel images for the strings they hold", "zstd", "zstd", "zstd"),
    Tool("lz4", "decompresses kernel images for the strings they hold", "lz4", "lz4", "lz4"),
    Tool(
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "verifies the Debian archive's signatures: without it nothing fetched is verified,"
        " and the report's first screen says so",
        "debian-archive-keyring",  # Ubuntu has it in universe, as GitHub's runners do
        "debian-keyring",
        "debian-archive-keyring",
        optional=True,
    ),
)
SUITE_TOOLS = (
    Tool(
        "mkfs.erofs",
        "builds erofs images for the suites",
        "erofs-utils",
        "erofs-utils",
        "erofs-utils",
    ),
    Tool(
        "mksquashfs",
        "builds squashfs images for the suites",
        "squashfs-tools",
        "squashfs-tools",
        "squashfs-tools",
    ),
    Tool(
        "findmnt",
        "the suites' independent mount table oracle",
        "util-linux",
        "util-linux",
        "util-linux",
    ),
    Tool(
        "losetup", "the suites' independent loop device oracle", "mount", "util-linux", "util-linux"
    ),
)

# Kernels of the rpm source (harness/fetch/rpm.py): verified, ordered and unpacked with rpm's
# own tools. The tests also build a signed yum repository to fetch from.
RPM_TOOLS = (
    Tool("rpm2archive", "unpacks an RPM kernel's payload", "rpm", "rpm", "rpm"),
    Tool("rpmkeys", "checks an RPM kernel's signature", "rpm", "rpm", "rpm"),
    Tool("gpg", "reads the distribution's signing key", "gpg", "gnupg2", "gnupg"),
    Tool("gpgv", "checks a yum repository's repomd.xml.asc", "gpgv", "gnupg2", "gnupg"),
    Tool("zstd", "reads a yum repository's zstd-compressed indexes", "zstd", "zstd", "zstd"),
)
RPM_REPO_TOOLS = (
    Tool("rpmbuild", "builds the tests' kernel RPMs", "rpm", "rpm-build", "rpm-tools"),
    Tool("rpmsign", "signs the tests' kernel RPMs", "rpm", "rpm-sign", "rpm-tools"),
    Tool(
        "createrepo_c",
        "indexes the tests' yum repository",
        "createrepo-c",
        "createrepo_c",
        "createrepo_c",
    ),
)


REPORT_TOOLS = (
    Tool(
        "libatomic.so.1",
        "Playwright's own node (the browser test's driver) links it; a stock system lacks it",
        "libatomic1",
        "libatomic",
        "gcc-libs",
        library=True,
    ),
    Tool(
        "chromium",
        "opens the report in the browser test",
        "chromium",
        "chromium",
        "chromium",
        # Ubuntu's chromium package is a snap; CI runners carry Google's build instead.
        alternatives=("chromium-browser", "google-chrome"),
    ),
)


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


def distro_family(release: dict[str, str]) -> str:
    ids = {release.get("ID", ""), *release.get("ID_LIKE", "").split()}
    for family in ("debian", "ubuntu", "fedora", "rhel", "arch", "suse"):
        if family in ids:
            return {"ubuntu": "debian", "rhel": "fedora"}.get(family, family)
    return "unknown"


def find_command(command: str) -> str | None:
    found = shutil.which(command)
    if found:
        return found
    for d in SBIN_DIRS:
        candidate = Path(d) / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def install_command(family: str, packages: Iterable[str]) -> str:
    names = " ".join(sorted(set(packages)))
    return {
        "debian": f"apt-get install -y --no-install-recommends {names}",
        "fedora": f"dnf install -y {names}",
        "arch": f"pacman -S --needed {names}",
        "suse": f"zypper install -y {names}",
    }.get(family, f"install these packages (Debian names): {names}")


def find_library(soname: str) -> str | None:
    """A shared library the dynamic loader knows (its cache, as ldconfig -p shows it)."""
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    known = any(line.strip().startswith(f"{soname} ") for line in out.splitlines())
    return soname if known else None


def present(tool: Tool) -> bool:
    if tool.command.startswith("/"):
        return Path(tool.command).exists()
    if tool.library:
        return find_library(tool.command) is not None
    return any(find_command(c) is not None for c in (tool.command, *tool.alternatives))


def missing_tools(tools: Iterable[Tool]) -> list[Tool]:
    return [t for t in tools if not present(t)]


def apt_install(packages: list[str], say: Say) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another run installing its own prerequisites at the same moment (shards started side by
    # side on a new machine) holds dpkg's lock for a while: wait for it instead of failing.
    wait = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    cmd = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *packages]
    say(f"installing host packages: {' '.join(packages)}")
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0:
        return
    say("apt-get install failed; updating the package lists and trying again")
    subprocess.run(["apt-get", *wait, "update", "-q"], env=env, capture_output=True, check=False)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PrerequisiteError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()[-2000:]}")


def can_install(family: str) -> bool:
    return family == "debian" and os.geteuid() == 0 and not os.environ.get("MOUNTCOMPAT_NO_INSTALL")


def ensure_tools(tools: Iterable[Tool], say: Say) -> None:
    """Install (where allowed) or name the packages that provide missing tools. An optional
    tool that cannot be had is said in one line, and the run goes on without it."""
    missing = missing_tools(tools)
    required = [t for t in missing if not t.optional]
    optional = [t for t in missing if t.optional]
    family = distro_family(os_release())
    if required:
        _ensure_required(required, family, say)
    for tool in optional:
        _ensure_optional(tool, family, say)


def _ensure_required(missing: list[Tool], family: str, say: Say) -> None:
    names = ", ".join(f"{t.command} ({t.why})" for t in missing)
    if can_install(family):
        apt_install(sorted({t.debian for t in missing}), say)
        still = missing_tools(missing)
        if not still:
            return
        names = ", ".join(t.command for t in still)
        raise PrerequisiteError(f"still missing after installing: {names}")
    packages = [package_for(t, family) for t in missing]
    raise PrerequisiteError(
        f"missing host tools: {names}.\nInstall them with:\n  {install_command(family, packages)}"
    )


def package_for(tool: Tool, family: str) -> str:
    """The tool's package in the host's family of distributions (Debian's name if unknown)."""
    return str(getattr(tool, family, tool.debian)) if family != "unknown" else tool.debian


def _ensure_optional(tool: Tool, family: str, say: Say) -> None:
    package = package_for(tool, family)
    if can_install(family):
        try:
            apt_install([tool.debian], say)
        except PrerequisiteError as exc:
            say(f"{tool.debian} could not be installed ({str(exc).splitlines()[-1]})")
        if present(tool):
            return
    say(
        f"going on without {tool.command}, which {tool.why}; "
        f"to have it: {install_command(family, [package])}"
    )


def first_line(cmd: list[str]) -> str:
    """The first line a tool prints (of its version, say), or why there is none."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""
