"""Loop devices as the field does them.

A free device comes from LOOP_CTL_GET_FREE; another process can take it between that answer
and our configuration, which shows up as EBUSY and is retried with backoff. The backing file
is bound with LOOP_CONFIGURE (5.8) or, before it, LOOP_SET_FD + LOOP_SET_STATUS64 (the
``loop.attach`` feature). Direct I/O is asked for only where wanted and dropped, with a note,
where the backing filesystem cannot do it. The device is detached on close; with autoclear the
kernel does that itself once the last user (a mount, say) lets go.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mountcompat import _constants as C
from mountcompat._syscalls import raise_errno
from mountcompat.mounts import Closing
from mountcompat.strategy import Strategy, feature

CONTROL = Path("/dev/loop-control")
GRAB_ATTEMPTS = 12


class LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * 64),
        ("lo_crypt_name", ctypes.c_char * 64),
        ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _ioctl(fd: int, request: int, arg: int | ctypes.Structure, name: str) -> int:
    try:
        if isinstance(arg, ctypes.Structure):
            buf = bytearray(bytes(arg))
            result = int(fcntl.ioctl(fd, request, buf, True))
            ctypes.memmove(ctypes.addressof(arg), bytes(buf), len(buf))
            return result
        return int(fcntl.ioctl(fd, request, arg))
    except OSError as exc:
        raise raise_errno(exc.errno or 0, name, (fd,)) from None


def loop_flags(read_only: bool, autoclear: bool, direct_io: bool) -> int:
    return (
        (C.LO_FLAGS_READ_ONLY if read_only else 0)
        | (C.LO_FLAGS_AUTOCLEAR if autoclear else 0)
        | (C.LO_FLAGS_DIRECT_IO if direct_io else 0)
    )


def _file_name(backing: str) -> bytes:
    return os.fsencode(backing)[:63]


@dataclass
class _Request:
    backing_fd: int
    backing: str
    read_only: bool
    autoclear: bool
    direct_io: bool
    notes: list[str] = field(default_factory=list)


def _grab(request: _Request, configure: Callable[[int, _Request], None]) -> tuple[int, int]:
    """Take a free device and configure it; EBUSY (someone else took it) is retried."""
    mode = os.O_RDONLY if request.read_only else os.O_RDWR
    with open(CONTROL, "rb", buffering=0) as control:
        for attempt in range(GRAB_ATTEMPTS):
            number = _ioctl(control.fileno(), C.LOOP_CTL_GET_FREE, 0, "LOOP_CTL_GET_FREE")
            try:
                dev_fd = os.open(f"/dev/loop{number}", mode | os.O_CLOEXEC)
            except FileNotFoundError:  # the node is made by devtmpfs a moment later
                time.sleep(0.01 * (attempt + 1))
                continue
            try:
                configure(dev_fd, request)
                return number, dev_fd
            except OSError as exc:
                os.close(dev_fd)
                if exc.errno != errno.EBUSY:
                    raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise raise_errno(errno.EBUSY, "loop attach", (request.backing, f"{GRAB_ATTEMPTS} attempts"))


def _configure(dev_fd: int, request: _Request) -> None:
    """LOOP_CONFIGURE: one ioctl binds the file and sets every flag (5.8).

    Before 5.8 the ioctl is unknown: EINVAL (or ENOTTY). A backing file that cannot do direct
    I/O makes the kernel refuse LO_FLAGS_DIRECT_IO with EINVAL on some versions: retried once
    without it."""

    def call(direct: bool) -> None:
        config = LoopConfig(fd=request.backing_fd, block_size=0)
        config.info.lo_flags = loop_flags(request.read_only, request.autoclear, direct)
        config.info.lo_file_name = _file_name(request.backing)
        _ioctl(dev_fd, C.LOOP_CONFIGURE, config, "LOOP_CONFIGURE")

    try:
        call(request.direct_io)
    except OSError as exc:
        if not request.direct_io or exc.errno != errno.EINVAL:
            raise
        call(False)
        request.notes.append("direct I/O refused (EINVAL): buffered I/O used")


def _set_fd_status(dev_fd: int, request: _Request) -> None:
    """LOOP_SET_FD, then LOOP_SET_STATUS64 for the flags: every kernel has these.

    Needed before 5.8 (LOOP_CONFIGURE unknown). Two ioctls leave a window in which the device
    is bound but not yet autoclear; a failure in between is undone with LOOP_CLR_FD."""
    _ioctl(dev_fd, C.LOOP_SET_FD, request.backing_fd, "LOOP_SET_FD")
    try:
        info = LoopInfo64()
        info.lo_flags = loop_flags(False, request.autoclear, False)
        info.lo_file_name = _file_name(request.backing)
        _ioctl(dev_fd, C.LOOP_SET_STATUS64, info, "LOOP_SET_STATUS64")
        if request.direct_io:
            try:
                _ioctl(dev_fd, C.LOOP_SET_DIRECT_IO, 1, "LOOP_SET_DIRECT_IO")
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                request.notes.append("direct I/O refused (EINVAL): buffered I/O used")
    except BaseException:
        _ioctl(dev_fd, C.LOOP_CLR_FD, 0, "LOOP_CLR_FD")
        raise


def _strategy_configure(request: _Request) -> tuple[int, int]:
    """LOOP_CONFIGURE (5.8 on). Before 5.8: EINVAL or ENOTTY from the unknown ioctl."""
    return _grab(request, _configure)


def _strategy_set_fd_status(request: _Request) -> tuple[int, int]:
    """LOOP_SET_FD + LOOP_SET_STATUS64: the pre-5.8 way, which every kernel still accepts."""
    return _grab(request, _set_fd_status)


LOOP_ATTACH = feature(
    "loop.attach",
    "bind a backing file to a free loop device",
    [
        Strategy(
            "loop-configure",
            _strategy_configure,
            unsupported=frozenset({errno.EINVAL, errno.ENOTTY}),
        ),
        Strategy("set-fd-status", _strategy_set_fd_status),
    ],
)


def sysfs_loop(number: int) -> dict[str, str]:
    """What the kernel says of a loop device in sysfs (backing_file, autoclear, dio, ro)."""
    base = Path(f"/sys/block/loop{number}")
    values = {}
    for name in ("loop/backing_file", "loop/autoclear", "loop/dio", "ro"):
        with contextlib.suppress(OSError):
            values[name.split("/")[-1]] = (base / name).read_text().strip()
    return values


class LoopDevice(Closing):
    """An attached loop device; ``close()`` detaches it (or leaves it to autoclear)."""

    def __init__(self, number: int, fd: int, backing: Path, notes: list[str]) -> None:
        self.number, self.backing, self.notes = number, backing, notes
        self._fd: int | None = fd
        info = self.status()
        self.read_only = bool(info.lo_flags & C.LO_FLAGS_READ_ONLY)
        self.autoclear = bool(info.lo_flags & C.LO_FLAGS_AUTOCLEAR)
        self.direct_io = bool(info.lo_flags & C.LO_FLAGS_DIRECT_IO)

    @property
    def path(self) -> Path:
        return Path(f"/dev/loop{self.number}")

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("loop device is closed")
        return self._fd

    def status(self) -> LoopInfo64:
        info = LoopInfo64()
        _ioctl(self.fileno(), C.LOOP_GET_STATUS64, info, "LOOP_GET_STATUS64")
        return info

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.autoclear:
                try:
                    _ioctl(fd, C.LOOP_CLR_FD, 0, "LOOP_CLR_FD")
                except OSError as exc:
                    # Still in use (mounted): the kernel then marks it autoclear instead.
                    if exc.errno not in (errno.EBUSY, errno.ENXIO):
                        raise
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"LoopDevice({self.path}, backing={str(self.backing)!r})"


def _open_backing(
    path: Path, read_only: bool, direct_io: bool, notes: list[str]
) -> tuple[int, bool]:
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
    if direct_io:
        try:
            return os.open(path, flags | os.O_DIRECT), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            notes.append(f"{path}: the filesystem refuses O_DIRECT (EINVAL): buffered I/O used")
    return os.open(path, flags), False


def attach(
    backing: str | os.PathLike[str],
    *,
    read_only: bool = True,
    autoclear: bool = True,
    direct_io: bool = False,
    force: str | None = None,
) -> LoopDevice:
    """Attach ``backing`` to a free loop device, through the ``loop.attach`` feature."""
    path = Path(backing).resolve()
    notes: list[str] = []
    backing_fd, direct = _open_backing(path, read_only, direct_io, notes)
    try:
        request = _Request(backing_fd, str(path), read_only, autoclear, direct, notes)
        number, dev_fd = LOOP_ATTACH(request, force=force)
    finally:
        os.close(backing_fd)
    return LoopDevice(number, dev_fd, path, notes)


__all__ = ["LOOP_ATTACH", "LoopDevice", "attach", "sysfs_loop"]
