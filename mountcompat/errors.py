"""The library's own errors. Plain failures of the kernel stay ``OSError``."""

from __future__ import annotations

import errno as errno_module
from collections.abc import Sequence
from dataclasses import dataclass


class MountCompatError(Exception):
    """Root of the errors mountcompat raises on purpose."""


def errno_name(err: int | None) -> str | None:
    if err is None:
        return None
    if err == errno_module.EOPNOTSUPP:  # Python names 95 ENOTSUP; the kernel says EOPNOTSUPP
        return "EOPNOTSUPP"
    return errno_module.errorcode.get(err)


@dataclass(frozen=True)
class Attempt:
    strategy: str
    errno: int | None
    message: str

    def __str__(self) -> str:
        name = errno_name(self.errno) or "-"
        return f"{self.strategy}: {name}: {self.message}"


class StrategyUnsupported(MountCompatError):
    """A forced strategy is not supported by the running kernel. ``missing``: the kernel lacks
    the strategy for every request (ENOSYS, or its probe found it absent); otherwise it is
    this request that is beyond it (more than a page of options, a file on tmpfs for erofs)."""

    def __init__(
        self, feature: str, strategy: str, err: int | None, message: str, missing: bool = False
    ) -> None:
        self.feature, self.strategy, self.errno, self.message = feature, strategy, err, message
        self.missing = missing
        super().__init__(
            f"{feature}: strategy {strategy!r} was forced but the kernel does not support it "
            f"({errno_name(err)}: {message})"
        )


class NoStrategyWorked(MountCompatError):
    """Every strategy of a feature was tried and none is supported here."""

    def __init__(self, feature: str, attempts: Sequence[Attempt]) -> None:
        self.feature, self.attempts = feature, tuple(attempts)
        tried = "; ".join(str(a) for a in attempts) or "no strategy could be tried"
        super().__init__(f"{feature}: no strategy works on this kernel ({tried})")


class ForcingRefused(MountCompatError, ValueError):
    """MOUNTCOMPAT_FORCE naming a strategy the environment may not force (one weaker where
    security is concerned), or naming two strategies for one feature."""


class UnknownStrategy(MountCompatError, ValueError):
    """A feature or strategy name that the library does not know (in forcing, say)."""


class OverlayOptionsTooLong(StrategyUnsupported):
    """The overlay options do not fit the one page that mount(2) and the pre-6.5 legacy
    context accept: said before the kernel would cut them off."""

    def __init__(self, strategy: str, length: int, limit: int) -> None:
        self.length, self.limit = length, limit
        super().__init__(
            "overlay.layers",
            strategy,
            errno_module.E2BIG,
            f"overlay options are {length} bytes; mount(2) and the pre-6.5 legacy fs context "
            f"accept at most {limit - 1}: use fewer or shorter layer paths, or a kernel with "
            "lowerdir+ (6.7, 6.6.23)",
        )


class MountTableError(MountCompatError, ValueError):
    """A line of the mount table that does not follow its format (proc_pid_mountinfo(5)),
    or a statmount answer without a field it must have: names the line (1-based; None for
    statmount) and the field, rather than returning an entry with that field empty or wrong."""

    def __init__(
        self, line: int | None, field: str, problem: str, text: str = "", where: str = ""
    ) -> None:
        self.line, self.field, self.problem, self.text = line, field, problem, text
        where = where or f"mountinfo line {line}"
        shown = f": {text!r}" if text else ""
        super().__init__(f"{where}: {field}: {problem}{shown}")


class LazyUnmountWarning(UserWarning):
    """A mount stayed busy (EBUSY) through the short waits of an unmount and was detached
    lazily (MNT_DETACH): it is gone from the tree, but its filesystem lives on until its last
    user (an open file, a process's cwd) lets go, so the device or directory behind it may
    not be free yet."""

    def __init__(self, path: str, busy: str) -> None:
        self.path, self.busy = path, busy
        super().__init__(f"{path}: still busy ({busy}); detached lazily (MNT_DETACH)")


class InvalidAttributes(MountCompatError, ValueError):
    """Mount attributes no kernel takes as asked: refused before any strategy tries them, so
    that the refusal cannot pass for a kernel that lacks a strategy."""
