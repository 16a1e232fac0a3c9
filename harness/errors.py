"""The harness's own errors. Only the command line turns them into exit statuses."""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""

    exit_status = 1


class ConfigError(HarnessError):
    """kernels.yaml (or another input file) is not what the harness accepts."""

    exit_status = 2

    def __init__(self, path: str, kernel: str | None, field: str | None, problem: str) -> None:
        self.path = path
        self.kernel = kernel
        self.field = field
        self.problem = problem
        where = [path]
        if kernel is not None:
            where.append(f"kernel {kernel!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {problem}")


class PrerequisiteError(HarnessError):
    """A host tool is missing and the harness may not or cannot install it."""

    exit_status = 3


class FetchError(HarnessError):
    """A kernel could not be resolved, downloaded, verified or extracted."""

    exit_status = 4


class Unreachable(FetchError):
    """The server could not be reached at all (no route, no name, no answer), as opposed to
    one that answered with an error or with bytes that fail a check. Only a kernel that
    kernels.yaml marks ``needs_network`` may end ``unreachable`` for it; for every other
    kernel it is a fetch failure like any other."""


class UnreadableResult(HarnessError):
    """A result file that exists but is damaged: truncated, not UTF-8, of the wrong shape.
    The report names it and marks its kernel ``unreadable``; it never drops it silently."""

    exit_status = 1

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class UsageError(HarnessError):
    """A command-line value or a path the run cannot use, found before anything boots."""

    exit_status = 2


class DiskFull(HarnessError):
    """A result could not be written for want of space (ENOSPC, or EDQUOT over a quota).
    Writes are atomic, so whatever was written before is whole; the run stops and says
    which file it could not write."""

    exit_status = 1

    def __init__(self, path: object, err: int) -> None:
        import os

        self.path = str(path)
        super().__init__(f"{path}: cannot write it: {os.strerror(err)}")
