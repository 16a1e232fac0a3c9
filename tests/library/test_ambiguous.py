"""Ambiguous errnos, the "missing feature" side: the kernel in front of us has every feature,
so the refusals of an older kernel are played by a double of the raw syscall layer (or of the
loop ioctl), exactly as that kernel answers, while the library's own probes run for real
against the double. What happens after (the fallback mounting, the device binding) is the real
kernel. The "wrong request" side of each errno is tested on the real kernel in the suites
(test_overlay.py, test_loop.py, ...).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mountcompat import (
    MountAttr,
    attach_loop,
    clone_tree,
    loop,
    mount_fs,
    mount_overlay,
    reset_probes,
    set_mount_attrs,
)
from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.choices import LOG
from mountcompat.errors import StrategyUnsupported
from mountcompat.fscontext import FsContext
from mountcompat.mountapi import create_superblock
from mountcompat.mounttable import read_mountinfo
from mountcompat.overlay import OverlaySpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts: needs root")

Fsconfig = Callable[..., None]


@pytest.fixture(autouse=True)
def fresh_probes() -> Iterator[None]:
    """Every test starts and ends with nothing known about the kernel: a double's answers
    must not be remembered for the real kernel."""
    reset_probes()
    yield
    reset_probes()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own (tmp_path may be on a filesystem overlayfs refuses as upper)."""
    sys_.mount("mc-test", tmp_path, "tmpfs", 0, "size=16m")
    try:
        yield tmp_path
    finally:
        sys_.umount2(tmp_path, C.MNT_DETACH)


def outcomes(feature: str, since: int) -> list[tuple[str, str]]:
    return [(r.strategy, r.outcome) for r in LOG.since(since) if r.feature == feature]


def refuse_fsconfig(
    monkeypatch: pytest.MonkeyPatch, refuses: Callable[[int, int, str | None, Any, int], int]
) -> None:
    """fsconfig as an older kernel: ``refuses(fd, cmd, key, value, aux)`` returns the errno it
    answers with, or 0 to let the real kernel answer."""
    real: Fsconfig = sys_.fsconfig

    def fsconfig(
        fd: int, cmd: int, key: str | None = None, value: Any = None, aux: int = 0
    ) -> None:
        err = refuses(fd, cmd, key, value, aux)
        if err:
            name = C.FSCONFIG_NAMES.get(cmd, cmd)
            raise sys_.raise_errno(err, "fsconfig", (fd, name, key, value, aux))
        real(fd, cmd, key, value, aux)

    monkeypatch.setattr(sys_, "fsconfig", fsconfig)


def mounted(path: Path) -> bool:
    return any(e.mountpoint == str(path) for e in read_mountinfo())


# --- fs.create: FSCONFIG_CMD_CREATE_EXCL -----------------------------------------------------


