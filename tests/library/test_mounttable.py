"""The mountinfo and statmount parsers, on literal input."""

from __future__ import annotations

import struct

from mountcompat import _constants as C
from mountcompat.mounts import MountAttr
from mountcompat.mounttable import (
    build_tree,
    mounts_under,
    parse_mountinfo,
    parse_statmount,
    unescape,
    walk,
)

MOUNTINFO = (
    "21 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro\n"
    "22 21 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "40 21 0:33 / /mnt/a\\040b\\011c\\012d\\134e ro,nosymfollow master:3 propagate_from:2"
    " - tmpfs my\\040src rw,size=1024k\n"
    "41 40 0:34 /sub /mnt/a\\040b\\011c\\012d\\134e/x rw unbindable - overlay overlay"
    " rw,lowerdir+=/,upperdir=/u\n"
)


def test_escapes_are_decoded() -> None:
    assert unescape("a\\040b\\011c\\012d\\134e") == "a b\tc\nd\\e"


def test_fields_and_optional_fields() -> None:
    root, proc, awkward, child = parse_mountinfo(MOUNTINFO)
    assert (root.mount_id, root.parent_id, root.major, root.minor) == (21, 1, 253, 1)
    assert root.propagation == ("shared:1",) and root.source == "/dev/vda"
    assert proc.attrs == MountAttr.NOSUID | MountAttr.NODEV | MountAttr.NOEXEC
    assert awkward.mountpoint == "/mnt/a b\tc\nd\\e"
    assert awkward.propagation == ("master:3", "propagate_from:2")
    assert awkward.readonly and awkward.attrs & MountAttr.NOSYMFOLLOW
    assert awkward.source == "my src" and awkward.super_options == ("rw", "size=1024k")
    assert child.root == "/sub" and child.propagation == ("unbindable",)


def test_tree_and_subtree() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    (root,) = build_tree(entries)
    assert root.entry.mountpoint == "/"
    assert [n.entry.mount_id for n in root.children] == [22, 40]
    assert [e.mount_id for e in walk([root])] == [21, 22, 40, 41]
    assert [e.mount_id for e in mounts_under(entries, "/mnt/a b\tc\nd\\e")] == [40, 41]


def statmount_buffer(strings: dict[str, str], mask: int) -> bytes:
    blob = b""
    offsets = {}
    for name, text in strings.items():
        offsets[name] = len(blob)
        blob += text.encode() + b"\0"
    header = struct.pack(
        "=IIQIIQIIQQIIQQQQQIIQII",
        512,
        offsets.get("opts", 0),
        mask,
        0,
        33,
        0x858458F6,
        0,
        offsets["fstype"],
        1 << 32 | 7,
        1 << 32 | 1,
        40,
        21,
        int(MountAttr.RDONLY | MountAttr.NOSUID),
        C.MS_SHARED,
        5,
        0,
        0,
        offsets["root"],
        offsets["point"],
        0,
        0,
        offsets.get("source", 0),
    )
    return header.ljust(512, b"\0") + blob


def test_statmount_gives_the_same_entry_type() -> None:
    mask = (
        C.STATMOUNT_SB_BASIC
        | C.STATMOUNT_MNT_BASIC
        | C.STATMOUNT_MNT_ROOT
        | C.STATMOUNT_MNT_POINT
        | C.STATMOUNT_FS_TYPE
        | C.STATMOUNT_SB_SOURCE
        | C.STATMOUNT_MNT_OPTS
    )
    buf = statmount_buffer(
        {
            "fstype": "tmpfs",
            "root": "/",
            "point": "/mnt/a b",
            "source": "my src",
            "opts": "size=1024k",
        },
        mask,
    )
    entry = parse_statmount(buf)
    assert (entry.mount_id, entry.parent_id, entry.minor) == (40, 21, 33)
    assert entry.mountpoint == "/mnt/a b" and entry.fstype == "tmpfs"
    assert entry.source == "my src" and entry.super_options == ("size=1024k",)
    assert entry.readonly and "nosuid" in entry.options
    assert entry.propagation == ("shared:5",) and entry.unique_id == 1 << 32 | 7


def test_statmount_fields_not_in_the_mask_stay_empty() -> None:
    """6.8 fills no source or mount options: the entry says None, not a guess."""
    mask = (
        C.STATMOUNT_MNT_BASIC | C.STATMOUNT_MNT_ROOT | C.STATMOUNT_MNT_POINT | C.STATMOUNT_FS_TYPE
    )
    entry = parse_statmount(statmount_buffer({"fstype": "proc", "root": "/", "point": "/p"}, mask))
    assert entry.source is None and entry.super_options == ()
