"""mounts.list: the library's table against util-linux's findmnt on the same namespace, with
names that break naive parsers; and the mount at a path, against the kernel's own stat()."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AWKWARD_NAME, Contract, assert_default_choice, require_tool

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat import listing, mount_fs
from mountcompat.choices import LOG
from mountcompat.errors import StrategyUnsupported
from mountcompat.listing import find_mount, list_mounts, mount_id_of
from mountcompat.mounttable import MountEntry, build_tree, mount_at, read_mountinfo, walk

# Every kind of name a mount point, a source or a root can have: the kernel escapes only
# space, tab, newline, backslash (and '#' in sources); str.splitlines() breaks at \r, U+0085
# and U+2028; \xff\xfe is not UTF-8; "\\040" is a name that looks like an escape.
HOSTILE = [
    os.fsencode(AWKWARD_NAME),
    b"cr\rhere",
    "nel\u0085here".encode(),
    "ls\u2028ps\u2029here".encode(),
    b"tab\there",
    b"nl\nhere",
    b"back\\slash",
    b"sp ace",
    b" - ",
    "\u00e9t\u00e9 \u65e5\u672c \U0001f600".encode(),
    b"bad\xff\xfeutf8",
    b"half\xc3",
    b"\\040not-an-escape",
    b"hash#mark",
    b'quote"d',
    b"vt\x0bff\x0cfs\x1c",
    b"ctl\x01del\x7f",
    b"trailing\r",
    b"shared:1",
    b"-",
]
COLUMNS = "ID,PARENT,MAJ:MIN,FSROOT,TARGET,SOURCE,FSTYPE,VFS-OPTIONS,FS-OPTIONS,OPT-FIELDS"
COLUMNS += ",PROPAGATION"
PROPAGATION = C.MS_SHARED | C.MS_SLAVE | C.MS_PRIVATE | C.MS_UNBINDABLE
ATIME = {"strictatime": C.MS_STRICTATIME, "noatime": C.MS_NOATIME, "relatime": C.MS_RELATIME}


def findmnt(*args: str) -> list[dict[str, object]]:
    """findmnt's JSON: names as raw bytes (util-linux lib/jsonwrt.c escapes only '"', '\\'
    and controls below 0x20), so the output is decoded as os.fsdecode would."""
    require_tool("findmnt")
    out = subprocess.run(
        ["findmnt", "--json", "--nofsroot", "--output", COLUMNS, *args],
        capture_output=True,
        check=True,
    ).stdout
    return list(json.loads(os.fsdecode(out))["filesystems"])


def as_findmnt(e: MountEntry) -> dict[str, object]:
    """An entry as findmnt shows it: null for an empty string."""
    return {
        "id": e.mount_id,
        "parent": e.parent_id,
        "maj:min": f"{e.major}:{e.minor}",
        "fsroot": e.root,
        "target": e.mountpoint,
        "source": e.source or None,
        "fstype": e.fstype,
        "vfs-options": ",".join(e.options),
        "fs-options": ",".join(e.super_options) or None,
        "opt-fields": " ".join(e.propagation.fields) or None,
        "propagation": e.propagation.summary,
    }


def statmount_fills(unique_id: int, bit: int) -> bool:
    """Whether this kernel's statmount answers ``bit`` for a mount that has something to say
    there: asked alone, raw, not through the library. A kernel that does not know the bit
    refuses it (EINVAL) or leaves it out of the returned mask."""
    try:
        answer = sys_.statmount(unique_id, bit)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    (mask,) = struct.unpack_from("=Q", answer, 8)  # struct statmount: size, mnt_opts, mask
    return bool(mask & bit)


def unknown_fields(entries: list[MountEntry], probe: str) -> frozenset[str]:
    """The fields statmount cannot fill in on this kernel (source before 6.13, options before
    6.11), found on the mount at ``probe``, which has a source and filesystem options."""
    if not entries or entries[0].origin != "statmount":
        return frozenset()
    entry = mount_at(entries, probe)
    assert entry is not None and entry.unique_id is not None, probe
    wanted = {"source": C.STATMOUNT_SB_SOURCE, "fs-options": C.STATMOUNT_MNT_OPTS}
    return frozenset(f for f, bit in wanted.items() if not statmount_fills(entry.unique_id, bit))


def comparable(
    e: MountEntry, shown: dict[str, object], unknown: frozenset[str]
) -> dict[str, object]:
    """The entry as findmnt shows it, with the fields statmount cannot fill in on this kernel
    (None and ()) left out of the comparison, and only those: where the kernel fills them in,
    a missing source or missing options are a fault of the library."""
    ours = as_findmnt(e)
    if "source" in unknown:
        assert e.source is None, e
        ours["source"] = shown["source"]
    if "fs-options" in unknown:
        assert e.super_options == (), e
        ours["fs-options"] = shown["fs-options"]
    return ours


@contextlib.contextmanager
def mounted(*mounts: tuple[bytes, bytes, str | None, int, str | None]) -> Iterator[None]:
    """mount(2) each (source, target, fstype, flags, data) in turn; detach them all after.
    The suites set up with mount(2) itself, never with the library they test."""
    done: list[bytes] = []
    try:
        for source, target, fstype, flags, data in mounts:
            sys_.mount(os.fsdecode(source), os.fsdecode(target), fstype, flags, data)
            if not flags & PROPAGATION:  # a change of propagation mounts nothing
                done.append(target)
        yield
    finally:
        for target in reversed(done):
            sys_.umount2(os.fsdecode(target), C.MNT_DETACH)


def hostile_mounts(base: Path) -> list[tuple[bytes, bytes, str | None, int, str | None]]:
    """A tmpfs per hostile name (source and mount point named after it, each atime mode and
    some attributes in turn), a bind of a hostile subdirectory (the root field), and a
    shared mount with a peer and a slave (the optional fields)."""
    root = os.fsencode(base)
    mounts: list[tuple[bytes, bytes, str | None, int, str | None]] = []
    attrs = [C.MS_NOEXEC, C.MS_NOSUID | C.MS_NODEV, C.MS_RDONLY, C.MS_NODIRATIME, 0]
    for i, name in enumerate(HOSTILE):
        target = root + b"/" + name
        os.mkdir(target)
        atime = list(ATIME.values())[i % 3]
        mounts.append((b"src " + name, target, "tmpfs", atime | attrs[i % 5], "size=1m"))
    first = root + b"/" + HOSTILE[0]
    mounts.append((b"", root + b"/" + HOSTILE[1], "tmpfs", 0, None))  # stacked, empty source
    for name in HOSTILE[:6]:
        os.mkdir(root + b"/bind" + name)
        mounts.append((first + b"/" + name, root + b"/bind" + name, None, C.MS_BIND, None))
    os.mkdir(root + b"/peer")
    os.mkdir(root + b"/slave")
    mounts += [
        (b"none", first, None, C.MS_SHARED, None),
        (first, root + b"/peer", None, C.MS_BIND, None),
        (first, root + b"/slave", None, C.MS_BIND, None),
        (b"none", root + b"/slave", None, C.MS_SLAVE, None),
    ]
    return mounts


def prepare_subdirectories(base: Path) -> None:
    first = os.fsencode(base) + b"/" + HOSTILE[0]
    for name in HOSTILE[:6]:
        os.mkdir(first + b"/" + name)


class MountsListContract(Contract):
    feature = "mounts.list"

    @pytest.fixture
    def hostile(self, workdir: Path) -> Iterator[Path]:
        mounts = hostile_mounts(workdir)
        with mounted(*mounts[: len(HOSTILE)]):
            prepare_subdirectories(workdir)
            with mounted(*mounts[len(HOSTILE) :]):
                yield workdir

    def test_agrees_with_findmnt_field_by_field(self, hostile: Path) -> None:
        entries = list_mounts(force=self.strategy)
        shown = {f["id"]: f for f in findmnt("--list")}
        assert sorted(e.mount_id for e in entries) == sorted(shown)  # type: ignore[type-var]
        unknown = unknown_fields(entries, os.fsdecode(os.fsencode(hostile) + b"/" + HOSTILE[0]))
        for e in entries:
            assert comparable(e, shown[e.mount_id], unknown) == shown[e.mount_id], e
        points = {os.fsencode(e.mountpoint) for e in entries}
        assert all(os.fsencode(hostile) + b"/" + n in points for n in HOSTILE)

    def test_every_name_opens_its_mount(self, hostile: Path) -> None:
        """Each name, decoded once, is a str that opens the same path: the mount on top
        there is the one the kernel finds at it."""
        entries = list_mounts(force=self.strategy)
        mine = [e for e in entries if e.mountpoint.startswith(str(hostile) + "/")]
        assert len(mine) > len(HOSTILE)
        for e in mine:
            top = mount_at(entries, e.mountpoint)
            assert top is not None and os.stat(e.mountpoint).st_dev == top.dev, e
            assert mount_id_of(e.mountpoint) == top.mount_id, e

    def test_tree_agrees_with_findmnt_tree(self, hostile: Path) -> None:
        entries = list_mounts(force=self.strategy)
        roots = build_tree(entries)
        assert len(roots) == 1 and roots[0].entry.mountpoint == "/"
        assert sorted(e.mount_id for e in walk(roots)) == sorted(e.mount_id for e in entries)
        ours: dict[int, list[int]] = {}
        stack = list(roots)
        while stack:
            node = stack.pop()
            ours[node.entry.mount_id] = sorted(c.entry.mount_id for c in node.children)
            stack.extend(node.children)
        theirs: dict[int, list[int]] = {}
        pending: list[dict[str, object]] = list(findmnt())
        while pending:
            f = pending.pop()
            children: list[dict[str, object]] = f.get("children", [])  # type: ignore[assignment]
            theirs[f["id"]] = sorted(c["id"] for c in children)  # type: ignore[index, misc]
            pending.extend(children)
        assert ours == theirs

    @pytest.mark.parametrize("mode", list(ATIME))
    def test_atime_mode_as_it_is(self, workdir: Path, mode: str) -> None:
        """mountinfo writes relatime or noatime and nothing for strictatime; statmount's
        mnt_attr has MOUNT_ATTR_RELATIME 0, NOATIME 0x10, STRICTATIME 0x20."""
        for extra in (0, C.MS_NODIRATIME):
            with mounted((b"mc-atime", os.fsencode(workdir), "tmpfs", ATIME[mode] | extra, None)):
                entry = mount_at(list_mounts(force=self.strategy), str(workdir))
                assert entry is not None and entry.atime == mode, entry
                assert ("nodiratime" in entry.options) == bool(extra), entry


class TestStatmount(MountsListContract):
    strategy = "statmount"

    def test_entries_carry_the_64_bit_unique_ids(self, workdir: Path) -> None:
        """statmount's ids, never reused, which mountinfo cannot give: each entry has its
        own, told apart from the old 32-bit id (a library reading mountinfo under this
        name has none)."""
        with mount_fs("tmpfs", "mc-unique", workdir, force="mount2"):
            entries = list_mounts(force=self.strategy)
            listed: list[int] = []  # listmount's own answer, page by page
            while page := sys_.listmount(C.LSMT_ROOT, listed[-1] if listed else 0, 512):
                listed += page
        uniques = [e.unique_id for e in entries]
        assert None not in uniques and len(set(uniques)) == len(uniques)
        assert sorted(u for u in uniques if u is not None) == sorted(listed)


class TestMountinfo(MountsListContract):
    strategy = "mountinfo"


@pytest.mark.default_choice("mounts.list")
def test_mounts_list_default() -> None:
    since = LOG.mark()
    assert list_mounts()
    assert_default_choice("mounts.list", since)


def test_statmount_and_mountinfo_give_the_same_entries(workdir: Path) -> None:
    """Same entries whatever the source, every field but the ids only statmount has, and
    those this kernel's statmount cannot fill in (source before 6.13, options before 6.11)."""
    with mounted((b"mc-probe", os.fsencode(workdir), "tmpfs", 0, "size=1m")):
        try:
            from_statmount = list_mounts(force="statmount")
        except StrategyUnsupported as exc:  # absent before 6.8: nothing to compare
            pytest.skip(f"statmount unavailable: {exc}")
        unknown = unknown_fields(from_statmount, str(workdir))
        mountinfo = {e.mount_id: e for e in read_mountinfo()}
    assert sorted(mountinfo) == sorted(e.mount_id for e in from_statmount)
    for entry in from_statmount:
        other = mountinfo[entry.mount_id]
        if "source" in unknown:
            assert entry.source is None, entry
        if "fs-options" in unknown:
            assert entry.super_options == (), entry
        known = entry._replace(
            unique_id=None,
            parent_unique_id=None,
            origin="mountinfo",
            source=other.source if "source" in unknown else entry.source,
            super_options=other.super_options if "fs-options" in unknown else entry.super_options,
        )
        assert known == other