def test_create_excl_unknown_before_6_6_falls_back_to_create(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """Before 6.6 fs/fsopen.c answers the unknown command with EOPNOTSUPP, for every context
    (the probe's tmpfs one too), and leaves the context as it was: CMD_CREATE goes on."""
    refuse_fsconfig(
        monkeypatch, lambda fd, cmd, *_: errno.EOPNOTSUPP * (cmd == C.FSCONFIG_CMD_CREATE_EXCL)
    )
    since = LOG.mark()
    for _ in range(2):
        with FsContext.open("tmpfs") as ctx:
            ctx.set_string("size", "1m")
            create_superblock(ctx)
            with ctx.mount() as detached, detached.attach(scratch):
                assert mounted(scratch)
    assert outcomes("fs.create", since) == [
        ("create-excl", "unsupported"),
        ("create", "used"),
        ("create-excl", "skipped"),  # the probe's "missing" holds for every request
        ("create", "used"),
    ]
    assert "FSCONFIG_CMD_CREATE_EXCL (6.6) missing (probed)" in LOG.since(since)[0].message


def test_create_excl_refused_by_a_legacy_filesystem_gives_up_the_exclusive_superblock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6.6 and later answer EOPNOTSUPP for a filesystem still on the legacy mount context (none
    is on this kernel: every type in /proc/filesystems is ported, so a double plays one). The
    real probe finds CREATE_EXCL known: the filesystem is mounted all the same with
    CMD_CREATE (every filesystem the kernel can mount is mounted), and the record of
    create-excl says which guarantee was given up, for this request only."""
    legacy_fd: list[int] = []
    refuse_fsconfig(
        monkeypatch,
        lambda fd, cmd, *_: (
            errno.EOPNOTSUPP * (fd in legacy_fd and cmd == C.FSCONFIG_CMD_CREATE_EXCL)
        ),
    )
    since = LOG.mark()
    with FsContext.open("tmpfs") as ctx:
        legacy_fd.append(ctx.fileno())
        create_superblock(ctx)
        ctx.mount().close()
    assert outcomes("fs.create", since) == [("create-excl", "unsupported"), ("create", "used")]
    refusal = LOG.since(since)[0].message
    assert "legacy mount context" in refusal and "superblock of its own is given up" in refusal
    legacy_fd.clear()  # the next context (its fd may have the same number) is a ported one
    with FsContext.open("tmpfs") as ctx:  # not remembered: the next filesystem is asked again
        create_superblock(ctx)
        ctx.mount().close()
    assert outcomes("fs.create", since)[-1] == ("create-excl", "used")


# --- overlay.layers ---------------------------------------------------------------------------


def overlay_spec(base: Path, data: bool = False, name: str = "l1") -> OverlaySpec:
    lower = []
    for layer in (name, "l2"):
        (base / layer).mkdir(exist_ok=True)
        (base / layer / f"in-{layer}").write_text(layer)
        lower.append(base / layer)
    if not data:
        return OverlaySpec(lower=tuple(lower))
    (base / "data").mkdir(exist_ok=True)
    return OverlaySpec(lower=tuple(lower), data=(base / "data",), options={"metacopy": "on"})


def is_opath(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH)


def mount_and_read(spec: OverlaySpec, target: Path, force: str | None = None) -> str:
    target.mkdir(exist_ok=True)
    with mount_overlay(spec, target, force=force):
        return (target / "in-l2").read_text()


def test_opath_layers_refused_6_12_to_6_14(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    """6.12 to 6.14 refuse an O_PATH fd in FSCONFIG_SET_FD with EBADF (6.15 takes them): the
    probe, a throwaway overlay with O_PATH layers, gets the same EBADF, so fd-opath is
    unsupported for good and layers go as opened fds."""
    refuse_fsconfig(
        monkeypatch,
        lambda fd, cmd, key, value, aux: errno.EBADF * (cmd == C.FSCONFIG_SET_FD and is_opath(aux)),
    )
    since = LOG.mark()
    assert mount_and_read(overlay_spec(scratch), scratch / "m") == "l2"
    assert mount_and_read(overlay_spec(scratch), scratch / "m") == "l2"
    assert outcomes("overlay.layers", since) == [
        ("fd-opath", "unsupported"),
        ("fd-reopen", "used"),
        ("fd-opath", "skipped"),
        ("fd-reopen", "used"),
    ]


def test_fd_layers_unknown_6_5_to_6_12(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    """Before 6.13 lowerdir+ takes strings only: EINVAL, "Bad value for lowerdir+"."""
    refuse_fsconfig(monkeypatch, lambda fd, cmd, *_: errno.EINVAL * (cmd == C.FSCONFIG_SET_FD))
    since = LOG.mark()
    assert mount_and_read(overlay_spec(scratch), scratch / "m") == "l2"
    assert outcomes("overlay.layers", since) == [
        ("fd-opath", "unsupported"),
        ("fd-reopen", "unsupported"),
        ("lowerdir-plus", "used"),
    ]


def test_data_layers_unknown_to_datadir_plus_only_for_such_requests(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """A kernel that refuses ``datadir+`` (EINVAL, unknown key) while ``::`` in a lowerdir
    string works: the data-only probe of each per-layer strategy finds it missing, for
    requests with data layers only; a plain request still takes fd-opath."""
    refuse_fsconfig(monkeypatch, lambda fd, cmd, key, *_: errno.EINVAL * (key == "datadir+"))
    since = LOG.mark()
    assert mount_and_read(overlay_spec(scratch, data=True), scratch / "m") == "l2"
    assert outcomes("overlay.layers", since) == [
        ("fd-opath", "unsupported"),
        ("fd-reopen", "unsupported"),
        ("lowerdir-plus", "unsupported"),
        ("lowerdir-string", "used"),
    ]
    assert "data-only layers" in LOG.since(since)[0].message
    since = LOG.mark()
    assert mount_and_read(overlay_spec(scratch), scratch / "m") == "l2"
    assert outcomes("overlay.layers", since) == [("fd-opath", "used")]


def test_a_comma_refused_by_the_legacy_context_before_6_5(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """Before 6.5 overlayfs sits on the legacy context, which refuses any value holding a
    comma ("Legacy: Option contained comma", EINVAL), escaped or not."""
    refuse_fsconfig(
        monkeypatch,
        lambda fd, cmd, key, value, aux: errno.EINVAL * ("," in str(value or "")),
    )
    spec = overlay_spec(scratch, name="with,comma")
    with pytest.raises(StrategyUnsupported) as caught:
        mount_and_read(spec, scratch / "m", force="lowerdir-string")
    assert "a comma in an overlay path in one lowerdir string missing" in caught.value.message
    # mount(2)'s data string escapes the comma, which every kernel's option parser undoes.
    assert mount_and_read(spec, scratch / "m2", force="mount2-data") == "l2"


def test_data_layers_through_mount2_before_6_5(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    real_mount = sys_.mount

    def mount(source: Any, target: Any, fstype: Any, flags: int, data: Any = None) -> None:
        if fstype == "overlay" and "::" in str(data):
            raise sys_.raise_errno(errno.EINVAL, "mount", (source, target, fstype, flags, data))
        real_mount(source, target, fstype, flags, data)

    monkeypatch.setattr(sys_, "mount", mount)
    with pytest.raises(StrategyUnsupported) as caught:
        mount_and_read(overlay_spec(scratch, data=True), scratch / "m", force="mount2-data")
    assert "data-only layers through mount(2)" in caught.value.message


def test_a_bad_fd_is_the_requests_fault_when_opath_layers_work(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """EBADF's other meaning, on the real kernel: an fd that is not open. (The library opens
    its layer fds itself, so a double hands the kernel one that is not, for this request's
    layers only: the probe's throwaway layers go as they are.)"""
    real_set_fd = FsContext.set_fd

    def set_fd(ctx: FsContext, key: str, fd: int) -> None:
        ours = os.readlink(f"/proc/self/fd/{fd}").startswith(str(scratch))
        real_set_fd(ctx, key, NOT_OPEN if ours else fd)

    monkeypatch.setattr(FsContext, "set_fd", set_fd)
    since = LOG.mark()
    with pytest.raises(OSError) as caught:
        mount_and_read(overlay_spec(scratch), scratch / "m", force="fd-opath")
    assert caught.value.errno == errno.EBADF and "SET_FD" in str(caught.value)
    assert any("probed present: overlay layers as O_PATH fds" in n for n in caught.value.__notes__)
    assert outcomes("overlay.layers", since) == [("fd-opath", "failed")]


NOT_OPEN = 999_999


# --- loop.attach: LOOP_CONFIGURE ----------------------------------------------------------------


def test_loop_configure_unknown_before_5_8(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    """Before 5.8 an unknown loop ioctl falls to lo_simple_ioctl's default: EINVAL, for any
    argument, the probe's fd of -1 included. The device is then bound the old way, for real."""
    real_ioctl = loop._ioctl

    def ioctl(fd: int, request: int, arg: Any, name: str) -> int:
        if request == C.LOOP_CONFIGURE:
            raise sys_.raise_errno(errno.EINVAL, name, (fd,))
        return real_ioctl(fd, request, arg, name)

    monkeypatch.setattr(loop, "_ioctl", ioctl)
    backing = scratch / "backing.img"
    backing.write_bytes(b"\0" * (1 << 20))
    since = LOG.mark()
    for _ in range(2):
        with attach_loop(backing) as device:
            assert loop.sysfs_loop(device.number)["backing_file"] == str(backing)
    assert outcomes("loop.attach", since) == [
        ("loop-configure", "unsupported"),
        ("set-fd-status", "used"),
        ("loop-configure", "skipped"),
        ("set-fd-status", "used"),
    ]
    assert "LOOP_CONFIGURE (5.8) missing (probed)" in LOG.since(since)[0].message


# --- mount.attr, tree.attr: mount_setattr ----------------------------------------------------


def refuse_nosymfollow(monkeypatch: pytest.MonkeyPatch) -> None:
    """mount_setattr as on 5.12 and 5.13: MOUNT_ATTR_NOSYMFOLLOW unknown, EINVAL."""
    real = sys_.mount_setattr

    def mount_setattr(dfd: int, path: Any, flags: int, attr: sys_.MountAttrStruct) -> None:
        if (attr.attr_set | attr.attr_clr) & MountAttr.NOSYMFOLLOW:
            raise sys_.raise_errno(errno.EINVAL, "mount_setattr", (dfd, path, flags))
        real(dfd, path, flags, attr)

    monkeypatch.setattr(sys_, "mount_setattr", mount_setattr)


def test_nosymfollow_unknown_to_mount_setattr_before_5_14(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """The probe (these attributes on a throwaway detached tmpfs) gets the same EINVAL: the
    flag is unknown, so the remount fallback (MS_NOSYMFOLLOW, 5.10) does it, for real; other
    attributes still go through mount_setattr."""
    refuse_nosymfollow(monkeypatch)
    target = scratch / "m"
    target.mkdir()
    with mount_fs("tmpfs", "mc-attr", target, force="mount2"):
        (target / "plain").write_text("x")
        os.symlink("plain", target / "link")
        since = LOG.mark()
        set_mount_attrs(target, MountAttr.NOSYMFOLLOW)
        with pytest.raises(OSError) as caught:
            (target / "link").read_text()
        assert caught.value.errno == errno.ELOOP
        set_mount_attrs(target, MountAttr.NOEXEC)
    assert outcomes("mount.attr", since) == [
        ("mount-setattr", "unsupported"),
        ("remount", "used"),
        ("mount-setattr", "used"),
    ]
    assert "set NOSYMFOLLOW, clear 0) missing (probed)" in LOG.since(since)[0].message


def test_nosymfollow_on_a_clone_before_5_14(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    """tree.attr has no fallback without mount_setattr's flag: unsupported, said so."""
    refuse_nosymfollow(monkeypatch)
    target = scratch / "m"
    target.mkdir()
    with (
        mount_fs("tmpfs", "mc-attr", target, force="mount2"),
        pytest.raises(StrategyUnsupported) as caught,
    ):
        clone_tree(target, MountAttr.NOSYMFOLLOW, force="open-tree-setattr")
    assert caught.value.errno == errno.EINVAL
    assert "missing (probed)" in caught.value.message


# --- mount.api: fsmount's attributes ------------------------------------------------------------


def test_nosymfollow_unknown_to_fsmount_before_5_14(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """fsmount's attr_flags knew no MOUNT_ATTR_NOSYMFOLLOW before 5.14 (EINVAL) while
    mount(2) has MS_NOSYMFOLLOW from 5.10: the probe, a throwaway fsmount with the same
    attributes, gets the EINVAL too, so mount(2) does it, for real."""
    real = sys_.fsmount

    def fsmount(fd: int, flags: int = C.FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
        if attr_flags & MountAttr.NOSYMFOLLOW:
            raise sys_.raise_errno(errno.EINVAL, "fsmount", (fd, flags, attr_flags))
        return real(fd, flags, attr_flags)

    monkeypatch.setattr(sys_, "fsmount", fsmount)
    target = scratch / "m"
    target.mkdir()
    since = LOG.mark()
    with mount_fs("tmpfs", "mc-api", target, {}, MountAttr.NOSYMFOLLOW):
        assert (
            "nosymfollow"
            in next(e for e in read_mountinfo() if e.mountpoint == str(target)).options
        )
    assert outcomes("mount.api", since) == [("fsmount", "unsupported"), ("mount2", "used")]
