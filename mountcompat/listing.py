"""Listing the mount table, and finding the mount at a path.

Feature ``mounts.list``, preferred first:

``statmount``
    listmount(2) for the ids, statmount(2) for each (6.8; options 6.11, source 6.13);
``mountinfo``
    parse /proc/thread-self/mountinfo (every kernel).

The mount a path resolves to (:func:`mount_id_of`, :func:`find_mount`) is asked of the
kernel, the way chosen once per process (both give the same answer, so this is no feature
of the matrix), preferred first:

``statx``
    statx(2) with STATX_MNT_ID (5.8); before, the returned mask lacks the bit (and statx
    itself is ENOSYS before 4.11);
``fdinfo``
    the ``mnt_id:`` line of /proc/self/fdinfo/<fd> for an O_PATH fd of the path (3.15).
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from collections.abc import Iterable

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.choices import LOG
from mountcompat.errors import MountTableError
from mountcompat.mounts import MountAttr
from mountcompat.mounttable import (
    PRIVATE,
    MountEntry,
    Propagation,
    find_mount_by_id,
    new_entry,
    read_mountinfo,
    unescape,
)
from mountcompat.strategy import Strategy, feature, register_cache

# struct statmount (include/uapi/linux/mount.h) up to sb_source (6.13); 512 bytes in all
# before its strings. Offsets of strings are from the start of str[].
_HEADER = struct.Struct("=IIQIIQIIQQIIQQQQQIIQII")
SB_WORDS = ((0x10, "sync"), (0x80, "dirsync"), (0x40, "mand"), (1 << 25, "lazytime"))
_ATTR_WORDS = (
    (MountAttr.NOSUID, "nosuid"),
    (MountAttr.NODEV, "nodev"),
    (MountAttr.NOEXEC, "noexec"),
    (MountAttr.NOATIME, "noatime"),
    (MountAttr.NODIRATIME, "nodiratime"),
)


def attr_options(attrs: MountAttr) -> tuple[str, ...]:
    """The per-mount options mountinfo writes for these attributes, in its order
    (show_mnt_opts): rw/ro, nosuid, nodev, noexec, noatime, nodiratime, relatime,
    nosymfollow, idmapped. Relatime is the absence of NOATIME and STRICTATIME."""
    words = ["ro" if attrs & MountAttr.RDONLY else "rw"]
    words += [w for a, w in _ATTR_WORDS if attrs & a]
    if not attrs & (MountAttr.NOATIME | MountAttr.STRICTATIME):
        words.append("relatime")
    if attrs & MountAttr.NOSYMFOLLOW:
        words.append("nosymfollow")
    if attrs & MountAttr.IDMAP:
        words.append("idmapped")
    return tuple(words)


STATMOUNT_BASIC = (
    C.STATMOUNT_SB_BASIC
    | C.STATMOUNT_MNT_BASIC
    | C.STATMOUNT_PROPAGATE_FROM
    | C.STATMOUNT_MNT_ROOT
    | C.STATMOUNT_MNT_POINT
    | C.STATMOUNT_FS_TYPE
)
# Options (6.11), source and subtype (6.13) too; a kernel without them refuses the mask
# (EINVAL) or leaves their bits out of the returned mask.
STATMOUNT_WANTED = (
    STATMOUNT_BASIC | C.STATMOUNT_MNT_OPTS | C.STATMOUNT_SB_SOURCE | C.STATMOUNT_FS_SUBTYPE
)
# Bits the kernel sets only for a non-empty string: their absence means "empty" once the
# kernel is known to have them, and "unknown" before.
STATMOUNT_OPTIONAL = C.STATMOUNT_MNT_OPTS | C.STATMOUNT_SB_SOURCE | C.STATMOUNT_FS_SUBTYPE


_REQUIRED_NAMES = (
    (C.STATMOUNT_SB_BASIC, "sb_basic"),
    (C.STATMOUNT_MNT_BASIC, "mnt_basic"),
    (C.STATMOUNT_MNT_ROOT, "mnt_root"),
    (C.STATMOUNT_MNT_POINT, "mnt_point"),
    (C.STATMOUNT_FS_TYPE, "fs_type"),
)
_REQUIRED = sum(bit for bit, _ in _REQUIRED_NAMES)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
# Module-level ints: a global is found faster than C.NAME, ten thousand times a listing.
_STRINGS = C.STATMOUNT_HEADER_SIZE
_SUBTYPE, _SOURCE, _OPTS = C.STATMOUNT_FS_SUBTYPE, C.STATMOUNT_SB_SOURCE, C.STATMOUNT_MNT_OPTS


def _char_offsets(raw: bytes) -> dict[int, int]:
    """Byte offset of each string of a statmount answer -> its offset in the decoded text,
    where each string is decoded alone (as os.fsdecode would) and joined again by NULs."""
    offsets, at = {}, 0
    start = 0
    for part in raw.split(b"\0"):
        offsets[start] = at
        start += len(part) + 1
        at += len(os.fsdecode(part)) + 1
    return offsets


class StatmountDecoder:
    """struct statmount buffers (6.8 on) into MountEntry.

    ``known`` are the optional bits (options 6.11, source 6.13) this kernel is known to fill
    in when there is something to say: a string left out then is empty (an empty source is
    written as nothing; a filesystem without options gets no STATMOUNT_MNT_OPTS). A bit not
    known leaves the field unknown: source None, super options ().

    Strings come raw (mnt_point, fs_type, sb_source) or unescaped by the kernel (mnt_root),
    except mnt_opts, escaped as in mountinfo: each is decoded with os.fsdecode. The super
    options are built as mountinfo's: rw/ro and the superblock flags, then mnt_opts."""

    def __init__(self, known: int = STATMOUNT_OPTIONAL) -> None:
        self.known = known
        self.seen = 0  # the union of the returned masks
        self._options: dict[int, tuple[str, ...]] = {}
        self._super: dict[tuple[int, str | None], tuple[str, ...]] = {}
        self._propagation: dict[tuple[int, int, int, int], Propagation] = {}

    def __call__(self, answer: bytes | memoryview) -> MountEntry:
        (
            size,
            opts_off,
            mask,
            major,
            minor,
            _magic,
            sb_flags,
            fstype_off,
            unique_id,
            parent_unique,
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
            subtype_off,
            source_off,
        ) = _HEADER.unpack_from(answer)
        self.seen |= mask
        if mask & _REQUIRED != _REQUIRED:
            missing = ", ".join(name for bit, name in _REQUIRED_NAMES if not mask & bit)
            where = f"statmount of mount {unique_id:#x}"
            raise MountTableError(None, missing, f"not in the returned mask {mask:#x}", "", where)
        # os.fsdecode's codec and handler, called on the buffer itself (no copy, no checks).
        text = str(answer[_STRINGS:size], _FS_ENCODING, _FS_ERRORS)
        if len(text) != size - _STRINGS:
            # A character of several bytes: the offsets count bytes, so decode name by name.
            raw = bytes(answer[_STRINGS:size])
            text = "\0".join(os.fsdecode(part) for part in raw.split(b"\0"))
            offsets = _char_offsets(raw)
            opts_off, fstype_off, root_off, point_off, subtype_off, source_off = (
                offsets[o]
                for o in (opts_off, fstype_off, root_off, point_off, subtype_off, source_off)
            )
        index = text.index
        fstype = text[fstype_off : index("\0", fstype_off)]
        if mask & _SUBTYPE and text[subtype_off] != "\0":
            fstype = f"{fstype}.{text[subtype_off : index(chr(0), subtype_off)]}"
        if mask & _SOURCE:
            source: str | None = text[source_off : index("\0", source_off)]
        else:
            source = "" if self.known & _SOURCE else None
        opts = text[opts_off : index("\0", opts_off)] if mask & _OPTS else None
        options = self._options.get(mnt_attr) or self._attr_words(mnt_attr)
        prop_key = (propagation, peer_group, master, propagate_from)
        return new_entry(
            MountEntry,
            (
                mnt_id_old,
                parent_id_old,
                major,
                minor,
                text[root_off : index("\0", root_off)],
                text[point_off : index("\0", point_off)],
                options,
                fstype,
                source,
                self._super.get((sb_flags, opts)) or self._super_words(sb_flags, opts),
                self._propagation.get(prop_key) or self._propagation_of(*prop_key),
                unique_id,
                parent_unique,
                "statmount",
            ),
        )

    def _attr_words(self, mnt_attr: int) -> tuple[str, ...]:
        words = self._options.get(mnt_attr)
        if words is None:
            words = self._options[mnt_attr] = attr_options(MountAttr(mnt_attr & sum(MountAttr)))
        return words

    def _super_words(self, sb_flags: int, opts: str | None) -> tuple[str, ...]:
        key = (sb_flags, opts)
        words = self._super.get(key)
        if words is None:
            if opts is None and not self.known & C.STATMOUNT_MNT_OPTS:
                words = ()
            else:
                head = ["ro" if sb_flags & C.MS_RDONLY else "rw"]
                head += [w for bit, w in SB_WORDS if sb_flags & bit]
                tail = [unescape(o) for o in opts.split(",")] if opts else []
                words = (*head, *tail)
            self._super[key] = words
        return words

    def _propagation_of(
        self, flags: int, peer_group: int, master: int, propagate_from: int
    ) -> Propagation:
        key = (flags, peer_group, master, propagate_from)
        prop = self._propagation.get(key)
        if prop is None:
            slave = bool(flags & C.MS_SLAVE)
            # mountinfo leaves propagate_from out when it is the master (show_mountinfo).
            dominating = propagate_from if slave and propagate_from not in (0, master) else None
            prop = Propagation(
                shared=peer_group if flags & C.MS_SHARED else None,
                master=master if slave else None,
                propagate_from=dominating,
                unbindable=bool(flags & C.MS_UNBINDABLE),
            )
            prop = self._propagation[key] = PRIVATE if prop == PRIVATE else prop
        return prop


