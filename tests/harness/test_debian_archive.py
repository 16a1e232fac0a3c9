"""Resolving a kernel package: the newest match, and sid's split packages followed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.errors import FetchError
from harness.fetch.archive import SuiteIndex, resolve_kernel


def stanza(name: str, version: str, depends: str = "") -> dict[str, str]:
    return {
        "Package": name,
        "Version": version,
        "Depends": depends,
        "SHA256": "ab" * 32,
        "Size": "1000",
        "Filename": f"pool/main/l/{name}_{version}_amd64.deb",
    }


def index(*stanzas: dict[str, str]) -> SuiteIndex:
    return SuiteIndex.from_stanzas("sid", "http://m.example/debian", list(stanzas))


def test_newest_match_by_debian_version() -> None:
    idx = index(
        stanza("linux-image-6.12.94+deb13-cloud-amd64", "6.12.94-1"),
        stanza("linux-image-6.12.107+deb13-cloud-amd64", "6.12.107-1"),
        stanza("linux-image-6.12.107+deb13-cloud-amd64-dbg", "6.12.107-1"),
    )
    (pkg,) = resolve_kernel(idx, "linux-image-6.12.*-cloud-amd64")
    assert pkg.name == "linux-image-6.12.107+deb13-cloud-amd64"
    assert (
        pkg.url == "http://m.example/debian/pool/main/l/"
        "linux-image-6.12.107+deb13-cloud-amd64_6.12.107-1_amd64.deb"
    )


def test_split_image_follows_binary_and_modules() -> None:
    deps = (
        "initramfs-tools | linux-initramfs-tool, linux-binary-7.2.13+deb14-cloud-amd64 "
        "(= 7.2.13-1), linux-modules-7.2.13+deb14-cloud-amd64 (= 7.2.13-1)"
    )
    idx = index(
        stanza("linux-image-7.2.13+deb14-cloud-amd64", "7.2.13-1", deps),
        stanza("linux-image-cloud-amd64", "7.2.13-1"),
        stanza("linux-binary-7.2.13+deb14-cloud-amd64", "7.2.13-1"),
        stanza("linux-modules-7.2.13+deb14-cloud-amd64", "7.2.13-1"),
    )
    names = [p.name for p in resolve_kernel(idx, "linux-image-[0-9]*-cloud-amd64")]
    assert names == [
        "linux-image-7.2.13+deb14-cloud-amd64",
        "linux-binary-7.2.13+deb14-cloud-amd64",
        "linux-modules-7.2.13+deb14-cloud-amd64",
    ]


def test_no_match_is_a_clear_error() -> None:
    with pytest.raises(FetchError, match="no package matching"):
        resolve_kernel(index(), "linux-image-*")


def test_no_match_names_the_architecture() -> None:
    arm64 = replace(index(stanza("linux-image-6.1.0-40-cloud-arm64", "6.1.153-1")), arch="arm64")
    with pytest.raises(FetchError) as caught:
        resolve_kernel(arm64, "linux-image-6.1.0-*-cloud-amd64")
    assert str(caught.value) == (
        "no package matching 'linux-image-6.1.0-*-cloud-amd64' in sid for arm64 "
        "(http://m.example/debian); the glob names amd64, the kernel's arch is arm64"
    )
