"""Opening a path as if ``root`` were ``/``: symlinks and ``..`` never leave it.

Feature ``path.resolve``, preferred first:

``openat2``
    openat2(2) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS (5.6);
``userspace``
    a component-by-component walk with O_PATH | O_NOFOLLOW and readlink (every kernel).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.strategy import Strategy, feature

MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS
OPENAT2_ATTEMPTS = 64


def _openat2(root: Path, path: str, flags: int) -> int:
    """openat2 with RESOLVE_IN_ROOT (5.6). Before: ENOSYS. Preferred: the kernel resolves
    atomically, so a rename racing the walk cannot move it outside the root. A ``..`` walked
    while a rename or mount happened anywhere answers EAGAIN (the kernel cannot vouch for
    the walk): asked again, a bounded number of times."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = sys_.OpenHow(
            flags=flags | os.O_CLOEXEC, mode=0, resolve=C.RESOLVE_IN_ROOT | C.RESOLVE_NO_MAGICLINKS
        )
        return _retrying_eagain(lambda: sys_.openat2(rootfd, path, how))
    finally:
        os.close(rootfd)


def _retrying_eagain(call: Callable[[], int]) -> int:
    for attempt in range(OPENAT2_ATTEMPTS):
        try:
            return call()
        except BlockingIOError as exc:  # EAGAIN
            if attempt == OPENAT2_ATTEMPTS - 1:
                exc.add_note(f"openat2: EAGAIN {OPENAT2_ATTEMPTS} times (renames racing ..)")
                raise
            time.sleep(0.0005 * attempt)
    raise AssertionError("unreachable")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class _Walk:
    """The fds of the directories walked so far, from the root: each is closed by ``close``,
    whatever happens in between."""

    def __init__(self, root: Path) -> None:
        self.stack = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]

    def up(self) -> None:
        if len(self.stack) > 1:
            os.close(self.stack.pop())

    def back_to_root(self) -> None:
        while len(self.stack) > 1:
            os.close(self.stack.pop())

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop())


def _step(walk: _Walk, name: str) -> tuple[int, int]:
    """The O_PATH fd of ``name`` in the current directory, and its mode; the fd is closed
    again if looking at it fails."""
    fd = sys_.openat(walk.stack[-1], name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return fd, os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise


def _userspace(root: Path, path: str, flags: int) -> int:
    """A walk in userspace: each component opened O_PATH|O_NOFOLLOW under the previous one,
    symlinks read and re-rooted, ``..`` stopped at the root. Needed before 5.6 (ENOSYS from
    openat2). Racy where openat2 is not: a directory renamed during the walk is followed."""
    walk = _Walk(root)
    pending = deque(_parts(path))
    links = 0
    name = ""
    try:
        while pending:
            name = pending.popleft()
            if name == "..":
                walk.up()
                continue
            fd, mode = _step(walk, name)
            if stat.S_ISLNK(mode):
                os.close(fd)
                target = os.readlink(name, dir_fd=walk.stack[-1])
                links += 1
                if links > MAX_SYMLINKS:
                    raise sys_.raise_errno(errno.ELOOP, "resolve", (str(root), path))
                if target.startswith("/"):
                    walk.back_to_root()
                pending.extendleft(reversed(_parts(target)))
                continue
            walk.stack.append(fd)
            if pending and not stat.S_ISDIR(mode):
                raise sys_.raise_errno(errno.ENOTDIR, "resolve", (str(root), path))
        if flags & os.O_PATH:
            return os.dup(walk.stack[-1])
        return os.open(f"/proc/thread-self/fd/{walk.stack[-1]}", flags | os.O_CLOEXEC)
    except OSError as exc:
        exc.add_note(f"path.resolve: walking {path!r} under {str(root)!r}, at {name!r}")
        raise
    finally:
        walk.close()


PATH_RESOLVE = feature(
    "path.resolve",
    "open a path inside a root directory without escaping it",
    [
        Strategy(
            "openat2",
            _openat2,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
        ),
        Strategy(
            "userspace",
            _userspace,
            weaker="a userspace walk follows a directory renamed during the walk, out of the "
            "root, where openat2 resolves atomically",
        ),
    ],
)


def open_in_root(
    root: str | os.PathLike[str], path: str, flags: int = os.O_RDONLY, force: str | None = None
) -> int:
    """An fd for ``path`` resolved inside ``root``; the caller closes it."""
    return PATH_RESOLVE(Path(root), path, flags, force=force)
