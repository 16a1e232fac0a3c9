"""The mount table as one entry type, whether it came from mountinfo or from statmount.

A line of /proc/<pid>/mountinfo (proc_pid_mountinfo(5); fs/proc_namespace.c, show_mountinfo)::

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)  (4)     (5)         (6)      (7)    (8) (9)    (10)         (11)

mount id, parent id, major:minor, root, mount point, per-mount (VFS) options, optional fields
(propagation) ended by a lone ``-``, filesystem type, source, super (filesystem) options. One
space separates fields. The kernel escapes space, tab, newline and backslash as ``\\040
\\011 \\012 \\134`` in root, mount point, type and source (and ``#`` in the source), and
commas too inside option values (seq_show_option); every other byte is written as it is.
Names are bytes, not text: escapes are undone on bytes, as util-linux's ``unmangle`` does
(lib/mangle.c), and each name is decoded with :func:`os.fsdecode`, so that any name, invalid
UTF-8 included, comes back as a str that opens the same path. Lines end at ``\\n`` only:
``\\r``, U+0085 and U+2028 are part of names.

Parsers are pure functions over bytes returning immutable entries; :func:`read_mountinfo`
is the thin reader around them, its ``/proc`` root an argument. A line that does not follow
the format raises :class:`~mountcompat.errors.MountTableError` naming the line and the field.

Entries are named tuples, not dataclasses, for speed alone: a frozen dataclass's ``__init__``
costs about 2 us per entry (one ``object.__setattr__`` per field), 20 ms for a table of
10,000 mounts, more than the whole parse; a named tuple is built in C from the fields.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.errors import MountTableError
from mountcompat.mounts import MountAttr, attrs_from_options

# --- escapes ----------------------------------------------------------------------------

# The kernel writes a byte as a backslash and three octal digits (seq_escape); the largest is
# \377. util-linux also reads \400-\777 (as the byte's value modulo 256); the kernel never
# writes those, and here they stay as they are, like any backslash not starting an escape.
_ESCAPE = re.compile(rb"\\([0-3][0-7][0-7])")
_ESCAPED = {b"%03o" % i: bytes([i]) for i in range(256)}


def unmangle(raw: bytes) -> bytes:
    """Undo the kernel's octal escapes, on bytes (util-linux lib/mangle.c, unmangle)."""
    if b"\\" not in raw:
        return raw
    return _ESCAPE.sub(lambda m: _ESCAPED[m.group(1)], raw)


def mangle(raw: bytes, special: bytes = b" \t\n\\") -> bytes:
    """Escape as the kernel does for mountinfo (fs/proc_namespace.c: ``" \\t\\n\\\\"``, and
    ``"#"`` too for the source); the inverse of :func:`unmangle`."""
    return b"".join(b"\\%03o" % b if b in special else bytes([b]) for b in raw)


def unescape(text: str) -> str:
    """:func:`unmangle` for a name already decoded with :func:`os.fsdecode`."""
    if "\\" not in text:
        return text
    return os.fsdecode(unmangle(os.fsencode(text)))


# --- entries ----------------------------------------------------------------------------


class Propagation(NamedTuple):
    """Mountinfo's optional fields: ``shared:N`` (peer group), ``master:N`` (receives from
    that group), ``propagate_from:N`` (the nearest dominating group this namespace can see,
    shown only when it is not the master), ``unbindable``. Tags this library does not know
    are kept, as written, in ``other``."""

    shared: int | None = None
    master: int | None = None
    propagate_from: int | None = None
    unbindable: bool = False
    other: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """The optional fields as mountinfo writes them, in the kernel's order."""
        words = [] if self.shared is None else [f"shared:{self.shared}"]
        if self.master is not None:
            words.append(f"master:{self.master}")
        if self.propagate_from is not None:
            words.append(f"propagate_from:{self.propagate_from}")
        if self.unbindable:
            words.append("unbindable")
        return (*words, *self.other)

    @property
    def flags(self) -> int:
        """MS_SHARED, MS_SLAVE, MS_UNBINDABLE as statmount's mnt_propagation has them
        (MS_PRIVATE when neither shared nor a slave)."""
        flags = 0 if self.shared is None else C.MS_SHARED
        flags |= 0 if self.master is None else C.MS_SLAVE
        flags |= C.MS_UNBINDABLE if self.unbindable else 0
        return flags or C.MS_PRIVATE

    @property
    def summary(self) -> str:
        """As findmnt's PROPAGATION column: ``shared`` or ``private``, then ``,slave`` and
        ``,unbindable``."""
        words = ["private" if self.shared is None else "shared"]
        if self.master is not None:
            words.append("slave")
        if self.unbindable:
            words.append("unbindable")
        return ",".join(words)


