"""Evidence kept in kernel.json, matrix.json and the report: bounded.

A test that writes 100 MB must not make every result file 100 MB (the report is read in a
browser, and the matrix is downloaded by CI jobs). Evidence keeps a head and a tail, with the
size of what lies between; the log files beside it keep everything.
"""

from __future__ import annotations

HEAD_BYTES = 4096
TAIL_BYTES = 4096


def bounded(lines: list[str], head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> list[str]:
    """``lines`` whole if they are at most ``head + tail`` bytes (UTF-8, one newline each);
    otherwise their first ``head`` and last ``tail`` bytes as lines, with one line between
    that says how many bytes were left out."""
    text = "".join(f"{line}\n" for line in lines).encode()
    if len(text) <= head + tail:
        return lines
    omitted = len(text) - head - tail
    first = text[:head].decode(errors="ignore").splitlines()
    last = text[-tail:].decode(errors="ignore").splitlines()
    return [*first, f"[... {omitted} bytes left out: the whole is in the log file ...]", *last]
