"""Working with detached mounts (from fsmount or OPEN_TREE_CLONE) as sources.

Feature ``mount.detached`` (clone a detached mount), preferred first:

``direct``
    open_tree(OPEN_TREE_CLONE) on the detached mount's fd itself (6.15);
``tmpdir``
    attach it to a private temporary directory, clone that path, then detach the temporary
    mount again (every kernel with open_tree).
"""

from __future__ import annotations

import errno
import os
import tempfile

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.mounts import DetachedMount
from mountcompat.scratch import privately
from mountcompat.strategy import Probe, Strategy, feature


def _clone_flags(recursive: bool) -> int:
    return C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)


def _direct(source: DetachedMount, recursive: bool) -> DetachedMount:
    """OPEN_TREE_CLONE of a detached mount (6.15, "mount: handle mount propagation for detached
    mount trees" series). Before 6.15 the kernel refuses to copy a tree that is not in a mount
    namespace: EINVAL, which 6.15 also answers for a tree it may not copy (unbindable, of
    another mount namespace); a probe (a clone of a fresh detached tmpfs) tells which."""
    flags = _clone_flags(recursive) | C.AT_EMPTY_PATH
    return DetachedMount(sys_.open_tree(source.fileno(), "", flags))


def _tmpdir(source: DetachedMount, recursive: bool) -> DetachedMount:
    """Attach ``source`` to a temporary directory, clone it from there, detach it again (5.2).
    Needed before 6.15 (EINVAL from ``direct``). The attach happens in a private mount
    namespace of a helper thread (mountcompat.scratch), so no other process, nor a peer
    namespace, ever sees the source mounted; the directory is an empty one in the caller's
    view, removed afterwards. The source's fd stays open and keeps its (now unmounted) tree
    alive until closed; the clone does not depend on it."""
    scratch = tempfile.mkdtemp(prefix="mountcompat-detached.")
    try:
        clone = _clone_through(scratch, source, recursive)
    except BaseException:
        os.rmdir(scratch)
        raise
    try:
        os.rmdir(scratch)
    except BaseException:
        clone.close()  # the caller never gets it: it must not stay open
        raise
    return clone


@privately
def _clone_through(scratch: str, source: DetachedMount, recursive: bool) -> DetachedMount:
    sys_.move_mount(source.fileno(), "", C.AT_FDCWD, scratch, C.MOVE_MOUNT_F_EMPTY_PATH)
    try:
        clone = DetachedMount(sys_.open_tree(C.AT_FDCWD, scratch, _clone_flags(recursive)))
    except BaseException as exc:
        _leave_scratch(scratch, exc)
        raise
    try:
        _leave_scratch(scratch)
    except BaseException:
        clone.close()  # the caller never gets it: it must not stay open
        raise
    return clone


def _leave_scratch(scratch: str, cause: BaseException | None = None) -> None:
    """Detach the source from ``scratch``, so that it is unmounted when the caller gets the
    clone (not whenever the helper thread's namespace is torn down). If the detach fails the
    source goes with that namespace, and the error says so. With ``cause`` (an earlier
    failure, the one raised), a failing detach is noted on it."""
    try:
        sys_.umount2(scratch, C.MNT_DETACH)
    except OSError as exc:
        what = (
            "mount.detached: the source could not be detached from its scratch directory; "
            "it remains mounted only in the helper thread's private namespace, which goes with "
            "the thread"
        )
        if cause is None:
            exc.add_note(what)
            raise
        cause.add_note(f"{what} (detaching it failed too: {exc})")


def _clones_detached_mounts() -> bool:
    """Whether open_tree clones a detached mount: tried on a fresh detached tmpfs, never
    attached anywhere, closed at once."""
    context = sys_.fsopen("tmpfs")
    try:
        sys_.fsconfig(context, C.FSCONFIG_CMD_CREATE)
        source = DetachedMount(sys_.fsmount(context))
    finally:
        os.close(context)
    with source:
        try:
            flags = _clone_flags(False) | C.AT_EMPTY_PATH
            os.close(sys_.open_tree(source.fileno(), "", flags))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False
            raise
    return True


CLONES_DETACHED = Probe("OPEN_TREE_CLONE of a detached mount (6.15)", _clones_detached_mounts)
MOUNT_DETACHED = feature(
    "mount.detached",
    "clone a detached mount",
    [
        Strategy(
            "direct",
            _direct,
            ambiguous=frozenset({errno.EINVAL}),
            probe=CLONES_DETACHED,
        ),
        Strategy("tmpdir", _tmpdir),
    ],
)


def clone_detached(
    source: DetachedMount, recursive: bool = False, force: str | None = None
) -> DetachedMount:
    """A detached clone of the detached ``source``. ``direct`` leaves the source as it was;
    ``tmpdir`` leaves it unmounted: its fd still reaches the files, but attaching or cloning
    it again fails with EINVAL (docs/library.md, "Detached clones")."""
    return MOUNT_DETACHED(source, recursive, force=force)
