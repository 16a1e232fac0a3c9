"""Listing the mount table.

Feature ``mounts.list``, preferred first:

``statmount``
    listmount(2) for the ids, statmount(2) for each (6.8; options 6.11, source 6.13);
``mountinfo``
    parse /proc/self/mountinfo (every kernel).
"""

from __future__ import annotations

import errno

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.mounttable import (
    STATMOUNT_BASIC,
    STATMOUNT_WANTED,
    MountEntry,
    parse_statmount,
    read_mountinfo,
)
from mountcompat.strategy import Strategy, feature

LISTMOUNT_BATCH = 512
_accepted_mask: list[int] = []  # the mask this kernel takes, learnt on the first mount


def all_mount_ids() -> list[int]:
    ids: list[int] = []
    last = 0
    while True:
        batch = sys_.listmount(C.LSMT_ROOT, last, LISTMOUNT_BATCH)
        ids.extend(batch)
        if len(batch) < LISTMOUNT_BATCH:
            return ids
        last = batch[-1]


def stat_one(mnt_id: int) -> MountEntry | None:
    """A kernel that refuses the mask's newer bits (EINVAL) is asked with the basic ones, and
    from then on only with those."""
    masks = _accepted_mask or [STATMOUNT_WANTED, STATMOUNT_BASIC]
    for mask in masks:
        try:
            entry = parse_statmount(sys_.statmount(mnt_id, mask))
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # unmounted since listmount
                return None
            if exc.errno != errno.EINVAL or mask == masks[-1]:
                raise
            continue
        if not _accepted_mask:
            _accepted_mask.append(mask)
        return entry
    return None


def _statmount() -> list[MountEntry]:
    """listmount + statmount (6.8). Before 6.8: ENOSYS. Fields arrive over several releases
    (mount options 6.11, source 6.13): the returned mask says what was filled in, and what was
    not stays empty. Preferred: no text to parse, and 64-bit ids that are never reused."""
    entries = [stat_one(i) for i in all_mount_ids()]
    return [e for e in entries if e is not None]


def _mountinfo() -> list[MountEntry]:
    """/proc/self/mountinfo: every kernel. Needed before 6.8."""
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
