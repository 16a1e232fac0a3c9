"""mount.attr and tree.attr: attributes seen in the mount table and felt by the kernel."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
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

NOBODY = 65534
HOUR_NS = 3600 * 10**9


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _write(target: Path) -> str:
    try:
        (target / "new-file").write_text("x")
    except OSError as exc:
        return _errname(exc)
    return "written"


def _execute(target: Path) -> str:
    """execve(2) of a script: MNT_NOEXEC refuses the exec itself (do_open_execat), which
    access(2) only predicts."""
    try:
        done = subprocess.run([target / "run"], capture_output=True, text=True, check=True)
    except OSError as exc:
        return _errname(exc)
    return done.stdout.strip()


def _setuid_euid(target: Path) -> str:
    """The effective uid a set-uid-root copy of id(1) runs with when an unprivileged user
    starts it: 0 where the set-uid bit is honoured, the user's own under MNT_NOSUID."""
    done = subprocess.run(
        [target / "id", "-u"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _open_device(target: Path) -> str:
    try:
        os.close(os.open(target / "null", os.O_RDONLY))
    except OSError as exc:
        return _errname(exc)
    return "opened"


def _follow(target: Path) -> str:
    try:
        (target / "link").read_text()
    except OSError as exc:
        return _errname(exc)
    return "followed"


def _atime_after_read(path: Path, atime: int, mtime: int) -> str:
    os.utime(path, ns=(atime, mtime))
    path.read_bytes()
    return "kept" if os.stat(path).st_atime_ns == atime else "updated"


def _atime(target: Path) -> str:
    """Whether a read moves the access time, for an atime ahead of mtime (and of ctime, which
    utime sets to now: relatime updates whenever either is newer) and for one behind mtime.
    relatime: only behind; strictatime: both; noatime: neither. (relatime's third rule, an
    atime over 24 h old, cannot be shown apart: such an atime is always behind ctime.)"""
    now = time.time_ns()
    path = target / "atime-file"
    ahead = _atime_after_read(path, now + HOUR_NS, now - HOUR_NS)
    behind = _atime_after_read(path, now + HOUR_NS, now + 2 * HOUR_NS)
    return f"ahead:{ahead} behind:{behind}"


def populate(target: Path) -> None:
    """What the checks need, on a mount that takes writes."""
    (target / "run").write_text("#!/bin/sh\necho ran\n")
    (target / "run").chmod(0o755)
    shutil.copy(ID, target / "id")
    os.chown(target / "id", 0, 0)
    (target / "id").chmod(0o4755)
    (target / "plain").write_text("plain")
    os.symlink("plain", target / "link")
    os.mknod(target / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (target / "atime-file").write_text("a" * 4096)


ID = Path("/usr/bin/id")


@dataclass(frozen=True)
class Felt:
    """An attribute: how mountinfo shows it, and what the kernel does with and without it."""

    attr: MountAttr
    seen: Callable[[tuple[str, ...]], bool]
    effect: Callable[[Path], str]
    when_set: str
    when_clear: str


def _word(word: str) -> Callable[[tuple[str, ...]], bool]:
    return lambda options: word in options


def _strictatime(options: tuple[str, ...]) -> bool:
    return "noatime" not in options and "relatime" not in options


FELT = {
    "ro": Felt(MountAttr.RDONLY, _word("ro"), _write, "EROFS", "written"),
    "noexec": Felt(MountAttr.NOEXEC, _word("noexec"), _execute, "EACCES", "ran"),
    "nosuid": Felt(MountAttr.NOSUID, _word("nosuid"), _setuid_euid, str(NOBODY), "0"),
    "nodev": Felt(MountAttr.NODEV, _word("nodev"), _open_device, "EACCES", "opened"),
    "nosymfollow": Felt(MountAttr.NOSYMFOLLOW, _word("nosymfollow"), _follow, "ELOOP", "followed"),
    # The atime mode is one field: clearing noatime or strictatime leaves relatime.
    "noatime": Felt(
        MountAttr.NOATIME,
        _word("noatime"),
        _atime,
        "ahead:kept behind:kept",
        "ahead:kept behind:updated",
    ),
    "strictatime": Felt(
        MountAttr.STRICTATIME,
        _strictatime,
        _atime,
        "ahead:updated behind:updated",
        "ahead:kept behind:updated",
    ),
}


def feels(target: Path, felt: Felt, state: str) -> None:
    entry = mounted_at(target)
    expected = felt.when_set if state == "set" else felt.when_clear
    assert felt.seen(entry.options) == (state == "set"), (state, entry.options)
    assert felt.effect(target) == expected, (state, entry.options)


def _reachable_by_nobody(path: Path) -> None:
    path.chmod(0o755)  # mkdtemp made it 0700: the set-uid check runs as nobody


class MountAttrContract(Contract):
    feature = "mount.attr"

    @pytest.mark.parametrize("name", list(FELT))
    def test_attribute_set_seen_and_felt(self, workdir: Path, name: str) -> None:
        felt = FELT[name]
        _reachable_by_nobody(workdir)
        with mount_fs("tmpfs", "mc-attr", workdir, force="mount2"):
            populate(workdir)
            feels(workdir, felt, "clear")
            set_mount_attrs(workdir, felt.attr, force=self.strategy)
            feels(workdir, felt, "set")
            set_mount_attrs(workdir, clear=felt.attr, force=self.strategy)
            feels(workdir, felt, "clear")

    def test_recursive_reaches_submounts(self, workdir: Path) -> None:
        sub = workdir / "sub"
        with mount_fs("tmpfs", "mc-top", workdir, force="mount2"):
            sub.mkdir()
            with mount_fs("tmpfs", "mc-sub", sub, force="mount2"):
                populate(sub)
                set_mount_attrs(
                    workdir, MountAttr.RDONLY | MountAttr.NODEV, recursive=True, force=self.strategy
                )
                for path in (workdir, sub):
                    entry = mounted_at(path)
                    assert entry.readonly and "nodev" in entry.options, entry
                assert (_write(sub), _open_device(sub)) == ("EROFS", "EACCES")

    def test_one_mount_leaves_its_submounts_alone(self, workdir: Path) -> None:
        """Not recursive: the mount at the path changes, the one below it does not (a library
        that always asked AT_RECURSIVE would pass the recursive test and fail this one)."""
        sub = workdir / "sub"
        with mount_fs("tmpfs", "mc-top", workdir, force="mount2"):
            sub.mkdir()
            with mount_fs("tmpfs", "mc-sub", sub, force="mount2"):
                set_mount_attrs(workdir, MountAttr.RDONLY, recursive=False, force=self.strategy)
                assert mounted_at(workdir).readonly
                assert not mounted_at(sub).readonly
                (sub / "still-writable").write_text("yes")


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

    @pytest.mark.parametrize("name", list(FELT))
    def test_the_clone_feels_it_and_the_source_does_not(self, workdir: Path, name: str) -> None:
        felt = FELT[name]
        _reachable_by_nobody(workdir)
        source, clone_at = workdir / "src", workdir / "clone"
        source.mkdir()
        clone_at.mkdir()
        with mount_fs("tmpfs", "mc-tree", source, force="mount2"):
            populate(source)
            with clone_tree(source, felt.attr, force=self.strategy) as clone:
                attached = clone.attach(clone_at)
            with attached:
                feels(clone_at, felt, "set")
                feels(source, felt, "clear")


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


class MountApiAttrContract(Contract):
    """mount.api: the attributes given at mount time (fsmount's attr_flags, mount(2)'s MS_*)
    felt on the new mount, and absent from one mounted without them."""

    feature = "mount.api"

    @pytest.mark.parametrize("name", list(FELT))
    def test_attribute_at_mount_time_is_felt(self, workdir: Path, name: str) -> None:
        felt = FELT[name]
        _reachable_by_nobody(workdir)
        with_attr, without = workdir / "with", workdir / "without"
        for target, attrs, state in ((with_attr, felt.attr, "set"), (without, None, "clear")):
            target.mkdir()
            with mount_fs(
                "tmpfs", "mc-api", target, {}, attrs or MountAttr.none(), force=self.strategy
            ):
                if felt.attr != MountAttr.RDONLY:  # files made after mounting: needs writes
                    populate(target)
                feels(target, felt, state)


class TestFsmountAttrs(MountApiAttrContract):
    strategy = "fsmount"


class TestMount2Attrs(MountApiAttrContract):
    strategy = "mount2"


def test_not_a_mount_point_is_the_requests_fault(workdir: Path) -> None:
    """EINVAL from mount_setattr also means "a flag this kernel does not know": the same
    attributes on a throwaway mount are taken, so for a directory that is not a mount point
    the kernel's EINVAL is raised and mount-setattr recorded failed, not unsupported."""
    plain = workdir / "not-a-mount-point"
    plain.mkdir()
    since = LOG.mark()
    with pytest.raises(OSError) as caught:
        set_mount_attrs(plain, MountAttr.NOEXEC)
    expect_errno(caught.value, errno.EINVAL)
    records = [r for r in LOG.since(since) if r.feature == "mount.attr"]
    # The error names the operation of the strategy that failed: mount_setattr from 5.12,
    # the remount before.
    operation = {"mount-setattr": "mount_setattr", "remount": "remount"}[records[-1].strategy]
    assert operation in str(caught.value), caught.value
    # Before 5.12 mount-setattr is passed over for ENOSYS, and remount says the same.
    assert records[-1].outcome == "failed", records
    assert all(
        r.outcome in ("unsupported", "skipped") and r.errno == errno.ENOSYS for r in records[:-1]
    ), records
