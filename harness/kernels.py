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
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import DebFilesSource, DebianSource, KernelSpec, LocalSource
from harness.debian_archive import ResolvedPackage, load_suite_index, resolve_kernel
from harness.download import download, sha256_of
from harness.errors import FetchError
from harness.mirror import debian_mirror

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelTree:
    """A kernel ready to boot: the image, its modules, its config, and where they came from."""

    vmlinuz: Path
    modules: Path
    config: Path | None
    release: str
    packages: tuple[dict[str, Any], ...] = ()

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


def _skip_outside_links(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    # Kernel packages carry symlinks such as lib/modules/<rel>/build pointing into /usr/src,
    # outside the tree; they are of no use to a guest and the "data" filter rightly refuses
    # them. Links that stay inside the tree are kept.
    if member.issym() and member.linkname.startswith("/"):
        return None
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.LinkOutsideDestinationError:
        return None


def extract_deb(deb: Path, dest: Path) -> dict[str, str]:
    """Unpack a .deb's data into ``dest``; return its control fields."""
    from debian.debfile import DebFile

    try:
        package = DebFile(str(deb))
        control = dict(package.debcontrol())
        package.data.tgz().extractall(dest, filter=_skip_outside_links)
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise FetchError(f"cannot extract {deb}: {exc}") from exc
    return control


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
        (tmp / "provenance.json").write_text(
            json.dumps({"release": release, "packages": records, **rel}, indent=2)
        )
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_installed(final)


def load_installed(final: Path) -> KernelTree:
    data = json.loads((final / "provenance.json").read_text())
    return KernelTree(
        vmlinuz=final / data["vmlinuz"],
        modules=final / data["modules"],
        config=final / data["config"] if data["config"] else None,
        release=data["release"],
        packages=tuple(data["packages"]),
    )


@dataclass
class Fetcher:
    """Resolves and fetches kernels into one cache directory."""

    cache: Path
    mirror: str | None = None
    index_max_age: float = 24 * 3600.0
    progress: Progress = lambda message: None

    def fetch(self, spec: KernelSpec) -> KernelTree:
        """One installer per source kind (config.SOURCE_KINDS): a new kind, such as a RHEL
        kernel-core + kernel-modules RPM pair, is one more entry and one more method."""
        installers: dict[str, Callable[[Any], KernelTree]] = {
            "debian": self._fetch_debian,
            "deb": self._fetch_debs,
            "local": self._use_local,
        }
        installer = installers.get(spec.source.kind)
        if installer is None:
            raise FetchError(f"kernel {spec.name}: no installer for source {spec.source.kind}")
        return installer(spec.source)

    def resolve_debian(self, source: DebianSource) -> list[ResolvedPackage]:
        mirror = debian_mirror(source.mirror or self.mirror)
        self.progress(f"reading the {source.suite} index")
        index = load_suite_index(mirror, source.suite, self.cache, self.index_max_age)
        return resolve_kernel(index, source.package)

    def _fetch_debian(self, source: DebianSource) -> KernelTree:
        resolved = self.resolve_debian(source)
        head = resolved[0]
        key = hashlib.sha256(" ".join(p.sha256 for p in resolved).encode()).hexdigest()[:12]
        final = self.cache / "kernels" / f"{head.name}_{head.version}_{key}"
        if (final / "provenance.json").exists():
            return load_installed(final)
        debs = []
        for pkg in resolved:
            deb = self.cache / "debs" / f"{pkg.name}_{pkg.version}_{ARCH_SUFFIX}.deb"
            self.progress(f"downloading {pkg.name} {pkg.version} ({pkg.size >> 20} MiB)")
            download(pkg.url, deb, sha256=pkg.sha256)
            debs.append((deb, pkg.to_json()))
        self.progress("extracting")
        return _install(debs, final)

    def _fetch_debs(self, source: DebFilesSource) -> KernelTree:
        debs = []
        for path in source.files:
            if not path.exists():
                raise FetchError(f"{path}: no such file")
            debs.append((path, {"file": str(path), "sha256": sha256_of(path)}))
        key = "-".join(str(r["sha256"])[:12] for _, r in debs)
        final = self.cache / "kernels" / f"local-debs_{key}"
        if (final / "provenance.json").exists():
            return load_installed(final)
        self.progress("extracting local packages")
        return _install(debs, final)

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


ARCH_SUFFIX = "amd64"
