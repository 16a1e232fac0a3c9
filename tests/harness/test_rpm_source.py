"""The rpm source against a real signed yum repository built here (rpmbuild, rpmsign,
createrepo_c) and served on 127.0.0.1: resolved, verified, extracted into the tree virtme-ng
boots; and each fault gives one line and no tree."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest
from rpmrepo import RpmRepo, build_repo, kernel_files, make_key, serve

from harness.config import KernelSpec, RpmSource
from harness.errors import FetchError
from harness.fetch.kernels import Fetcher
from harness.fetch.rpm import rpm_sorted

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpmbuild", "rpmsign", "createrepo_c", "rpm2archive")),
    reason="the RPM tools are not installed (python -m harness.host.prep --for tests)",
)

VMLINUZ = b"MZ fake vmlinuz " * 512
MODULES = {
    "fs/fuse/virtiofs.ko.xz": lzma.compress(b"virtiofs module"),
    "fs/overlayfs/overlay.ko.xz": lzma.compress(b"overlay module"),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(gnupghome, key) of the distribution and of somebody else."""
    ours = make_key(tmp_path_factory.mktemp("ours"))
    theirs = make_key(tmp_path_factory.mktemp("theirs"), "someone else")
    return (*ours, *theirs)


def repo(tmp_path: Path, keys: tuple[Path, Path, Path, Path], **kwargs: object) -> RpmRepo:
    home, key = keys[0], keys[1]
    files = kernel_files(VMLINUZ, MODULES)
    return build_repo(tmp_path / "repo", files, gnupghome=home, key=key, **kwargs)  # type: ignore[arg-type]


def spec(url: str, key: Path, **kwargs: str) -> KernelSpec:
    return KernelSpec(name="el9", note="", source=RpmSource(repo=url, key=key, **kwargs))


def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(cache=tmp_path / "cache")


def test_a_signed_repository_gives_the_tree_virtme_ng_boots(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
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


def test_a_repository_that_signs_no_metadata_is_recorded_so(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
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


def test_a_package_signed_by_another_key_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys, sign_metadata=False)
    with serve(built.root) as url:
        message = fails(tmp_path, url, keys[3])
    assert "kernel-core" in message and "signature does not verify" in message


def test_an_unsigned_package_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys, sign=False, sign_metadata=False)
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "signature does not verify" in message


def test_metadata_signed_by_another_key_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys)
    other = build_repo(tmp_path / "other", kernel_files(b"x", {}), gnupghome=keys[2], key=keys[3])
    shutil.copy(other.root / "repodata/repomd.xml.asc", built.root / "repodata/repomd.xml.asc")
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "repomd.xml: its signature does not verify" in message


def test_a_wrong_checksum_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys, sign_metadata=False)
    rpm = built.packages["kernel-modules"]
    data = bytearray(rpm.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes: the index's SHA256 no longer holds
    rpm.write_bytes(bytes(data))
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "kernel-modules" in message and "SHA256" in message.upper()


def test_a_truncated_rpm_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys, sign_metadata=False)
    rpm = built.packages["kernel-core"]
    rpm.write_bytes(rpm.read_bytes()[:2000])
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key)
    assert "kernel-core" in message


def test_no_matching_package_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    built = repo(tmp_path, keys)
    with serve(built.root) as url:
        message = fails(tmp_path, url, built.key, version="4.18.0-*")
    assert message.startswith("no package kernel-core 4.18.0-* for x86_64 in " + url)


def test_an_unreachable_repository_boots_nothing(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    message = fails(tmp_path, "http://127.0.0.1:9/el9/", keys[1])
    assert "cannot download http://127.0.0.1:9/el9/repodata/repomd.xml" in message


def test_versions_are_ordered_as_rpm_orders_them() -> None:
    evrs = ["5.14.0-70.el9", "5.14.0-503.el9", "5.14.0-162.6.1.el9", "5.14.0-9.el9"]
    assert rpm_sorted(evrs) == [
        "5.14.0-9.el9",
        "5.14.0-70.el9",
        "5.14.0-162.6.1.el9",
        "5.14.0-503.el9",
    ]
