"""The path of every strategy: what it alone calls among its feature's strategies (marks), and
what its request demands of those calls (needs). See mountcompat/testing/paths.py.

Written from the kernel's ABI and the strategies' documented contracts, not from the
library's code: a library whose strategy takes another strategy's road, or drops a flag that
defines it, fails its cell here whatever the operation's outcome.
"""

from __future__ import annotations

import os

from mountcompat import _constants as C
from mountcompat.testing.paths import ANY, Call, StrategyPath

LOOP_BINDS = ("LOOP_CONFIGURE", "LOOP_SET_FD")


def _recursive(call: str, flags: int = 0) -> tuple[Call, Call]:
    """AT_RECURSIVE on ``call`` exactly when the request is recursive."""
    return (
        Call(call, flags=flags | C.AT_RECURSIVE, when="recursive"),
        Call(call, flags=flags, without=C.AT_RECURSIVE, when="!recursive"),
    )


def _lo_flag(cmd: str, flag: str, when: str, ok: bool = True) -> Call:
    """A loop ioctl carrying LO_FLAGS_<flag> in its lo_flags when the request asks for it."""
    return Call(
        "ioctl",
        cmd=cmd,
        flags=getattr(C, f"LO_FLAGS_{flag}"),
        flags_field="lo_flags",
        ok=ok,
        when=when,
        shown=f"{cmd} {'asking' if not ok else 'with'} LO_FLAGS_{flag}",
    )


def _layers(cmd: str, fd: str | None = None) -> StrategyPath:
    """Overlay layers one parameter each (lowerdir+), as fds or strings; datadir+ as well
    when the request has data-only layers."""
    return StrategyPath(
        marks=(Call("fsconfig", cmd=cmd, key="lowerdir+", fd=fd),),
        needs=(Call("fsconfig", cmd=cmd, key="datadir+", fd=fd, when="spec.data"),),
    )


PATHS: dict[str, dict[str, StrategyPath]] = {
    "mount.api": {
        "fsmount": StrategyPath(
            marks=(Call("fsmount"),),
            needs=(Call("fsopen"), Call("move_mount", flags=C.MOVE_MOUNT_F_EMPTY_PATH)),
        ),
        "mount2": StrategyPath(
            marks=(
                Call(
                    "mount",
                    fstype=ANY,
                    without=C.MS_REMOUNT | C.MS_BIND,
                    shown="mount(2) of a filesystem type",
                ),
            ),
        ),
    },
    "fs.create": {
        "create-excl": StrategyPath(marks=(Call("fsconfig", cmd="CMD_CREATE_EXCL"),)),
        "create": StrategyPath(marks=(Call("fsconfig", cmd="CMD_CREATE"),)),
    },
    "overlay.layers": {
        "fd-opath": _layers("SET_FD", fd="O_PATH"),
        "fd-reopen": _layers("SET_FD", fd="!O_PATH"),
        "lowerdir-plus": _layers("SET_STRING"),
        "lowerdir-string": StrategyPath(
            marks=(Call("fsconfig", cmd="SET_STRING", key="lowerdir"),),
        ),
        "mount2-data": StrategyPath(marks=(Call("mount", fstype="overlay"),)),
    },
    "erofs.source": {
        "file": StrategyPath(
            marks=(Call("fsconfig", cmd="SET_STRING", key="source", source="regular file"),),
            needs=(Call("fsopen", fstype="erofs"),),
        ),
        "loop": StrategyPath(
            marks=(Call("ioctl", cmd=LOOP_BINDS, shown="a loop device bound"),),
        ),
    },
    "loop.attach": {
        "loop-configure": StrategyPath(
            marks=(Call("ioctl", cmd="LOOP_CONFIGURE"),),
            needs=(
                # Direct I/O asked, succeeding or not: the loop driver may refuse it (EINVAL)
                # for a backing file that cannot do it, and the strategy goes on without.
                _lo_flag("LOOP_CONFIGURE", "DIRECT_IO", "request.direct_io", ok=False),
                _lo_flag("LOOP_CONFIGURE", "AUTOCLEAR", "request.autoclear"),
                _lo_flag("LOOP_CONFIGURE", "READ_ONLY", "request.read_only"),
            ),
        ),
        "set-fd-status": StrategyPath(
            marks=(Call("ioctl", cmd="LOOP_SET_FD"),),
            needs=(
                Call("ioctl", cmd="LOOP_SET_STATUS64"),
                _lo_flag("LOOP_SET_STATUS64", "AUTOCLEAR", "request.autoclear"),
                Call("ioctl", cmd="LOOP_SET_DIRECT_IO", ok=False, when="request.direct_io"),
            ),
        ),
    },
    "mount.detached": {
        "direct": StrategyPath(
            marks=(Call("open_tree", flags=C.OPEN_TREE_CLONE | C.AT_EMPTY_PATH),),
            needs=_recursive("open_tree", C.OPEN_TREE_CLONE),
        ),
        "tmpdir": StrategyPath(
            marks=(Call("move_mount", flags=C.MOVE_MOUNT_F_EMPTY_PATH),),
            needs=(
                *_recursive("open_tree", C.OPEN_TREE_CLONE),
                Call("umount2", flags=C.MNT_DETACH),
            ),
        ),
    },
    "mount.attr": {
        "mount-setattr": StrategyPath(
            marks=(Call("mount_setattr"),),
            needs=_recursive("mount_setattr"),
        ),
        "remount": StrategyPath(
            marks=(Call("mount", flags=C.MS_BIND | C.MS_REMOUNT),),
            needs=(Call("read", path="/mountinfo", shown="mountinfo read"),),
        ),
    },
    "tree.attr": {
        "open-tree-attr": StrategyPath(
            marks=(Call("open_tree_attr", flags=C.OPEN_TREE_CLONE),),
            needs=_recursive("open_tree_attr", C.OPEN_TREE_CLONE),
        ),
        "open-tree-setattr": StrategyPath(
            marks=(
                Call("open_tree", flags=C.OPEN_TREE_CLONE),
                Call("mount_setattr", flags=C.AT_EMPTY_PATH),
            ),
            needs=(
                *_recursive("open_tree", C.OPEN_TREE_CLONE),
                *_recursive("mount_setattr", C.AT_EMPTY_PATH),
            ),
        ),
    },
    "mounts.list": {
        "statmount": StrategyPath(marks=(Call("listmount"), Call("statmount"))),
        "mountinfo": StrategyPath(
            marks=(Call("read", path="/mountinfo", shown="mountinfo read"),),
        ),
    },
    "path.resolve": {
        "openat2": StrategyPath(
            marks=(
                Call(
                    "openat2",
                    flags=C.RESOLVE_IN_ROOT | C.RESOLVE_NO_MAGICLINKS,
                    flags_field="resolve",
                    shown="openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS",
                ),
            ),
        ),
        "userspace": StrategyPath(
            marks=(
                Call(
                    "openat",
                    flags=os.O_PATH | os.O_NOFOLLOW,
                    shown="openat O_PATH|O_NOFOLLOW per component",
                ),
            ),
        ),
    },
}
