"""Kernels from yum/dnf repositories: resolve in the repository's metadata, download, verify
each RPM's signature against the distribution's key, and unpack with rpm2archive.

The chain of trust: repodata/repomd.xml (signed where the repository publishes repomd.xml.asc;
CentOS Stream signs the packages and not the metadata) names the primary index by its
SHA256, the primary index names each RPM by its SHA256, and each RPM carries the
distribution's signature, checked by ``rpmkeys --checksig`` in a throwaway rpm database that
holds only the key kernels.yaml names.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import gzip
import lzma
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import RpmSource
from harness.errors import FetchError
from harness.fetch.download import download
from harness.fetch.unpack import extract_safely
from harness.host.prereqs import RPM_TOOLS, ensure_tools

REPO = "{http://linux.duke.edu/metadata/repo}"
COMMON = "{http://linux.duke.edu/metadata/common}"
RPM_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
SIGNED = "signatures OK"  # rpmkeys --checksig: "<file>: digests signatures OK"


@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    sha256: str
    size: int
    url: str

    @property
    def evr(self) -> str:
        return f"{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch not in ("", "0") else ""
        return f"{self.name}-{epoch}{self.evr}.{self.arch}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.evr,
            "nevra": self.nevra,
            "arch": self.arch,
            "sha256": self.sha256,
            "size": self.size,
            "url": self.url,
        }


def _keyring(key: Path, work: Path) -> Path:
    """The armored key as a binary keyring gpgv reads."""
    if not key.is_file():
        raise FetchError(f"{key}: the signing key kernels.yaml names is not there")
    ring = work / "key.gpg"
    done = subprocess.run(
        ["gpg", "--batch", "--yes", "--dearmor", "--output", str(ring), str(key)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not ring.exists():
        raise FetchError(f"{key}: not an OpenPGP key ({done.stderr.strip()})")
    return ring


def _check_repomd(url: str, repomd: Path, ring: Path, work: Path) -> str:
    """ "signed" if repomd.xml.asc verifies, "unsigned" if the repository publishes none."""
    asc = work / "repomd.xml.asc"
    try:
        download(url + "repodata/repomd.xml.asc", asc)
    except FetchError as exc:
        if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code == 404:
            return "unsigned"
        raise
    done = subprocess.run(
        ["gpgv", "--keyring", str(ring), str(asc), str(repomd)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise FetchError(f"{url}repodata/repomd.xml: its signature does not verify with the key")
    return "signed"


def _primary(repomd: Path) -> tuple[str, str]:
    """(location, sha256) of the primary index that repomd.xml names."""
    try:
        root = ET.parse(repomd).getroot()
    except ET.ParseError as exc:
        raise FetchError(f"repomd.xml is not XML: {exc}") from exc
    for data in root.findall(f"{REPO}data"):
        if data.get("type") != "primary":
            continue
        location = data.find(f"{REPO}location")
        checksum = data.find(f"{REPO}checksum")
        if location is None or checksum is None or checksum.get("type") != "sha256":
            raise FetchError("repomd.xml names its primary index without a SHA256")
        return str(location.get("href")), (checksum.text or "").strip()
    raise FetchError("repomd.xml names no primary index")


def _decompress(path: Path) -> bytes:
    raw = path.read_bytes()
    try:
        if path.name.endswith(".gz"):
            return gzip.decompress(raw)
        if path.name.endswith(".xz"):
            return lzma.decompress(raw)
        if path.name.endswith(".bz2"):
            return bz2.decompress(raw)
        if path.name.endswith(".zst"):
            return subprocess.run(
                ["zstd", "-dc"], input=raw, capture_output=True, check=True
            ).stdout
    except (OSError, EOFError, lzma.LZMAError, subprocess.CalledProcessError) as exc:
        raise FetchError(f"{path.name}: cannot decompress: {exc}") from exc
    return raw


def _packages(primary: bytes, base: str) -> list[RpmPackage]:
    try:
        root = ET.fromstring(primary)
    except ET.ParseError as exc:
        raise FetchError(f"the primary index is not XML: {exc}") from exc
    found = []
    for pkg in root.findall(f"{COMMON}package"):
        version = pkg.find(f"{COMMON}version")
        checksum = pkg.find(f"{COMMON}checksum")
        location = pkg.find(f"{COMMON}location")
        size = pkg.find(f"{COMMON}size")
        if version is None or checksum is None or location is None:
            continue
        if checksum.get("type") != "sha256":
            continue
        found.append(
            RpmPackage(
                name=pkg.findtext(f"{COMMON}name") or "",
                epoch=version.get("epoch", "0"),
                version=version.get("ver", ""),
                release=version.get("rel", ""),
                arch=pkg.findtext(f"{COMMON}arch") or "",
                sha256=(checksum.text or "").strip(),
                size=int(size.get("package", "0")) if size is not None else 0,
                url=base + str(location.get("href")),
            )
        )
    return found


def rpm_sorted(evrs: list[str]) -> list[str]:
    """``evrs`` in rpm's own version order (rpm.vercmp), oldest first: rpm compares
    "5.14.0-503.el9" and "5.14.0-70.el9" as numbers, segment by segment."""
    unique = sorted(set(evrs))
    if len(unique) < 2:
        return unique
    items = ",".join(f"[[{e}]]" for e in unique)
    script = (
        f"%{{lua: local t = {{{items}}} "
        "table.sort(t, function(a, b) return rpm.vercmp(a, b) < 0 end) "
        "print(table.concat(t, '\\n'))}"
    )
    done = subprocess.run(["rpm", "--eval", script], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"rpm could not order versions: {done.stderr.strip()}")
    return done.stdout.split()


def resolve_rpm(source: RpmSource, arch: str, cache: Path) -> tuple[list[RpmPackage], str]:
    """The kernel package and its modules packages of one version-release, and the state of
    repomd.xml's signature ("signed" or "unsigned")."""
    base = source.repo
    with tempfile.TemporaryDirectory(prefix="rpm-index.", dir=_work(cache)) as tmp:
        work = Path(tmp)
        repomd = work / "repomd.xml"
        # First, so that a repository out of reach is said as such before any tool is asked
        # for: a kernel marked needs_network then ends "unreachable" on any host.
        download(base + "repodata/repomd.xml", repomd)
        ensure_tools(RPM_TOOLS, lambda message: print(message, file=sys.stderr))
        ring = _keyring(source.key, work)
        metadata = _check_repomd(base, repomd, ring, work)
        location, sha256 = _primary(repomd)
        primary = work / Path(location).name
        download(base + location, primary, sha256=sha256)
        packages = _packages(_decompress(primary), base)
    want = RPM_ARCH[arch]
    ours = [p for p in packages if p.arch == want]
    cores = [
        p for p in ours if p.name == source.package and fnmatch.fnmatchcase(p.evr, source.version)
    ]
    if not cores:
        raise FetchError(
            f"no package {source.package} {source.version} for {want} in {base}"
            f" ({len(packages)} packages in its index)"
        )
    order = rpm_sorted([p.evr for p in cores])
    evr = order[0] if source.pick == "oldest" else order[-1]
    chosen = [next(p for p in cores if p.evr == evr)]
    for name in source.modules:
        match = [p for p in ours if p.name == name and p.evr == evr]
        if not match:
            raise FetchError(f"no package {name} {evr} for {want} in {base}")
        chosen.append(match[0])
    return chosen, metadata


