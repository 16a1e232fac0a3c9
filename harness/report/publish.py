"""The site CI publishes: the report, its data, and exactly the files the report links.

The merge directory also holds what readers have no use for: the raw shards as downloaded
(their run.json, guest.json and the like), the report's lock file and each shard's own. A
published site carries the report, matrix.json, history.json and every kernel file the report
links (the evidence one click away), at the same relative paths, so that every link works and
nothing else is public.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from harness.errors import HarnessError

READER_FILES = ("report.html", "matrix.json", "history.json")


def linked_files(matrix: dict[str, Any]) -> list[str]:
    """Every path the report links, relative to its directory."""
    found: set[str] = set()
    for kernel in matrix["kernels"]:
        found.update(kernel["files"].values())
        if kernel.get("attempt"):
            found.add(kernel["attempt"])
    return sorted(found)


def _inside(rel: str) -> bool:
    path = PurePosixPath(rel)
    return not path.is_absolute() and ".." not in path.parts


def _hidden(_directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(".")]  # lock files and staging


def publish_site(out_dir: Path, matrix: dict[str, Any], dest: Path) -> list[str]:
    """Copy the reader's part of ``out_dir``, whose report ``matrix`` is, into the new
    directory ``dest``; the relative paths copied, or a HarnessError naming what the report
    links and is not there."""
    if dest.exists() and any(dest.iterdir()):
        raise HarnessError(f"{dest}: not empty; the site is published into a new directory")
    wanted = [*READER_FILES, *linked_files(matrix)]
    outside = [rel for rel in wanted if not _inside(rel)]
    absent = [rel for rel in wanted if _inside(rel) and not (out_dir / rel).exists()]
    if outside or absent:
        raise HarnessError(
            "the report links what cannot be published: "
            + "; ".join([*(f"{r} (outside {out_dir})" for r in outside), *absent])
        )
    dest.mkdir(parents=True, exist_ok=True)
    for rel in wanted:
        source, target = out_dir / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=_hidden, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    return wanted
