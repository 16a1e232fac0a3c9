"""The atime mode on real mounts: reported as it is, and kept by a remount that does not
name it (the remount strategy of mount.attr forced it to relatime before)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.attrs import set_mount_attrs
from mountcompat.errors import StrategyUnsupported
from mountcompat.listing import list_mounts
from mountcompat.mounts import MountAttr, unmount
from mountcompat.mounttable import MountEntry, mount_at, read_mountinfo

MODES = {"strictatime": C.MS_STRICTATIME, "noatime": C.MS_NOATIME, "relatime": C.MS_RELATIME}
STRATEGIES = ("mount-setattr", "remount")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts: run as root")


@contextlib.contextmanager
def tmpfs(path: Path, flags: int) -> Iterator[Path]:
    path.mkdir()
    sys_.mount("mc-atime", path, "tmpfs", flags, "size=1m")
    try:
        yield path
    finally:
        unmount(path)


def seen(path: Path) -> list[MountEntry]:
    """The mount at ``path`` as mountinfo and, where the kernel has it, statmount see it."""
    views = [mount_at(read_mountinfo(), str(path))]
    with contextlib.suppress(StrategyUnsupported):
        views.append(mount_at(list_mounts(force="statmount"), str(path)))
    assert all(v is not None for v in views)
    return views  # type: ignore[return-value]


def mode(path: Path) -> tuple[str, bool, bool]:
    """(atime mode, nodiratime, read-only), the same from every view."""
    answers = {(e.atime, "nodiratime" in e.options, e.readonly) for e in seen(path)}
    assert len(answers) == 1, answers
    return answers.pop()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("nodiratime", [False, True], ids=["", "nodiratime"])
@pytest.mark.parametrize("atime", list(MODES))
def test_changing_other_attributes_keeps_the_atime_mode(
    tmp_path: Path, atime: str, nodiratime: bool, strategy: str
) -> None:
    flags = MODES[atime] | (C.MS_NODIRATIME if nodiratime else 0)
    with tmpfs(tmp_path / "m", flags) as m:
        assert mode(m) == (atime, nodiratime, False)
        set_mount_attrs(m, MountAttr.RDONLY | MountAttr.NOSUID, force=strategy)
        assert mode(m) == (atime, nodiratime, True)
        assert all(e.attrs & MountAttr.NOSUID for e in seen(m))
        set_mount_attrs(m, clear=MountAttr.RDONLY, force=strategy)
        assert mode(m) == (atime, nodiratime, False)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("set_", "clear", "expected"),
    [
        (MountAttr.NOATIME, MountAttr(0), "noatime"),
        (MountAttr.STRICTATIME, MountAttr(0), "strictatime"),
        (MountAttr(0), MountAttr.NOATIME, "relatime"),
        (MountAttr(0), MountAttr.STRICTATIME, "relatime"),
    ],
)
def test_naming_the_atime_mode_changes_it(
    tmp_path: Path, set_: MountAttr, clear: MountAttr, expected: str, strategy: str
) -> None:
    """The atime mode is one field: set_ names the new one, clear alone means relatime,
    the same for both strategies (mount_setattr takes it whole, MOUNT_ATTR__ATIME)."""
    start = C.MS_NOATIME if clear == MountAttr.NOATIME else C.MS_STRICTATIME
    with tmpfs(tmp_path / "m", start | C.MS_NODIRATIME) as m:
        set_mount_attrs(m, set_, clear, force=strategy)
        assert mode(m) == (expected, True, False)


def test_recursive_remount_reads_each_mount_on_top(tmp_path: Path) -> None:
    """Below the path, each mount point is remounted with the attributes of the mount on
    top there: a stacked strictatime mount stays strictatime under a relatime one."""
    with tmpfs(tmp_path / "m", C.MS_RELATIME) as m, tmpfs(m / "sub", C.MS_NOATIME) as sub:
        sys_.mount("mc-top", sub, "tmpfs", C.MS_STRICTATIME, "size=1m")
        try:
            set_mount_attrs(m, MountAttr.RDONLY, recursive=True, force="remount")
            assert mode(m) == ("relatime", False, True)
            assert mode(sub) == ("strictatime", False, True)
        finally:
            unmount(sub)


def test_remount_of_a_path_that_is_no_mount_point(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "m", 0) as m:
        (m / "d").mkdir()
        with pytest.raises(OSError) as caught:
            set_mount_attrs(m / "d", MountAttr.RDONLY, force="remount")
        assert caught.value.errno == 22
