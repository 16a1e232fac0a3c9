"""A suite's Packages index, verified through its InRelease, and kernel package resolution.

The chain of trust is apt's: InRelease is checked with ``gpgv`` against the host's Debian
archive keyring where both exist (and the result recorded either way), the Packages index
against the SHA256 that InRelease gives, and each .deb against the SHA256 in Packages.

Parsing a Packages index takes seconds (7.5 s for trixie's), so answers are kept on disk
beside the index, keyed by its SHA256: a run whose index has not changed never parses it.
With the network gone, a cached InRelease older than its refresh age is used all the same,
and the index says it is stale.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from debian.deb822 import Packages, Release
from debian.debian_support import Version

from harness.errors import FetchError
from harness.fetch.download import download, is_network_error, sha256_of
from harness.files import write_json

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEYRING_VAR = "MOUNTCOMPAT_ARCHIVE_KEYRING"  # another keyring (a mirror of one's own, say)
INDEX_MAX_AGE = 24 * 3600.0
# Debian's names for the architectures of kernels.yaml.
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
# Packages that a kernel image depends on and that carry its files: sid splits the image
# package into a meta package, linux-binary-* (vmlinuz), linux-modules-* (modules) and
# linux-base-<release> (config, modules.builtin, System.map).
CARRIER_PREFIXES = ("linux-binary-", "linux-modules-", "linux-base-")
KEPT_FIELDS = ("Package", "Version", "Filename", "SHA256", "Size", "Depends", "Architecture")
REFRESH_HINT = "run again with --refresh-index to fetch the indexes anew"


@dataclass(frozen=True)
class ResolvedPackage:
    name: str
    version: str
    sha256: str
    size: int
    url: str
    suite: str
    index_signature: str  # "verified", or why not
    index_stale: bool = False  # the index came from the cache past its refresh age

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuiteIndex:
    """One suite's Packages index for one architecture."""

    suite: str
    mirror: str
    signature: str  # "verified", or why not
    arch: str = "amd64"
    packages_xz: Path | None = None
    memo: Path | None = None  # answers already looked up, keyed by the index's SHA256
    stale: bool = False
    _parsed: dict[str, list[dict[str, str]]] | None = field(default=None, repr=False)

    @classmethod
    def from_stanzas(
        cls, suite: str, mirror: str, stanzas: list[dict[str, str]], signature: str = "verified"
    ) -> SuiteIndex:
        """An index held in memory (for tests and for callers that parsed one already)."""
        by_name: dict[str, list[dict[str, str]]] = {}
        for s in stanzas:
            by_name.setdefault(s["Package"], []).append(s)
        return cls(suite, mirror, signature, _parsed=by_name)

    def _packages(self) -> dict[str, list[dict[str, str]]]:
        if self._parsed is None:
            assert self.packages_xz is not None
            by_name: dict[str, list[dict[str, str]]] = {}
            with lzma.open(self.packages_xz, "rt", errors="replace") as f:
                for stanza in Packages.iter_paragraphs(f, use_apt_pkg=False):
                    kept = {k: stanza[k] for k in KEPT_FIELDS if k in stanza}
                    by_name.setdefault(stanza["Package"], []).append(kept)
            self._parsed = by_name
        return self._parsed

    def matching(self, pattern: str) -> list[dict[str, str]]:
        """Every stanza whose package name matches the glob ``pattern``."""
        memo = None
        if self.memo is not None:
            memo = self.memo / f"{hashlib.sha256(pattern.encode()).hexdigest()[:16]}.json"
            try:
                cached = json.loads(memo.read_text())
                if cached.get("pattern") == pattern:
                    return list(cached["stanzas"])
            except (OSError, ValueError, KeyError, AttributeError):
                pass
        found = [
            s
            for name, stanzas in self._packages().items()
            if fnmatch.fnmatchcase(name, pattern)
            for s in stanzas
        ]
        if memo is not None:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_json(memo, {"pattern": pattern, "stanzas": found})
        return found

    def stanzas(self, name: str) -> list[dict[str, str]]:
        """The stanzas of the package called ``name`` (names hold no glob characters)."""
        return self.matching(name)


def archive_keyring() -> Path:
    return Path(os.environ.get(KEYRING_VAR, KEYRING))


def mmdebstrap_keyring() -> list[str]:
    """The archive keyring named to mmdebstrap outright: on a host that is not Debian (an
    Ubuntu runner) apt's own trusted keys hold none of Debian's, and mmdebstrap would fail
    to verify the bookworm it builds from."""
    keyring = archive_keyring()
    return [f"--keyring={keyring}"] if keyring.exists() else []


