"""The kernel's log, read as it grows, so that a test's evidence carries what the kernel said.

Some refusals carry their reason only in the kernel log (overlayfs's "lower data-only dirs
require metacopy support" is a pr_err, not a message on the fs-context fd).
"""

from __future__ import annotations

import errno
import os


class KernelLog:
    """/dev/kmsg opened once, at its end; ``new_lines()`` returns what was logged since."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self._fd = None  # not root, or no /dev/kmsg: no kernel log in the evidence

    def new_lines(self, limit: int = 40) -> list[str]:
        lines: list[str] = []
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read it: go on
                    continue
                break  # EAGAIN: nothing more
            if not record:
                break
            _, _, message = record.decode("utf-8", "replace").partition(";")
            lines.append(message.split("\n", 1)[0])
        return lines[-limit:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
