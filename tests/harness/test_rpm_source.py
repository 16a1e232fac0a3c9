"""The rpm source against a real signed yum repository built here (rpmbuild, rpmsign,
createrepo_c) and served on 127.0.0.1: resolved, verified, extracted into the tree virtme-ng
boots; and each fault gives one line and no tree."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rpmrepo import RpmRepo, build_repo, kernel_files, make_key, serve

from harness.config import KernelSpec, RpmSource, load_config
from harness.errors import FetchError
from harness.fetch.download import TRANSFERS
from harness.fetch.kernels import Fetcher
from harness.fetch.rpm import rpm_sorted
from harness.run.cli import kernels_json

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpmbuild", "rpmsign", "createrepo_c", "rpm2archive")),
    reason="the RPM tools are not installed (python -m harness.host.prep --for tests)",
)

VMLINUZ = b"MZ fake vmlinuz " * 512
MODULES = {
    "fs/fuse/virtiofs.ko.xz": lzma.compress(b"virtiofs module"),
    "fs/overlayfs/overlay.ko.xz": lzma.compress(b"overlay module"),
}


Keys = tuple[Path, Path, Path, Path]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """(gnupghome, key) of the distribution and of somebody else."""
    ours = make_key(tmp_path_factory.mktemp("ours"))
    theirs = make_key(tmp_path_factory.mktemp("theirs"), "someone else")
    return (*ours, *theirs)


def repo(tmp_path: Path, keys: Keys, **kwargs: Any) -> RpmRepo:
    home, key = keys[0], keys[1]
    files = kernel_files(VMLINUZ, MODULES)
    return build_repo(tmp_path / "repo", files, gnupghome=home, key=key, **kwargs)


def spec(url: str, key: Path, **kwargs: str) -> KernelSpec:
    return KernelSpec(name="el9", note="", source=RpmSource(repo=url, key=key, **kwargs))


def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(cache=tmp_path / "cache")


def test_a_signed_repository_gives_the_tree_virtme_ng_boots(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, payload="zstd")
    with serve(built.root) as url:
        tree = fetcher(tmp_path).fetch(spec(url, built.key))
    assert tree.release == built.kernel_release
    assert tree.vmlinuz.read_bytes() == VMLINUZ
    assert tree.vmlinuz == tree.modules / "vmlinuz"
    for rel, data in MODULES.items():
        assert (tree.modules / "kernel" / rel).read_bytes() == data
    nevras = [p["nevra"] for p in tree.packages]
    assert nevras == [
        f"{name}-{built.version}-{built.release}.x86_64"
        for name in ("kernel-core", "kernel-modules-core", "kernel-modules")
    ]
    assert all(p["signature"] == "verified" and p["repomd"] == "signed" for p in tree.packages)


def test_a_repository_that_signs_no_metadata_is_recorded_so(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, sign_metadata=False)
    with serve(built.root) as url:
        tree = fetcher(tmp_path).fetch(spec(url, built.key))
    assert {p["repomd"] for p in tree.packages} == {"unsigned"}


def fails(tmp_path: Path, url: str, key: Path, **kwargs: str) -> str:
    with pytest.raises(FetchError) as caught:
        fetcher(tmp_path).fetch(spec(url, key, **kwargs))
    kernels = tmp_path / "cache" / "kernels"
    assert not kernels.exists() or not any(kernels.iterdir()), "a tree was installed"
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_package_signed_by_another_key_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, sign_metadata=False)
    with serve(built.root) as url:
        message = fails(tmp_path, url, keys[3])
    assert "kernel-core" in message and "signature does not verify" in message


def test_an_unsigned_package_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, sign=False, sign_metadata=False)
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "signature does not verify" in message


def test_metadata_signed_by_another_key_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys)
    other = build_repo(tmp_path / "other", kernel_files(b"x", {}), gnupghome=keys[2], key=keys[3])
    shutil.copy(other.root / "repodata/repomd.xml.asc", built.root / "repodata/repomd.xml.asc")
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "repomd.xml: its signature does not verify" in message


def test_a_wrong_checksum_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, sign_metadata=False)
    rpm = built.packages["kernel-modules"]
    data = bytearray(rpm.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes: the index's SHA256 no longer holds
    rpm.write_bytes(bytes(data))
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "kernel-modules" in message and "SHA256" in message


def test_a_truncated_rpm_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys, sign_metadata=False)
    rpm = built.packages["kernel-core"]
    rpm.write_bytes(rpm.read_bytes()[:2000])
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "kernel-core" in message and "SHA256" in message


def test_no_matching_package_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys)
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key, version="4.18.0-*")
    assert message.startswith("no package kernel-core 4.18.0-* for x86_64 in " + url)


def test_an_unreachable_repository_boots_nothing(tmp_path: Path, keys: Keys) -> None:
    message = fails(tmp_path, "http://127.0.0.1:9/el9/", keys[1])
    assert "cannot download http://127.0.0.1:9/el9/repodata/repomd.xml" in message


def recompress_primary_with_zstd(root: Path) -> None:
    """Debian's createrepo_c 0.17 writes no zstd; Fedora's does. The primary index is
    recompressed, and repomd.xml made to name it by its new SHA256."""
    repomd = root / "repodata" / "repomd.xml"
    (gz,) = (root / "repodata").glob("*primary.xml.gz")
    zst = gz.with_name("primary.xml.zst")
    subprocess.run(
        ["zstd", "-q", "-o", str(zst)], input=gzip.decompress(gz.read_bytes()), check=True
    )
    text = repomd.read_text()
    old = hashlib.sha256(gz.read_bytes()).hexdigest()
    new = hashlib.sha256(zst.read_bytes()).hexdigest()
    text = text.replace(f"repodata/{gz.name}", "repodata/primary.xml.zst").replace(old, new)
    repomd.write_text(text)
    gz.unlink()


@pytest.mark.parametrize("metadata", ["xz", "bz2", "zstd"])
def test_indexes_in_each_compression_are_read(tmp_path: Path, keys: Keys, metadata: str) -> None:
    if metadata == "zstd":
        built = repo(tmp_path, keys, sign_metadata=False)
        recompress_primary_with_zstd(built.root)
    else:
        built = repo(tmp_path, keys, metadata=metadata)
    assert list((built.root / "repodata").glob(f"*primary.xml.{metadata[:3]}*"))
    with serve(built.root) as url:
        tree = fetcher(tmp_path).fetch(spec(url, built.key))
    assert tree.release == built.kernel_release


@pytest.mark.parametrize(("pick", "release"), [("newest", "503.el9"), ("oldest", "70.el9")])
def test_pick_follows_rpm_order_and_modules_follow_the_kernel(
    tmp_path: Path, keys: Keys, pick: str, release: str
) -> None:
    """Two versions in one repository, ordered so that text order would pick the other one
    (70 > 503 as text); the modules packages come from the chosen version, never the other."""
    for rel in ("70.el9", "503.el9"):
        built = repo(tmp_path, keys, release=rel)
    with serve(built.root) as url:
        tree = fetcher(tmp_path).fetch(spec(url, built.key, pick=pick))
    assert tree.release == f"5.14.0-{release}.x86_64"
    assert {p["version"] for p in tree.packages} == {f"5.14.0-{release}"}
    assert len(tree.packages) == 3


def test_versions_are_ordered_as_rpm_orders_them() -> None:
    evrs = ["5.14.0-70.el9", "5.14.0-503.el9", "5.14.0-162.6.1.el9", "5.14.0-9.el9"]
    assert rpm_sorted(evrs) == [
        "5.14.0-9.el9",
        "5.14.0-70.el9",
        "5.14.0-162.6.1.el9",
        "5.14.0-503.el9",
    ]


def test_a_second_fetch_downloads_only_the_metadata(tmp_path: Path, keys: Keys) -> None:
    built = repo(tmp_path, keys)
    with serve(built.root) as url:
        first = fetcher(tmp_path).fetch(spec(url, built.key))
        before = TRANSFERS.files
        second = fetcher(tmp_path).fetch(spec(url, built.key))
        fetched = TRANSFERS.files - before
    assert second.vmlinuz == first.vmlinuz
    assert fetched == 3  # repomd.xml, repomd.xml.asc, the primary index: no RPM again
    assert all(p["signature"] == "verified" for p in second.packages)


def test_the_plan_lists_the_nevras_and_a_cache_key_made_of_them(tmp_path: Path, keys: Keys) -> None:
    """What the workflow's plan job reads: the packages a kernel resolves to today, and a key
    that changes when a new kernel is published, so that its job's cache is the new one's."""
    built = repo(tmp_path, keys, release="70.el9")

    def plan() -> dict[str, Any]:
        config = tmp_path / "kernels.yaml"
        config.write_text(
            "kernels:\n  - name: el9\n    note: n\n    source:\n"
            f"      rpm: {{repo: '{url}', key: '{built.key}'}}\n"
        )
        (entry,) = json.loads(kernels_json(load_config(config), [], tmp_path / "c", True))
        return dict(entry)

    with serve(built.root) as url:
        first = plan()
        assert [p["nevra"] for p in first["packages"]] == [
            f"{n}-5.14.0-70.el9.x86_64"
            for n in ("kernel-core", "kernel-modules-core", "kernel-modules")
        ]
        assert first["cache_key"].startswith("x86_64-") and first == plan()
        repo(tmp_path, keys, release="503.el9")  # a new kernel is published
        second = plan()
    assert second["packages"][0]["nevra"] == "kernel-core-5.14.0-503.el9.x86_64"
    assert second["cache_key"] != first["cache_key"]
