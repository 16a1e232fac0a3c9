"""Fixtures of the compatibility suites: backing filesystems, scratch mounts, images.

The whole pytest process already runs in a private mount namespace (mountcompat's pytest
plugin); fixtures here mount with mount(2) directly, so that what the suites set up never
depends on the library code they test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountcompat import _syscalls as sys_
from mountcompat.mounts import unmount
from mountcompat.mounttable import read_mountinfo
from mountcompat.testing.plugin import backing_kind, owned_dirs, register_paths
from suites.paths import PATHS


def pytest_configure(config: pytest.Config) -> None:
    register_paths(config, PATHS)


def fstype_of(path: Path) -> str:
    """The filesystem type of the deepest mount containing ``path``."""
    real = os.path.realpath(path)
    best = ("", "unknown")
    for entry in read_mountinfo():
        mp = entry.mountpoint
        inside = real == mp or real.startswith(mp.rstrip("/") + "/")
        if inside and len(mp) >= len(best[0]):
            best = (mp, entry.fstype)
    return best[1]


@pytest.fixture(scope="session")
def backing_roots(request: pytest.FixtureRequest) -> Iterator[dict[str, Path]]:
    """One directory per kind of backing filesystem, for the whole session."""
    # Named suites-*, not mountcompat-*: the fault tests count mountcompat-* as the
    # library's own leftovers, and a suites session starting beside them is not one.
    tmpfs = Path(tempfile.mkdtemp(prefix="suites-tmpfs."))
    sys_.mount("suites", tmpfs, "tmpfs", 0, "size=512m")
    scratch = Path(request.config.getoption("--mountcompat-scratch"))
    scratch.mkdir(parents=True, exist_ok=True)
    disk = Path(tempfile.mkdtemp(prefix="suites-disk.", dir=scratch))
    try:
        yield {"tmpfs": tmpfs, "disk": disk}
    finally:
        unmount(tmpfs)
        os.rmdir(tmpfs)
        shutil.rmtree(disk, ignore_errors=True)


def _owned(request: pytest.FixtureRequest, path: Path) -> None:
    request.node.stash[owned_dirs].append(str(path))


@pytest.fixture(params=["tmpfs", "disk"])
def backing(request: pytest.FixtureRequest, backing_roots: dict[str, Path]) -> Iterator[Path]:
    """A fresh directory on the backing filesystem under test; its type goes in the results."""
    root = backing_roots[request.param]
    path = Path(tempfile.mkdtemp(prefix="t.", dir=root))
    request.node.stash[backing_kind] = f"{request.param}:{fstype_of(path)}"
    _owned(request, path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(request: pytest.FixtureRequest, backing_roots: dict[str, Path]) -> Iterator[Path]:
    """A fresh directory on tmpfs, for mount points and trees whose backing does not matter."""
    path = Path(tempfile.mkdtemp(prefix="w.", dir=backing_roots["tmpfs"]))
    _owned(request, path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
