"""The remount strategy changes a tree mount by mount, with no atomicity from the kernel: when
one remount fails, the mounts already changed get their earlier attributes back, and the error
says what was restored, or exactly which mounts stay changed. The failure midway is injected
(a real remount cannot be made to fail on demand here); every other call is the kernel's."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.attrs import set_mount_attrs
from mountcompat.mounts import MountAttr
from mountcompat.mounttable import mount_at, read_mountinfo


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[list[Path]]:
    """tmpfs on tmp_path/t, and two more below it, a and b: mounted with mount(2) directly."""
    top = tmp_path / "t"
    top.mkdir()
    sys_.mount("mc-top", top, "tmpfs", 0, "size=1m")
    subs = [top / "a", top / "b"]
    for sub in subs:
        sub.mkdir()
        sys_.mount(f"mc-{sub.name}", sub, "tmpfs", C.MS_NOSUID, "size=1m")
    try:
        yield [top, *subs]
    finally:
        sys_.umount2(top, C.MNT_DETACH)


def failing_remounts(monkeypatch: pytest.MonkeyPatch, fail: dict[str, int]) -> None:
    """mount(2) remounts of the paths named fail with EPERM, as many times as given."""
    real = sys_.mount

    def mount(source: Any, target: Any, fstype: Any, flags: int, data: Any = None) -> None:
        name = Path(target).name
        if flags & C.MS_REMOUNT and fail.get(name, 0) > 0:
            fail[name] -= 1
            raise sys_.raise_errno(errno.EPERM, "mount", (target, "injected"))
        real(source, target, fstype, flags, data)

    monkeypatch.setattr(sys_, "mount", mount)


def attrs_of(path: Path) -> MountAttr:
    entry = mount_at(read_mountinfo(), str(path))
    assert entry is not None
    return entry.attrs


def test_a_failed_remount_gives_the_changed_mounts_their_attributes_back(
    tree: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [attrs_of(p) for p in tree]
    failing_remounts(monkeypatch, {"b": 1})
    with pytest.raises(PermissionError) as caught:
        set_mount_attrs(tree[0], MountAttr.RDONLY, recursive=True, force="remount")
    assert [attrs_of(p) for p in tree] == before
    notes = " ".join(caught.value.__notes__)
    assert f"restored the earlier attributes of {[str(tree[1]), str(tree[0])]}" in notes


def test_a_restore_that_fails_too_names_the_mount_left_changed(
    tree: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    top, a, b = tree
    before = attrs_of(top)
    failing_remounts(monkeypatch, {"b": 1, "a": 0})
    real = sys_.mount
    calls = {"a": 0}

    def mount(source: Any, target: Any, fstype: Any, flags: int, data: Any = None) -> None:
        if Path(target).name == "a" and flags & C.MS_REMOUNT:
            calls["a"] += 1
            if calls["a"] == 2:  # its restore
                raise sys_.raise_errno(errno.EBUSY, "mount", (target, "injected"))
        real(source, target, fstype, flags, data)

    monkeypatch.setattr(sys_, "mount", mount)
    with pytest.raises(PermissionError) as caught:
        set_mount_attrs(top, MountAttr.RDONLY, recursive=True, force="remount")
    notes = " ".join(caught.value.__notes__)
    assert f"left changed, restoring failed too: ['{a} (Device or resource busy)']" in notes
    assert f"restored the earlier attributes of {[str(top)]}" in notes
    assert attrs_of(top) == before
    assert attrs_of(a) & MountAttr.RDONLY  # left changed, as the error says
    assert not attrs_of(b) & MountAttr.RDONLY
