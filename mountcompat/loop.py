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
import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat._syscalls import raise_errno
from mountcompat.mounts import Closing
from mountcompat.strategy import Probe, Strategy, feature

CONTROL = Path("/dev/loop-control")
# util-linux's losetup tries 64 times, 200 ms apart; we back off exponentially up to that.
GRAB_ATTEMPTS = 64
MAX_BACKOFF = 0.2
# What LOOP_CTL_GET_FREE's device can answer when another process got to it first.
TAKEN_MEANWHILE = frozenset({errno.EBUSY, errno.ENXIO, errno.ENOENT})


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
    """A loop ioctl; its note in a strategy's path carries the flags it asked for."""
    if isinstance(arg, LoopConfig):
        return sys_.ioctl(fd, request, arg, name, lo_flags=arg.info.lo_flags)
    if isinstance(arg, LoopInfo64):
        return sys_.ioctl(fd, request, arg, name, lo_flags=arg.lo_flags)
    return sys_.ioctl(fd, request, arg, name, value=arg)


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


Configure = Callable[[int, _Request], None]


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(MAX_BACKOFF, 0.002 * 2**attempt))


def _open_device(number: int, mode: int) -> int:
    return os.open(f"/dev/loop{number}", mode | os.O_CLOEXEC)


def _configured(number: int, request: _Request, configure: Configure) -> int:
    """The fd of device ``number`` bound to the request's file, or the kernel's refusal."""
    dev_fd = _open_device(number, os.O_RDONLY if request.read_only else os.O_RDWR)
    try:
        configure(dev_fd, request)
    except BaseException:
        os.close(dev_fd)
        raise
    return dev_fd


def _grab(request: _Request, configure: Configure) -> tuple[int, int]:
    """Take a free device and bind it. LOOP_CTL_GET_FREE only names a device that was free a
    moment ago: before we open and bind it another process may bind it (EBUSY from
    LOOP_CONFIGURE/LOOP_SET_FD), or be letting it go (ENXIO from open: lo_open refuses a
    device in Lo_rundown, which LOOP_CLR_FD and the last close of an autoclear device go
    through), or devtmpfs may not have made its node yet (ENOENT). Each means: take another."""
    last = errno.EBUSY
    with open(CONTROL, "rb", buffering=0) as control:
        for attempt in range(GRAB_ATTEMPTS):
            number = _ioctl(control.fileno(), C.LOOP_CTL_GET_FREE, 0, "LOOP_CTL_GET_FREE")
            try:
                return number, _configured(number, request, configure)
            except OSError as exc:
                if exc.errno not in TAKEN_MEANWHILE:
                    raise
                last = exc.errno or last
            time.sleep(_backoff(attempt))
    taken = f"{GRAB_ATTEMPTS} free devices, each taken by another process first"
    raise raise_errno(last, "loop attach", (request.backing, taken))


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
    except BaseException as exc:
        _undo_binding(dev_fd, exc)
        raise


def _undo_binding(dev_fd: int, cause: BaseException) -> None:
    """LOOP_CLR_FD after a failed second step; its own failure is noted on the first error,
    which stays the one raised."""
    try:
        _ioctl(dev_fd, C.LOOP_CLR_FD, 0, "LOOP_CLR_FD")
    except OSError as exc:
        cause.add_note(f"undoing LOOP_SET_FD failed too: {exc}")


def _strategy_configure(request: _Request) -> tuple[int, int]:
    """LOOP_CONFIGURE (5.8 on). Before 5.8 the unknown ioctl gets EINVAL (lo_simple_ioctl's
    default; ENOTTY through compat paths). EINVAL is also the answer to a wrong request (a
    backing fd that is not a regular file or block device, unknown flags), so a probe
    decides: LOOP_CONFIGURE with an fd that cannot be open. Preferred: one ioctl, no window
    where the device is bound but not yet read-only/autoclear."""
    return _grab(request, _configure)


def _strategy_set_fd_status(request: _Request) -> tuple[int, int]:
    """LOOP_SET_FD + LOOP_SET_STATUS64: the pre-5.8 way, which every kernel still accepts.
    Needed before 5.8, where LOOP_CONFIGURE is unknown (EINVAL, probed)."""
    return _grab(request, _set_fd_status)


def _free_device_fd() -> int:
    """An fd of a device LOOP_CTL_GET_FREE names, retried while others take it meanwhile."""
    with open(CONTROL, "rb", buffering=0) as control:
        for attempt in range(GRAB_ATTEMPTS):
            number = _ioctl(control.fileno(), C.LOOP_CTL_GET_FREE, 0, "LOOP_CTL_GET_FREE")
            try:
                return _open_device(number, os.O_RDONLY)
            except OSError as exc:
                if exc.errno not in TAKEN_MEANWHILE:
                    raise
            time.sleep(_backoff(attempt))
    raise raise_errno(errno.EBUSY, "loop probe", ("no free device to ask",))


