"""mountcompat: the Linux mount API with run-time-probed fallbacks, and a record of each choice.

Every operation goes through a *feature* (``overlay.layers``, ``mount.attr``...) that tries its
strategies in order, remembers what the kernel cannot do, and records each attempt in
:data:`mountcompat.choices.LOG`. See docs/fallbacks.md for the table.
"""

from __future__ import annotations

from mountcompat.attrs import clone_tree, set_mount_attrs
from mountcompat.choices import LOG, ChoiceRecord, forced
from mountcompat.detached import clone_detached
from mountcompat.errors import (
    ForcingRefused,
    LazyUnmountWarning,
    MountCompatError,
    MountTableError,
    NoStrategyWorked,
    OverlayOptionsTooLong,
    StrategyUnsupported,
    UnknownStrategy,
)
from mountcompat.fscontext import FsContext
from mountcompat.images import mount_erofs, mount_squashfs
from mountcompat.listing import find_mount, list_mounts, mount_id_of
from mountcompat.loop import LoopDevice
from mountcompat.loop import attach as attach_loop
from mountcompat.mountapi import mount_fs, open_fs
from mountcompat.mounts import AttachedMount, DetachedMount, MountAttr, private_mount_namespace
from mountcompat.mounttable import (
    MountEntry,
    MountNode,
    Propagation,
    build_tree,
    mount_at,
    parse_mountinfo,
    read_mountinfo,
    walk,
)
from mountcompat.overlay import OverlaySpec, mount_overlay
from mountcompat.resolve import open_in_root
from mountcompat.strategy import FEATURES, reset_probes

__all__ = [
    "FEATURES",
    "LOG",
    "AttachedMount",
    "ChoiceRecord",
    "DetachedMount",
    "ForcingRefused",
    "FsContext",
    "LazyUnmountWarning",
    "LoopDevice",
    "MountAttr",
    "MountCompatError",
    "MountEntry",
    "MountNode",
    "MountTableError",
    "NoStrategyWorked",
    "OverlayOptionsTooLong",
    "OverlaySpec",
    "Propagation",
    "StrategyUnsupported",
    "UnknownStrategy",
    "attach_loop",
    "build_tree",
    "clone_detached",
    "clone_tree",
    "find_mount",
    "forced",
    "list_mounts",
    "mount_at",
    "mount_erofs",
    "mount_fs",
    "mount_id_of",
    "mount_overlay",
    "mount_squashfs",
    "open_fs",
    "open_in_root",
    "parse_mountinfo",
    "private_mount_namespace",
    "read_mountinfo",
    "reset_probes",
    "set_mount_attrs",
    "walk",
]
