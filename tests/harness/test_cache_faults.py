"""A cache that rots and a mirror that goes away: damaged trees are extracted again, a cached
index with a bad signature is fetched again once, and with the network gone a run whose files
are all cached goes ahead on its stale index.

The mirror here is real data on a ``file://`` URL: the InRelease and Packages index of
Debian's bullseye, as the harness cached them (signed by Debian, checked with the host's
keyring), so nothing is mocked and nothing needs the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from guests import fetch_kernel

from harness.config import DebFilesSource, DebianSource, KernelSpec
from harness.errors import FetchError
from harness.fetch import archive
from harness.fetch.kernels import Fetcher, default_cache
from harness.fetch.mirror import debian_mirror

SUITE = "bullseye"
PATTERN = "linux-image-5.10.0-*-cloud-amd64"
UNREACHABLE = "http://127.0.0.1:9/debian"  # the discard port: nothing listens


def fake_kernel_deb(where: Path, release: str = "9.9.9-test", version: str = "9.9.9-1") -> Path:
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
        f"Package: linux-image-test\nVersion: {version}\nArchitecture: amd64\n"
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


RELEASE = "9.9.9-test"
VMLINUZ = f"boot/vmlinuz-{RELEASE}"
MODULE = f"lib/modules/{RELEASE}/kernel/loop.ko"


def edit_manifest(final: Path, change: Callable[[dict[str, str]], None]) -> None:
    manifest = json.loads((final / "manifest.json").read_text())
    change(manifest)
    (final / "manifest.json").write_text(json.dumps(manifest))


def manifest_without_module(final: Path) -> None:
    """The manifest forgets loop.ko, and loop.ko is cut short: nothing would judge it."""
    edit_manifest(final, lambda m: m.pop(MODULE))
    (final / "root" / MODULE).write_bytes(b"\0" * 100)


def manifest_with_a_file_not_in_the_tree(final: Path) -> None:
    edit_manifest(final, lambda m: m.update({f"boot/System.map-{RELEASE}": "0" * 64}))


def file_not_in_the_manifest(final: Path) -> None:
    (final / "root" / f"lib/modules/{RELEASE}/kernel/extra.ko").write_bytes(b"\0" * 100)


# Each is a real file damaged on disk, and what the one line about it must name.
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "vmlinuz cut to 1000 bytes, manifest {}": (
        lambda final: (
            (final / "root" / VMLINUZ).write_bytes((final / "root" / VMLINUZ).read_bytes()[:1000]),
            (final / "manifest.json").write_text("{}"),
        ),
        "manifest.json is not a list",
    ),
    "manifest []": (lambda final: (final / "manifest.json").write_text("[]"), "is not a list"),
    "manifest null": (lambda final: (final / "manifest.json").write_text("null"), "is not a list"),
    "manifest of strings": (
        lambda final: (final / "manifest.json").write_text(json.dumps({VMLINUZ: 5})),
        "no SHA256",
    ),
    "manifest missing a file of the tree": (manifest_without_module, "not in manifest.json"),
    "manifest naming a file the tree lacks": (manifest_with_a_file_not_in_the_tree, "missing"),
    "a file the manifest does not list": (file_not_in_the_manifest, "extra.ko"),
    "provenance.json garbage": (
        lambda final: (final / "provenance.json").write_bytes(b"\x00garbage{"),
        "provenance.json is not JSON",
    ),
    "provenance.json {}": (
        lambda final: (final / "provenance.json").write_text("{}"),
        "provenance.json has no release",
    ),
    "provenance.json null": (
        lambda final: (final / "provenance.json").write_text("null"),
        "provenance.json is not a JSON object",
    ),
    "provenance.json naming a vmlinuz outside the tree": (
        lambda final: (final / "provenance.json").write_text(
            json.dumps(
                {
                    **json.loads((final / "provenance.json").read_text()),
                    "vmlinuz": "root/../../../../bin/sh",
                }
            )
        ),
        "vmlinuz is not a path inside the tree",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_tree_whose_manifest_or_provenance_lies_is_extracted_again(
    tmp_path: Path, damage: str
) -> None:
    """The manifest and provenance.json are checked as much as the files they describe: one
    that is not a complete list of the tree's files with their hashes is damage, said in one
    line, and the tree is extracted again; never booted as it is, never a traceback."""
    spec = KernelSpec("k", "", DebFilesSource(files=(fake_kernel_deb(tmp_path, RELEASE),)))
    said: list[str] = []
    fetcher = Fetcher(cache=tmp_path / "cache", progress=said.append)
    tree = fetcher.fetch(spec)
    final = tree.vmlinuz.parents[2]
    whole = {rel: (final / "root" / rel).read_bytes() for rel in (VMLINUZ, MODULE)}
    harm, named = DAMAGE[damage]
    harm(final)
    said.clear()
    again = fetcher.fetch(spec)
    assert again.vmlinuz == tree.vmlinuz
    for rel, data in whole.items():
        assert (final / "root" / rel).read_bytes() == data, f"{rel} would have been booted damaged"
    assert not (final / "root" / f"lib/modules/{RELEASE}/kernel/extra.ko").exists()
    lines = [line for line in said if "damaged" in line]
    assert len(lines) == 1 and "\n" not in lines[0] and named in lines[0], said
    assert any("re-extracted" in note for note in again.notes)
    # And once extracted anew, the tree is whole: the next fetch takes it as it is.
    assert fetcher.fetch(spec).notes == ()


def test_what_depmod_adds_is_not_damage(tmp_path: Path) -> None:
    spec = KernelSpec("k", "", DebFilesSource(files=(fake_kernel_deb(tmp_path, RELEASE),)))
    fetcher = Fetcher(cache=tmp_path / "cache")
    final = fetcher.fetch(spec).vmlinuz.parents[2]
    for name in ("modules.dep", "modules.dep.bin", "modules.alias"):
        (final / "root" / f"lib/modules/{RELEASE}" / name).write_text("")
    assert fetcher.fetch(spec).notes == ()


def cached_index() -> Path:
    """bullseye's index in the cache: fetched here if no test did it before."""
    assert shutil.which("gpgv"), "the tests session installs gpgv"
    fetch_kernel()
    return archive.index_dir(default_cache(), debian_mirror(None), SUITE)


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


