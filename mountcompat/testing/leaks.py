"""What a test may not leave behind: a mount, a loop device, an open file descriptor."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mountcompat.mounttable import read_mountinfo


def loop_backings(sys_block: Path = Path("/sys/block")) -> dict[str, str]:
    """Attached loop devices and their backing files, as the kernel shows them in sysfs."""
    found = {}
    for entry in sys_block.glob("loop*"):
        try:
            found[entry.name] = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
    return found


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return fds


@dataclass(frozen=True)
class Snapshot:
    mounts: frozenset[int]
    fds: frozenset[int]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(frozenset(e.mount_id for e in read_mountinfo()), frozenset(open_fds()))


def leaks_since(before: Snapshot, owned_dirs: list[str], wait: float = 2.0) -> list[str]:
    """Mounts and fds new since ``before``, and loop devices backed by files under
    ``owned_dirs`` (other processes' devices are not ours to judge). Autoclear and lazy
    unmounts finish asynchronously, so the check waits up to ``wait`` seconds for them."""
    deadline = time.monotonic() + wait
    while True:
        gc.collect()
        problems = _current_leaks(before, owned_dirs)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.05)


def _current_leaks(before: Snapshot, owned_dirs: list[str]) -> list[str]:
    problems = []
    for entry in read_mountinfo():
        if entry.mount_id not in before.mounts:
            problems.append(f"mount left behind: {entry.mountpoint} ({entry.fstype})")
    fds = open_fds()
    for fd in sorted(set(fds) - before.fds):
        problems.append(f"file descriptor left open: {fd} -> {fds[fd]}")
    for device, backing in loop_backings().items():
        if any(backing.startswith(d.rstrip("/") + "/") for d in owned_dirs):
            problems.append(f"loop device left attached: /dev/{device} -> {backing}")
    return problems
