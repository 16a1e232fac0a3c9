"""Unpacking a package's payload into the cache: only what lands inside the tree."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path


def inside(name: str) -> bool:
    normal = os.path.normpath(name)
    return not (os.path.isabs(normal) or normal == ".." or normal.startswith("../"))


def safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members that land inside the tree: no absolute or climbing names, no device
    nodes, no links that point outside. Kernel packages carry symlinks such as
    lib/modules/<rel>/build pointing into /usr/src; they are of no use to a guest and are
    left out. Done by hand rather than with tarfile's "data" filter, which Python 3.11.2 (a
    stock Debian 12) does not have."""
    for member in tar:
        if not inside(member.name) or member.isdev():
            continue
        if member.issym() and not inside(
            os.path.join(os.path.dirname(member.name), member.linkname)
        ):
            continue
        if member.islnk() and not inside(member.linkname):
            continue
        member.mode &= 0o755  # no set-id bits from a package into the cache
        yield member


def extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """``tar``'s safe members extracted into ``dest``."""
    # The members are filtered above; Pythons that know extraction filters would warn (and,
    # from 3.14, filter once more) without being told that.
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    tar.extractall(dest, members=safe_members(tar), **trusted)  # type: ignore[arg-type]
