"""Raw system calls through ctypes: signatures and return-value checks, no policy.

Every failure becomes ``OSError(errno, strerror, call)`` so that Python picks the right subclass
(``FileNotFoundError``, ``PermissionError``...) and the raw errno stays available to the
strategies that decide on it. ``call`` describes the operation and its arguments; for
filesystem contexts the kernel's own messages, read back from the context fd, are attached as
``exc.kernel_messages`` and appended to the description.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import stat
import struct
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mountcompat import _constants as C

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# The new mount syscalls have one number on x86_64 and the asm-generic table (aarch64); other
# architectures number them otherwise (alpha, mips) or are not known here. mount(2) and
# umount2(2), older, differ everywhere, and we call those through libc.
_NUMBERS: dict[str, dict[str, int]] = {
    arch: {
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "openat2": 437,
        "mount_setattr": 442,
        "statmount": 457,
        "listmount": 458,
        "open_tree_attr": 467,
    }
    for arch in ("x86_64", "aarch64")
}


def interpreter_arch() -> str:
    """The architecture this interpreter was built for ("x86_64-linux-gnu" -> "x86_64"): the
    numbers it must use, which platform.machine(), the kernel's, does not give (a 32-bit
    interpreter on an x86_64 kernel)."""
    multiarch = getattr(sys.implementation, "_multiarch", "") or (
        sysconfig.get_config_var("MULTIARCH") or ""
    )
    return str(multiarch).split("-")[0] if multiarch else platform.machine()


ARCH = interpreter_arch()
# An architecture without a table gets -1 for every number: the kernel answers ENOSYS, and
# the error says the numbers are missing here (the fallbacks through libc still work).
NR = dict(_NUMBERS.get(ARCH, dict.fromkeys(_NUMBERS["x86_64"], -1)))
# statx is older than the shared numbering: its number differs by architecture.
NR["statx"] = {"x86_64": 332, "aarch64": 291}.get(ARCH, -1)
KNOWN_ARCH = ARCH in _NUMBERS
# How often each number was called in this process: the suites record it, so that a run on
# an architecture shows that every number of its table was really used.
CALLED: collections.Counter[str] = collections.Counter()

_mount = _libc.mount
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]


# --- the path a strategy took ----------------------------------------------------------
#
# While a strategy runs (and tracing is on: the suites' plugin turns it on), each call of this
# layer is noted in that strategy's frame: the syscall, its command, key, flags and the kind of
# fd or source it was given, and the errno it got. Probes and the table reads of helpers run
# untraced (``untraced``): what is judged is the forced call itself. Off by default, so an
# embedding program pays one attribute lookup per call.

CALL_LIMIT = 400  # distinct calls kept per frame; repeats of the last one only count up


class _Frames(threading.local):
    def __init__(self) -> None:
        # A frame is a list of calls; None marks an untraced stretch (a probe's).
        self.stack: list[list[dict[str, Any]] | None] = []


_FRAMES = _Frames()
_tracing = [False]


def set_tracing(on: bool) -> None:
    """Note the calls of every strategy in its choice record (the suites do)."""
    _tracing[0] = on


def tracing() -> bool:
    return _tracing[0]


@contextlib.contextmanager
def traced() -> Iterator[list[dict[str, Any]]]:
    """The calls of this layer made by this thread inside the block (nested frames' too)."""
    calls: list[dict[str, Any]] = []
    _FRAMES.stack.append(calls)
    try:
        yield calls
    finally:
        _FRAMES.stack.pop()


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """A stretch whose calls belong to no strategy's path (a probe, a helper's table read)."""
    _FRAMES.stack.append(None)
    try:
        yield
    finally:
        _FRAMES.stack.pop()


def note(call: str, err: int | None = None, **detail: Any) -> None:
    """Add one call to every open frame up to the nearest untraced stretch."""
    stack = _FRAMES.stack
    if not stack or stack[-1] is None:
        return
    entry = {"call": call, **{k: v for k, v in detail.items() if v is not None}}
    entry["errno"] = errno.errorcode.get(err, str(err)) if err else None
    for frame in reversed(stack):
        if frame is None:
            break
        last = frame[-1] if frame else None
        if last is not None and {k: v for k, v in last.items() if k != "n"} == entry:
            last["n"] = last.get("n", 1) + 1
        elif len(frame) < CALL_LIMIT:
            frame.append(dict(entry))


def frames() -> list[list[dict[str, Any]] | None]:
    """This thread's open frames, for a helper thread that works on its behalf to adopt."""
    return list(_FRAMES.stack)


# Called at the start of a helper thread that works on a traced caller's behalf (the suites'
# kernel witness adds the thread to what the kernel traces).
HELPER_THREAD_HOOKS: list[Callable[[], None]] = []


def adopt_frames(stack: list[list[dict[str, Any]] | None]) -> None:
    """Note this thread's calls in ``stack``, another thread's frames: the other thread waits
    for this one meanwhile, so the frames are never written by both at once."""
    _FRAMES.stack = list(stack)
    if _tracing[0]:
        for hook in HELPER_THREAD_HOOKS:
            hook()


def noting() -> bool:
    stack = _FRAMES.stack
    return bool(stack) and stack[-1] is not None


def fd_kind(fd: int) -> str:
    """How an fd was opened, as a strategy's evidence: O_PATH or its access mode."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return "bad fd"
    if flags & os.O_PATH:
        return "O_PATH"
    return {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY"}.get(flags & os.O_ACCMODE, "O_RDWR")


def path_kind(value: str | bytes | None) -> str | None:
    """What a source string names: a regular file, a block device, or something else."""
    if value is None:
        return None
    try:
        mode = os.stat(value).st_mode
    except (OSError, ValueError):
        return "no such path"
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISBLK(mode):
        return "block device"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _err_of(result: int) -> int | None:
    return ctypes.get_errno() if result < 0 else None


class MountAttrStruct(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class OpenHow(ctypes.Structure):
    """struct open_how for openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class MntIdReq(ctypes.Structure):
    """struct mnt_id_req, MNT_ID_REQ_SIZE_VER0 (24 bytes): accepted by every kernel with it."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("spare", ctypes.c_uint32),
        ("mnt_id", ctypes.c_uint64),
        ("param", ctypes.c_uint64),
    ]


def _encode(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return os.fsencode(value)


def _shown(arg: Any) -> str:
    if not isinstance(arg, str | bytes):
        return str(arg)
    text = repr(arg)
    if len(text) > 200:  # a 6 KiB lowerdir string says no more in full
        text = f"{text[:120]}...{text[-60:]} ({len(arg)} bytes)"
    return text


def _describe(name: str, args: Sequence[Any]) -> str:
    return f"{name}({', '.join(_shown(a) for a in args)})"


def add_kernel_messages(exc: OSError, messages: Sequence[str], source: str = "kernel log") -> None:
    """Attach what the kernel said elsewhere (its log) to an error of this layer that carries
    no message of its own, so that the reason is in the exception and its text."""
    if not messages or getattr(exc, "kernel_messages", None) or not hasattr(exc, "operation"):
        return
    exc.kernel_messages = list(messages)  # type: ignore[attr-defined]
    exc.filename = f"{exc.filename} -- {source}: {'; '.join(messages)}"


def raise_errno(err: int, name: str, args: Sequence[Any], messages: Sequence[str] = ()) -> OSError:
    call = _describe(name, args)
    if err == errno.ENOSYS and not KNOWN_ARCH and NR.get(name) == -1:
        call += f" -- mountcompat has no syscall numbers for {ARCH} (known: x86_64, aarch64)"
    if messages:
        call += " -- kernel: " + "; ".join(messages)
    exc = OSError(err, os.strerror(err), call)
    exc.operation = name  # type: ignore[attr-defined]
    exc.arguments = tuple(args)  # type: ignore[attr-defined]
    exc.kernel_messages = list(messages)  # type: ignore[attr-defined]
    return exc


def _check(result: int, name: str, args: Sequence[Any]) -> int:
    if result < 0:
        raise raise_errno(ctypes.get_errno(), name, args)
    return result


# The calls that did nothing when they answer EINTR, so that asking again is the same request.
# fsconfig is not among them (an interrupted CMD_CREATE can leave its context failed), nor
# fsmount, which consumes the context's superblock.
RETRY_EINTR = frozenset(
    {
        "openat2",
        "statx",
        "statmount",
        "listmount",
        "open_tree",
        "open_tree_attr",
        "mount_setattr",
        "move_mount",
        "fsopen",
        "fspick",
    }
)


def syscall(
    name: str,
    *args: Any,
    describe: Sequence[Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """The syscall ``name``; ``detail`` is what its note in a strategy's path says of it.
    Interrupted by a signal (EINTR), a call that can be asked again is asked again, as
    Python's own ``os`` functions do (PEP 475): the handler runs in between, and an
    exception it raises ends the call."""
    CALLED[name] += 1
    while True:
        ctypes.set_errno(0)
        result = int(_syscall(ctypes.c_long(NR[name]), *args))
        if result >= 0 or name not in RETRY_EINTR or ctypes.get_errno() != errno.EINTR:
            break
    if _FRAMES.stack:
        note(name, _err_of(result), **(detail or {}))
    return _check(result, name, describe if describe is not None else args)


# --- the filesystem context -------------------------------------------------------------


def fsopen(fstype: str, flags: int = C.FSOPEN_CLOEXEC) -> int:
    return syscall(
        "fsopen",
        _encode(fstype),
        ctypes.c_uint(flags),
        describe=(fstype, flags),
        detail={"fstype": fstype},
    )


def fspick(
    path: str | os.PathLike[str], flags: int = C.FSPICK_CLOEXEC, dfd: int = C.AT_FDCWD
) -> int:
    return syscall(
        "fspick",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.c_uint(flags),
        describe=(dfd, os.fspath(path), flags),
        detail={"flags": flags},
    )


def read_context_messages(fd: int) -> list[str]:
    """Drain the messages the kernel queued on an fs-context fd ("e overlay: Bad value ...")."""
    messages = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # ENODATA when the queue is empty; anything else ends it too
            break
        if not data:
            break
        messages.append(data.decode("utf-8", "replace").rstrip("\n"))
    return messages


class KernelLogCursor:
    """The kernel log (/dev/kmsg) from the moment of opening on: some refusals carry their
    reason only there (overlayfs's pr_err "at least 2 lowerdir are needed while upperdir
    nonexistent", and every message of a mount(2) call, which has no context fd). Without
    the right to read it (not root, dmesg_restrict) it reads nothing. Lines are everybody's:
    callers keep only those with their subsystem's prefix."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.close()

    def lines(self, prefixes: tuple[str, ...] = ("",), limit: int = 10) -> list[str]:
        found: list[str] = []
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read it: go on
                    continue
                break  # EAGAIN: nothing more
            if not record:
                break
            # "<prio>,<seq>,<usec>,<flags>;<text>\n<continuation>"
            text = record.decode("utf-8", "replace").partition(";")[2].split("\n", 1)[0]
            if text.startswith(prefixes):
                found.append(text)
        return found[-limit:]

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> KernelLogCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# fsconfig copies a string value with strndup_user(_value, 256) (fs/fsopen.c), which refuses
# (EINVAL, with no message on the context) rather than truncates: 255 bytes and the NUL.
FSCONFIG_VALUE_MAX = 255


def fsconfig(
    fd: int, cmd: int, key: str | None = None, value: str | bytes | None = None, aux: int = 0
) -> None:
    """fsconfig(2). For FSCONFIG_SET_FD pass the fd as ``aux``; for SET_PATH a path ``value``
    and a dirfd ``aux``. On failure the context's messages are part of the OSError."""
    ctypes.set_errno(0)
    shown_value = value if cmd != C.FSCONFIG_SET_FD else None
    CALLED["fsconfig"] += 1
    result = int(
        _syscall(
            ctypes.c_long(NR["fsconfig"]),
            ctypes.c_int(fd),
            ctypes.c_uint(cmd),
            _encode(key),
            _encode(value),
            ctypes.c_int(aux),
        )
    )
    err = _err_of(result)
    if noting():
        note("fsconfig", err, **_fsconfig_detail(cmd, key, value, aux))
    if err is not None:
        args = (fd, C.FSCONFIG_NAMES.get(cmd, cmd), key, shown_value, aux)
        raise raise_errno(err, "fsconfig", args, read_context_messages(fd))


def _fsconfig_detail(
    cmd: int, key: str | None, value: str | bytes | None, aux: int
) -> dict[str, Any]:
    detail: dict[str, Any] = {"cmd": C.FSCONFIG_NAMES.get(cmd, str(cmd)), "key": key}
    if cmd == C.FSCONFIG_SET_FD:
        detail["fd"] = fd_kind(aux)
    elif cmd == C.FSCONFIG_SET_STRING and key == "source":
        detail["source"] = path_kind(value)
    return detail


def fsmount(fd: int, flags: int = C.FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    CALLED["fsmount"] += 1
    ctypes.set_errno(0)
    result = int(
        _syscall(
            ctypes.c_long(NR["fsmount"]),
            ctypes.c_int(fd),
            ctypes.c_uint(flags),
            ctypes.c_uint(attr_flags),
        )
    )
    err = _err_of(result)
    if _FRAMES.stack:
        note("fsmount", err, flags=flags, attr_flags=attr_flags)
    if err is not None:
        raise raise_errno(err, "fsmount", (fd, flags, attr_flags), read_context_messages(fd))
    return result


def move_mount(
    from_dfd: int, from_path: str, to_dfd: int, to_path: str | os.PathLike[str], flags: int
) -> None:
    syscall(
        "move_mount",
        ctypes.c_int(from_dfd),
        _encode(from_path),
        ctypes.c_int(to_dfd),
        _encode(to_path),
        ctypes.c_uint(flags),
        describe=(from_dfd, from_path, to_dfd, os.fspath(to_path), flags),
        detail={"flags": flags},
    )


def open_tree(dfd: int, path: str | os.PathLike[str], flags: int) -> int:
    return syscall(
        "open_tree",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.c_uint(flags),
        describe=(dfd, os.fspath(path), flags),
        detail={"flags": flags},
    )


def mount_setattr(
    dfd: int, path: str | os.PathLike[str], flags: int, attr: MountAttrStruct
) -> None:
    syscall(
        "mount_setattr",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        describe=(dfd, os.fspath(path), flags, f"set={attr.attr_set:#x} clr={attr.attr_clr:#x}"),
        detail={"flags": flags, "attr_set": attr.attr_set, "attr_clr": attr.attr_clr},
    )


def open_tree_attr(
    dfd: int, path: str | os.PathLike[str], flags: int, attr: MountAttrStruct | None
) -> int:
    attr_ref = ctypes.byref(attr) if attr is not None else None
    size = ctypes.sizeof(attr) if attr is not None else 0
    return syscall(
        "open_tree_attr",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.c_uint(flags),
        attr_ref,
        ctypes.c_size_t(size),
        describe=(
            dfd,
            os.fspath(path),
            flags,
            f"set={attr.attr_set:#x} clr={attr.attr_clr:#x}" if attr else None,
        ),
        detail={"flags": flags, "attr_set": attr.attr_set if attr else None},
    )


def openat2(dfd: int, path: str | os.PathLike[str], how: OpenHow) -> int:
    return syscall(
        "openat2",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
        describe=(dfd, os.fspath(path), f"flags={how.flags:#x}", f"resolve={how.resolve:#x}"),
        detail={"flags": how.flags, "resolve": how.resolve},
    )


class StatmountBuffer:
    """statmount(2) (6.8) for mount after mount through one request and one buffer, both
    reused: a call costs the syscall and nothing else (no ctypes object made, no description
    formatted unless it fails). The answer is in ``view`` until the next call. The buffer
    grows on EOVERFLOW (strings longer than it). Not for two threads at once."""

    def __init__(self, mask: int, size: int = 4096) -> None:
        self.mask = mask
        self._req = MntIdReq(size=C.MNT_ID_REQ_SIZE_VER0, spare=0, mnt_id=0, param=mask)
        self._args = (ctypes.c_long(NR["statmount"]), ctypes.byref(self._req))
        self._flags = ctypes.c_uint(0)
        self._allocate(size)

    def _allocate(self, size: int) -> None:
        self._buffer = ctypes.create_string_buffer(size)
        self._size = ctypes.c_size_t(size)
        self.view = memoryview(self._buffer).cast("B")

    def __call__(self, mnt_id: int) -> None:
        CALLED["statmount"] += 1
        self._req.mnt_id = mnt_id
        nr, req = self._args
        if _FRAMES.stack:
            note("statmount", None, mask=self.mask)
        while _syscall(nr, req, self._buffer, self._size, self._flags) < 0:
            err = ctypes.get_errno()
            size = self._size.value
            if err == errno.EOVERFLOW and size < (1 << 24):
                self._allocate(size * 4)
                continue
            raise raise_errno(err, "statmount", (mnt_id, f"mask={self.mask:#x}", size))


def statmount(mnt_id: int, mask: int, size: int = 4096) -> bytes:
    """statmount(2) of one mount: the answer, header and strings."""
    call = StatmountBuffer(mask, size)
    call(mnt_id)
    used = int.from_bytes(call.view[:4], sys.byteorder)
    return call.view[:used].tobytes()


def listmount(mnt_id: int, last_id: int, count: int = 512, flags: int = 0) -> list[int]:
    """listmount(2) (6.8): up to ``count`` unique ids of the mounts below ``mnt_id``
    (LSMT_ROOT: the whole namespace) after ``last_id``, in increasing order."""
    req = MntIdReq(size=C.MNT_ID_REQ_SIZE_VER0, spare=0, mnt_id=mnt_id, param=last_id)
    ids = (ctypes.c_uint64 * count)()
    n = syscall(
        "listmount",
        ctypes.byref(req),
        ids,
        ctypes.c_size_t(count),
        ctypes.c_uint(flags),
        describe=(mnt_id, last_id, count, flags),
        detail={"flags": flags},
    )
    return ids[:n]


# statx(2) (4.11): STATX_MNT_ID from 5.8 (the id mountinfo shows), STATX_MNT_ID_UNIQUE from
# 6.8 (statmount's 64-bit id; both are answered in stx_mnt_id, so ask for one at a time).
STATX_MNT_ID = 0x1000
STATX_MNT_ID_UNIQUE = 0x4000
STATX_SIZE = 256
STATX_FIELDS = struct.Struct("=I132xIIQ")  # stx_mask, stx_dev_major/minor, stx_mnt_id


def statx(
    dfd: int, path: str | os.PathLike[str], flags: int, mask: int
) -> tuple[int, int, int, int]:
    """statx(2): (returned mask, st_dev's major, minor, stx_mnt_id). A kernel that lacks a
    field asked for leaves its bit out of the returned mask; before 4.11: ENOSYS."""
    buf = ctypes.create_string_buffer(STATX_SIZE)
    syscall(
        "statx",
        ctypes.c_int(dfd),
        _encode(path),
        ctypes.c_int(flags),
        ctypes.c_uint(mask),
        buf,
        describe=(dfd, os.fspath(path), flags, f"mask={mask:#x}"),
        detail={"mask": mask},
    )
    returned, major, minor, mnt_id = STATX_FIELDS.unpack_from(buf)
    return returned, major, minor, mnt_id


# --- the classic calls -----------------------------------------------------------------


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None,
    flags: int,
    data: str | bytes | None = None,
) -> None:
    ctypes.set_errno(0)
    args = (_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data))
    failed = _retrying(lambda: _mount(*args)) != 0
    if _FRAMES.stack:
        note("mount", ctypes.get_errno() if failed else None, fstype=fstype, flags=flags)
    if failed:
        shown = (
            None if source is None else os.fspath(source),
            os.fspath(target),
            fstype,
            f"{flags:#x}",
            data,
        )
        raise raise_errno(ctypes.get_errno(), "mount", shown)


def _retrying(call: Any) -> int:
    """A libc call (mount, umount2) asked again while it answers EINTR: an interrupted mount
    or unmount has not happened."""
    while True:
        ctypes.set_errno(0)
        result = int(call())
        if result == 0 or ctypes.get_errno() != errno.EINTR:
            return result


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    ctypes.set_errno(0)
    encoded = _encode(target)
    failed = _retrying(lambda: _umount2(encoded, ctypes.c_int(flags))) != 0
    if _FRAMES.stack:
        note("umount2", ctypes.get_errno() if failed else None, flags=flags)
    if failed:
        raise raise_errno(ctypes.get_errno(), "umount2", (os.fspath(target), flags))


def unshare(flags: int) -> None:
    ctypes.set_errno(0)
    if _unshare(ctypes.c_int(flags)) != 0:
        raise raise_errno(ctypes.get_errno(), "unshare", (f"{flags:#x}",))


# --- calls of the os module, noted for the paths that use them -------------------------


def ioctl(fd: int, request: int, arg: int | ctypes.Structure, name: str, **detail: Any) -> int:
    """ioctl(2) through fcntl; a structure is passed as a mutable buffer and read back."""
    try:
        if isinstance(arg, ctypes.Structure):
            buf = bytearray(bytes(arg))
            result = int(fcntl.ioctl(fd, request, buf, True))
            ctypes.memmove(ctypes.addressof(arg), bytes(buf), len(buf))
        else:
            result = int(fcntl.ioctl(fd, request, arg))
    except OSError as exc:
        if _FRAMES.stack:
            note("ioctl", exc.errno, cmd=name, **detail)
        raise raise_errno(exc.errno or 0, name, (fd,)) from None
    if _FRAMES.stack:
        note("ioctl", None, cmd=name, **detail)
    return result


def openat(dirfd: int, name: str, flags: int) -> int:
    """openat(2) of one name under ``dirfd`` (os.open), noted with its flags."""
    try:
        fd = os.open(name, flags, dir_fd=dirfd)
    except OSError as exc:
        if _FRAMES.stack:
            note("openat", exc.errno, flags=flags)
        raise
    if _FRAMES.stack:
        note("openat", None, flags=flags)
    return fd


def note_read(path: str | os.PathLike[str]) -> None:
    """A file of /proc read as part of a strategy's path (the mount table)."""
    if _FRAMES.stack:
        note("read", None, path=os.fspath(path))
