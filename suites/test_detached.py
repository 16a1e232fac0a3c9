"""mount.detached: clones of mounts that are in no mount namespace; open_tree clones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import Contract, assert_default_choice, mounted_at, not_mounted

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat import clone_detached, mount_fs, open_fs
from mountcompat.choices import LOG
from mountcompat.mounts import DetachedMount


def detached_tmpfs_with_file() -> DetachedMount:
    source = open_fs("tmpfs", "mc-detached", {"size": "1m"})
    # Write into the detached mount through its fd: it is reachable by fd only.
    fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=source.fileno())
    os.write(fd, b"inside the detached mount")
    os.close(fd)
    return source


def fd_mount_id(fd: int) -> int:
    """The mount an fd is on, as the kernel tells in fdinfo (not through the library)."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise AssertionError(f"no mnt_id in /proc/self/fdinfo/{fd}")


class DetachedContract(Contract):
    feature = "mount.detached"

    def test_clone_of_a_detached_mount_has_its_content(self, workdir: Path) -> None:
        with detached_tmpfs_with_file() as source:
            clone = clone_detached(source, force=self.strategy)
            # A clone is a mount of its own, not one more fd on the source's mount.
            assert fd_mount_id(clone.fileno()) != fd_mount_id(source.fileno())
        with clone:
            attached = clone.attach(workdir)
        with attached:
            entry = mounted_at(workdir)
            assert (entry.fstype, entry.source) == ("tmpfs", "mc-detached")
            assert (workdir / "f").read_text() == "inside the detached mount"
        assert not_mounted(workdir)

    @pytest.mark.parametrize("recursive", [True, False], ids=["recursive", "one-mount"])
    def test_recursive_clone_carries_the_submounts(self, workdir: Path, recursive: bool) -> None:
        """A detached tree of two mounts (made with open_tree by hand): a recursive clone
        has the submount and its file, a clone of one mount has an empty directory there."""
        with detached_tree_with_submount(workdir) as source:
            clone = clone_detached(source, recursive=recursive, force=self.strategy)
        target = workdir / "t"
        target.mkdir()
        with clone, clone.attach(target):
            assert (target / "top").read_text() == "top"
            if recursive:
                assert (target / "sub" / "inner").read_text() == "inner"
                assert mounted_at(target / "sub").source == "mc-sub"
                sys_.umount2(target / "sub")  # so that the clone's own unmount is not lazy
            else:
                assert os.listdir(target / "sub") == []
                assert not_mounted(target / "sub")
        assert not_mounted(target)


def detached_tree_with_submount(workdir: Path) -> DetachedMount:
    """tmpfs "mc-top" with a file, and tmpfs "mc-sub" on its sub/ with a file, cloned
    detached with open_tree(OPEN_TREE_CLONE|AT_RECURSIVE); the mounts made on the way are
    gone again, so the tree exists only through the returned fd."""
    top = workdir / "s"
    top.mkdir()
    sys_.mount("mc-top", top, "tmpfs", 0, "size=1m")
    try:
        (top / "top").write_text("top")
        (top / "sub").mkdir()
        sys_.mount("mc-sub", top / "sub", "tmpfs", 0, "size=1m")
        (top / "sub" / "inner").write_text("inner")
        flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | C.AT_RECURSIVE
        return DetachedMount(sys_.open_tree(C.AT_FDCWD, top, flags))
    finally:
        sys_.umount2(top, C.MNT_DETACH)


class TestDirect(DetachedContract):
    strategy = "direct"


class TestTmpdir(DetachedContract):
    strategy = "tmpdir"


@pytest.mark.default_choice("mount.detached")
def test_detached_default(workdir: Path) -> None:
    since = LOG.mark()
    with detached_tmpfs_with_file() as source, clone_detached(source) as clone:
        clone.attach(workdir).close()
    assert_default_choice("mount.detached", since)


def test_open_tree_clone_of_an_attached_mount(workdir: Path) -> None:
    """The plain case every kernel with open_tree has: a bind mount made from an fd."""
    source, target = workdir / "s", workdir / "t"
    source.mkdir()
    target.mkdir()
    with mount_fs("tmpfs", "mc-src", source):
        (source / "f").write_text("bound")
        fd = sys_.open_tree(C.AT_FDCWD, source, C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC)
        with DetachedMount(fd) as clone, clone.attach(target):
            assert (target / "f").read_text() == "bound"
            assert mounted_at(target).source == "mc-src"
