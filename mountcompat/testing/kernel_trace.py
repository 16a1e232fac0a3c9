"""The kernel's own witness of the calls a test made: syscall tracepoints in tracefs.

A trace instance of its own (``instances/mountcompat-<pid>``, so nobody else's tracing is
touched), with the ``syscalls/sys_enter_*`` and ``sys_exit_*`` events of the mount API, mount(2),
umount2, ioctl and openat enabled for this process only (``set_event_pid``). The kernel writes
the syscall, its number arguments (fsconfig's command, ioctl's request, flags) and its return
value: a witness apart from the library, which the path judged by the library's own notes
must agree with. Strings and the structures behind pointers are not in it; those come from the
library's raw layer only.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_

TRACEFS = Path("/sys/kernel/tracing")
# The library's call names and the syscalls behind them (umount2 is sys_umount).
SYSCALLS = {
    "fsopen": "fsopen",
    "fsconfig": "fsconfig",
    "fsmount": "fsmount",
    "move_mount": "move_mount",
    "open_tree": "open_tree",
    "open_tree_attr": "open_tree_attr",
    "mount_setattr": "mount_setattr",
    "openat2": "openat2",
    "statmount": "statmount",
    "listmount": "listmount",
    "mount": "mount",
    "umount2": "umount",
    "ioctl": "ioctl",
    "openat": "openat",
}
# Which argument of each syscall holds what the library notes as ``flags`` or ``cmd``.
FLAG_ARGUMENT = {
    "mount": "flags",
    "umount": "flags",
    "open_tree": "flags",
    "open_tree_attr": "flags",
    "mount_setattr": "flags",
    "move_mount": "flags",
    "openat": "flags",
    "fsmount": "flags",
}
ENTER = re.compile(r": sys_(\w+)\((.*)\)\s*$")
EXIT = re.compile(r": sys_(\w+) -> (0x[0-9a-f]+|-?\d+)\s*$")
ARGUMENT = re.compile(r"(\w+): ([0-9a-fA-Fx-]+)")
# An event's print format names each argument's conversion: "flags: 0x%08lx" (6.x), "flags:
# %lx" (5.10, hex without 0x), "mode: 0%o"-like octal on newer kernels.
CONVERSION = re.compile(r"(\w+): (?:0x)?0?%[-#0-9.]*[hlz]*([xXdiuo])")
BASES = {"x": 16, "X": 16, "d": 10, "i": 10, "u": 10, "o": 8}
Bases = dict[str, dict[str, int]]  # per syscall, per argument: the number base it is printed in


@dataclass(frozen=True)
class KernelCall:
    syscall: str
    args: dict[str, int]
    ret: int | None

    @property
    def ok(self) -> bool:
        # A return value is a long: -4095..-1 are errnos.
        return self.ret is None or not (-4095 <= _signed(self.ret) < 0)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _number(text: str, base: int | None = None) -> int:
    """A value as the tracepoint prints it: in its format's base where known (5.10 prints hex
    without 0x), else hex with 0x and decimal without."""
    if text.startswith(("0x", "0X")):
        return int(text, 16)
    return int(text, base or 10)


def print_bases(format_text: str) -> dict[str, int]:
    """Each argument's number base, from an event's ``format`` file (its "print fmt" line)."""
    line = next((x for x in format_text.splitlines() if x.startswith("print fmt:")), "")
    return {name: BASES[conversion] for name, conversion in CONVERSION.findall(line)}


def parse_trace(text: str, bases: Bases | None = None) -> list[KernelCall]:
    """The calls in a trace file, each entry paired with the exit that follows it. A value
    that does not parse in its base leaves that argument out (never a wrong number)."""
    bases = bases or {}
    calls: list[KernelCall] = []
    open_calls: dict[str, int] = {}
    for line in text.splitlines():
        entered = ENTER.search(line)
        if entered:
            known = bases.get(entered.group(1), {})
            args = {}
            for name, value in ARGUMENT.findall(entered.group(2)):
                with contextlib.suppress(ValueError):
                    args[name] = _number(value, known.get(name))
            open_calls[entered.group(1)] = len(calls)
            calls.append(KernelCall(entered.group(1), args, None))
            continue
        exited = EXIT.search(line)
        if exited and exited.group(1) in open_calls:
            index = open_calls.pop(exited.group(1))
            call = calls[index]
            with contextlib.suppress(ValueError):
                ret = _number(exited.group(2), 16 if bases else None)
                calls[index] = KernelCall(call.syscall, call.args, ret)
    return calls


class KernelWitness:
    """One process's syscall trace. ``clear`` before the call, ``take`` after it."""

    def __init__(self, instance: Path, events: list[str], bases: Bases | None = None) -> None:
        self.instance = instance
        self.events = events
        self.bases = bases or {}
        # Read as a pipe, which consumes what it gives: emptying the buffer by truncating
        # ``trace`` resets the ring buffer, 16 ms a time on the host.
        self._pipe = os.open(instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        sys_.HELPER_THREAD_HOOKS.append(self.add_helper_thread)

    def add_helper_thread(self) -> None:
        """Trace the calling thread too: the library's helper thread that works for a traced
        caller (mountcompat.scratch). Appended (no O_TRUNC), so the process stays traced; the
        kernel applies the new list to the running thread at once."""
        # os.open, not open(..., "a"): Python seeks to the end of a file opened to append,
        # and tracefs files refuse the seek (EINVAL).
        fd = os.open(self.instance / "set_event_pid", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, f"{threading.get_native_id()}\n".encode())
        finally:
            os.close(fd)

    @classmethod
    def start(cls, pid: int | None = None) -> KernelWitness | str:
        """The witness, or why this kernel gives none (no tracefs, no syscall events)."""
        try:
            root = ensure_tracefs()
            events_dir = root / "events" / "syscalls"
            if not events_dir.is_dir():
                return "no syscall tracepoints (CONFIG_FTRACE_SYSCALLS off)"
            instance = root / "instances" / f"mountcompat-{os.getpid()}"
            with contextlib.suppress(FileExistsError):
                instance.mkdir()
            events = [
                name for name in SYSCALLS.values() if (events_dir / f"sys_enter_{name}").is_dir()
            ]
            (instance / "set_event_pid").write_text(f"{pid or os.getpid()}\n")
            for name in events:
                for side in ("enter", "exit"):
                    (instance / "events" / "syscalls" / f"sys_{side}_{name}" / "enable").write_text(
                        "1\n"
                    )
            (instance / "tracing_on").write_text("1\n")
            bases = {
                name: print_bases((events_dir / f"sys_enter_{name}" / "format").read_text())
                for name in events
            }
        except OSError as exc:
            return f"tracefs unusable: {exc.strerror or exc}"
        return cls(instance, events, bases)

    def _drain(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(self._pipe, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def clear(self) -> None:
        self._drain()

    def take(self) -> list[KernelCall]:
        """The calls since the last clear or take."""
        return parse_trace(self._drain().decode(errors="replace"), self.bases)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            sys_.HELPER_THREAD_HOOKS.remove(self.add_helper_thread)
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        with contextlib.suppress(OSError):
            (self.instance / "tracing_on").write_text("0\n")
            for name in self.events:
                for side in ("enter", "exit"):
                    path = self.instance / "events" / "syscalls" / f"sys_{side}_{name}" / "enable"
                    path.write_text("0\n")
        with contextlib.suppress(OSError):
            self.instance.rmdir()

    def describe(self) -> str:
        return f"the kernel's syscall tracepoints ({len(self.events)} syscalls traced)"


def ensure_tracefs() -> Path:
    """tracefs, mounted here if it is not (in the suites' private mount namespace, where it
    goes with the process); a failure to mount shows when the witness starts."""
    if not (TRACEFS / "instances").is_dir():
        with contextlib.suppress(OSError):
            sys_.mount("tracefs", TRACEFS, "tracefs", 0)
    return TRACEFS


def _command_number(syscall: str, cmd: object) -> int | None:
    """The number the kernel sees for a command the library names (fsconfig's, an ioctl's)."""
    if cmd is None:
        return None
    if syscall == "fsconfig":
        return next((n for n, name in C.FSCONFIG_NAMES.items() if name == cmd), None)
    if syscall == "ioctl":
        number = getattr(C, str(cmd), None)
        return number if isinstance(number, int) else None
    return None


def confirms(calls: list[KernelCall], noted: dict[str, Any]) -> bool:
    """Whether the kernel saw a call the library noted: the same syscall, command or request
    number, and flags, succeeding where the library says it did."""
    syscall = SYSCALLS.get(str(noted.get("call")))
    if syscall is None:
        return True  # not a syscall the kernel's trace can show (a file read)
    number = _command_number(syscall, noted.get("cmd"))
    argument = FLAG_ARGUMENT.get(syscall)
    flags = noted.get("flags")
    for call in calls:
        if call.syscall != syscall:
            continue
        if noted.get("errno") is None and not call.ok:
            continue
        if number is not None and call.args.get("cmd") != number:
            continue
        if argument and isinstance(flags, int) and call.args.get(argument, flags) != flags:
            continue
        return True
    return False