def parse_statmount(buf: bytes, known: int = STATMOUNT_OPTIONAL) -> MountEntry:
    """One struct statmount answer as a MountEntry (see :class:`StatmountDecoder`)."""
    return StatmountDecoder(known)(buf)


# --- the strategies of mounts.list ---------------------------------------------------------

LISTMOUNT_BATCH = 8192
_accepted_mask: list[int] = []  # the mask this kernel takes, learnt on the first listing
register_cache(_accepted_mask.clear)


def all_mount_ids() -> list[int]:
    ids: list[int] = []
    last = 0
    while True:
        batch = sys_.listmount(C.LSMT_ROOT, last, LISTMOUNT_BATCH)
        ids.extend(batch)
        if len(batch) < LISTMOUNT_BATCH:
            return ids
        last = batch[-1]


def _stat_all(ids: Iterable[int], mask: int) -> list[MountEntry]:
    call = sys_.StatmountBuffer(mask)
    decode = StatmountDecoder()
    entries: list[MountEntry] = []
    append = entries.append
    for mnt_id in ids:
        try:
            call(mnt_id)
        except FileNotFoundError:  # unmounted since listmount
            continue
        append(decode(call.view))
    missing = (C.STATMOUNT_SB_SOURCE | C.STATMOUNT_MNT_OPTS) & ~decode.seen
    if missing:
        # No mount came with these strings: the kernel may not have them (before 6.13 and
        # 6.11), so the fields are unknown rather than empty.
        no_source, no_options = missing & C.STATMOUNT_SB_SOURCE, missing & C.STATMOUNT_MNT_OPTS
        entries = [
            e._replace(
                source=None if no_source else e.source,
                super_options=() if no_options else e.super_options,
            )
            for e in entries
        ]
    return entries