def test_find_mount_is_the_mount_the_kernel_resolves(workdir: Path) -> None:
    """Stacked mounts, and a mount that propagation tucked under another (4.11): the table
    lists the tucked one last at its mount point, yet the one on top is what a path opens."""
    base = os.fsencode(workdir)
    s, t = base + b"/s", base + b"/t"
    os.mkdir(s)
    os.mkdir(t)
    first = [(b"S", s, "tmpfs", 0, None)]
    with mounted(*first):
        os.mkdir(s + b"/d")
        with mounted(
            (b"X", s + b"/d", "tmpfs", 0, None),
            (b"none", s, None, C.MS_SHARED, None),
            (s, t, None, C.MS_BIND, None),  # not recursive: X stays on s's side only
            (b"Y", t + b"/d", "tmpfs", 0, None),  # propagates to s/d, under X
            (b"Z", t + b"/d", "tmpfs", 0, None),  # on Y; on s/d, under X again
        ):
            table = read_mountinfo()
            at_sd = [e for e in table if os.fsencode(e.mountpoint) == s + b"/d"]
            # Y and Z reached s/d by propagation and went under X (Z between Y and X).
            assert [e.source for e in at_sd] == ["X", "Y", "Z"], at_sd
            expected = {b"/s/d": "X", b"/t/d": "Z", b"/s": "S", b"/t": "S"}
            for fallback in (False, True):
                listing._statx_has_mnt_id[:] = [False] if fallback else []
                try:
                    for path, source in expected.items():
                        found = find_mount(os.fsdecode(base + path))
                        assert found is not None and found.source == source, (path, found)
                        assert found.dev == os.stat(base + path).st_dev
                        exact = mount_at(table, os.fsdecode(base + path))
                        assert exact == found
                finally:
                    listing._statx_has_mnt_id[:] = []
            inside = find_mount(os.fsdecode(s + b"/d"), table)
            assert inside is not None and inside.source == "X"


def test_find_mount_of_a_path_inside_a_mount(workdir: Path) -> None:
    (workdir / "f").write_text("x")
    found = find_mount(workdir / "f")
    assert found is not None and found.dev == os.stat(workdir / "f").st_dev
    with pytest.raises(FileNotFoundError):
        find_mount(workdir / "missing")
