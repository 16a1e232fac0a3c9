"""Mount attributes (read-only, nosuid, nodev, noexec, noatime, nosymfollow) and clones.

Feature ``mount.attr``, preferred first:

``mount-setattr``
    mount_setattr(2), atomically over a whole tree with AT_RECURSIVE (5.12; NOSYMFOLLOW 5.14);
``remount``
    mount(2) with MS_BIND|MS_REMOUNT on each mount found in mountinfo (every kernel).

Feature ``tree.attr`` (a detached clone of a tree, with attributes), preferred first:

``open-tree-attr``
    open_tree_attr(2): clone and set in one call (6.15);
``open-tree-setattr``
    open_tree(OPEN_TREE_CLONE), then mount_setattr on the clone (5.12).
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.fscontext import FsContext
from mountcompat.listing import find_mount
from mountcompat.mounts import ATIME_MASK, DetachedMount, MountAttr, check_attrs, ms_flags
from mountcompat.mounttable import MountEntry, mounts_under, read_mountinfo
from mountcompat.strategy import Probe, Strategy, feature


def attr_struct(set_: MountAttr, clear: MountAttr) -> sys_.MountAttrStruct:
    clr = int(clear)
    if (set_ | clear) & ATIME_MASK:
        # The kernel takes the atime field whole: name it in attr_clr to change it, and the new
        # value (RELATIME is 0) in attr_set.
        clr |= ATIME_MASK
    return sys_.MountAttrStruct(attr_set=int(set_), attr_clr=clr, propagation=0, userns_fd=0)


def _setattr_takes(set_: MountAttr, clear: MountAttr) -> bool:
    """mount_setattr of these attributes on a throwaway detached tmpfs (fsopen and fsmount:
    in no tree, gone with its fd). The request is valid in every other way, so EINVAL can
    only be a flag this kernel does not know (MOUNT_ATTR_NOSYMFOLLOW before 5.14)."""
    with FsContext.open("tmpfs") as ctx:
        ctx.set_string("size", "4k")
        ctx.create()
        with ctx.mount() as scratch:
            try:
                sys_.mount_setattr(scratch.fileno(), "", C.AT_EMPTY_PATH, attr_struct(set_, clear))
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    return False
                raise
    return True


def _attributes_known(
    path: Path, set_: MountAttr, clear: MountAttr, recursive: bool
) -> list[Probe]:
    shown = f"set {set_.name or 0}, clear {clear.name or 0}"
    return [
        Probe(
            f"mount_setattr with these attributes ({shown})",
            functools.partial(_setattr_takes, set_, clear),
            key=(int(set_), int(clear)),
        )
    ]


def _mount_setattr(path: Path, set_: MountAttr, clear: MountAttr, recursive: bool) -> None:
    """mount_setattr(2) (5.12; MOUNT_ATTR_NOSYMFOLLOW from 5.14). Before 5.12: ENOSYS; a flag
    the kernel does not know: EINVAL, which is also the answer for a path that is not a
    mount point: the same attributes on a throwaway detached mount tell which. Preferred:
    one call changes a whole tree atomically."""
    flags = C.AT_RECURSIVE if recursive else 0
    sys_.mount_setattr(C.AT_FDCWD, path, flags | C.AT_SYMLINK_NOFOLLOW, attr_struct(set_, clear))


def _remount(path: Path, set_: MountAttr, clear: MountAttr, recursive: bool) -> None:
    """MS_BIND|MS_REMOUNT on the mount at ``path`` and (recursively) on each mount point
    below it, from mountinfo: every kernel. Needed before 5.12 and, for nosymfollow, before
    5.14 (mount(2) has MS_NOSYMFOLLOW from 5.10). Each remount acts on the mount on top at
    its path, so that is the one whose attributes are read (the kernel's answer, not the
    table's order: propagation can tuck a mount under another); a mount point covered by
    another mount cannot be reached by path and is left as it is. Not atomic: another
    mount can appear between the read and the remounts; a failure gives the mounts already
    changed their earlier attributes back, saying so on the error (and which stay changed
    where that fails too)."""
    real = os.path.realpath(path)
    entries = read_mountinfo()
    top = find_mount(real, entries)
    if top is None or top.mountpoint != real:
        raise sys_.raise_errno(errno.EINVAL, "remount", (real, "not a mount point"))
    targets = [top]
    if recursive:
        points = dict.fromkeys(e.mountpoint for e in mounts_under(entries, real))
        for point in points:
            visible = find_mount(point, entries) if point != real else None
            if visible is not None and visible.mountpoint == point:
                targets.append(visible)
    atime_field = MountAttr(ATIME_MASK)
    done: list[MountEntry] = []
    for entry in targets:
        # The atime mode is one field, as for mount_setattr: kept unless set_ or clear name
        # it, then set_'s (relatime if it names none).
        current = entry.attrs
        atime = set_ & atime_field if (set_ | clear) & atime_field else current & atime_field
        wanted = (current & ~clear & ~atime_field) | (set_ & ~atime_field) | atime
        try:
            sys_.mount(None, entry.mountpoint, None, _remount_flags(wanted))
        except OSError as exc:
            _roll_back(done, exc)
            raise
        done.append(entry)


def _remount_flags(attrs: MountAttr) -> int:
    """MS_BIND|MS_REMOUNT giving a mount exactly ``attrs``. The atime mode is always passed: a
    remount keeps the old mode only when no atime flag at all is given, MS_NODIRATIME
    included (path_mount, "The default atime for remount is preservation", 2.6.30), so
    nodiratime alone would turn a strictatime or noatime mount into relatime."""
    atime = attrs & MountAttr(ATIME_MASK)
    return C.MS_BIND | C.MS_REMOUNT | ms_flags(attrs) | (0 if atime else C.MS_RELATIME)


def _roll_back(done: list[MountEntry], cause: OSError) -> None:
    """After a remount of a tree failed: give the mounts already changed their earlier
    attributes back (known from the table read before), newest first, and say on ``cause``
    what was restored, and exactly which mounts stay changed where a restore failed too."""
    restored, left = [], []
    for entry in reversed(done):
        try:
            sys_.mount(None, entry.mountpoint, None, _remount_flags(entry.attrs))
            restored.append(entry.mountpoint)
        except OSError as exc:
            left.append(f"{entry.mountpoint} ({exc.strerror})")
    if restored:
        cause.add_note(f"mount.attr remount: restored the earlier attributes of {restored}")
    if left:
        cause.add_note(f"mount.attr remount: left changed, restoring failed too: {left}")


MOUNT_ATTR = feature(
    "mount.attr",
    "change the attributes of a mount (or a tree of mounts)",
    [
        Strategy(
            "mount-setattr",
            _mount_setattr,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
            ambiguous=frozenset({errno.EINVAL}),
            request_probes=_attributes_known,
        ),
        Strategy("remount", _remount),
    ],
)


def set_mount_attrs(
    path: str | os.PathLike[str],
    set_: MountAttr = MountAttr.none(),
    clear: MountAttr = MountAttr.none(),
    recursive: bool = False,
    force: str | None = None,
) -> None:
    check_attrs(set_, clear)
    MOUNT_ATTR(Path(path), set_, clear, recursive, force=force)


def _open_tree_attr(
    path: Path, set_: MountAttr, clear: MountAttr, recursive: bool
) -> DetachedMount:
    """open_tree_attr(2) (6.15). Before: ENOSYS. Preferred: the clone never exists without
    its attributes."""
    flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)
    return DetachedMount(sys_.open_tree_attr(C.AT_FDCWD, path, flags, attr_struct(set_, clear)))


def _open_tree_then_setattr(
    path: Path, set_: MountAttr, clear: MountAttr, recursive: bool
) -> DetachedMount:
    """open_tree(OPEN_TREE_CLONE) and then mount_setattr(AT_EMPTY_PATH) on it (5.12). Needed
    before 6.15. Before 5.12: ENOSYS from mount_setattr; before 5.2, from open_tree. EINVAL
    for a flag the kernel does not know, told from a wrong request as for mount-setattr."""
    flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)
    clone = DetachedMount(sys_.open_tree(C.AT_FDCWD, path, flags))
    try:
        setattr_flags = C.AT_EMPTY_PATH | (C.AT_RECURSIVE if recursive else 0)
        sys_.mount_setattr(clone.fileno(), "", setattr_flags, attr_struct(set_, clear))
    except BaseException:
        clone.close()
        raise
    return clone


TREE_ATTR = feature(
    "tree.attr",
    "clone a tree of mounts, detached, with attributes",
    [
        Strategy(
            "open-tree-attr",
            _open_tree_attr,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
        ),
        Strategy(
            "open-tree-setattr",
            _open_tree_then_setattr,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
            ambiguous=frozenset({errno.EINVAL}),
            request_probes=_attributes_known,
        ),
    ],
)


def clone_tree(
    path: str | os.PathLike[str],
    set_: MountAttr = MountAttr.none(),
    clear: MountAttr = MountAttr.none(),
    recursive: bool = True,
    force: str | None = None,
) -> DetachedMount:
    check_attrs(set_, clear)
    return TREE_ATTR(Path(path), set_, clear, recursive, force=force)