PRIVATE = Propagation()


class MountEntry(NamedTuple):
    """One mount. ``options`` are the per-mount (VFS) options, ``super_options`` those of the
    filesystem (its superblock), both as mountinfo writes them. ``source`` is None only when
    statmount could not say (before 6.13). ``unique_id`` and ``parent_unique_id`` are
    statmount's 64-bit ids, never reused (None from mountinfo)."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str | None
    super_options: tuple[str, ...]
    propagation: Propagation = PRIVATE
    unique_id: int | None = None
    parent_unique_id: int | None = None
    origin: str = "mountinfo"

    @property
    def attrs(self) -> MountAttr:
        """The MOUNT_ATTR_* flags, the atime mode included (RELATIME is the absence of
        NOATIME and STRICTATIME)."""
        attrs = attrs_from_options(self.options)
        if self.atime == "strictatime":
            attrs |= MountAttr.STRICTATIME
        return attrs

    @property
    def atime(self) -> str:
        """``relatime``, ``noatime`` or ``strictatime``: mountinfo writes the first two and
        nothing for the third (show_mnt_opts)."""
        if "noatime" in self.options:
            return "noatime"
        return "relatime" if "relatime" in self.options else "strictatime"

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @property
    def dev(self) -> int:
        """The device number, as ``os.stat(path).st_dev`` of a path in this mount."""
        return os.makedev(self.major, self.minor)

    @property
    def vfs_options(self) -> tuple[str, ...]:
        return self.options

    @property
    def fs_options(self) -> tuple[str, ...]:
        return self.super_options

    @property
    def shared(self) -> int | None:
        return self.propagation.shared

    @property
    def master(self) -> int | None:
        return self.propagation.master

    @property
    def propagate_from(self) -> int | None:
        return self.propagation.propagate_from

    @property
    def unbindable(self) -> bool:
        return self.propagation.unbindable


# tuple.__new__ builds the entry in C, with no Python frame: a fifth of the NamedTuple's own
# constructor's cost, which matters ten thousand times over.
new_entry: Callable[..., MountEntry] = tuple.__new__


# --- mountinfo, line by line: the reference -----------------------------------------------

_FIELDS = ("mount ID", "parent ID", "major:minor", "root", "mount point", "mount options")


def _number(raw: bytes, line: int, name: str) -> int:
    # bytes.isdigit() is ASCII only; int() alone would take " 7", "+7", "7_0" or U+0667.
    if not raw.isdigit():
        raise MountTableError(line, name, "not a decimal number", os.fsdecode(raw))
    return int(raw)


def _optional_fields(words: list[bytes], line: int) -> Propagation:
    groups: dict[str, int] = {}
    unbindable = False
    other: list[str] = []
    for raw in words:
        word = os.fsdecode(raw)
        tag, colon, value = word.partition(":")
        if not word:
            raise MountTableError(line, "optional fields", "empty field (two spaces)")
        if tag in ("shared", "master", "propagate_from"):
            if not (colon and value.isascii() and value.isdigit()):
                raise MountTableError(line, f"optional field {tag}", "no group number", word)
            if tag in groups:
                raise MountTableError(line, f"optional field {tag}", "given twice", word)
            groups[tag] = int(value)
        elif word == "unbindable":
            if unbindable:
                raise MountTableError(line, "optional field unbindable", "given twice", word)
            unbindable = True
        else:
            other.append(word)
    prop = Propagation(
        shared=groups.get("shared"),
        master=groups.get("master"),
        propagate_from=groups.get("propagate_from"),
        unbindable=unbindable,
        other=tuple(other),
    )
    return PRIVATE if prop == PRIVATE else prop


def _name(raw: bytes) -> str:
    return os.fsdecode(unmangle(raw))


def parse_mountinfo_line(line: bytes | str, number: int = 1) -> MountEntry:
    """One line of mountinfo, with or without its ``\\n``; ``number`` is the line number that
    errors name. A str is taken as the bytes :func:`os.fsencode` gives back.

    The super options run to the end of the line: a filesystem that writes a space into its
    options unescaped (the kernel leaves escaping to each one) loses nothing here, where
    util-linux would cut them at the space."""
    raw = os.fsencode(line) if isinstance(line, str) else line
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if b"\n" in raw:
        raise MountTableError(number, "line", "more than one line", os.fsdecode(raw))
    f = raw.split(b" ")
    for i, name in enumerate(_FIELDS):
        if i >= len(f) or not f[i]:
            raise MountTableError(number, name, "missing", os.fsdecode(raw))
    try:
        sep = f.index(b"-", 6)
    except ValueError:
        raise MountTableError(
            number, "separator", "no ' - ' before the filesystem fields", os.fsdecode(raw)
        ) from None
    tail = f[sep + 1 :]
    if not tail or not tail[0]:
        raise MountTableError(number, "filesystem type", "missing", os.fsdecode(raw))
    if len(tail) < 3 or not tail[2]:
        raise MountTableError(number, "super options", "missing", os.fsdecode(raw))
    major, colon, minor = f[2].partition(b":")
    if not colon:
        raise MountTableError(number, "major:minor", "no colon", os.fsdecode(f[2]))
    return new_entry(
        MountEntry,
        (
            _number(f[0], number, "mount ID"),
            _number(f[1], number, "parent ID"),
            _number(major, number, "major"),
            _number(minor, number, "minor"),
            _name(f[3]),
            _name(f[4]),
            tuple(_name(o) for o in f[5].split(b",")),
            _name(tail[0]),
            _name(tail[1]),
            tuple(_name(o) for o in b" ".join(tail[2:]).split(b",")),
            _optional_fields(f[6:sep], number),
            None,
            None,
            "mountinfo",
        ),
    )


def _parse_lines(data: bytes) -> list[MountEntry]:
    lines = data.split(b"\n")
    return [parse_mountinfo_line(line, n) for n, line in enumerate(lines, 1) if line]


# --- mountinfo, the whole table at once: the fast path -----------------------------------


class _NotSimple(Exception):
    """A line the fast path does not take; the reference parser decides about it."""


def _utf8_filesystem_encoding() -> bool:
    # UTF-8 is self-synchronising: decoding the whole file and then splitting it at spaces
    # and newlines gives what splitting the bytes and decoding each name would. Not so for
    # every multibyte encoding (in Shift JIS, 0x5c can end a character).
    return codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"


def _split_options(cache: dict[str, tuple[str, ...]], text: str) -> tuple[str, ...]:
    """Split at commas, then undo escapes (an escaped comma belongs to its option's value)."""
    words = cache[text] = tuple(unescape(w) for w in text.split(","))
    return words


def _propagation(cache: dict[str, Propagation], words: list[str]) -> Propagation:
    # A malformed field raises; the reference parser then says on which line.
    prop = cache[" ".join(words)] = _optional_fields([os.fsencode(w) for w in words], 0)
    return prop


def _device(cache: dict[str, tuple[int, int]], device: str) -> tuple[int, int]:
    major, _, minor = device.partition(":")
    if not (major.isdigit() and minor.isdigit() and device.isascii()):
        raise _NotSimple
    dev = cache[device] = (int(major), int(minor))
    return dev


def _parse_text(text: str) -> list[MountEntry]:
    """The whole table, decoded once. Raises _NotSimple at anything unusual (a malformed
    line included), and the reference parser then gives the answer or the precise error.
    Option strings repeat from mount to mount: each distinct one is split once."""
    entries: list[MountEntry] = []
    append = entries.append
    options: dict[str, tuple[str, ...]] = {}
    super_options: dict[str, tuple[str, ...]] = {}
    propagations: dict[str, Propagation] = {}
    devices: dict[str, tuple[int, int]] = {}
    escaped = "\\" in text
    ascii_only = text.isascii()
    for line in text.split("\n"):
        if not line:
            continue
        f = line.split(" ")
        if len(f) == 10 and f[6] == "-":  # no optional fields: most mounts
            mount_id, parent_id, device, root, point, opts, _, fstype, source, sopts = f
            prop = PRIVATE
        else:
            try:
                sep = f.index("-", 6)
            except ValueError:
                raise _NotSimple from None
            if len(f) != sep + 4:
                raise _NotSimple
            mount_id, parent_id, device, root, point, opts = f[:6]
            fstype, source, sopts = f[sep + 1 :]
            prop = propagations.get(" ".join(f[6:sep])) or _propagation(propagations, f[6:sep])
        # isdigit() is False for "": the ids are there. Non-ASCII digits pass it: not here.
        if not (mount_id.isdigit() and parent_id.isdigit() and root and point and opts):
            raise _NotSimple
        if not (fstype and sopts and (ascii_only or (mount_id + parent_id).isascii())):
            raise _NotSimple
        dev = devices.get(device) or _device(devices, device)
        if escaped and "\\" in line:
            root, point, fstype, source = map(unescape, (root, point, fstype, source))
        append(
            new_entry(
                MountEntry,
                (
                    int(mount_id),
                    int(parent_id),
                    dev[0],
                    dev[1],
                    root,
                    point,
                    options.get(opts) or _split_options(options, opts),
                    fstype,
                    source,
                    super_options.get(sopts) or _split_options(super_options, sopts),
                    prop,
                    None,
                    None,
                    "mountinfo",
                ),
            )
        )
    return entries


def parse_mountinfo(data: bytes | str) -> list[MountEntry]:
    """The whole of /proc/<pid>/mountinfo. Empty lines are skipped; any other line that does
    not follow the format raises MountTableError (line number and field). A str is taken as
    the bytes :func:`os.fsencode` gives back."""
    if _utf8_filesystem_encoding():
        text = data if isinstance(data, str) else os.fsdecode(data)
        try:
            return _parse_text(text)
        except (_NotSimple, ValueError):
            pass
    return _parse_lines(os.fsencode(data) if isinstance(data, str) else data)


def read_file(path: Path) -> bytes:
    """All of a /proc file, in reads of a MiB (its size says 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_mountinfo(pid: str = "thread-self", proc: Path = Path("/proc")) -> list[MountEntry]:
    """The mount table as ``pid`` sees it. By default the calling thread's: a thread that
    entered a mount namespace of its own (``private_mount_namespace`` moves only the calling
    thread) sees its own table there, where /proc/self is the main thread's."""
    path = proc / pid / "mountinfo"
    sys_.note_read(path)
    return parse_mountinfo(read_file(path))


def format_mountinfo_line(entry: MountEntry) -> bytes:
    """The line the kernel would write for this entry (without its newline): the inverse of
    :func:`parse_mountinfo_line`, for tests and tools that write tables."""
    source = b"none" if entry.source is None else os.fsencode(entry.source)
    fields = [
        b"%d %d %d:%d" % (entry.mount_id, entry.parent_id, entry.major, entry.minor),
        mangle(os.fsencode(entry.root)),
        mangle(os.fsencode(entry.mountpoint)),
        b",".join(mangle(os.fsencode(o), b" \t\n\\,") for o in entry.options),
        *(os.fsencode(w) for w in entry.propagation.fields),
        b"-",
        mangle(os.fsencode(entry.fstype)),
        mangle(source, b" \t\n\\#"),
        b",".join(mangle(os.fsencode(o), b" \t\n\\,") for o in entry.super_options),
    ]
    return b" ".join(fields)


# --- lookups and the tree ------------------------------------------------------------------


def mount_at(entries: Iterable[MountEntry], mountpoint: str) -> MountEntry | None:
    """The entry on top at exactly ``mountpoint``, from the table alone: of the mounts at
    that point, the one no other is stacked on. Propagation can tuck a newer mount under an
    older one (4.11), so the last in the table is not always the one on top. Where several
    stacks share the path (one hidden under a mount on a parent directory) the newest wins;
    :func:`mountcompat.listing.find_mount` asks the kernel instead."""
    at = [e for e in entries if e.mountpoint == mountpoint]
    if len(at) < 2:
        return at[0] if at else None
    below = {e.parent_id for e in at}
    tops = [e for e in at if e.mount_id not in below]
    return (tops or at)[-1]


def find_mount_by_id(entries: Iterable[MountEntry], mount_id: int) -> MountEntry | None:
    for e in entries:
        if e.mount_id == mount_id:
            return e
    return None


def mounts_under(entries: Iterable[MountEntry], path: str) -> list[MountEntry]:
    """The mounts at ``path`` and below it, shallowest first."""
    prefix = path.rstrip("/") + "/"
    chosen = [e for e in entries if e.mountpoint == path or e.mountpoint.startswith(prefix)]
    return sorted(chosen, key=lambda e: e.mountpoint.count("/"))


@dataclass(slots=True)
class MountNode:
    entry: MountEntry
    children: list[MountNode] = field(default_factory=list)


def build_tree(entries: Iterable[MountEntry]) -> list[MountNode]:
    """The parent/child tree, children in table order. The roots are the entries whose
    parent is not in the table (or is themselves, as the initial rootfs is).

    Every entry is in the tree exactly once, or the table is refused (findmnt's rule: "make
    sure all entries are in the tree"): two entries with one mount id (a torn read of
    mountinfo while mounts change) or parents that form a cycle raise MountTableError naming
    the entries (1-based: the lines of mountinfo), never an entry dropped silently."""
    listed = list(entries)
    nodes: dict[int, MountNode] = {}
    for position, entry in enumerate(listed, 1):
        earlier = nodes.get(entry.mount_id)
        if earlier is not None:
            first = listed.index(earlier.entry) + 1
            raise MountTableError(
                position,
                "mount id",
                f"{entry.mount_id} is also entry {first}'s: a torn read (mounts changed "
                "while the table was read), or not a mount table",
                f"{entry.mountpoint} and {earlier.entry.mountpoint}",
                where=f"mount table entry {position}",
            )
        nodes[entry.mount_id] = MountNode(entry, [])
    roots = []
    get = nodes.get
    for node in nodes.values():
        parent = get(node.entry.parent_id)
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    if _count(roots) != len(nodes):
        _refuse_cycle(listed, nodes, roots)
    return roots


def _count(roots: list[MountNode]) -> int:
    count, stack = 0, list(roots)
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.children)
    return count


def _refuse_cycle(
    listed: list[MountEntry], nodes: dict[int, MountNode], roots: list[MountNode]
) -> None:
    reached: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        reached.add(node.entry.mount_id)
        stack.extend(node.children)
    lost = [i for i, e in enumerate(listed, 1) if e.mount_id not in reached]
    ids = ", ".join(str(listed[i - 1].mount_id) for i in lost[:10])
    raise MountTableError(
        lost[0],
        "parent id",
        f"entries {', '.join(map(str, lost[:10]))} (mount ids {ids}) reach no root: their "
        "parents form a cycle",
        where=f"mount table entry {lost[0]}",
    )


def walk(nodes: Iterable[MountNode]) -> Iterator[MountEntry]:
    """Every entry of the trees, parents before their children (depth first, without
    recursion: a chain of thousands of mounts is a valid table)."""
    stack = list(reversed(list(nodes)))
    while stack:
        node = stack.pop()
        yield node.entry
        stack.extend(reversed(node.children))
