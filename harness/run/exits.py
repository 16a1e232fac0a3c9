"""The exit status of a finished matrix: one rule for ``nox -s matrix`` and ``nox -s report``.

0 when every kernel completed and nothing contradicts the expectations; 1 when a kernel did not
complete or a result file is damaged; 5 when there are surprises (cells, defaults, failed
tests) and they were not accepted. Errors found before anything ran (2, 3, 4) and signals
(130, 143, 129) are the command line's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SURPRISES = 5
INCOMPLETE = 1


def matrix_exit(
    matrix: dict[str, Any] | None,
    incomplete: list[str],
    allow_surprises: bool,
    say: Callable[[str], None],
    incomplete_fails: bool = True,
) -> int:
    """Say every surprise, damaged file, input not used (a baseline or history of another
    schema: no effect on the status) and incomplete kernel, one line each, then a compact
    line per kernel; return the status. ``incomplete_fails``: a kernel that did not complete
    makes the status 1 (a merge of shards asks for it with --require-complete)."""
    from harness.report import kernel_lines, not_used_lines, problem_lines, surprise_lines

    surprises = surprise_lines(matrix) if matrix else []
    problems = problem_lines(matrix) if matrix else []
    for line in surprises:
        say(f"surprise: {line}")
    for line in problems:
        say(f"unreadable: {line}")
    for line in not_used_lines(matrix) if matrix else []:
        say(f"not used: {line}")
    if incomplete:
        say(f"did not complete: {', '.join(incomplete)}")
    for line in kernel_lines(matrix) if matrix else []:
        say(line)
    if (incomplete and incomplete_fails) or problems or matrix is None:
        return INCOMPLETE
    if surprises and not allow_surprises:
        say(f"surprises make the exit status {SURPRISES} (--allow-surprises to accept them)")
        return SURPRISES
    return 0