def _statmount() -> list[MountEntry]:
    """listmount + statmount (6.8). Before 6.8: ENOSYS. Fields arrive over several releases
    (mount options 6.11, source and subtype 6.13): what a kernel does not fill in stays
    unknown (None, ()), and one that refuses the newer mask bits (EINVAL) is asked with an
    older release's set from then on. Preferred: 64-bit ids that are never reused, no text
    to parse. Slower than mountinfo all the same: on 6.18 the kernel spends about 2.5 times
    as long on a statmount call as on a mountinfo line (docs/performance.md)."""
    ids = all_mount_ids()
    # util-linux asks for the newer bits whatever the kernel (libmount/src/fs_statmount.c),
    # so older kernels must leave bits they do not know out of the returned mask; should one
    # refuse them (EINVAL) instead, each release's set is tried in turn.
    masks = _accepted_mask or [
        STATMOUNT_WANTED,
        STATMOUNT_BASIC | C.STATMOUNT_MNT_OPTS,
        STATMOUNT_BASIC,
    ]
    for mask in masks:
        try:
            entries = _stat_all(ids, mask)
        except OSError as exc:
            if exc.errno != errno.EINVAL or mask == masks[-1]:
                raise
            continue
        if not _accepted_mask:
            _accepted_mask.append(mask)
        return entries
    raise AssertionError("unreachable: the last mask raises or returns")


