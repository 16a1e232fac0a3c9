"""A cache that rots and a mirror that goes away: damaged trees are extracted again, a cached
index with a bad signature is fetched again once, and with the network gone a run whose files
are all cached goes ahead on its stale index.

The mirror here is real data on a ``file://`` URL: the InRelease and Packages index of
Debian's bullseye, as the harness cached them (signed by Debian, checked with the host's
keyring), so nothing is mocked and nothing needs the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from guests import fetch_kernel

from harness.config import DebFilesSource, DebianSource, KernelSpec
from harness.errors import FetchError
from harness.fetch import archive
from harness.fetch.kernels import Fetcher, default_cache

SUITE = "bullseye"
PATTERN = "linux-image-5.10.0-*-cloud-amd64"
UNREACHABLE = "http://127.0.0.1:9/debian"  # the discard port: nothing listens


def fake_kernel_deb(where: Path, release: str = "9.9.9-test") -> Path:
    """A small package laid out like Debian's kernel images (vmlinuz, modules, config)."""
    root = where / "pkg"
    modules = root / "lib" / "modules" / release / "kernel"
    modules.mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{release}").write_bytes(os.urandom(4096))
    (root / "boot" / f"config-{release}").write_text("CONFIG_EROFS_FS=m\n")
    (modules / "loop.ko").write_bytes(os.urandom(2048))
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-test\nVersion: 9.9.9-1\nArchitecture: amd64\n"
        "Maintainer: nobody <nobody@example.org>\nDescription: test kernel\n"
    )
    deb = where / "linux-image-test.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.parametrize(
    "victim", ["boot/vmlinuz-9.9.9-test", "lib/modules/9.9.9-test/kernel/loop.ko"]
)
def test_a_damaged_tree_is_extracted_again(tmp_path: Path, victim: str) -> None:
    deb = fake_kernel_deb(tmp_path)
    spec = KernelSpec("k", "", DebFilesSource(files=(deb,)))
    fetcher = Fetcher(cache=tmp_path / "cache")
    tree = fetcher.fetch(spec)
    damaged = tree.vmlinuz.parent.parent / victim
    good = damaged.read_bytes()
    damaged.write_bytes(good[:100])  # a disk that filled, a write cut short
    again = fetcher.fetch(spec)
    assert again.vmlinuz == tree.vmlinuz
    assert damaged.read_bytes() == good, "a damaged tree would have been booted"
    assert any("re-extracted" in note for note in again.notes)


def cached_index() -> Path:
    """bullseye's index in the cache: fetched here if no test did it before."""
    assert shutil.which("gpgv"), "the tests session installs gpgv"
    fetch_kernel()
    return default_cache() / "indexes" / SUITE


def file_mirror(tmp_path: Path) -> Path:
    """A mirror on disk with bullseye's real, signed index files."""
    source = cached_index()
    mirror = tmp_path / "mirror"
    dists = mirror / "dists" / SUITE
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    shutil.copy(source / "InRelease", dists / "InRelease")
    packages = source / "binary-amd64" / "Packages.xz"
    if not packages.exists():
        packages = source / "Packages.xz"
    shutil.copy(packages, dists / "main" / "binary-amd64" / "Packages.xz")
    return mirror


def fresh_cache(tmp_path: Path, inrelease: bytes) -> Path:
    cache = tmp_path / "cache"
    (cache / "indexes" / SUITE).mkdir(parents=True)
    (cache / "indexes" / SUITE / "InRelease").write_bytes(inrelease)
    archive._LOADED.clear()  # a new run: nothing parsed in this process yet
    return cache


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x20]) + data[middle + 1 :]


def test_a_cached_index_with_a_bad_signature_is_fetched_again(tmp_path: Path) -> None:
    mirror = file_mirror(tmp_path)
    good = (mirror / "dists" / SUITE / "InRelease").read_bytes()
    cache = fresh_cache(tmp_path, corrupt(good))
    index = archive.load_suite_index(mirror.as_uri(), SUITE, cache)
    assert index.signature == "verified"
    assert (cache / "indexes" / SUITE / "InRelease").read_bytes() == good
    assert archive.resolve_kernel(index, PATTERN)


def test_a_bad_signature_twice_says_what_to_do(tmp_path: Path) -> None:
    mirror = file_mirror(tmp_path)
    bad = corrupt((mirror / "dists" / SUITE / "InRelease").read_bytes())
    (mirror / "dists" / SUITE / "InRelease").write_bytes(bad)
    cache = fresh_cache(tmp_path, bad)
    with pytest.raises(FetchError) as caught:
        archive.load_suite_index(mirror.as_uri(), SUITE, cache)
    assert "bad signature" in str(caught.value) and "--refresh-index" in str(caught.value)


def test_offline_a_stale_index_is_used_and_says_so(tmp_path: Path) -> None:
    mirror = file_mirror(tmp_path)
    cache = fresh_cache(tmp_path, (mirror / "dists" / SUITE / "InRelease").read_bytes())
    packages = cache / "indexes" / SUITE / "binary-amd64" / "Packages.xz"
    packages.parent.mkdir(parents=True)
    shutil.copy(mirror / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz", packages)
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(cache / "indexes" / SUITE / "InRelease", (week_ago, week_ago))
    index = archive.load_suite_index(UNREACHABLE, SUITE, cache)
    assert index.stale and index.signature == "verified"
    (image, *_) = archive.resolve_kernel(index, PATTERN)
    assert image.index_stale


def test_offline_with_nothing_cached_is_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    archive._LOADED.clear()
    with pytest.raises(FetchError, match="cannot download"):
        archive.load_suite_index(UNREACHABLE, SUITE, cache)


def test_offline_a_fully_cached_kernel_is_fetched(tmp_path: Path) -> None:
    """The whole fetch, with the mirror gone: index, packages and tree all from the cache."""
    real = default_cache()
    spec = KernelSpec("k", "", DebianSource(SUITE, PATTERN, mirror=UNREACHABLE))
    cached_index()
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(real / "indexes" / SUITE, cache / "indexes" / SUITE)
    for shared in ("kernels", "debs"):
        (cache / shared).symlink_to(real / shared)
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(cache / "indexes" / SUITE / "InRelease", (week_ago, week_ago))
    archive._LOADED.clear()
    tree = Fetcher(cache=cache).fetch(spec)
    assert tree.vmlinuz.exists()
    assert all(p["index_stale"] for p in tree.packages)