def _verify_signature(inrelease: Path) -> str:
    """ "verified" when gpgv accepts InRelease's signature with the archive keyring; why not
    when either is missing (recorded, shown first in the report, an error with
    --require-signatures); a bad signature is a FetchError."""
    keyring = archive_keyring()
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        return "not verified: gpgv is not installed"
    if not keyring.exists():
        return f"not verified: no keyring at {keyring}"
    result = subprocess.run(
        [gpgv, "--keyring", str(keyring), str(inrelease)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"{inrelease}: bad signature: {result.stderr.strip()}")
    return "verified"


def _index_sha256(inrelease: Path, index: str) -> str:
    release = Release(inrelease.read_text(errors="replace"))
    for entry in release.get("SHA256", []):
        if entry["name"] == index:
            return str(entry["sha256"])
    raise FetchError(f"{inrelease}: no SHA256 for {index}")


def _is_fresh(path: Path, max_age: float) -> bool:
    return path.exists() and time.time() - path.stat().st_mtime < max_age


def _fetch_inrelease(mirror: str, suite: str, inrelease: Path, max_age: float) -> bool:
    """Make sure a current InRelease is cached; True if it is stale (the network failed and an
    older copy is used)."""
    if _is_fresh(inrelease, max_age):
        return False
    inrelease.parent.mkdir(parents=True, exist_ok=True)
    try:
        # One attempt where an older copy can stand in: no backoff when the network is gone.
        download(
            f"{mirror}/dists/{suite}/InRelease", inrelease, attempts=1 if inrelease.exists() else 4
        )
    except FetchError as exc:
        if inrelease.exists() and is_network_error(exc.__cause__):
            return True
        raise
    return False


def _signed_inrelease(mirror: str, suite: str, where: Path, max_age: float) -> tuple[str, bool]:
    """(signature, stale) of a cached InRelease whose signature holds; a cached copy with a
    bad one (damaged on disk, say) is fetched again once before giving up."""
    inrelease = where / "InRelease"
    stale = _fetch_inrelease(mirror, suite, inrelease, max_age)
    try:
        return _verify_signature(inrelease), stale
    except FetchError as first:
        inrelease.unlink(missing_ok=True)
        try:
            stale = _fetch_inrelease(mirror, suite, inrelease, 0.0)
            return _verify_signature(inrelease), stale
        except FetchError as second:
            raise FetchError(
                f"{first}; fetched again once: {second}; {REFRESH_HINT} once the mirror is right"
            ) from second


_LOADED: dict[tuple[str, str, str, Path], SuiteIndex] = {}


def load_suite_index(
    mirror: str, suite: str, cache: Path, max_age: float = INDEX_MAX_AGE, arch: str = "x86_64"
) -> SuiteIndex:
    """The suite's Packages index for ``arch``, from ``cache`` while its InRelease is younger
    than ``max_age`` seconds; loaded once per process."""
    key = (mirror, suite, arch, cache)
    if key not in _LOADED:
        _LOADED[key] = _load(mirror, suite, cache, max_age, DEBIAN_ARCH[arch])
    return _LOADED[key]


def mirror_key(mirror: str) -> str:
    """A directory name for ``mirror``: its URL made safe (readable, cut to 60 characters)
    and a digest of the whole URL, so that two mirrors never share one."""
    url = mirror.rstrip("/")
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", url).strip("_.")[:60]
    return f"{safe}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def index_dir(cache: Path, mirror: str, suite: str) -> Path:
    """Where one mirror's index of one suite is cached: a mirror never answers from
    another's (an unreachable one would otherwise resolve kernels from a cached index it
    never served)."""
    return cache / "indexes" / mirror_key(mirror) / suite


def _load(mirror: str, suite: str, cache: Path, max_age: float, debian_arch: str) -> SuiteIndex:
    where = index_dir(cache, mirror, suite)
    signature, stale = _signed_inrelease(mirror, suite, where, max_age)
    name = f"main/binary-{debian_arch}/Packages.xz"
    packages_xz = where / f"binary-{debian_arch}" / "Packages.xz"
    expected = _index_sha256(where / "InRelease", name)
    try:
        # download() keeps a cached file only if it has this digest, and checks a new one.
        download(f"{mirror}/dists/{suite}/{name}", packages_xz, sha256=expected)
    except FetchError as exc:
        raise FetchError(f"{exc}; {REFRESH_HINT}") from exc
    assert sha256_of(packages_xz) == expected
    return SuiteIndex(
        suite=suite,
        mirror=mirror,
        signature=signature,
        arch=debian_arch,
        packages_xz=packages_xz,
        memo=packages_xz.parent / f"memo-{expected[:16]}",
        stale=stale,
    )


def _package(index: SuiteIndex, stanza: dict[str, str]) -> ResolvedPackage:
    return ResolvedPackage(
        name=stanza["Package"],
        version=stanza["Version"],
        sha256=stanza["SHA256"],
        size=int(stanza["Size"]),
        url=f"{index.mirror}/{stanza['Filename']}",
        suite=index.suite,
        index_signature=index.signature,
        index_stale=index.stale,
    )


def _pick(stanzas: list[dict[str, str]], pick: str) -> dict[str, str]:
    order = sorted(stanzas, key=lambda s: (Version(s["Version"]), s["Package"]))
    return order[0] if pick == "oldest" else order[-1]


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


def resolve_kernel(index: SuiteIndex, pattern: str, pick: str = "newest") -> list[ResolvedPackage]:
    """The newest (or oldest) package matching ``pattern``, plus the packages carrying its
    files."""
    matches = index.matching(pattern)
    if not matches:
        # A glob written for another architecture than the kernel's is the likely mistake.
        other = [a for a in DEBIAN_ARCH.values() if a != index.arch and a in pattern]
        hint = f"; the glob names {other[0]}, the kernel's arch is {index.arch}" if other else ""
        raise FetchError(
            f"no package matching {pattern!r} in {index.suite} for {index.arch} "
            f"({index.mirror}){hint}"
        )
    image = _pick(matches, pick)
    return [_package(index, s) for s in [image, *_carriers(index, image)]]
