"""The mountinfo and statmount parsers, on literal input."""

from __future__ import annotations

import os
import struct

import pytest

from mountcompat import _constants as C
from mountcompat.errors import MountTableError
from mountcompat.listing import StatmountDecoder, parse_statmount
from mountcompat.mounts import MountAttr
from mountcompat.mounttable import (
    PRIVATE,
    MountEntry,
    Propagation,
    build_tree,
    format_mountinfo_line,
    mount_at,
    mounts_under,
    parse_mountinfo,
    parse_mountinfo_line,
    unescape,
    unmangle,
    walk,
)

MOUNTINFO = (
    b"21 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro\n"
    b"22 21 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    b"40 21 0:33 / /mnt/a\\040b\\011c\\012d\\134e ro,nosymfollow master:3 propagate_from:2"
    b" - tmpfs my\\040src rw,size=1024k\n"
    b"41 40 0:34 /sub /mnt/a\\040b\\011c\\012d\\134e/x rw unbindable - overlay overlay"
    b" rw,lowerdir+=/,upperdir=/u\\054v\n"
)

# Every name mountinfo and statmount must carry through unchanged. \r, U+0085 and U+2028
# are line breaks to str.splitlines(); \xff\xfe is not UTF-8 at all.
HOSTILE = [
    b"cr\rhere",
    "nel\u0085here".encode(),
    "ls\u2028here".encode(),
    b"tab\there",
    b"nl\nhere",
    b"back\\slash",
    b"sp ace",
    "\u00e9t\u00e9-\u65e5\u672c".encode(),
    b"bad\xff\xfeutf8",
    b"\\040not-an-escape",
    b"-",
    b"hash#mark",
    b"vt\x0bff\x0c",
    b"\x01\x7f",
    b"trailing\r",
]


def test_escapes_are_undone_on_bytes() -> None:
    assert unmangle(b"a\\040b\\011c\\012d\\134e") == b"a b\tc\nd\\e"
    assert unmangle(b"\\303\\251") == "\u00e9".encode()  # two escaped bytes, one letter
    assert unescape("a\\040b") == "a b"


@pytest.mark.parametrize("text", [b"\\", b"\\04", b"\\08x", b"\\400", b"\\777", b"a\\", b"\\x20"])
def test_a_backslash_that_starts_no_escape_stays(text: bytes) -> None:
    """The kernel writes \\000 to \\377 only; anything else is not one of its escapes."""
    assert unmangle(text) == text


def test_fields_and_optional_fields() -> None:
    root, proc, awkward, child = parse_mountinfo(MOUNTINFO)
    assert (root.mount_id, root.parent_id, root.major, root.minor) == (21, 1, 253, 1)
    assert root.propagation == Propagation(shared=1) and root.source == "/dev/vda"
    assert root.shared == 1 and root.master is None and root.propagation.summary == "shared"
    assert proc.attrs == MountAttr.NOSUID | MountAttr.NODEV | MountAttr.NOEXEC
    assert awkward.mountpoint == "/mnt/a b\tc\nd\\e"
    assert awkward.propagation == Propagation(master=3, propagate_from=2)
    assert awkward.propagation.fields == ("master:3", "propagate_from:2")
    assert awkward.propagation.summary == "private,slave"
    assert awkward.propagation.flags == C.MS_SLAVE
    assert awkward.readonly and awkward.attrs & MountAttr.NOSYMFOLLOW
    assert awkward.source == "my src" and awkward.super_options == ("rw", "size=1024k")
    assert child.root == "/sub" and child.unbindable and child.propagation.fields == ("unbindable",)
    assert child.super_options == ("rw", "lowerdir+=/", "upperdir=/u,v")  # \054 in a value
    assert child.vfs_options == ("rw",) and child.fs_options == child.super_options


def test_unknown_optional_fields_are_kept() -> None:
    (entry,) = parse_mountinfo(b"5 1 0:1 / /x rw shared:4 future:9 - tmpfs t rw\n")
    assert entry.propagation == Propagation(shared=4, other=("future:9",))
    assert entry.propagation.fields == ("shared:4", "future:9")


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_any_name_comes_back_as_the_same_bytes(name: bytes) -> None:
    point, source = os.fsdecode(b"/m/" + name), os.fsdecode(name)
    esc = format_mountinfo_line(MountEntry(7, 1, 0, 9, "/", point, ("rw",), "t", source, ("rw",)))
    table = b"1 1 0:1 / / rw - rootfs rootfs rw\n" + esc + b"\n2 1 0:2 / /after rw - a b rw\n"
    first, entry, after = parse_mountinfo(table)
    assert os.fsencode(entry.mountpoint) == b"/m/" + name
    assert os.fsencode(entry.source or "") == name
    assert (first.mountpoint, after.mountpoint) == ("/", "/after")


