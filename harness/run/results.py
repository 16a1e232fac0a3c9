"""results/: one directory per kernel, replaced only by a run of that kernel that finished.

A kernel's files are written into a fresh staging directory of this run (the guest's
read-write share). When the kernel ends, the staging directory takes the place of
``results/<kernel>`` in one exchange, so a reader never sees half of one run and half of
another. A kernel whose run was interrupted, or whose packages could not be fetched, did not
produce a verdict: it leaves the last finished results in place, and its own evidence goes to
``results/attempts/<kernel>/<run id>`` (the last few are kept); only where there are no
earlier results does it take their place, so that something says what happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from harness.errors import UsageError

STAGING = ".staging"
ATTEMPTS = "attempts"
KEPT_ATTEMPTS = 3
# Statuses that are no verdict on the kernel: earlier results stay in place.
KEEP_EARLIER = frozenset({"interrupted", "fetch-failed"})
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(2)}"


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (renameat2 RENAME_EXCHANGE, Linux 3.15); where the
    filesystem cannot, two renames, the old one first out of the way."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        ok = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if ok == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), f"renameat2({a}, {b}, RENAME_EXCHANGE)")
    aside = b.with_name(f".{b.name}.old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


class ResultStore:
    """The results directory of one run."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.staging = root / STAGING / run_id

    def final(self, name: str) -> Path:
        return self.root / name

    def stage(self, name: str) -> Path:
        path = self.staging / name
        path.mkdir(parents=True)
        return path

    def commit(self, name: str, staged: Path, status: str) -> Path:
        """Put a kernel's staged results where they belong; returns where they went."""
        final = self.final(name)
        if status in KEEP_EARLIER and final.exists():
            return self._keep_attempt(name, staged)
        if final.exists():
            _exchange(staged, final)
            shutil.rmtree(staged, ignore_errors=True)
        else:
            os.rename(staged, final)
        return final

    def _keep_attempt(self, name: str, staged: Path) -> Path:
        where = self.root / ATTEMPTS / name
        where.mkdir(parents=True, exist_ok=True)
        kept = where / self.run_id
        os.rename(staged, kept)
        for old in sorted(where.iterdir())[:-KEPT_ATTEMPTS]:
            shutil.rmtree(old, ignore_errors=True)
        return kept

    def clean(self) -> None:
        """Remove this run's staging directory (empty once every kernel is committed); other
        runs' are theirs (the host column can be written while a matrix runs)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.staging.parent.rmdir()


def check_writable(root: Path) -> None:
    """The results directory must be a directory this process can write, said before
    anything boots."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"--results {root}: exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--results {root}: cannot write there ({exc.strerror})") from exc


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """One run at a time per results directory: a second one is refused, not interleaved."""
    fd = os.open(root / ".run.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(f"{root} is in use by a run of {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
