"""The QEMU the guests run under: the host's, or a private copy of a newer Debian suite's.

Under TCG every guest instruction goes through QEMU's translator, and newer QEMUs translate
faster: trixie's QEMU 10.0 ran the suites of 6.12 and of 5.10 in x0.80 of the time bookworm's
7.2 took, bare boots alike (docs/performance.md, "The emulator's own settings"). Bookworm
cannot install trixie's QEMU without a newer libc, so on a Debian host whose QEMU is older the
harness makes a private copy, as it does for virtiofsd (harness/host/private.py): the
packages and their libraries in its cache, run through that libc's own loader, firmware and
modules from the copy. ``--qemu host`` keeps the host's; ``--qemu private`` asks for the copy.

virtme-ng finds ``qemu-system-<arch>`` on PATH first, so the copy's ``bin/`` goes first on the
PATH of the ``vng`` the harness starts, as the private virtiofsd's does.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, PrerequisiteError
from harness.fetch.archive import SuiteIndex, load_suite_index
from harness.fetch.mirror import debian_mirror
from harness.host import private
from harness.host.guestroot import QEMU_SYSTEM, host_arch
from harness.host.prereqs import distro_family, first_line, os_release
from harness.host.virtiofsd import Virtiofsd

Say = Callable[[str], None]
PRIVATE_SUITE = "trixie"
CHOICES = ("auto", "host", "private")  # --qemu
# Per guest architecture: the package of its system emulator, and what else it needs of the
# suite beside libraries (firmware: SeaBIOS for x86's q35; arm64's "virt" boots the kernel
# directly).
PACKAGES = {
    "x86_64": ("qemu-system-x86", "qemu-system-data", "seabios"),
    "arm64": ("qemu-system-arm", "qemu-system-data"),
}
VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)")

WRAPPER = """#!/bin/sh
# {binary} from Debian {suite} ({version}), run by its own libc's loader, with its own firmware
# and modules: see harness/host/qemu.py. Paths are found from this file's own place, so that
# the cache may be moved, or restored under another path.
root="$(dirname "$(dirname "$(readlink -f "$0")")")"
lib="$root/usr/lib/x86_64-linux-gnu"
QEMU_MODULE_DIR="$lib/qemu"
export QEMU_MODULE_DIR
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$root/usr/bin/{binary}" \\
    -L "$root/usr/share/qemu" -L "$root/usr/share/seabios" "$@"
"""


@dataclass(frozen=True)
class Qemu:
    """The emulators of this run. ``copies``: the private copy's bin/ per guest arch, used
    for guests emulated under TCG (a KVM guest runs under the host's QEMU: the translator
    is what the copy is faster at, and the host's QEMU is the one KVM's fallback knows how
    to see fail)."""

    origin: str  # "host", or "private <suite> <package version>"
    host_versions: dict[str, str]  # guest arch -> the host emulator's first --version line
    versions: dict[str, str] = field(default_factory=dict)  # the same of the private copy
    copies: dict[str, Path] = field(default_factory=dict)
    reason: str = ""
    packages: tuple[dict[str, str], ...] = field(default=())

    def bin_dir(self, arch: str, accel: str) -> Path | None:
        """The private copy's bin/ for a guest of ``arch`` under ``accel``, or None."""
        return self.copies.get(arch) if accel == "tcg" else None

    def line(self, arch: str, accel: str) -> str:
        """The emulator of such a guest, as its --version says, and whose it is."""
        if self.bin_dir(arch, accel) is not None:
            return f"{self.versions[arch]} ({self.origin} copy)"
        return self.host_versions.get(arch) or first_line([QEMU_SYSTEM[arch], "--version"])

    def line_on(self, arch: str, path: str) -> str:
        """The emulator vng will find on ``path`` (a guest's PATH) for ``arch``: what the
        guest's record names is what its PATH gives, whatever was meant."""
        found = shutil.which(QEMU_SYSTEM[arch], path=path)
        if found is not None and Path(found).parent == self.copies.get(arch):
            return f"{self.versions[arch]} ({self.origin} copy)"
        return self.host_versions.get(arch) or first_line([found or QEMU_SYSTEM[arch], "--version"])

    def to_json(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "host_versions": self.host_versions,
            "versions": self.versions,
            "copies": {arch: str(path) for arch, path in self.copies.items()},
            "used_for": "guests under TCG" if self.copies else "",
            "reason": self.reason,
            "packages": list(self.packages),
        }


def version_of(line: str) -> tuple[int, int] | None:
    match = VERSION.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def write_wrapper(copy: Path, binary: str, version: str) -> Path:
    text = WRAPPER.format(binary=binary, suite=PRIVATE_SUITE, version=version)
    return private.write_wrapper(copy / "bin" / binary, text)


