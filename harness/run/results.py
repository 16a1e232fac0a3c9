"""results/: one directory per kernel, replaced only by a run of that kernel that finished.

A kernel's files are written into a fresh staging directory of this run (the guest's
read-write share). When the kernel ends, the staging directory takes the place of
``results/<kernel>`` in one exchange, so a reader never sees half of one run and half of
another. A kernel whose run was interrupted, or whose packages could not be fetched, did not
produce a verdict: it leaves the last finished results in place, and its own evidence goes to
``results/attempts/<kernel>/<run id>`` (the last few are kept); only where there are no
earlier results does it take their place, so that something says what happened.

A run holds a lock on its staging directory while it lives. Staging that no live run holds
was left by a run that died before it could commit (SIGKILL, a crash, a power cut): a later
run moves it under ``attempts/`` and says so, and never deletes it.
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
# A kernel's results take 1-2 MiB (its pytest log most of it), the report and matrix a few:
# less than this is a disk that will fill during the run.
MIN_FREE_BYTES = 16 * 2**20
# Statuses that are no verdict on the kernel: earlier results stay in place.
KEEP_EARLIER = frozenset({"interrupted", "fetch-failed", "unreachable"})
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
        self._held: int | None = None

    def open(self) -> None:
        """Make this run's staging directory and hold it for the run's life."""
        while self._held is None:
            self.staging.mkdir(parents=True, exist_ok=True)
            # A recovering run may hold it for an instant (it found it empty and unheld, and
            # removes it): wait, and make it again if it went.
            fd = _hold(self.staging, wait=True)
            if fd is not None and _same_file(fd, self.staging):
                self._held = fd
            elif fd is not None:
                os.close(fd)

    def recover_stale(self) -> list[str]:
        """Move every staging directory that no live run holds under ``attempts/``; one line
        per stale run, saying where its kernels went."""
        lines = []
        for stale in sorted((self.root / STAGING).glob("*")):
            if stale == self.staging or not stale.is_dir():
                continue
            fd = _hold(stale)
            if fd is None:
                continue  # a live run's (a host column written beside a matrix)
            try:
                # Not trimmed like an attempt: what a dead run left is never deleted.
                moved = [self._aside(k.name, k, stale.name) for k in _kernels_in(stale)]
                with contextlib.suppress(OSError):
                    stale.rmdir()
            finally:
                os.close(fd)
            where = ", ".join(str(p.relative_to(self.root)) for p in moved) or "nothing in it"
            lines.append(f"run {stale.name} ended without committing its results: moved {where}")
        return lines

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
        kept = self._aside(name, staged, self.run_id)
        for old in sorted(kept.parent.iterdir())[:-KEPT_ATTEMPTS]:
            shutil.rmtree(old, ignore_errors=True)
        return kept

    def _aside(self, name: str, staged: Path, run_id: str) -> Path:
        """``staged`` moved to ``attempts/<name>/<run_id>``."""
        kept = self.root / ATTEMPTS / name / run_id
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, kept)
        return kept

    def clean(self) -> None:
        """Remove this run's staging directory (empty once every kernel is committed); other
        runs' are theirs (the host column can be written while a matrix runs)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.staging.parent.rmdir()
        if self._held is not None:
            os.close(self._held)
            self._held = None


def _hold(directory: Path, wait: bool = False) -> int | None:
    """A descriptor holding an exclusive lock on ``directory``; without ``wait``, None if
    another holds it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _kernels_in(staging: Path) -> list[Path]:
    return sorted(p for p in staging.iterdir() if p.is_dir() and not p.name.startswith("."))


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
    free = _free_bytes(root)
    if free < MIN_FREE_BYTES:
        raise UsageError(
            f"--results {root}: {free // 1024} KiB free there; a run needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB"
        )


def _free_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


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