def test_the_line_by_line_reader_agrees_on_hostile_names() -> None:
    lines = [b"1 1 0:1 / / rw - rootfs rootfs rw"]
    for i, name in enumerate(HOSTILE, 2):
        entry = MountEntry(i, 1, 0, i, "/", os.fsdecode(b"/" + name), ("rw",), "t", "s", ("rw",))
        lines.append(format_mountinfo_line(entry))
    table = b"\n".join(lines) + b"\n"
    assert parse_mountinfo(table) == [parse_mountinfo_line(line) for line in lines]


LINE = b"36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b"36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 ext3 /dev/root rw", "separator"),
        (b"36 35 98:0 /mnt1  rw,noatime - ext3 /dev/root rw", "mount point"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw,noatime - ext3 /dev/root", "super options"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw,noatime - ext3 /dev/root ", "super options"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw,noatime - ext3", "super options"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw,noatime -  /dev/root rw", "filesystem type"),
        (b"x6 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "mount ID"),
        (b"+36 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "mount ID"),
        ("\u0663 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw".encode(), "mount ID"),
        (b"36 3_5 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "parent ID"),
        (b"36 35 98 /mnt1 /mnt/parent rw - ext3 /dev/root rw", "major:minor"),
        (b"36 35 98:x /mnt1 /mnt/parent rw - ext3 /dev/root rw", "minor"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw shared:x - ext3 /dev/root rw", "optional field shared"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw master - ext3 /dev/root rw", "optional field master"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw shared:1 shared:2 - e s rw", "optional field shared"),
        (b"36 35 98:0 /mnt1 /mnt/parent rw  - ext3 /dev/root rw", "optional fields"),
        (b"36 35 98:0 /mnt1 /mnt/parent  - ext3 /dev/root rw", "mount options"),
        (b"36 35 98:0  /mnt/parent rw - ext3 /dev/root rw", "root"),
        (b"36 35", "major:minor"),
        (b"36", "parent ID"),
    ],
)
def test_a_malformed_line_names_its_number_and_field(line: bytes, field: str) -> None:
    table = LINE + b"\n" + line + b"\n" + LINE + b"\n"
    with pytest.raises(MountTableError) as caught:
        parse_mountinfo(table)
    assert (caught.value.line, caught.value.field) == (2, field), caught.value
    assert "line 2" in str(caught.value) and field in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_empty_lines_are_skipped_and_the_source_may_be_empty() -> None:
    """The kernel writes an empty source as nothing: two spaces (util-linux reads it so)."""
    (a, b) = parse_mountinfo(b"\n1 1 0:1 / / rw - tmpfs  rw\n\n2 1 0:2 / /x rw - t s rw")
    assert a.source == "" and a.super_options == ("rw",) and b.mountpoint == "/x"


def test_super_options_run_to_the_end_of_the_line() -> None:
    (entry,) = parse_mountinfo(b"1 1 0:1 / / rw - fuse src rw,title=a b\n")
    assert entry.super_options == ("rw", "title=a b")


@pytest.mark.parametrize(
    ("options", "mode", "attr"),
    [
        ("rw,relatime", "relatime", MountAttr(0)),
        ("rw,noatime", "noatime", MountAttr.NOATIME),
        ("rw", "strictatime", MountAttr.STRICTATIME),
        ("rw,nodiratime", "strictatime", MountAttr.STRICTATIME | MountAttr.NODIRATIME),
        ("rw,nodiratime,relatime", "relatime", MountAttr.NODIRATIME),
    ],
)
def test_the_atime_mode_is_reported_as_it_is(options: str, mode: str, attr: MountAttr) -> None:
    """mountinfo writes relatime or noatime, and nothing for strictatime (show_mnt_opts)."""
    (entry,) = parse_mountinfo(f"1 1 0:1 / /m {options} - tmpfs t rw\n".encode())
    assert entry.atime == mode
    assert entry.attrs & (MountAttr(C.MS_RDONLY) | MountAttr(0x70) | MountAttr.NODIRATIME) == attr


def test_tree_and_subtree() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    (root,) = build_tree(entries)
    assert root.entry.mountpoint == "/"
    assert [n.entry.mount_id for n in root.children] == [22, 40]
    assert [e.mount_id for e in walk([root])] == [21, 22, 40, 41]
    assert [e.mount_id for e in mounts_under(entries, "/mnt/a b\tc\nd\\e")] == [40, 41]


def test_a_deep_chain_walks_without_recursion() -> None:
    lines = [f"{i} {i - 1} 0:1 / /{'d/' * i} rw - t s rw" for i in range(1, 3000)]
    (root,) = build_tree(parse_mountinfo("\n".join(lines)))
    assert len(list(walk([root]))) == 2999


# Propagation tucks a new mount under the one already there (4.11): the table lists it
# later, but it is not the one on top (seen on 6.18: bind a shared mount non-recursively,
# then mount on the copy where the original has a mount).
TUCKED = (
    b"127 126 0:40 / /w/s rw,relatime shared:1 - tmpfs S rw\n"
    b"128 131 0:41 / /w/s/d rw,relatime - tmpfs X rw\n"
    b"129 126 0:40 / /w/t rw,relatime shared:1 - tmpfs S rw\n"
    b"130 129 0:42 / /w/t/d rw,relatime shared:2 - tmpfs Y rw\n"
    b"131 127 0:42 / /w/s/d rw,relatime shared:2 - tmpfs Y rw\n"
)


def test_the_entry_on_top_at_a_mount_point() -> None:
    entries = parse_mountinfo(TUCKED)
    top = mount_at(entries, "/w/s/d")
    assert top is not None and (top.mount_id, top.source) == (128, "X")
    stacked = parse_mountinfo(TUCKED + b"140 130 0:50 / /w/t/d rw - tmpfs Z rw\n")
    assert mount_at(stacked, "/w/t/d") == stacked[-1]
    assert mount_at(entries, "/w/nothing") is None


def statmount_buffer(
    strings: dict[str, bytes],
    mask: int,
    attr: MountAttr = MountAttr.RDONLY | MountAttr.NOSUID,
    propagation: tuple[int, int, int, int] = (C.MS_SHARED, 5, 0, 0),
    sb_flags: int = 0,
) -> bytes:
    blob = b"\0"
    offsets = {}
    for name, text in strings.items():
        offsets[name] = len(blob)
        blob += text + b"\0"
    header = struct.pack(
        "=IIQIIQIIQQIIQQQQQIIQII",
        512 + len(blob),
        offsets.get("opts", 0),
        mask,
        0,
        33,
        0x858458F6,
        sb_flags,
        offsets["fstype"],
        1 << 32 | 7,
        1 << 32 | 1,
        40,
        21,
        int(attr),
        *propagation,
        offsets["root"],
        offsets["point"],
        0,
        offsets.get("subtype", 0),
        offsets.get("source", 0),
    )
    return header.ljust(512, b"\0") + blob


BASIC = (
    C.STATMOUNT_SB_BASIC
    | C.STATMOUNT_MNT_BASIC
    | C.STATMOUNT_MNT_ROOT
    | C.STATMOUNT_MNT_POINT
    | C.STATMOUNT_FS_TYPE
)
FULL = BASIC | C.STATMOUNT_SB_SOURCE | C.STATMOUNT_MNT_OPTS


def test_statmount_gives_the_same_entry_as_mountinfo() -> None:
    buf = statmount_buffer(
        {
            "fstype": b"tmpfs",
            "root": b"/",
            "point": b"/mnt/a b",
            "source": b"my src",
            "opts": b"size=1024k,x=a\\054b",
        },
        FULL,
        sb_flags=0x10 | (1 << 25),
    )
    entry = parse_statmount(buf)
    line = b"40 21 0:33 / /mnt/a\\040b ro,nosuid,relatime shared:5 - tmpfs my\\040src"
    line += b" rw,sync,lazytime,size=1024k,x=a\\054b"
    assert entry._replace(unique_id=None, parent_unique_id=None, origin="mountinfo") == (
        parse_mountinfo_line(line)
    )
    assert (entry.unique_id, entry.parent_unique_id) == (1 << 32 | 7, 1 << 32 | 1)


@pytest.mark.parametrize(
    ("attr", "options"),
    [
        (MountAttr(0), ("rw", "relatime")),
        (MountAttr.STRICTATIME, ("rw",)),
        (MountAttr.NOATIME | MountAttr.NODIRATIME, ("rw", "noatime", "nodiratime")),
        (MountAttr.RDONLY | MountAttr.NOSYMFOLLOW, ("ro", "relatime", "nosymfollow")),
        (MountAttr.NODEV | MountAttr.IDMAP, ("rw", "nodev", "relatime", "idmapped")),
    ],
)
def test_statmount_attributes_in_mountinfo_words_and_order(
    attr: MountAttr, options: tuple[str, ...]
) -> None:
    """MOUNT_ATTR_RELATIME is 0, NOATIME 0x10, STRICTATIME 0x20; show_mnt_opts writes
    relatime before nosymfollow."""
    strings = {"fstype": b"tmpfs", "root": b"/", "point": b"/m"}
    entry = parse_statmount(statmount_buffer(strings, BASIC, attr=attr))
    assert entry.options == options
    assert entry.atime == ("strictatime" if attr & MountAttr.STRICTATIME else entry.atime)


def test_statmount_propagation_as_mountinfo_shows_it() -> None:
    """propagate_from is left out when it is the master, as show_mountinfo does."""
    strings = {"fstype": b"tmpfs", "root": b"/", "point": b"/m"}
    slave = (C.MS_SLAVE, 0, 3, 3)
    entry = parse_statmount(statmount_buffer(strings, BASIC, propagation=slave))
    assert entry.propagation == Propagation(master=3)
    further = (C.MS_SLAVE | C.MS_SHARED | C.MS_UNBINDABLE, 7, 3, 2)
    entry = parse_statmount(statmount_buffer(strings, BASIC, propagation=further))
    assert entry.propagation == Propagation(shared=7, master=3, propagate_from=2, unbindable=True)
    private = (C.MS_PRIVATE, 0, 0, 0)
    assert parse_statmount(statmount_buffer(strings, BASIC, propagation=private)).propagation is (
        PRIVATE
    )


def test_statmount_fields_the_kernel_may_not_have_stay_unknown() -> None:
    """6.8 fills no source or mount options: the entry says None and (), not a guess. A
    kernel known to have them leaves them out only when empty."""
    buf = statmount_buffer({"fstype": b"proc", "root": b"/", "point": b"/p"}, BASIC)
    unknown = StatmountDecoder(known=0)(buf)
    assert unknown.source is None and unknown.super_options == ()
    known = parse_statmount(buf)
    assert known.source == "" and known.super_options == ("rw",)


def test_statmount_subtype_and_names_of_several_bytes() -> None:
    name = "/m/\u00e9t\u00e9\u2028x".encode() + b"\xff"
    strings = {"fstype": b"fuse", "subtype": b"sshfs", "root": b"/r\xc3", "point": name,
               "source": "h\u00f4te:/".encode()}  # fmt: skip
    mask = FULL | C.STATMOUNT_FS_SUBTYPE
    entry = parse_statmount(statmount_buffer(strings, mask))
    assert entry.fstype == "fuse.sshfs" and os.fsencode(entry.mountpoint) == name
    assert os.fsencode(entry.root) == b"/r\xc3" and entry.source == "h\u00f4te:/"


def test_statmount_without_a_field_it_must_have_is_an_error() -> None:
    buf = statmount_buffer({"fstype": b"t", "root": b"/", "point": b"/p"}, BASIC & ~0x10)
    with pytest.raises(MountTableError, match="mnt_point"):
        parse_statmount(buf)


def test_two_entries_with_one_mount_id_are_refused_naming_both() -> None:
    """A torn read repeats an entry: the second must not vanish from the tree."""
    lines = [
        "1 1 0:1 / / rw - rootfs rootfs rw",
        "20 1 0:20 / /a rw - tmpfs one rw",
        "21 1 0:21 / /b rw - tmpfs two rw",
        "20 1 0:22 / /c rw - tmpfs three rw",
    ]
    with pytest.raises(MountTableError) as caught:
        build_tree(parse_mountinfo("\n".join(lines)))
    assert caught.value.line == 4
    assert "also entry 2's" in str(caught.value) and "/c and /a" in str(caught.value)


def test_parents_in_a_cycle_are_refused_naming_the_entries() -> None:
    lines = [
        "1 1 0:1 / / rw - rootfs rootfs rw",
        "20 1 0:20 / /a rw - tmpfs ok rw",
        "30 31 0:30 / /x rw - tmpfs loop1 rw",
        "31 30 0:31 / /y rw - tmpfs loop2 rw",
    ]
    with pytest.raises(MountTableError) as caught:
        build_tree(parse_mountinfo("\n".join(lines)))
    assert "entries 3, 4 (mount ids 30, 31)" in str(caught.value)


def test_every_entry_is_in_the_tree_once() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert sorted(e.mount_id for e in walk(build_tree(entries))) == sorted(
        e.mount_id for e in entries
    )
