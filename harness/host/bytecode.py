"""Bytecode made on the host before any guest boots.

The guests see this checkout read-only and run under an emulated CPU: a module they must
compile, or a test file whose asserts pytest must rewrite, costs them seconds, every boot.
Compiling the library and the guest side here, and letting pytest collect the suites once
(which caches its rewritten test modules beside them), gives the guests bytecode they only
read: same interpreter, same pytest, same sources.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
from pathlib import Path


def warm(repo: Path, suites: Path) -> float:
    """Seconds spent; failures are harmless (the guests then compile for themselves)."""
    started = time.monotonic()
    for package in (repo / "mountcompat", repo / "harness" / "guest"):
        compileall.compile_dir(str(package), quiet=2)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "mountcompat.testing.plugin",
            "--mountcompat-no-namespace",
            str(suites),
        ],
        cwd=repo,
        capture_output=True,
        check=False,
        timeout=300,
        # Writing the cache is the point (a user's environment may say otherwise).
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    return time.monotonic() - started
