"""From a kernel spec to a bootable tree in the cache: resolve, then fetch, then extract.

Resolution (what exactly to use) is apart from fetching (getting it), and fetching is
idempotent: packages are downloaded under their SHA256, extracted into a temporary directory
beside the final one, and renamed into place with ``provenance.json`` already inside, so an
interrupted fetch never leaves a tree that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from debian.debian_support import Version

from harness.config import DebFilesSource, DebianSource, KernelSpec, LocalSource, RpmSource
from harness.errors import FetchError
from harness.fetch.archive import (
    DEBIAN_ARCH,
    INDEX_MAX_AGE,
    ResolvedPackage,
    load_suite_index,
    resolve_kernel,
)
from harness.fetch.download import download, sha256_of
from harness.fetch.mirror import debian_mirror
from harness.fetch.rpm import RpmPackage, extract_rpm, fetch_rpms, resolve_rpm
from harness.fetch.unpack import extract_safely, inside

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelTree:
    """A kernel ready to boot: the image, its modules, its config, and where they came from."""

    vmlinuz: Path
    modules: Path
    config: Path | None
    release: str
    packages: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = ()  # what fetching had to do beyond the usual (a repair, say)

    def provenance(self) -> dict[str, Any]:
        return {
            "vmlinuz": str(self.vmlinuz),
            "modules": str(self.modules),
            "config": str(self.config) if self.config else None,
            "release": self.release,
            "packages": list(self.packages),
        }


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("MOUNTCOMPAT_CACHE", Path(base) / "mountcompat"))


def extract_deb(deb: Path, dest: Path) -> dict[str, str]:
    """Unpack a .deb's data into ``dest``; return its control fields."""
    from debian.debfile import DebFile

    try:
        package = DebFile(str(deb))
        control = dict(package.debcontrol())
        extract_safely(package.data.tgz(), dest)
    except (OSError, tarfile.TarError, ValueError, EOFError) as exc:
        raise FetchError(f"cannot extract {deb}: {exc}") from exc
    return control


MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# What virtme-ng's depmod adds to a modules directory after extraction: not extraction's, and
# not judged. Any other file the manifest does not list makes the tree damaged.
_DEPMOD_OUTPUT = re.compile(r"(?:usr/)?lib/modules/[^/]+/modules\.[^/]+")


def _tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file and symlink under ``root``, by its path relative to it, sorted."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or path.is_file():
            yield str(path.relative_to(root)), path


