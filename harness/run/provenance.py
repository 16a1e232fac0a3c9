"""What a run's verdicts depend on besides the kernels: the kernels file, the expectations
and the library. Recorded in run.json and in every kernel.json, compared when results of
several runs are merged into one report."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def library_version(repo: Path) -> dict[str, Any]:
    """The library's version, and the commit of the checkout it runs from (a version number
    alone does not change between two commits of a working day); ``modified`` when the
    library, the suites or the harness differ from that commit."""
    try:
        version: str | None = metadata.version("mountcompat")
    except metadata.PackageNotFoundError:
        version = None
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(
        repo,
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "mountcompat",
        "suites",
        "harness",
    )
    return {
        "version": version,
        "commit": commit,
        "modified": bool(status),
        # What merging compares: the library's own files, whatever git says of them.
        "sha256": tree_digest(repo / "mountcompat"),
    }


def tree_digest(directory: Path) -> str | None:
    """One digest of every file under ``directory`` (names and contents), bytecode aside."""
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def provenance(config: Path, expectations: Path, repo: Path, suites: Path) -> dict[str, Any]:
    return {
        "kernels_yaml_sha256": _digest(config),
        "expectations_sha256": _digest(expectations),
        "suites_sha256": tree_digest(suites),
        "library": library_version(repo),
    }
