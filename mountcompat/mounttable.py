"""The mount table as one entry type, whether it came from mountinfo or from statmount.

Parsers are pure functions over text or bytes; the readers around them take the ``/proc``
root as an argument.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mountcompat import _constants as C
from mountcompat.mounts import MountAttr, attrs_from_options

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` space, ``\\011`` tab, ``\\012`` newline,
    ``\\134`` backslash). The kernel escapes whole bytes, so decode as bytes."""
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)
    return (
        raw.encode("latin-1", "surrogateescape").decode("utf-8", "surrogateescape")
        if any(ord(c) > 127 for c in raw)
        else raw
    )


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    options: tuple[str, ...]  # per-mount options: ro/rw, nosuid, ...
    fstype: str
    source: str | None
    super_options: tuple[str, ...]
    propagation: tuple[str, ...] = ()  # shared:N master:N propagate_from:N unbindable
    unique_id: int | None = None  # statmount's 64-bit id (STATX_MNT_ID_UNIQUE)
    origin: str = "mountinfo"

    @property
    def attrs(self) -> MountAttr:
        return attrs_from_options(self.options)

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def parse_mountinfo_line(line: str) -> MountEntry:
    """One line of /proc/<pid>/mountinfo (see proc_pid_mountinfo(5))."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError as exc:
        raise ValueError(f"mountinfo line without its '-' separator: {line!r}") from exc
    major, minor = fields[2].split(":")
    tail = fields[sep + 1 :]
    if len(tail) < 2:
        raise ValueError(f"mountinfo line with too few fields after '-': {line!r}")
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major=int(major),
        minor=int(minor),
        root=unescape(fields[3]),
        mountpoint=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        propagation=tuple(fields[6:sep]),
        fstype=unescape(tail[0]),
        source=unescape(tail[1]),
        super_options=tuple(unescape(o) for o in tail[2].split(",")) if len(tail) > 2 else (),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    return [parse_mountinfo_line(line) for line in text.splitlines() if line.strip()]


def read_mountinfo(pid: str = "self", proc: Path = Path("/proc")) -> list[MountEntry]:
    return parse_mountinfo((proc / pid / "mountinfo").read_text(errors="surrogateescape"))


@dataclass
class MountNode:
    entry: MountEntry
    children: list[MountNode] = field(default_factory=list)


def build_tree(entries: Iterable[MountEntry]) -> list[MountNode]:
    """Parent/child tree; the roots are entries whose parent is not in the table."""
    nodes = {e.mount_id: MountNode(e) for e in entries}
    roots = []
    for node in nodes.values():
        parent = nodes.get(node.entry.parent_id)
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def walk(nodes: Iterable[MountNode]) -> Iterator[MountEntry]:
    for node in nodes:
        yield node.entry
        yield from walk(node.children)


def mounts_under(entries: Iterable[MountEntry], path: str) -> list[MountEntry]:
    """The mounts at ``path`` and below it, shallowest first."""
    prefix = path.rstrip("/") + "/"
    chosen = [e for e in entries if e.mountpoint == path or e.mountpoint.startswith(prefix)]
    return sorted(chosen, key=lambda e: e.mountpoint.count("/"))


def find_mount(entries: Iterable[MountEntry], path: str) -> MountEntry | None:
    """The topmost mount exactly at ``path`` (the last one in the table wins)."""
    found = None
    for e in entries:
        if e.mountpoint == path:
            found = e
    return found


# --- statmount --------------------------------------------------------------------------

_HEADER = struct.Struct("=IIQIIQIIQQIIQQQQQIIQII")
_PROPAGATION = ((C.MS_SHARED, "shared"), (C.MS_SLAVE, "master"), (C.MS_UNBINDABLE, "unbindable"))
_ATTR_WORDS = (
    (MountAttr.NOSUID, "nosuid"),
    (MountAttr.NODEV, "nodev"),
    (MountAttr.NOEXEC, "noexec"),
    (MountAttr.NOATIME, "noatime"),
    (MountAttr.NODIRATIME, "nodiratime"),
    (MountAttr.NOSYMFOLLOW, "nosymfollow"),
    (MountAttr.IDMAP, "idmapped"),
)


def _string(buf: bytes, mask: int, bit: int, offset: int) -> str | None:
    if not mask & bit:
        return None
    start = C.STATMOUNT_HEADER_SIZE + offset
    end = buf.index(b"\0", start)
    return buf[start:end].decode("utf-8", "surrogateescape")


def attr_options(attrs: MountAttr) -> tuple[str, ...]:
    """The per-mount option words mountinfo would show for these attributes."""
    words = ["ro" if attrs & MountAttr.RDONLY else "rw"]
    words += [w for a, w in _ATTR_WORDS if attrs & a]
    if not attrs & (MountAttr.NOATIME | MountAttr.STRICTATIME):
        words.append("relatime")
    return tuple(words)


def parse_statmount(buf: bytes) -> MountEntry:
    """A struct statmount buffer (6.8 on) as a MountEntry. Fields the kernel did not fill in
    (check the returned mask: 6.8 lacks mount options and source) stay empty or None."""
    (
        _size,
        opts_off,
        mask,
        major,
        minor,
        _magic,
        _sb_flags,
        fstype_off,
        unique_id,
        _parent_unique,
        mnt_id_old,
        parent_id_old,
        mnt_attr,
        propagation,
        peer_group,
        master,
        propagate_from,
        root_off,
        point_off,
        _ns_id,
        _subtype_off,
        source_off,
    ) = _HEADER.unpack_from(buf)
    prop: list[str] = []
    if propagation & C.MS_SHARED:
        prop.append(f"shared:{peer_group}")
    if propagation & C.MS_SLAVE:
        prop.append(f"master:{master}")
        if propagate_from:
            prop.append(f"propagate_from:{propagate_from}")
    if propagation & C.MS_UNBINDABLE:
        prop.append("unbindable")
    super_opts = _string(buf, mask, C.STATMOUNT_MNT_OPTS, opts_off)
    return MountEntry(
        mount_id=mnt_id_old,
        parent_id=parent_id_old,
        major=major,
        minor=minor,
        root=_string(buf, mask, C.STATMOUNT_MNT_ROOT, root_off) or "",
        mountpoint=_string(buf, mask, C.STATMOUNT_MNT_POINT, point_off) or "",
        options=attr_options(MountAttr(mnt_attr & sum(MountAttr))),
        fstype=_string(buf, mask, C.STATMOUNT_FS_TYPE, fstype_off) or "",
        source=_string(buf, mask, C.STATMOUNT_SB_SOURCE, source_off),
        super_options=tuple(super_opts.split(",")) if super_opts else (),
        propagation=tuple(prop),
        unique_id=unique_id,
        origin="statmount",
    )


STATMOUNT_BASIC = (
    C.STATMOUNT_SB_BASIC
    | C.STATMOUNT_MNT_BASIC
    | C.STATMOUNT_PROPAGATE_FROM
    | C.STATMOUNT_MNT_ROOT
    | C.STATMOUNT_MNT_POINT
    | C.STATMOUNT_FS_TYPE
)
# Options (6.11) and source (6.13) too; a kernel without them says so in the returned mask.
STATMOUNT_WANTED = STATMOUNT_BASIC | C.STATMOUNT_MNT_OPTS | C.STATMOUNT_SB_SOURCE
