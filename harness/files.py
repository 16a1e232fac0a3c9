"""Result files: written whole or not at all, locked where several writers may meet, and read
back either leniently (a file a kernel may never have reached) or strictly (a file that must
be there and whole, whose damage is named)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import DiskFull, UnreadableResult


def current_umask() -> int:
    """The process's umask, read without changing it (setting it to read it back would race
    with the threads that write files meanwhile)."""
    try:
        for line in Path("/proc/thread-self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_bytes(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write beside under a name of its own, flush it to the disk, then rename: a reader never
    sees half a file, a crash never leaves a renamed empty one, and two writers of the same
    file never share a temporary one. The file gets the mode any new file would (the
    umask's), not mkstemp's 0600: results are meant to be read and published."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc
    try:
        os.fchmod(fd, mode & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise


def _named(exc: OSError, path: Path) -> Exception:
    """A full disk is a condition of the run, said in one line; other errors stay as they
    are."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(path, exc.errno)
    return exc


def write_text(path: Path, text: str, mode: int = 0o666) -> None:
    write_bytes(path, text.encode(), mode)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; empty if the file is missing, unreadable or not an object
    (a kernel that never got that far)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_json_object(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A JSON object that, if present, must be whole: None when the file does not exist, an
    :class:`UnreadableResult` naming the file and the damage when it is truncated, not UTF-8,
    not an object, or lacks one of the ``required`` keys."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableResult(path, f"cannot read: {exc.strerror}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UnreadableResult(path, f"not UTF-8 (byte {exc.start})") from exc
    except ValueError as exc:
        raise UnreadableResult(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UnreadableResult(path, f"expected a JSON object, found {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise UnreadableResult(path, f"missing {', '.join(missing)}")
    return data


@contextlib.contextmanager
def locked(directory: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on ``directory`` (a file in it), held for the block: two report
    builds, or two runs into the same results, take turns instead of interleaving."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
