"""mount.attr and tree.attr: attributes seen in the mount table and felt by the kernel."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    Contract,
    assert_default_choice,
    expect_errno,
    mounted_at,
    unless_nothing_works,
)

from mountcompat import MountAttr, clone_tree, mount_fs, set_mount_attrs
from mountcompat import _syscalls as sys_
from mountcompat.choices import LOG
from mountcompat.mounts import unmount


def _refuses_write(target: Path) -> None:
    with pytest.raises(OSError) as caught:
        (target / "new").write_text("x")
    expect_errno(caught.value, errno.EROFS)


def _refuses_exec(target: Path) -> None:
    script = target / "run"
    assert os.access(script, os.X_OK) is False  # access(2) honours MNT_NOEXEC


def _refuses_symlinks(target: Path) -> None:
    with pytest.raises(OSError) as caught:
        (target / "link").read_text()
    expect_errno(caught.value, errno.ELOOP)


def _refuses_devices(target: Path) -> None:
    with pytest.raises(OSError) as caught:
        os.open(target / "null", os.O_RDONLY)
    expect_errno(caught.value, errno.EACCES, errno.EPERM)


def _statvfs_flag(flag: int) -> Callable[[Path], None]:
    def check(target: Path) -> None:
        assert os.statvfs(target).f_flag & flag

    return check


# attribute, the word mountinfo shows, how the kernel makes it felt
ATTRIBUTES = {
    "ro": (MountAttr.RDONLY, "ro", _refuses_write),
    "nosuid": (MountAttr.NOSUID, "nosuid", _statvfs_flag(os.ST_NOSUID)),
    "nodev": (MountAttr.NODEV, "nodev", _refuses_devices),
    "noexec": (MountAttr.NOEXEC, "noexec", _refuses_exec),
    "noatime": (MountAttr.NOATIME, "noatime", _statvfs_flag(os.ST_NOATIME)),
    "nosymfollow": (MountAttr.NOSYMFOLLOW, "nosymfollow", _refuses_symlinks),
}


def populate(target: Path) -> None:
    (target / "run").write_text("#!/bin/sh\n")
    (target / "run").chmod(0o755)
    (target / "plain").write_text("plain")
    os.symlink("plain", target / "link")
    os.mknod(target / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))


class MountAttrContract(Contract):
    feature = "mount.attr"

    @pytest.mark.parametrize("name", list(ATTRIBUTES))
    def test_attribute_set_seen_and_felt(self, workdir: Path, name: str) -> None:
        attr, word, felt = ATTRIBUTES[name]
        with mount_fs("tmpfs", "mc-attr", workdir, force="mount2"):
            populate(workdir)
            assert word not in mounted_at(workdir).options
            set_mount_attrs(workdir, attr, force=self.strategy)
            assert word in mounted_at(workdir).options
            felt(workdir)
            set_mount_attrs(workdir, clear=attr, force=self.strategy)
            assert word not in mounted_at(workdir).options

    def test_recursive_reaches_submounts(self, workdir: Path) -> None:
        sub = workdir / "sub"
        with mount_fs("tmpfs", "mc-top", workdir, force="mount2"):
            sub.mkdir()
            with mount_fs("tmpfs", "mc-sub", sub, force="mount2"):
                set_mount_attrs(
                    workdir, MountAttr.RDONLY | MountAttr.NODEV, recursive=True, force=self.strategy
                )
                for path in (workdir, sub):
                    entry = mounted_at(path)
                    assert entry.readonly and "nodev" in entry.options, entry
                _refuses_write(sub)


class TestMountSetattr(MountAttrContract):
    strategy = "mount-setattr"


class TestRemount(MountAttrContract):
    strategy = "remount"


@pytest.mark.default_choice("mount.attr")
def test_mount_attr_default(workdir: Path) -> None:
    with mount_fs("tmpfs", "mc-attr", workdir, force="mount2"):
        since = LOG.mark()
        set_mount_attrs(workdir, MountAttr.NOEXEC)
        assert "noexec" in mounted_at(workdir).options
    assert_default_choice("mount.attr", since)


class TreeAttrContract(Contract):
    feature = "tree.attr"

    def test_clone_is_read_only_and_the_original_is_not(self, workdir: Path) -> None:
        source, clone_at = workdir / "src", workdir / "clone"
        source.mkdir()
        clone_at.mkdir()
        with mount_fs("tmpfs", "mc-tree", source, force="mount2"):
            (source / "f").write_text("shared content")
            with clone_tree(
                source, MountAttr.RDONLY | MountAttr.NOSUID, force=self.strategy
            ) as clone:
                attached = clone.attach(clone_at)
            with attached:
                entry = mounted_at(clone_at)
                assert entry.readonly and "nosuid" in entry.options
                assert (clone_at / "f").read_text() == "shared content"
                _refuses_write(clone_at)
                assert not mounted_at(source).readonly
                (source / "g").write_text("still writable")


class TestOpenTreeAttr(TreeAttrContract):
    strategy = "open-tree-attr"


class TestOpenTreeSetattr(TreeAttrContract):
    strategy = "open-tree-setattr"


@pytest.mark.default_choice("tree.attr")
def test_tree_attr_default(workdir: Path) -> None:
    with mount_fs("tmpfs", "mc-tree", workdir, force="mount2"), unless_nothing_works("tree.attr"):
        since = LOG.mark()
        clone_tree(workdir, MountAttr.RDONLY).close()
    assert_default_choice("tree.attr", since)


def test_mount_setattr_unknown_flag_is_einval(workdir: Path) -> None:
    """What "a flag the kernel does not know" looks like: EINVAL (or ENOSYS before 5.12)."""
    sys_.mount("mc", workdir, "tmpfs", 0)
    try:
        attr = sys_.MountAttrStruct(attr_set=1 << 40, attr_clr=0, propagation=0, userns_fd=0)
        with pytest.raises(OSError) as caught:
            sys_.mount_setattr(-100, workdir, 0, attr)
        expect_errno(caught.value, errno.EINVAL, errno.ENOSYS)
    finally:
        unmount(workdir)
