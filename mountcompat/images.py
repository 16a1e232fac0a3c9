"""Filesystem images: erofs (backed by the file itself where the kernel can) and squashfs.

Feature ``erofs.source``, preferred first:

``file``
    the image file as the source (6.12, CONFIG_EROFS_FS_BACKED_BY_FILE);
``loop``
    a read-only, autoclear loop device over the image (every kernel).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from mountcompat.fscontext import FsContext
from mountcompat.loop import attach
from mountcompat.mountapi import create_superblock, mount_fs
from mountcompat.mounts import AttachedMount, MountAttr, check_attrs
from mountcompat.strategy import Strategy, feature


def _erofs_file(image: Path, target: Path, attrs: MountAttr) -> AttachedMount:
    """The image file as the source (6.12, "erofs: add file-backed mount
    support", if the kernel was built with CONFIG_EROFS_FS_BACKED_BY_FILE). Before: ENOTBLK at
    FSCONFIG_CMD_CREATE, as erofs looks for a block device. Also ENOTBLK on a kernel that has
    it when the image lies on a filesystem without read_folio (tmpfs): so the answer depends on
    the backing filesystem and is not remembered. Preferred: no loop device to allocate, race
    for, and leak."""
    with FsContext.open("erofs") as ctx:
        ctx.set_string("source", os.fspath(image))
        ctx.set_flag("ro")  # else erofs opens the image read-write
        create_superblock(ctx)
        with ctx.mount(attrs | MountAttr.RDONLY) as detached:
            return detached.attach(target)


def mount_through_loop(fstype: str, image: Path, target: Path, attrs: MountAttr) -> AttachedMount:
    """Attach ``image`` to a read-only autoclear loop device and mount that; the returned
    mount owns the device, so closing it unmounts and then lets the device go."""
    device = attach(image, read_only=True, autoclear=True)
    try:
        # "ro" for the superblock: a read-only loop device refuses a writer (EACCES).
        mounted = mount_fs(fstype, str(device.path), target, {"ro": None}, attrs | MountAttr.RDONLY)
    except BaseException:
        device.close()
        raise
    mounted.own(device.close)
    return mounted


def _erofs_loop(image: Path, target: Path, attrs: MountAttr) -> AttachedMount:
    """A loop device over the image: every kernel. Needed before 6.12 (ENOTBLK from the file
    strategy) and where CONFIG_EROFS_FS_BACKED_BY_FILE is off."""
    return mount_through_loop("erofs", image, target, attrs)


EROFS_SOURCE = feature(
    "erofs.source",
    "mount an erofs image",
    [
        Strategy(
            "file",
            _erofs_file,
            unsupported=frozenset({errno.ENOTBLK, errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
        ),
        Strategy("loop", _erofs_loop),
    ],
)


def mount_erofs(
    image: str | os.PathLike[str],
    target: str | os.PathLike[str],
    attrs: MountAttr = MountAttr.none(),
    force: str | None = None,
) -> AttachedMount:
    check_attrs(attrs)
    return EROFS_SOURCE(Path(image), Path(target), attrs, force=force)


def mount_squashfs(
    image: str | os.PathLike[str],
    target: str | os.PathLike[str],
    attrs: MountAttr = MountAttr.none(),
) -> AttachedMount:
    """squashfs has no file-backed mode: always a loop device."""
    check_attrs(attrs)
    return mount_through_loop("squashfs", Path(image), Path(target), attrs)
