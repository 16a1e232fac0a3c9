"""Attributes no kernel takes as asked are refused before any strategy runs: otherwise a
probe asked with the same request fails alike, the strategy is judged missing, and a
fallback mounts without what was asked (an idmapped mount that is not idmapped)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mountcompat import (
    LOG,
    MountAttr,
    OverlaySpec,
    clone_tree,
    find_mount,
    mount_fs,
    mount_overlay,
    set_mount_attrs,
)
from mountcompat import _syscalls as sys_
from mountcompat.errors import InvalidAttributes
from mountcompat.mounts import unmount

WRONG = {
    "idmap": MountAttr.IDMAP,
    "two atime modes": MountAttr.NOATIME | MountAttr.STRICTATIME,
}


def calls(tmp: Path, attrs: MountAttr) -> dict[str, Callable[[], object]]:
    lower = tmp / "lower"
    lower.mkdir(exist_ok=True)
    return {
        "mount_fs": lambda: mount_fs("tmpfs", "x", tmp / "m", attrs=attrs),
        "mount_overlay": lambda: mount_overlay(OverlaySpec(lower=(lower, lower)), tmp / "m", attrs),
        "set_mount_attrs": lambda: set_mount_attrs(tmp / "m", attrs),
        "clone_tree": lambda: clone_tree(tmp / "m", attrs),
    }


@pytest.mark.parametrize("wrong", list(WRONG))
@pytest.mark.parametrize("call", ["mount_fs", "mount_overlay", "set_mount_attrs", "clone_tree"])
def test_refused_before_any_strategy(tmp_path: Path, wrong: str, call: str) -> None:
    (tmp_path / "m").mkdir()
    sys_.mount("base", tmp_path / "m", "tmpfs", 0)  # for the calls that change a mount
    try:
        before = find_mount(tmp_path / "m")
        since = LOG.mark()
        with pytest.raises(InvalidAttributes):
            calls(tmp_path, WRONG[wrong])[call]()
        assert LOG.since(since) == [], "a strategy ran"
        assert find_mount(tmp_path / "m") == before, "something was mounted or changed"
    finally:
        unmount(tmp_path / "m")
