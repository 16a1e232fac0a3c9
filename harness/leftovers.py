"""A test run whose end is its process's exit, and what its tests left behind.

pytest's output is read from a pipe, and a process a test started (a daemon in a session of
its own) may hold that pipe open long after pytest has exited: waiting for the pipe's end
would wait for ever. So the end is pytest's exit; then every process still descended from the
runner (made their subreaper first, so that orphans come back to it instead of init) is one
the tests left: killed, reaped and returned, to be recorded as a leak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from harness.boot.process import stat_fields

PIPE_DRAIN_SECONDS = 5.0
PR_SET_CHILD_SUBREAPER = 36


def run_to_exit(
    command: list[str], log: IO[str], on_line: Callable[[str], object], **popen: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Run ``command`` with its output copied to ``log`` and ``on_line``; return its exit
    status and the processes it left behind (``pid``, ``cmdline``), killed."""
    become_subreaper()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )
    assert proc.stdout is not None
    pump = threading.Thread(target=_copy, args=(proc.stdout, log, on_line), daemon=True)
    pump.start()
    status = proc.wait()
    pump.join(timeout=PIPE_DRAIN_SECONDS)
    leaked = end_leftovers()
    pump.join(timeout=PIPE_DRAIN_SECONDS)  # the pipe's last holder is gone now
    return status, leaked


def _copy(stream: IO[str], log: IO[str], on_line: Callable[[str], object]) -> None:
    for line in stream:
        log.write(line)
        on_line(line)


def become_subreaper() -> None:
    import ctypes  # late: the guest's runner pays for it only here (the probe needs it anyway)

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def end_leftovers() -> list[dict[str, Any]]:
    """Kill and reap every process still descended from this one; each is a leak."""
    leaked: list[dict[str, Any]] = []
    killed: list[int] = []
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(pid)
        leaked.append({"pid": pid, "cmdline": cmdline.decode(errors="replace")[:300]})
    reap(killed)
    return leaked


def reap(pids: Iterable[int], seconds: float = 5.0) -> None:
    """Collect the killed children's exit; bounded, as one stuck in the kernel never exits
    (those that were not our children are reparented and reaped by whoever they belong to)."""
    deadline = time.monotonic() + seconds
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
                time.sleep(0.05)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_fields(stat)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found
