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
from collections import deque
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.strategy import Strategy, feature

MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS


def _openat2(root: Path, path: str, flags: int) -> int:
    """openat2 with RESOLVE_IN_ROOT (5.6). Before: ENOSYS. Preferred: the kernel resolves
    atomically, so a rename racing the walk cannot move it outside the root."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = sys_.OpenHow(
            flags=flags | os.O_CLOEXEC, mode=0, resolve=C.RESOLVE_IN_ROOT | C.RESOLVE_NO_MAGICLINKS
        )
        return sys_.openat2(rootfd, path, how)
    finally:
        os.close(rootfd)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _userspace(root: Path, path: str, flags: int) -> int:
    """A walk in userspace: each component opened O_PATH|O_NOFOLLOW under the previous one,
    symlinks read and re-rooted, ``..`` stopped at the root. Needed before 5.6 (ENOSYS from
    openat2). Racy where openat2 is not: a directory renamed during the walk is followed."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack = [rootfd]
    pending = deque(_parts(path))
    links = 0
    try:
        while pending:
            name = pending.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=stack[-1])
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise sys_.raise_errno(errno.ELOOP, "resolve", (str(root), path))
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extendleft(reversed(_parts(target)))
                continue
            if pending and not stat.S_ISDIR(mode):
                os.close(fd)
                raise sys_.raise_errno(errno.ENOTDIR, "resolve", (str(root), path))
            stack.append(fd)
        if flags & os.O_PATH:
            return os.dup(stack[-1])
        return os.open(f"/proc/self/fd/{stack[-1]}", flags | os.O_CLOEXEC)
    finally:
        for fd in stack:
            os.close(fd)


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
        Strategy("userspace", _userspace),
    ],
)


def open_in_root(
    root: str | os.PathLike[str], path: str, flags: int = os.O_RDONLY, force: str | None = None
) -> int:
    """An fd for ``path`` resolved inside ``root``; the caller closes it."""
    return PATH_RESOLVE(Path(root), path, flags, force=force)