def _work(cache: Path) -> Path:
    path = cache / "rpm-work"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def keyed_rpmdb(key: Path, cache: Path) -> Iterator[str]:
    """An rpm database of its own that trusts ``key`` and nothing else: the host's rpm keys
    (on an RPM host) must not vouch for a kernel the distribution did not sign."""
    with tempfile.TemporaryDirectory(prefix="rpmdb.", dir=_work(cache)) as db:
        imported = subprocess.run(
            ["rpmkeys", "--root", db, "--import", str(key)],
            check=False,
            capture_output=True,
            text=True,
        )
        if imported.returncode != 0:
            raise FetchError(f"{key}: rpmkeys cannot import it: {imported.stderr.strip()}")
        yield db


def check_signature(rpm: Path, key: Path, db: str) -> None:
    """The RPM's signature verifies in ``db`` (a keyed_rpmdb of ``key``)."""
    done = subprocess.run(
        ["rpmkeys", "--root", db, "--checksig", str(rpm)],
        check=False,
        capture_output=True,
        text=True,
    )
    said = (done.stdout + done.stderr).strip().splitlines()
    line = said[-1] if said else ""
    if done.returncode != 0 or SIGNED not in line:
        why = line.split(":", 1)[-1].strip() or "no answer"
        raise FetchError(f"{rpm.name}: its signature does not verify with {key.name} ({why})")


def extract_rpm(rpm: Path, dest: Path) -> None:
    """Unpack the RPM's payload (whatever its compression: rpm2archive reads them all) into
    ``dest``, through the same member filter as a .deb's."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tgz:
        with rpm.open("rb") as package:
            done = subprocess.run(
                ["rpm2archive", "-"], stdin=package, stdout=tgz, stderr=subprocess.PIPE, check=False
            )
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()
            raise FetchError(f"cannot extract {rpm.name}: {why}")
        tgz.seek(0)
        try:
            with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
                extract_safely(tar, dest)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise FetchError(f"cannot extract {rpm.name}: {exc}") from exc


def fetch_rpms(
    packages: list[RpmPackage], source: RpmSource, cache: Path, progress: Callable[[str], None]
) -> list[Path]:
    """Each package downloaded under its SHA256 from the index and its signature checked."""
    paths = []
    with keyed_rpmdb(source.key, cache) as db:
        for pkg in packages:
            path = cache / "rpms" / f"{pkg.nevra}.rpm"
            if download(pkg.url, path, sha256=pkg.sha256):
                progress(f"downloaded {pkg.nevra} ({pkg.size >> 20} MiB)")
            check_signature(path, source.key, db)
            paths.append(path)
    return paths
