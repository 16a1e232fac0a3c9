"""A Rust virtiofsd for virtme-ng, without changing the host's libc or apt sources.

Debian's cloud kernels have no 9p, so the guest's root must come over virtio-fs, and virtme-ng
accepts only the Rust virtiofsd (it refuses qemu's old C daemon, which bookworm still ships at
/usr/lib/qemu/virtiofsd). The order, first that works:

1. a Rust virtiofsd already on the host (``virtiofsd --version`` prints ``virtiofsd 1.x``);
2. the distribution's ``virtiofsd`` package, where apt offers one (trixie, Ubuntu 24.04 on);
3. a private copy: the ``virtiofsd`` package of a newer Debian suite and the shared libraries
   it needs (its libc among them), extracted into the cache and started through that libc's
   own dynamic loader. Bookworm needs this: trixie's virtiofsd wants libc6 >= 2.39, and
   installing it would upgrade the host's libc, which the harness must never do behind the
   user's back.

virtme-ng looks virtiofsd up on PATH before its fixed locations, so the harness puts the
chosen binary (or the private copy's wrapper) first on the PATH of the ``vng`` it starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FetchError, PrerequisiteError
from harness.fetch.archive import load_suite_index
from harness.fetch.mirror import debian_mirror
from harness.host import private
from harness.host.prereqs import can_install, distro_family, os_release

Say = Callable[[str], None]
PRIVATE_SUITE = "trixie"
RUST_VERSION = re.compile(r"^virtiofsd (\d+\.\d+\S*)", re.M)
KNOWN_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/virtiofsd", "/usr/lib/qemu/virtiofsd")


@dataclass(frozen=True)
class Virtiofsd:
    path: Path
    version: str
    origin: str  # "host", "installed" or "private <suite> package <version>"
    packages: tuple[dict[str, str], ...] = ()  # for a private copy: what it was made of

    @property
    def bin_dir(self) -> Path:
        return self.path.parent


def rust_version(path: str | Path) -> str | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = RUST_VERSION.search(out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


def find_host_virtiofsd() -> Virtiofsd | None:
    for candidate in (shutil.which("virtiofsd"), *KNOWN_PATHS):
        if candidate and (version := rust_version(candidate)):
            return Virtiofsd(Path(candidate), version, "host")
    return None


def _apt_offers(package: str) -> bool:
    out = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    )
    match = re.search(r"Candidate:\s*(\S+)", out.stdout)
    return bool(match and match.group(1) != "(none)")


WRAPPER = """#!/bin/sh
# virtiofsd from Debian {suite} ({version}), run by its own libc's loader: see
# harness/host/virtiofsd.py. Its paths are found from this file's own place (bin/ of the
# private copy), so that the cache may be moved, or restored under another path.
root="$(dirname "$(dirname "$(readlink -f "$0")")")"
lib="$root/usr/lib/x86_64-linux-gnu"
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$root/usr/libexec/virtiofsd" "$@"
"""


def write_wrapper(copy: Path, suite: str, version: str) -> Path:
    """``copy``'s bin/virtiofsd, written anew (atomically) if it is not today's: it names no
    absolute path, so the copy runs wherever it is. A wrapper of an older harness named the
    cache's absolute path, and ran a binary that was not there once the cache moved."""
    return private.write_wrapper(
        copy / "bin" / "virtiofsd", WRAPPER.format(suite=suite, version=version)
    )


def _private_copy(cache: Path, mirror: str | None, say: Say) -> Virtiofsd:
    index = load_suite_index(debian_mirror(mirror), PRIVATE_SUITE, cache)
    candidates = index.stanzas("virtiofsd")
    if not candidates:
        raise FetchError(f"no virtiofsd package in {PRIVATE_SUITE}")
    stanza = candidates[-1]
    final = cache / "tools" / f"virtiofsd_{stanza['Version']}"
    origin = f"private {PRIVATE_SUITE} package {stanza['Version']}"
    with private.locked(cache):
        recorded = private.recorded(final)
        if recorded and (final / "usr/libexec/virtiofsd").exists():
            wrapper = write_wrapper(final, PRIVATE_SUITE, stanza["Version"])
            if version := rust_version(wrapper):
                return Virtiofsd(wrapper, version, origin, recorded)
        say(
            f"fetching a private virtiofsd {stanza['Version']} from Debian {PRIVATE_SUITE} "
            "(the host's libc stays as it is)"
        )
        private.install(index, cache, final, private.library_closure(index, ["virtiofsd"]))
        write_wrapper(final, PRIVATE_SUITE, stanza["Version"])
    wrapper = final / "bin" / "virtiofsd"
    version = rust_version(wrapper)
    if version is None:
        raise PrerequisiteError(f"the private virtiofsd at {wrapper} does not run")
    return Virtiofsd(wrapper, version, origin, private.recorded(final))


def ensure_virtiofsd(cache: Path, mirror: str | None, say: Say) -> Virtiofsd:
    found = find_host_virtiofsd()
    if found:
        return found
    family = distro_family(os_release())
    if can_install(family) and _apt_offers("virtiofsd"):
        say("installing host package: virtiofsd")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "virtiofsd"],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
        found = find_host_virtiofsd()
        if found:
            return Virtiofsd(found.path, found.version, "installed")
    if family == "debian":
        return _private_copy(cache, mirror, say)
    raise PrerequisiteError(
        "no Rust virtiofsd found (virtme-ng needs it: the kernels have no 9p); install your "
        "distribution's 'virtiofsd' package (dnf install virtiofsd / pacman -S virtiofsd)"
    )
