"""Unmounting: a busy mount's lazy detach is said, not silent; a failed close can be retried
(the retry itself is shown for every operation in test_faults.py)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat import mount_fs
from mountcompat.errors import LazyUnmountWarning
from mountcompat.mounts import DETACHED_LAZILY, UNMOUNTED, unmount
from mountcompat.mounttable import read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts: needs root")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    sys_.mount("mc-mounts", tmp_path, "tmpfs", 0, "size=1m")
    (tmp_path / "m").mkdir()
    try:
        yield tmp_path / "m"
    finally:
        sys_.umount2(tmp_path, C.MNT_DETACH)


def mounted(path: Path) -> bool:
    return any(e.mountpoint == str(path) for e in read_mountinfo())


def test_a_busy_mount_is_detached_lazily_and_says_so(target: Path) -> None:
    mount = mount_fs("tmpfs", "mc-busy", target, force="mount2")
    busy = os.open(target / "open-file", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC)
    try:
        with pytest.warns(LazyUnmountWarning, match="still busy") as warned:
            mount.close()
        assert warned[0].message.path == str(target)  # type: ignore[union-attr]
        assert mount.detached_lazily
        assert not mounted(target)
        os.write(busy, b"the filesystem lives on until its last user lets go")
    finally:
        os.close(busy)


def test_an_idle_mount_is_unmounted_at_once(target: Path) -> None:
    mount_fs("tmpfs", "mc-idle", target, force="mount2")
    assert unmount(target) == UNMOUNTED
    assert not mounted(target)


def test_unmount_says_when_it_detached_lazily(target: Path) -> None:
    mount_fs("tmpfs", "mc-busy", target, force="mount2")
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    os.chdir(target)  # a process's cwd keeps the mount busy too
    try:
        with pytest.warns(LazyUnmountWarning):
            assert unmount(target) == DETACHED_LAZILY
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    assert not mounted(target)


def test_a_loop_attach_that_never_wins_says_so(
    monkeypatch: pytest.MonkeyPatch, target: Path
) -> None:
    """Every device LOOP_CTL_GET_FREE names is gone by the time it is opened (a double plays
    the other processes): the attempts are bounded and the error says what happened."""
    from mountcompat import attach_loop, loop

    monkeypatch.setattr(loop, "GRAB_ATTEMPTS", 3)

    def taken(number: int, mode: int) -> int:
        raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), f"/dev/loop{number}")

    monkeypatch.setattr(loop, "_open_device", taken)
    backing = target / "backing.img"
    backing.write_bytes(b"\0" * 4096)
    with pytest.raises(OSError) as caught:
        attach_loop(backing)
    assert caught.value.errno == errno.ENXIO
    assert "3 free devices, each taken by another process first" in str(caught.value)


def test_the_mount_id_choice_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """statx(STATX_MNT_ID) where the kernel gives it, else fdinfo: chosen once per process,
    and recorded as every choice is. (A kernel before 5.8 leaves STATX_MNT_ID out of the
    returned mask: the statx double does so, as no kernel at hand can.)"""
    from mountcompat import _syscalls as sys_
    from mountcompat.choices import LOG
    from mountcompat.listing import mount_id_of
    from mountcompat.strategy import reset_probes

    reset_probes()
    mark = LOG.mark()
    by_statx = mount_id_of(tmp_path)
    assert [(r.feature, r.strategy, r.outcome) for r in LOG.since(mark)] == [
        ("mount.id", "statx", "used")
    ]
    real = sys_.statx
    monkeypatch.setattr(sys_, "statx", lambda *a: (0, *real(*a)[1:]))
    reset_probes()
    mark = LOG.mark()
    assert mount_id_of(tmp_path) == by_statx  # fdinfo's answer is the same id
    assert [(r.strategy, r.outcome) for r in LOG.since(mark)] == [
        ("statx", "unsupported"),
        ("fdinfo", "used"),
    ]
    reset_probes()


@pytest.mark.parametrize("strategy", ["direct", "tmpdir"])
def test_what_each_detached_clone_leaves_of_its_source(tmp_path: Path, strategy: str) -> None:
    """As docs/library.md says: direct leaves the source attachable, tmpdir leaves it
    unmounted (attach: EINVAL), its files still reachable through its fd."""
    import errno

    from mountcompat import clone_detached, open_fs

    target = tmp_path / "t"
    target.mkdir()
    with open_fs("tmpfs", "mc-source") as source:
        fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=source.fileno())
        os.close(fd)
        clone_detached(source, force=strategy).close()
        assert os.path.exists(f"/proc/self/fd/{source.fileno()}/f")
        if strategy == "direct":
            with source.attach(target):
                assert (target / "f").exists()
        else:
            with pytest.raises(OSError) as caught:
                source.attach(target).close()
            assert caught.value.errno == errno.EINVAL
