"""Result files are written whole, and with the mode a reader and a web server expect."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.files import write_json


def mode_with_umask(path: Path, umask: int) -> int:
    old = os.umask(umask)
    try:
        write_json(path, {"a": 1})
    finally:
        os.umask(old)
    return stat.S_IMODE(path.stat().st_mode)


def test_results_get_the_umasks_mode_not_mkstemps(tmp_path: Path) -> None:
    """matrix.json, report.html and history.json are published: 0644 under the usual umask
    (they were 0600, from mkstemp), and still private under a private one."""
    assert mode_with_umask(tmp_path / "matrix.json", 0o022) == 0o644
    assert mode_with_umask(tmp_path / "history.json", 0o077) == 0o600
    assert mode_with_umask(tmp_path / "report.html", 0o002) == 0o664
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