def _loop_configure_known() -> bool:
    """LOOP_CONFIGURE with fd -1 on a free device: from 5.8 loop_configure() looks the fd up
    first (fget, EBADF) and binds nothing; before, the unknown ioctl answers EINVAL (ENOTTY
    through compat paths). Nothing is bound either way, and the device stays free."""
    dev_fd = _free_device_fd()
    try:
        _ioctl(dev_fd, C.LOOP_CONFIGURE, LoopConfig(fd=0xFFFFFFFF, block_size=0), "LOOP_CONFIGURE")
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTTY):
            return False
        if exc.errno == errno.EBADF:
            return True
        raise
    finally:
        os.close(dev_fd)
    return True  # bound nothing with no file: the ioctl is known, whatever it did


LOOP_CONFIGURE_KNOWN = Probe("LOOP_CONFIGURE (5.8)", _loop_configure_known)

LOOP_ATTACH = feature(
    "loop.attach",
    "bind a backing file to a free loop device",
    [
        Strategy(
            "loop-configure",
            _strategy_configure,
            # ENOTTY: the block layer's "no such ioctl" for this device; can mean nothing else.
            unsupported=frozenset({errno.ENOTTY}),
            cache_on=frozenset({errno.ENOTTY}),
            ambiguous=frozenset({errno.EINVAL}),
            probe=LOOP_CONFIGURE_KNOWN,
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
            # Bytes, decoded as names are: a backing file's name need not be UTF-8.
            # sysfs ends each value with one newline; a name may end with one of its own.
            raw = (base / name).read_bytes().removesuffix(b"\n")
            values[name.split("/")[-1]] = os.fsdecode(raw)
    return values


def _status(dev_fd: int) -> LoopInfo64:
    info = LoopInfo64()
    _ioctl(dev_fd, C.LOOP_GET_STATUS64, info, "LOOP_GET_STATUS64")
    return info


def _clear(dev_fd: int) -> None:
    """LOOP_CLR_FD. A device someone else still holds open is only marked autoclear (5.10
    answered EBUSY to that; loop_clr_fd() since marks it and returns 0), and one already let
    go answers ENXIO: both leave nothing of ours bound."""
    try:
        _ioctl(dev_fd, C.LOOP_CLR_FD, 0, "LOOP_CLR_FD")
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENXIO):
            raise


class LoopDevice(Closing):
    """An attached loop device; ``close()`` detaches it (or leaves it to autoclear). A close
    whose LOOP_CLR_FD fails keeps the device's fd, so that calling it again retries."""

    def __init__(self, number: int, fd: int, backing: Path, notes: list[str], flags: int) -> None:
        self.number, self.backing, self.notes = number, backing, notes
        self._fd: int | None = fd
        self.read_only = bool(flags & C.LO_FLAGS_READ_ONLY)
        self.autoclear = bool(flags & C.LO_FLAGS_AUTOCLEAR)
        self.direct_io = bool(flags & C.LO_FLAGS_DIRECT_IO)

    @property
    def path(self) -> Path:
        return Path(f"/dev/loop{self.number}")

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("loop device is closed")
        return self._fd

    def status(self) -> LoopInfo64:
        return _status(self.fileno())

    def close(self) -> None:
        fd = self._fd
        if fd is None:
            return
        if not self.autoclear:
            _clear(fd)
        self._fd = None
        os.close(fd)

    def __repr__(self) -> str:
        return f"LoopDevice({self.path}, backing={str(self.backing)!r})"


def _require_loopable(fd: int, path: Path) -> None:
    """The kernel takes a regular file or a block device (loop_validate_file, EINVAL for
    anything else): said here, naming the path, instead of a bare EINVAL from the ioctl."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        exc.filename = str(path)  # fstat's error names no file; this one is the backing
        raise
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(
            errno.EISDIR,
            "a loop device needs a regular file or a block device, not a directory",
            str(path),
        )
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise OSError(
            errno.EINVAL, "a loop device needs a regular file or a block device", str(path)
        )


def _open_backing(
    path: Path, read_only: bool, direct_io: bool, notes: list[str]
) -> tuple[int, bool]:
    fd, direct = _open_backing_fd(path, read_only, direct_io, notes)
    try:
        _require_loopable(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd, direct


def _open_backing_fd(
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


def _device(number: int, dev_fd: int, path: Path, notes: list[str]) -> LoopDevice:
    """The LoopDevice for a freshly bound fd, with the flags the kernel really set. If even
    that fails, the binding is undone: nobody else would ever clear a device without
    autoclear."""
    try:
        flags = _status(dev_fd).lo_flags
    except BaseException as exc:
        try:
            _clear(dev_fd)
        except OSError as undo:
            exc.add_note(f"detaching /dev/loop{number} failed too: {undo}")
        finally:
            os.close(dev_fd)
        raise
    return LoopDevice(number, dev_fd, path, notes, flags)


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
    return _device(number, dev_fd, path, notes)


__all__ = ["LOOP_ATTACH", "LoopDevice", "attach", "sysfs_loop"]
