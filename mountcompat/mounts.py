"""Mount objects that own their file descriptors, and mount attributes as a Flag."""

from __future__ import annotations

import enum
import errno
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.errors import LazyUnmountWarning


class MountAttr(enum.IntFlag):
    """MOUNT_ATTR_* of mount_setattr(2) and fsmount(2). RELATIME is the absence of the others."""

    RDONLY = 0x1
    NOSUID = 0x2
    NODEV = 0x4
    NOEXEC = 0x8
    NOATIME = 0x10
    STRICTATIME = 0x20
    NODIRATIME = 0x80
    IDMAP = 0x100000
    NOSYMFOLLOW = 0x200000

    @classmethod
    def none(cls) -> MountAttr:
        return cls(0)


ATIME_MASK = 0x70  # MOUNT_ATTR__ATIME: the atime bits are one field, set or cleared together

# Per-mount option words of mountinfo and the attribute each stands for.
OPTION_ATTRS = {
    "ro": MountAttr.RDONLY,
    "nosuid": MountAttr.NOSUID,
    "nodev": MountAttr.NODEV,
    "noexec": MountAttr.NOEXEC,
    "noatime": MountAttr.NOATIME,
    "nodiratime": MountAttr.NODIRATIME,
    "nosymfollow": MountAttr.NOSYMFOLLOW,
    "idmapped": MountAttr.IDMAP,
}
ATTR_MS_FLAGS = {
    MountAttr.RDONLY: C.MS_RDONLY,
    MountAttr.NOSUID: C.MS_NOSUID,
    MountAttr.NODEV: C.MS_NODEV,
    MountAttr.NOEXEC: C.MS_NOEXEC,
    MountAttr.NOATIME: C.MS_NOATIME,
    MountAttr.STRICTATIME: C.MS_STRICTATIME,
    MountAttr.NODIRATIME: C.MS_NODIRATIME,
    MountAttr.NOSYMFOLLOW: C.MS_NOSYMFOLLOW,
}


def check_attrs(set_: MountAttr, clear: MountAttr = MountAttr.none()) -> None:
    """Refuse what no kernel takes from this library: MOUNT_ATTR_IDMAP (it needs a user
    namespace fd, which the library does not pass; mount(2) has no flag for it at all), and
    two access-time modes at once (the kernel's atime field holds one)."""
    from mountcompat.errors import InvalidAttributes

    if (set_ | clear) & MountAttr.IDMAP:
        raise InvalidAttributes("MountAttr.IDMAP needs a user namespace fd: not supported here")
    modes = set_ & (MountAttr.NOATIME | MountAttr.STRICTATIME)
    if modes == MountAttr.NOATIME | MountAttr.STRICTATIME:
        raise InvalidAttributes("NOATIME and STRICTATIME are two access-time modes: give one")


def attrs_from_options(options: list[str] | tuple[str, ...]) -> MountAttr:
    attrs = MountAttr.none()
    for word in options:
        attrs |= OPTION_ATTRS.get(word, MountAttr.none())
    return attrs


def ms_flags(attrs: MountAttr) -> int:
    flags = 0
    for attr, flag in ATTR_MS_FLAGS.items():
        if attrs & attr:
            flags |= flag
    return flags


class Closing:
    """``with`` support for objects whose ``close()`` releases what they own."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FdOwner(Closing):
    """Owns one file descriptor: ``fileno()``, ``close()``, and a context manager."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class DetachedMount(FdOwner):
    """A mount not (yet) in the tree: from fsmount(2) or open_tree(OPEN_TREE_CLONE).

    Closing the fd of a mount that was never attached unmounts it: the kernel does that.
    """

    def attach(self, target: str | os.PathLike[str]) -> AttachedMount:
        sys_.move_mount(self.fileno(), "", C.AT_FDCWD, target, C.MOVE_MOUNT_F_EMPTY_PATH)
        attached = AttachedMount(Path(target))
        self.close()
        return attached


class AttachedMount(Closing):
    """A mount at a path; ``close()`` unmounts it and then runs the cleanups it owns
    (a loop device behind it, a temporary directory under it). A close that fails keeps
    whatever it could not release, so calling it again retries: the mount stays recorded
    until it is really unmounted, and a cleanup until it has run."""

    def __init__(self, path: Path, cleanups: list[Callable[[], None]] | None = None) -> None:
        self.path = path
        self._cleanups = list(cleanups or [])
        self._mounted = True
        self.detached_lazily = False  # set when close() had to fall back to MNT_DETACH

    def own(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def close(self) -> None:
        if self._mounted:
            self.detached_lazily = unmount(self.path) == DETACHED_LAZILY
            self._mounted = False
        while self._cleanups:
            self._cleanups[-1]()
            self._cleanups.pop()

    def __repr__(self) -> str:
        return f"AttachedMount({str(self.path)!r})"


UNMOUNTED = "unmounted"
DETACHED_LAZILY = "detached-lazily"
BUSY_WAITS = (0.0, 0.01, 0.05, 0.2)


def unmount(path: str | os.PathLike[str]) -> str:
    """umount2, waiting out a short EBUSY (an fd being closed), then detaching lazily: the
    mount leaves the tree at once and its filesystem lives on until its last user lets go.
    That fallback is not silent: it warns (LazyUnmountWarning) and returns DETACHED_LAZILY
    instead of UNMOUNTED."""
    busy: OSError | None = None
    for delay in BUSY_WAITS:
        time.sleep(delay)
        try:
            sys_.umount2(path, C.UMOUNT_NOFOLLOW)
            return UNMOUNTED
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            busy = exc
    sys_.umount2(path, C.MNT_DETACH | C.UMOUNT_NOFOLLOW)
    warnings.warn(LazyUnmountWarning(os.fspath(path), str(busy)), stacklevel=2)
    return DETACHED_LAZILY


def private_mount_namespace() -> None:
    """Move the calling thread into its own mount namespace where nothing propagates back.
    Only this thread moves (unshare acts on the caller); the library reads the mount table
    through /proc/thread-self, so each thread sees its own."""
    sys_.unshare(C.CLONE_NEWNS)
    sys_.mount(None, "/", None, C.MS_REC | C.MS_PRIVATE)
