"""The private virtiofsd runs wherever its cache is: moved, or copied under another path (a
CI cache is restored wherever the runner puts it), its wrapper still finds its loader, its
libraries and its binary.

The private copy is made by the harness's own code from a trixie archive served on
127.0.0.1. Its packages stand in for Debian's: "virtiofsd" is a small C program that answers
--version as the Rust virtiofsd does, "libc6" the host's own loader and libc, so that the
wrapper runs the stand-in through a loader of the copy, as it runs the real one.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakearchive import build_deb, publish, serve

from harness.errors import FetchError
from harness.fetch import archive
from harness.host.virtiofsd import PRIVATE_SUITE, Virtiofsd, _private_copy

VERSION = "1.99.0"
MULTIARCH = "usr/lib/x86_64-linux-gnu"
STAND_IN = f'#include <stdio.h>\nint main(void) {{ puts("virtiofsd {VERSION}"); return 0; }}\n'


def host_library(name: str) -> Path:
    for where in ("/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        if (Path(where) / name).exists():
            return (Path(where) / name).resolve()
    pytest.skip(f"no {name} on this host")


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if platform.machine() != "x86_64" or not shutil.which("cc"):
        pytest.skip("the stand-in virtiofsd is built with cc, for x86_64")
    build = tmp_path / "build"
    build.mkdir()
    (build / "virtiofsd.c").write_text(STAND_IN)
    subprocess.run(
        ["cc", "-o", str(build / "virtiofsd"), str(build / "virtiofsd.c")],
        check=True,
        capture_output=True,
    )
    debs = [
        build_deb(
            build,
            "virtiofsd",
            f"{VERSION}-1",
            {"usr/libexec/virtiofsd": build / "virtiofsd"},
            depends="libc6 (>= 2.34)",
        ),
        build_deb(
            build,
            "libc6",
            "2.99-1",
            {
                f"{MULTIARCH}/ld-linux-x86-64.so.2": host_library("ld-linux-x86-64.so.2"),
                f"{MULTIARCH}/libc.so.6": host_library("libc.so.6"),
            },
        ),
    ]
    publish(tmp_path / "archive", PRIVATE_SUITE, debs)
    monkeypatch.delenv("MOUNTCOMPAT_DEBIAN_MIRROR", raising=False)
    monkeypatch.setenv("MOUNTCOMPAT_ARCHIVE_KEYRING", str(tmp_path / "no-keyring.gpg"))
    archive._LOADED.clear()
    with serve(tmp_path / "archive") as url:
        yield url
    archive._LOADED.clear()


def version_of(wrapper: Path) -> str:
    done = subprocess.run(
        [str(wrapper), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"{wrapper}: {done.stderr.strip()}"
    return done.stdout.strip()


def private_copy(cache: Path, url: str) -> tuple[Virtiofsd, list[str]]:
    said: list[str] = []
    archive._LOADED.clear()  # a new run
    return _private_copy(cache, url, said.append), said


def test_the_private_virtiofsd_runs_from_a_moved_or_copied_cache(
    tmp_path: Path, mirror: str
) -> None:
    first, said = private_copy(tmp_path / "cache", mirror)
    assert first.version == VERSION and any("fetching a private virtiofsd" in s for s in said)
    assert str(tmp_path) not in first.path.read_text(), "the wrapper names where the cache was"
    moved = tmp_path / "elsewhere" / "cache"
    moved.parent.mkdir()
    os.rename(tmp_path / "cache", moved)
    wrapper = moved / first.path.relative_to(tmp_path / "cache")
    assert version_of(wrapper) == f"virtiofsd {VERSION}"
    copied = tmp_path / "restored" / "cache"
    shutil.copytree(moved, copied, symlinks=True)
    shutil.rmtree(moved)
    assert version_of(copied / first.path.relative_to(tmp_path / "cache")) == (
        f"virtiofsd {VERSION}"
    )
    # And the harness takes the copy where it now is, fetching nothing.
    again, said = private_copy(copied, mirror)
    assert again.path == copied / first.path.relative_to(tmp_path / "cache")
    assert again.version == VERSION and not any("fetching" in s for s in said)


OLD_WRAPPER = """#!/bin/sh
# virtiofsd from Debian trixie ({version}), run by its own libc's loader: see harness/virtiofsd.py
lib="{root}/usr/lib/x86_64-linux-gnu"
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "{root}/usr/libexec/virtiofsd" "$@"
"""


def test_an_older_wrapper_in_a_moved_cache_is_written_anew_without_a_download(
    tmp_path: Path, mirror: str
) -> None:
    """A cache filled by an older harness, whose wrapper names the cache's absolute path,
    then restored elsewhere without its packages, and the mirror gone: the wrapper is written
    anew, and nothing fetched or extracted again."""
    first, _ = private_copy(tmp_path / "cache", mirror)
    copy = first.path.parents[1]
    first.path.write_text(OLD_WRAPPER.format(version=f"{VERSION}-1", root=copy))
    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "cache", moved)
    shutil.rmtree(moved / "debs")  # nothing to extract it from again,
    shutil.rmtree(tmp_path / "archive")  # and the mirror has nothing more to give
    try:
        again, said = private_copy(moved, mirror)
    except FetchError as exc:
        raise AssertionError(f"fetched the private virtiofsd again: {exc}") from None
    assert again.path == moved / first.path.relative_to(tmp_path / "cache")
    assert again.version == VERSION and not any("fetching" in s for s in said)
    assert str(copy) not in again.path.read_text()