def fresh_cache(tmp_path: Path, mirror: str, inrelease: bytes) -> Path:
    """A cache holding ``inrelease`` as ``mirror``'s InRelease of bullseye."""
    cache = tmp_path / "cache"
    archive.index_dir(cache, mirror, SUITE).mkdir(parents=True)
    (archive.index_dir(cache, mirror, SUITE) / "InRelease").write_bytes(inrelease)
    archive._LOADED.clear()  # a new run: nothing parsed in this process yet
    return cache


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x20]) + data[middle + 1 :]


# Parses bullseye's whole Packages index (60,000 stanzas): 10 s alone, more beside
# other tests on two cores.
@pytest.mark.timeout(180)
def test_a_cached_index_with_a_bad_signature_is_fetched_again(tmp_path: Path) -> None:
    mirror = file_mirror(tmp_path)
    good = (mirror / "dists" / SUITE / "InRelease").read_bytes()
    cache = fresh_cache(tmp_path, mirror.as_uri(), corrupt(good))
    index = archive.load_suite_index(mirror.as_uri(), SUITE, cache)
    assert index.signature == "verified"
    assert (archive.index_dir(cache, mirror.as_uri(), SUITE) / "InRelease").read_bytes() == good
    assert archive.resolve_kernel(index, PATTERN)


def test_a_bad_signature_twice_says_what_to_do(tmp_path: Path) -> None:
    mirror = file_mirror(tmp_path)
    bad = corrupt((mirror / "dists" / SUITE / "InRelease").read_bytes())
    (mirror / "dists" / SUITE / "InRelease").write_bytes(bad)
    cache = fresh_cache(tmp_path, mirror.as_uri(), bad)
    with pytest.raises(FetchError) as caught:
        archive.load_suite_index(mirror.as_uri(), SUITE, cache)
    assert "bad signature" in str(caught.value) and "--refresh-index" in str(caught.value)


# Parses bullseye's whole Packages index (60,000 stanzas): 10 s alone, more beside
# other tests on two cores.
@pytest.mark.timeout(180)
def test_offline_a_stale_index_is_used_and_says_so(tmp_path: Path) -> None:
    """The mirror's own index, cached a week ago, and the mirror gone since."""
    mirror = file_mirror(tmp_path)
    cache = fresh_cache(
        tmp_path, UNREACHABLE, (mirror / "dists" / SUITE / "InRelease").read_bytes()
    )
    where = archive.index_dir(cache, UNREACHABLE, SUITE)
    packages = where / "binary-amd64" / "Packages.xz"
    packages.parent.mkdir(parents=True)
    shutil.copy(mirror / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz", packages)
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(where / "InRelease", (week_ago, week_ago))
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
    """The whole fetch, with the mirror gone: index, packages and tree all from the cache
    (the index as that mirror served it a week ago: the real one's, copied under its name)."""
    real = default_cache()
    spec = KernelSpec("k", "", DebianSource(SUITE, PATTERN, mirror=UNREACHABLE))
    source = cached_index()
    cache = tmp_path / "cache"
    where = archive.index_dir(cache, UNREACHABLE, SUITE)
    shutil.copytree(source, where)
    for shared in ("kernels", "debs"):
        (cache / shared).symlink_to(real / shared)
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(where / "InRelease", (week_ago, week_ago))
    archive._LOADED.clear()
    tree = Fetcher(cache=cache).fetch(spec)
    assert tree.vmlinuz.exists()
    assert all(p["index_stale"] for p in tree.packages)