def tree_manifest(root: Path) -> dict[str, str]:
    """SHA256 of every regular file under ``root`` (symlinks by their target), by path."""
    return {
        rel: "link:" + os.readlink(path) if path.is_symlink() else sha256_of(path)
        for rel, path in _tree_files(root)
    }


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _is_relative(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".")
        and os.path.normpath(name) == name
        and inside(name)
    )


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(the data, None), or (None, why not) in a few words."""
    try:
        return json.loads(path.read_text()), None
    except OSError as exc:
        return None, f"{path.name}: {exc.strerror or exc}"
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None, f"{path.name} is not JSON"


def _manifest(final: Path) -> tuple[dict[str, str], str | None]:
    """The manifest if it is what extraction writes: a JSON object naming at least one file,
    by a path inside the tree, with its SHA256 (or "link:" and a symlink's target)."""
    data, why = _read_json(final / MANIFEST)
    if why:
        return {}, why
    if not isinstance(data, dict) or not data:
        return {}, f"{MANIFEST} is not a list of the tree's files with their hashes"
    for rel, want in data.items():
        if not _is_relative(rel):
            return {}, f"{MANIFEST} names {rel!r}, not a path inside the tree"
        if not isinstance(want, str) or not (want.startswith("link:") or _SHA256.fullmatch(want)):
            return {}, f"{MANIFEST} gives {rel} no SHA256"
    return data, None


def _provenance_damage(final: Path, manifest: dict[str, str]) -> str | None:
    """Why ``provenance.json`` could not be loaded as the record of this tree, if it could
    not: every field of the right type, and the paths it names inside the manifest."""
    data, why = _read_json(final / PROVENANCE)
    if why:
        return why
    if not isinstance(data, dict):
        return f"{PROVENANCE} is not a JSON object"
    if not isinstance(data.get("release"), str) or not isinstance(data.get("packages"), list):
        return f"{PROVENANCE} has no release or no packages"
    for field in ("vmlinuz", "modules", "config"):
        value = data.get(field)
        if field == "config" and value is None:
            continue
        rel = (
            value[len("root/") :] if isinstance(value, str) and value.startswith("root/") else None
        )
        if rel is None or not _is_relative(rel):
            return f"{PROVENANCE}: {field} is not a path inside the tree"
        listed = rel in manifest or any(name.startswith(rel + "/") for name in manifest)
        if not listed:
            return f"{PROVENANCE}: {field} {rel} is not in {MANIFEST}"
    return None


def tree_damage(final: Path) -> str | None:
    """Why the installed tree at ``final`` is not what extraction wrote, in one line, or None
    if it is. The manifest written then must list every file of the tree with its hash:
    a file missing, changed or truncated, or one the manifest does not list, is damage, and so
    is a manifest or a provenance.json that is not what extraction writes. Files added later
    (virtme-ng's depmod writes modules.dep and its kin) are not extraction's and are not
    judged."""
    manifest, why = _manifest(final)
    if why:
        return why
    why = _provenance_damage(final, manifest)
    if why:
        return why
    root = final / "root"

    def verdict(rel: str, want: str) -> str | None:
        path = root / rel
        try:
            if want.startswith("link:"):
                return None if os.readlink(path) == want[5:] else "changed"
            return None if sha256_of(path) == want else "changed"
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "changed"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        verdicts = list(pool.map(lambda item: verdict(*item), manifest.items()))
    found: dict[str, list[str]] = {}
    for rel, seen in zip(manifest, verdicts, strict=True):
        if seen:
            found.setdefault(seen, []).append(rel)
    unlisted = [
        rel
        for rel, _ in _tree_files(root)
        if rel not in manifest and not _DEPMOD_OUTPUT.fullmatch(rel)
    ]
    if unlisted:
        found[f"not in {MANIFEST}"] = unlisted
    return "; ".join(f"{kind}: {_listed(names)}" for kind, names in found.items()) or None


def locate_tree(root: Path) -> tuple[Path, Path, Path | None, str]:
    """Find vmlinuz, modules and config in an extracted tree, whichever layout it uses."""
    for modules_base in (root / "usr/lib/modules", root / "lib/modules"):
        for moddir in sorted(modules_base.glob("*")):
            release = moddir.name
            for vmlinuz in (root / f"boot/vmlinuz-{release}", moddir / "vmlinuz"):
                if vmlinuz.exists():
                    configs = [root / f"boot/config-{release}", moddir / "config"]
                    config = next((c for c in configs if c.exists()), None)
                    return vmlinuz, moddir, config, release
    raise FetchError(f"{root}: no vmlinuz with a matching modules directory")


def _install(packages: list[tuple[Path, dict[str, Any]]], final: Path) -> KernelTree:
    """Extract ``packages`` into ``final`` atomically and return the tree."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        records = []
        for deb, record in packages:
            if deb.suffix == ".rpm":
                extract_rpm(deb, tmp / "root")
                records.append(record)
                continue
            control = extract_deb(deb, tmp / "root")
            records.append(
                {
                    **record,
                    "name": control.get("Package", record.get("name")),
                    "version": control.get("Version", record.get("version")),
                }
            )
        vmlinuz, modules, config, release = locate_tree(tmp / "root")
        rel = {
            k: str(p.relative_to(tmp)) if p else None
            for k, p in (("vmlinuz", vmlinuz), ("modules", modules), ("config", config))
        }
        (tmp / MANIFEST).write_text(json.dumps(tree_manifest(tmp / "root"), indent=1))
        (tmp / PROVENANCE).write_text(
            json.dumps({"release": release, "packages": records, **rel}, indent=2)
        )
        shutil.rmtree(final, ignore_errors=True)  # a damaged tree being replaced
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_installed(final)


def load_installed(final: Path) -> KernelTree:
    """The tree extraction recorded at ``final`` (checked by tree_damage first)."""
    data = json.loads((final / PROVENANCE).read_text())
    return KernelTree(
        vmlinuz=final / data["vmlinuz"],
        modules=final / data["modules"],
        config=final / data["config"] if data["config"] else None,
        release=data["release"],
        packages=tuple(data["packages"]),
    )


def _tree_key(packages: Sequence[ResolvedPackage | RpmPackage]) -> str:
    """A tree's cache key: its packages' SHA256s, so that a rebuilt package is a new tree."""
    return hashlib.sha256(" ".join(p.sha256 for p in packages).encode()).hexdigest()[:12]


@dataclass
class Fetcher:
    """Resolves and fetches kernels into one cache directory."""

    cache: Path
    mirror: str | None = None
    index_max_age: float = INDEX_MAX_AGE
    progress: Progress = lambda message: None

    def fetch(self, spec: KernelSpec) -> KernelTree:
        """One installer per source kind (config.SOURCE_KINDS): a new kind, such as a RHEL
        kernel-core + kernel-modules RPM pair, is one more entry and one more method."""
        if spec.source.kind == "debian":
            assert isinstance(spec.source, DebianSource)
            return self._fetch_debian(spec.source, spec.arch)
        if spec.source.kind == "deb":
            assert isinstance(spec.source, DebFilesSource)
            return self._fetch_debs(spec.source)
        if spec.source.kind == "rpm":
            assert isinstance(spec.source, RpmSource)
            return self._fetch_rpm(spec.source, spec.arch)
        if spec.source.kind == "local":
            assert isinstance(spec.source, LocalSource)
            return self._use_local(spec.source)
        raise FetchError(f"kernel {spec.name}: no installer for source {spec.source.kind}")

    def resolve_debian(self, source: DebianSource, arch: str = "x86_64") -> list[ResolvedPackage]:
        """The packages to fetch; with several suites, from the one whose match is the
        newest (or oldest) of all."""
        mirror = debian_mirror(source.mirror or self.mirror)
        found: list[list[ResolvedPackage]] = []
        misses = []
        for suite in source.suites:
            self.progress(f"reading the {suite} index")
            index = load_suite_index(mirror, suite, self.cache, self.index_max_age, arch)
            try:
                found.append(resolve_kernel(index, source.package, source.pick))
            except FetchError as exc:
                misses.append(str(exc))
        if not found:
            raise FetchError("; ".join(misses))
        ordered = sorted(found, key=lambda packages: Version(packages[0].version))
        return ordered[0] if source.pick == "oldest" else ordered[-1]

    def _ready(
        self, final: Path, packages: Callable[[], list[tuple[Path, dict[str, Any]]]]
    ) -> KernelTree:
        """The installed tree at ``final`` if it is whole; else (never installed, or a file
        changed on disk since extraction) extracted anew, never booted damaged."""
        repaired: tuple[str, ...] = ()
        if final.exists():
            why = tree_damage(final)
            if why is None:
                return load_installed(final)
            self.progress(f"the cached tree is damaged ({why}): extracting it again")
            repaired = (f"re-extracted: the cached tree was damaged ({why})",)
        tree = _install(packages(), final)
        return replace(tree, notes=repaired)

    def _fetch_debian(self, source: DebianSource, arch: str) -> KernelTree:
        resolved = self.resolve_debian(source, arch)
        head = resolved[0]
        final = self.cache / "kernels" / f"{head.name}_{head.version}_{_tree_key(resolved)}"

        def packages() -> list[tuple[Path, dict[str, Any]]]:
            debs = []
            for pkg in resolved:
                deb = self.cache / "debs" / f"{pkg.name}_{pkg.version}_{DEBIAN_ARCH[arch]}.deb"
                self.progress(f"downloading {pkg.name} {pkg.version} ({pkg.size >> 20} MiB)")
                download(pkg.url, deb, sha256=pkg.sha256)
                debs.append((deb, pkg.to_json()))
            self.progress("extracting")
            return debs

        tree = self._ready(final, packages)
        # What this run resolved (its index's signature and freshness), not what the run
        # that extracted the tree once saw.
        return replace(tree, packages=tuple(p.to_json() for p in resolved))

    def _fetch_rpm(self, source: RpmSource, arch: str) -> KernelTree:
        self.progress(f"reading {source.repo}repodata")
        resolved, metadata = resolve_rpm(source, arch, self.cache)
        head = resolved[0]
        final = self.cache / "kernels" / f"{head.nevra}_{_tree_key(resolved)}"
        records = [{**p.to_json(), "signature": "verified", "repomd": metadata} for p in resolved]

        # Downloaded (or found in the cache) and their signatures checked on every run, cached
        # tree or not: the record says what this run verified.
        paths = fetch_rpms(resolved, source, self.cache, self.progress)
        tree = self._ready(final, lambda: list(zip(paths, records, strict=True)))
        return replace(tree, packages=tuple(records))

    def _fetch_debs(self, source: DebFilesSource) -> KernelTree:
        debs = []
        for path in source.files:
            if not path.exists():
                raise FetchError(f"{path}: no such file")
            debs.append((path, {"file": str(path), "sha256": sha256_of(path)}))
        key = "-".join(str(r["sha256"])[:12] for _, r in debs)
        final = self.cache / "kernels" / f"local-debs_{key}"
        return self._ready(final, lambda: debs)

    def _use_local(self, source: LocalSource) -> KernelTree:
        for p in (source.vmlinuz, source.modules):
            if not p.exists():
                raise FetchError(f"{p}: no such file or directory")
        record = {"file": str(source.vmlinuz), "sha256": sha256_of(source.vmlinuz)}
        return KernelTree(
            vmlinuz=source.vmlinuz,
            modules=source.modules,
            config=source.config,
            release=source.modules.name,
            packages=(record,),
        )
