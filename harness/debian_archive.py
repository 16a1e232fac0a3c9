"""A suite's Packages index, verified through its InRelease, and kernel package resolution.

The chain of trust is apt's: InRelease is checked with ``gpgv`` against the host's Debian
archive keyring where both exist (and the result recorded either way), the Packages index
against the SHA256 that InRelease gives, and each .deb against the SHA256 in Packages.
"""

from __future__ import annotations

import fnmatch
import lzma
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from debian.deb822 import Packages, Release
from debian.debian_support import Version

from harness.download import download
from harness.errors import FetchError

ARCH = "amd64"
INDEX = f"main/binary-{ARCH}/Packages.xz"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
INDEX_MAX_AGE = 24 * 3600.0
# Packages that a kernel image depends on and that carry its files: sid splits the image
# package into a meta package, linux-binary-* (vmlinuz), linux-modules-* (modules) and
# linux-base-<release> (config, modules.builtin, System.map).
CARRIER_PREFIXES = ("linux-binary-", "linux-modules-", "linux-base-")


@dataclass(frozen=True)
class ResolvedPackage:
    name: str
    version: str
    sha256: str
    size: int
    url: str
    suite: str
    index_signature: str  # whether the index it came from was verified with gpgv

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SuiteIndex:
    suite: str
    mirror: str
    packages: dict[str, list[dict[str, str]]]
    signature: str  # "verified", or why not

    def stanzas(self, name: str) -> list[dict[str, str]]:
        return self.packages.get(name, [])


def _verify_signature(inrelease: Path) -> str:
    gpgv = shutil.which("gpgv")
    if gpgv is None or not KEYRING.exists():
        return f"not verified: gpgv or {KEYRING} missing"
    result = subprocess.run(
        [gpgv, "--keyring", str(KEYRING), str(inrelease)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"{inrelease}: bad signature: {result.stderr.strip()}")
    return "verified"


def _index_sha256(inrelease: Path) -> str:
    release = Release(inrelease.read_text(errors="replace"))
    for entry in release.get("SHA256", []):
        if entry["name"] == INDEX:
            return str(entry["sha256"])
    raise FetchError(f"{inrelease}: no SHA256 for {INDEX}")


def _is_fresh(path: Path, max_age: float) -> bool:
    return path.exists() and time.time() - path.stat().st_mtime < max_age


_LOADED: dict[tuple[str, str, Path], SuiteIndex] = {}


def load_suite_index(
    mirror: str, suite: str, cache: Path, max_age: float = INDEX_MAX_AGE
) -> SuiteIndex:
    """The suite's Packages index, from ``cache`` while younger than ``max_age`` seconds.
    Parsing one takes seconds: a run that needs it twice (trixie gives both the 6.12 kernel
    and the private virtiofsd) parses it once."""
    key = (mirror, suite, cache)
    if key not in _LOADED:
        _LOADED[key] = _load(mirror, suite, cache, max_age)
    return _LOADED[key]


def _load(mirror: str, suite: str, cache: Path, max_age: float) -> SuiteIndex:
    where = cache / "indexes" / suite
    inrelease, packages_xz = where / "InRelease", where / "Packages.xz"
    if not _is_fresh(inrelease, max_age):
        where.mkdir(parents=True, exist_ok=True)
        download(f"{mirror}/dists/{suite}/InRelease", inrelease)
    signature = _verify_signature(inrelease)
    # download() keeps a cached file only if it has this digest, and checks a new one.
    download(f"{mirror}/dists/{suite}/{INDEX}", packages_xz, sha256=_index_sha256(inrelease))
    by_name: dict[str, list[dict[str, str]]] = {}
    with lzma.open(packages_xz, "rt", errors="replace") as f:
        for stanza in Packages.iter_paragraphs(f, use_apt_pkg=False):
            by_name.setdefault(stanza["Package"], []).append(dict(stanza))
    return SuiteIndex(suite=suite, mirror=mirror, packages=by_name, signature=signature)


def _package(index: SuiteIndex, stanza: dict[str, str]) -> ResolvedPackage:
    return ResolvedPackage(
        name=stanza["Package"],
        version=stanza["Version"],
        sha256=stanza["SHA256"],
        size=int(stanza["Size"]),
        url=f"{index.mirror}/{stanza['Filename']}",
        suite=index.suite,
        index_signature=index.signature,
    )


def _newest(stanzas: list[dict[str, str]]) -> dict[str, str]:
    return max(stanzas, key=lambda s: (Version(s["Version"]), s["Package"]))


def _carriers(index: SuiteIndex, image: dict[str, str]) -> list[dict[str, str]]:
    found = []
    for group in image.get("Depends", "").split(","):
        name = group.split("|")[0].strip().split(" ")[0]
        if name.startswith(CARRIER_PREFIXES):
            candidates = [s for s in index.stanzas(name) if s["Version"] == image["Version"]]
            if not candidates:
                raise FetchError(f"{image['Package']} depends on {name}, absent from {index.suite}")
            found.append(candidates[0])
    return found


def resolve_kernel(index: SuiteIndex, pattern: str) -> list[ResolvedPackage]:
    """The newest package matching ``pattern``, plus the packages carrying its files."""
    matches = [
        s for name, ss in index.packages.items() if fnmatch.fnmatchcase(name, pattern) for s in ss
    ]
    if not matches:
        raise FetchError(f"no package matching {pattern!r} in {index.suite} ({index.mirror})")
    image = _newest(matches)
    return [_package(index, s) for s in [image, *_carriers(index, image)]]
