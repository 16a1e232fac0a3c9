"""What a test may not leave behind: a mount, a loop device, an open file descriptor.

The check runs around every test of the suites, and under an emulated CPU every syscall and
every Python object counts: a snapshot keeps the mount table's raw bytes (parsed only when
they changed) and the fd numbers (resolved only for new ones), and the garbage collector
(60 ms a run under TCG) is asked only when something looks left behind, to let objects that
close their fds when collected do so before a leak is declared.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mountcompat.mounttable import parse_mountinfo, read_file

MOUNTINFO = Path("/proc/self/mountinfo")


def loop_backings(sys_block: Path = Path("/sys/block")) -> dict[str, str]:
    """Attached loop devices and their backing files, as the kernel shows them in sysfs."""
    found = {}
    for entry in sys_block.glob("loop*"):
        try:
            # Bytes, decoded as names are: a backing file's name need not be UTF-8.
            raw = (entry / "loop" / "backing_file").read_bytes()
            found[entry.name] = os.fsdecode(raw.removesuffix(b"\n"))  # sysfs's one newline
        except OSError:
            continue
    return found


def open_fds() -> dict[int, str]:
    return {fd: _target(fd) for fd in _fd_numbers()}


def _fd_numbers() -> frozenset[int]:
    return frozenset(int(name) for name in os.listdir("/proc/self/fd"))


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@dataclass(frozen=True)
class Snapshot:
    mountinfo: bytes
    fds: frozenset[int]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(read_file(MOUNTINFO), _fd_numbers())

    @property
    def mounts(self) -> frozenset[int]:
        return frozenset(e.mount_id for e in parse_mountinfo(self.mountinfo))


def leaks_since(before: Snapshot, owned_dirs: list[str], wait: float = 2.0) -> list[str]:
    """Mounts and fds new since ``before``, and loop devices backed by files under
    ``owned_dirs`` (other processes' devices are not ours to judge). Autoclear and lazy
    unmounts finish asynchronously, so the check waits up to ``wait`` seconds for them."""
    problems = _current_leaks(before, owned_dirs)
    deadline = time.monotonic() + wait
    while problems and time.monotonic() < deadline:
        gc.collect()
        problems = _current_leaks(before, owned_dirs)
        if problems:
            time.sleep(0.05)
    return problems


def _current_leaks(before: Snapshot, owned_dirs: list[str]) -> list[str]:
    problems = []
    now = read_file(MOUNTINFO)
    if now != before.mountinfo:
        known = before.mounts
        for entry in parse_mountinfo(now):
            if entry.mount_id not in known:
                problems.append(f"mount left behind: {entry.mountpoint} ({entry.fstype})")
    for fd in sorted(_fd_numbers() - before.fds):
        problems.append(f"file descriptor left open: {fd} -> {_target(fd)}")
    if owned_dirs:
        for device, backing in loop_backings().items():
            if any(backing.startswith(d.rstrip("/") + "/") for d in owned_dirs):
                problems.append(f"loop device left attached: /dev/{device} -> {backing}")
    return problems