def debian_upstream(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Debian version such as 1:10.0.13+ds-0+deb13u1."""
    match = re.match(r"(?:\d+:)?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _index_and_version(mirror: str | None, cache: Path, archs: list[str]) -> tuple[SuiteIndex, str]:
    index = load_suite_index(debian_mirror(mirror), PRIVATE_SUITE, cache)
    main = index.stanzas(PACKAGES[archs[0]][0])
    if not main:
        raise PrerequisiteError(f"no {PACKAGES[archs[0]][0]} package in {PRIVATE_SUITE}")
    return index, main[-1]["Version"]


def private_copy(cache: Path, mirror: str | None, archs: list[str], say: Say) -> Qemu:
    """The private copies of the emulators of ``archs`` (one per arch), made if they are not
    in the cache."""
    cache = cache.resolve()  # the copy goes on PATH and into reproduce.sh
    return _copies(cache, *_index_and_version(mirror, cache, archs), archs, say)


def _copies(cache: Path, index: SuiteIndex, version: str, archs: list[str], say: Say) -> Qemu:
    copies, versions, packages = {}, {}, []
    for arch in archs:
        # No epoch ("1:") in the name: a colon would split the loader's --library-path.
        final = cache / "tools" / f"qemu_{version.split(':', 1)[-1]}_{arch}"
        binary = QEMU_SYSTEM[arch]
        with private.locked(cache):
            made = not (final / "usr/bin" / binary).exists() or not private.recorded(final)
            for _ in range(2):  # a cached copy that does not run is made once more
                if made:
                    say(
                        f"fetching a private QEMU {version} from Debian {PRIVATE_SUITE} for "
                        f"{arch} guests under TCG (the host's libc and QEMU stay as they are)"
                    )
                    closure = private.library_closure(index, PACKAGES[arch])
                    private.install(index, cache, final, closure)
                wrapper = write_wrapper(final, binary, version)
                versions[arch] = first_line([str(wrapper), "--version"])
                if version_of(versions[arch]) is not None or made:
                    break
                made = True
        if version_of(versions[arch]) is None:
            raise PrerequisiteError(
                f"the private QEMU at {wrapper} does not run: {versions[arch] or 'no output'}"
            )
        copies[arch] = final / "bin"
        packages += [p for p in private.recorded(final) if p not in packages]
    origin = f"private {PRIVATE_SUITE} {version}"
    return Qemu(origin, {}, versions, copies, packages=tuple(packages))


def _cannot_have_private() -> str | None:
    """Why this host cannot run the private copy, or None."""
    if host_arch() != "x86_64":
        return "the private copy is made for x86_64 hosts"
    if distro_family(os_release()) != "debian":
        return "the private copy comes from Debian's archive, for Debian hosts"
    return None


def ensure_qemu(
    cache: Path, mirror: str | None, choice: str, archs: Iterable[str], say: Say
) -> Qemu:
    """The emulators for guests of ``archs``. ``auto``: the private copy where the host can
    run it and its QEMU is older; the host's otherwise, also when the copy cannot be made
    (the reason is recorded). ``private`` fails where ``auto`` would fall back."""
    wanted = sorted(set(archs))
    host = {arch: first_line([QEMU_SYSTEM[arch], "--version"]) for arch in wanted}
    if choice == "host":
        return Qemu("host", host, reason="--qemu host")
    cannot = _cannot_have_private()
    if choice == "private":
        if cannot:
            raise PrerequisiteError(f"--qemu private: {cannot}")
        return _with_reason(private_copy(cache, mirror, wanted, say), "--qemu private", host)
    if cannot:
        return Qemu("host", host, reason=cannot)
    try:
        cache = cache.resolve()
        index, version = _index_and_version(mirror, cache, wanted)
        theirs = [version_of(line) for line in host.values()]
        mine = debian_upstream(version)
        if mine is not None and all(v is not None and v >= mine for v in theirs):
            return Qemu("host", host, reason=f"as new as {PRIVATE_SUITE}'s {version}")
        copy = _copies(cache, index, version, wanted, say)
    except HarnessError as exc:
        say(f"the host's QEMU, as no private copy could be made: {exc}")
        return Qemu("host", host, reason=f"no private copy: {exc}")
    older = ", ".join(sorted(set(host.values())))
    return _with_reason(copy, f"newer than the host's ({older})", host)


def tool_dirs(qemu: Qemu, virtiofsd: Virtiofsd, arch: str, accel: str) -> tuple[Path, ...]:
    """Where the QEMU and the virtiofsd of a guest of ``arch`` under ``accel`` are, for the
    front of vng's PATH."""
    return tuple(d for d in (qemu.bin_dir(arch, accel), virtiofsd.bin_dir) if d is not None)


def _with_reason(copy: Qemu, reason: str, host: dict[str, str]) -> Qemu:
    return Qemu(copy.origin, host, copy.versions, copy.copies, reason, copy.packages)
