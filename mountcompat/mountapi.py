"""Mounting a filesystem: the new mount API where the kernel has it, mount(2) where not.

Features, preferred strategy first:

``mount.api``
    ``fsmount``: fsopen, fsconfig, fsmount, move_mount (5.2);
    ``mount2``: mount(2) with a comma-separated data string (every kernel).
``fs.create``
    ``create-excl``: FSCONFIG_CMD_CREATE_EXCL (6.6), which refuses to reuse a superblock;
    ``create``: FSCONFIG_CMD_CREATE, which may silently reuse one and ignore the parameters.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Mapping
from pathlib import Path

from mountcompat import _syscalls as sys_
from mountcompat.errors import MountCompatError
from mountcompat.fscontext import FsContext
from mountcompat.mounts import AttachedMount, DetachedMount, MountAttr, check_attrs, ms_flags
from mountcompat.strategy import Probe, Strategy, Unsupported, feature

Options = Mapping[str, str | None]


def _tmpfs_takes_create_excl() -> bool:
    """FSCONFIG_CMD_CREATE_EXCL on a throwaway tmpfs context: tmpfs is on the new mount API
    and never refuses a create, so EOPNOTSUPP can only be the command unknown (before 6.6,
    fs/fsopen.c answers any unknown command with EOPNOTSUPP before it looks at the context)."""
    try:
        with FsContext.open("tmpfs") as ctx:
            ctx.create_exclusive()
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            return False
        raise
    return True


CREATE_EXCL_KNOWN = Probe("FSCONFIG_CMD_CREATE_EXCL (6.6)", _tmpfs_takes_create_excl)


def _create_excl(ctx: FsContext) -> None:
    """FSCONFIG_CMD_CREATE_EXCL (6.6), which refuses to share an existing superblock (EBUSY,
    "reusing existing filesystem not allowed"). Before 6.6 the command is unknown: EOPNOTSUPP.
    A kernel that has it also answers EOPNOTSUPP for a filesystem still on the legacy mount
    context (btrfs before 6.8, and others), so EOPNOTSUPP is ambiguous and a probe on tmpfs
    decides: unknown command, then ``create`` for every request; known, then this filesystem
    cannot refuse to share its superblock, and ``create`` mounts it all the same (every
    filesystem the kernel can mount is mounted), the record saying that the guarantee of a
    superblock of its own was given up. Preferred because CMD_CREATE can hand back an
    existing superblock with the new parameters silently ignored."""
    try:
        ctx.create_exclusive()
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP and CREATE_EXCL_KNOWN.present():
            raise Unsupported(
                errno.EOPNOTSUPP,
                f"{ctx.fstype} is on the legacy mount context, which cannot refuse to share a "
                "superblock (FSCONFIG_CMD_CREATE_EXCL is known here, refused for it): the "
                "guarantee of a superblock of its own is given up for it",
            ) from exc
        raise


def _create(ctx: FsContext) -> None:
    """FSCONFIG_CMD_CREATE: every kernel with fsopen (5.2). Needed before 6.6, where
    CREATE_EXCL is an unknown command (EOPNOTSUPP, confirmed by the probe on tmpfs). May
    hand back an existing superblock (a block device already mounted) and ignore the new
    parameters."""
    ctx.create()


FS_CREATE = feature(
    "fs.create",
    "turn a configured fs context into a superblock",
    [
        Strategy(
            "create-excl",
            _create_excl,
            # Before 6.6 the unknown command leaves the context untouched, so "create" can go
            # on with it (the syscall returns before fdget).
            ambiguous=frozenset({errno.EOPNOTSUPP}),
            probe=CREATE_EXCL_KNOWN,
        ),
        Strategy("create", _create),
    ],
)


def create_superblock(ctx: FsContext, force: str | None = None) -> None:
    FS_CREATE(ctx, force=force)


def open_fs(
    fstype: str,
    source: str | None,
    options: Options | None = None,
    attrs: MountAttr = MountAttr.none(),
) -> DetachedMount:
    """A detached mount of a new filesystem: needs fsopen (5.2), no fallback."""
    if options is None:
        options = {}
    with FsContext.open(fstype) as ctx:
        if source is not None:
            ctx.set_string("source", source)
        ctx.set_options(dict(options))
        create_superblock(ctx)
        return ctx.mount(attrs)


def _fsmount_takes(attrs: MountAttr) -> bool:
    """fsmount of a throwaway tmpfs context with these attributes, never attached (gone with
    its fd): EINVAL there can only be a flag fsmount does not know (MOUNT_ATTR_NOSYMFOLLOW
    before 5.14, while mount(2) has MS_NOSYMFOLLOW from 5.10)."""
    with FsContext.open("tmpfs") as ctx:
        ctx.set_string("size", "4k")
        ctx.create()
        try:
            ctx.mount(attrs).close()
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False
            raise
    return True


def fsmount_attributes_known(attrs: MountAttr) -> list[Probe]:
    """The probe for a request that gives fsmount attributes (none without)."""
    if not attrs:
        return []
    return [
        Probe(
            f"fsmount with these attributes ({attrs.name})",
            functools.partial(_fsmount_takes, attrs),
            key=int(attrs),
        )
    ]


def _attributes_of_request(
    fstype: str, source: str | None, target: Path, options: Options, attrs: MountAttr
) -> list[Probe]:
    return fsmount_attributes_known(attrs)


def _via_fsmount(
    fstype: str, source: str | None, target: Path, options: Options, attrs: MountAttr
) -> AttachedMount:
    """fsopen/fsconfig/fsmount/move_mount (5.2). Before 5.2, or where a seccomp filter hides
    the syscalls (container runtimes did, returning ENOSYS): ENOSYS. An attribute fsmount does
    not know (NOSYMFOLLOW before 5.14) gets EINVAL, as does a wrong option: for a request with
    attributes a throwaway fsmount with them tells which. Preferred because every parameter
    is checked on its own, with the kernel's message, before anything is mounted."""
    with open_fs(fstype, source, options, attrs) as detached:
        return detached.attach(target)


def _data_string(options: Options) -> str:
    words = []
    for key, value in options.items():
        if value is not None and "," in value:
            raise MountCompatError(f"mount(2) data cannot carry a comma in {key}={value!r}")
        words.append(key if value is None else f"{key}={value}")
    return ",".join(words)


def _via_mount2(
    fstype: str, source: str | None, target: Path, options: Options, attrs: MountAttr
) -> AttachedMount:
    """mount(2): every kernel. Needed where fsopen answers ENOSYS. Options travel as one
    comma-separated page, so a value cannot contain a comma."""
    sys_.mount(source, target, fstype, ms_flags(attrs), _data_string(options) or None)
    return AttachedMount(target)


MOUNT_API = feature(
    "mount.api",
    "mount a filesystem on a path",
    [
        Strategy(
            "fsmount",
            _via_fsmount,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
            ambiguous=frozenset({errno.EINVAL}),
            request_probes=_attributes_of_request,
        ),
        Strategy("mount2", _via_mount2),
    ],
)


def mount_fs(
    fstype: str,
    source: str | None,
    target: str | os.PathLike[str],
    options: Options | None = None,
    attrs: MountAttr = MountAttr.none(),
    force: str | None = None,
) -> AttachedMount:
    """Mount ``fstype`` from ``source`` on ``target`` through the ``mount.api`` feature."""
    if options is None:
        options = {}
    check_attrs(attrs)
    return MOUNT_API(fstype, source, Path(target), options, attrs, force=force)