def _mountinfo() -> list[MountEntry]:
    """/proc/thread-self/mountinfo (the calling thread's namespace): every kernel. Needed
    before 6.8."""
    return read_mountinfo()


MOUNTS_LIST = feature(
    "mounts.list",
    "list the mounts of this mount namespace",
    [
        Strategy(
            "statmount",
            _statmount,
            unsupported=frozenset({errno.ENOSYS}),
            cache_on=frozenset({errno.ENOSYS}),
        ),
        Strategy("mountinfo", _mountinfo),
    ],
)


def list_mounts(force: str | None = None) -> list[MountEntry]:
    return MOUNTS_LIST(force=force)


# --- the mount at a path ------------------------------------------------------------------

_statx_has_mnt_id: list[bool] = []  # learnt on first use, and recorded then
# Not a feature of the matrix (both ways give the same id): its choice is recorded all the same.
MOUNT_ID = "mount.id"
register_cache(_statx_has_mnt_id.clear)


def _fdinfo_mount_id(path: str | os.PathLike[str]) -> int:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/thread-self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line[7:])
    finally:
        os.close(fd)
    raise sys_.raise_errno(errno.ENOTSUP, "fdinfo mnt_id", (os.fspath(path),))


def mount_id_of(path: str | os.PathLike[str]) -> int:
    """The id (mountinfo's) of the mount that ``path`` resolves to, symlinks followed as
    stat() does: the mount on top when several are stacked there, whichever the table lists
    last. statx(STATX_MNT_ID) (5.8); on older kernels the mnt_id of /proc/self/fdinfo (3.15).
    A missing path raises FileNotFoundError."""
    if not _statx_has_mnt_id or _statx_has_mnt_id[0]:
        why = "STATX_MNT_ID not in statx's returned mask (before 5.8)"
        try:
            returned, _, _, mnt_id = sys_.statx(C.AT_FDCWD, path, 0, sys_.STATX_MNT_ID)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # before 4.11, or a seccomp filter
                raise
            returned, why = 0, f"statx: {exc}"
        if returned & sys_.STATX_MNT_ID:
            if not _statx_has_mnt_id:  # the choice, made once per process, is recorded
                LOG.add(MOUNT_ID, "statx", "used")
            _statx_has_mnt_id[:] = [True]
            return mnt_id
        _statx_has_mnt_id[:] = [False]
        LOG.add(MOUNT_ID, "statx", "unsupported", err=errno.ENOSYS, message=why)
        LOG.add(MOUNT_ID, "fdinfo", "used")
    return _fdinfo_mount_id(path)


def find_mount(
    path: str | os.PathLike[str], entries: Iterable[MountEntry] | None = None
) -> MountEntry | None:
    """The mount really visible at ``path`` (or containing it), as the kernel resolves the
    path: looked up by :func:`mount_id_of` in ``entries`` (by default mountinfo, read after
    the id, so a mount that came since is there). None when the table lacks it (a mount
    outside this process's root). For the entry at exactly a mount point, from a table
    alone, see :func:`mountcompat.mounttable.mount_at`."""
    mnt_id = mount_id_of(path)
    return find_mount_by_id(read_mountinfo() if entries is None else entries, mnt_id)
