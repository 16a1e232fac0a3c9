"""Scratch mounts nobody else sees: made in a helper thread moved into a private mount
namespace of its own.

A fallback that needs a mount point for a moment (the ``tmpdir`` way of cloning a detached
mount, the overlay probes' throwaway tmpfs) would otherwise mount under ``mkdtemp()`` in the
caller's namespace. There the mount is visible to every process of that namespace. If the
directory sits on a shared mount (systemd makes / shared), it propagates to every peer
namespace too: another container's view would briefly hold the caller's detached tree. The
helper thread unshares its mount namespace and makes every mount in it private before it
mounts anything. So nothing it mounts is seen outside that thread, and everything goes with
the namespace when the thread ends, even if the cleanup failed. The directory itself is
created in the shared filesystem, empty, and removed afterwards.

File descriptors are the process's, so a detached mount the helper returns (an
``open_tree`` clone) is the caller's to use. The helper notes its calls in the caller's
traced frames, as if the caller had made them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from mountcompat import _syscalls as sys_
from mountcompat.mounts import private_mount_namespace

T = TypeVar("T")
P = ParamSpec("P")


def in_private_namespace(work: Callable[[], T]) -> T:
    """``work()``'s result, run in a helper thread in a private mount namespace; what it
    raises is raised here."""
    frames = sys_.frames()
    outcome: list[tuple[bool, object]] = []

    def helper() -> None:
        try:
            sys_.adopt_frames(frames)
            private_mount_namespace()
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome.append((False, exc))

    thread = threading.Thread(target=helper, name="mountcompat-scratch", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


def privately(function: Callable[P, T]) -> Callable[P, T]:
    """``function`` always run by :func:`in_private_namespace`."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return in_private_namespace(lambda: function(*args, **kwargs))

    return wrapper
