"""Synthetic result directories for testing the report (not kernel verdicts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mountcompat.features import ordered

PROVENANCE = {
    "kernels_yaml_sha256": "k" * 64,
    "expectations_sha256": "e" * 64,
    "library": {"version": "0.1.0", "commit": "c" * 40, "modified": False},
}


def kernel_dir(
    root: Path,
    name: str,
    release: str,
    outcomes: dict[tuple[str, str], str],
    symbols: list[str],
    status: str = "ok",
    sha: str = "a",
    version: str = "1",
    pytest_args: tuple[str, ...] = ("-k", "a selection"),
    provenance: dict[str, Any] | None = None,
    run_id: str = "20260101T000000Z-0001",
) -> Path:
    """A kernel's results; by default from a run narrowed to the cells given (so the others
    are "deselected", not gaps)."""
    d = root / name
    d.mkdir(parents=True)
    write_run(root)
    kernel: dict[str, Any] = {
        "name": name,
        "pytest_args": list(pytest_args),
        "provenance": provenance or PROVENANCE,
        "run_id": run_id,
        "note": f"{name} note",
        "tags": ["t"],
        "status": status,
        "detail": "",
        "accelerator": "tcg",
        "qemu": "QEMU 7.2",
        "virtme_ng": "1.42",
        "packages": [{"name": f"linux-image-{release}", "version": version, "sha256": sha * 64}],
        "reproduce": f"sh {d}/reproduce.sh",
        "evidence": ["last console line"],
        "boot_seconds": 9.0,
        "wall_seconds": 60.0,
    }
    (d / "kernel.json").write_text(json.dumps(kernel))
    (d / "console.log").write_text("[    0.0] Linux version\nmountcompat-guest: done\n")
    if status != "ok":
        return d
    (d / "uname.txt").write_text(release + "\n")
    (d / "facts.json").write_text(json.dumps({"symbols": symbols}))
    (d / "config").write_text("CONFIG_EROFS_FS=m\n")
    (d / "guest.json").write_text(json.dumps({"suites_seconds": 30.0, "pytest_exit": 0}))
    cells = []
    for (feature, strategy), outcome in outcomes.items():
        test = {
            "nodeid": f"suites/t.py::{strategy}",
            "verdict": outcome,
            "errname": "ENOSYS" if outcome == "unsupported" else None,
            "message": "m",
            "backing": "tmpfs:tmpfs",
        }
        cells.append(
            {
                "feature": feature,
                "strategy": strategy,
                "outcome": outcome,
                "tests": [test],
                "limits": [],
                "backings": ["tmpfs:tmpfs"],
                "errno": 38 if outcome == "unsupported" else None,
                "errname": test["errname"],
                "message": "",
            }
        )
    (d / "outcomes.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "witness": "the library's raw syscall layer only (no tracefs here)",
                "features": library_features(),
                "cells": cells,
                "tests": [],
                "defaults": {
                    "mount.api": {"strategy": "fsmount", "by_backing": {"tmpfs:tmpfs": "fsmount"}}
                },
            }
        )
    )
    return d


def write_run(root: Path) -> None:
    """run.json as a run writes it: the library's rows, whatever the guests managed."""
    if not (root / "run.json").exists():
        (root / "run.json").write_text(json.dumps({"features": library_features()}))


def library_features() -> list[dict[str, Any]]:
    return [
        {"id": f.id, "summary": f.summary, "strategies": [s.name for s in f.strategies]}
        for f in ordered()
    ]


def all_strategies() -> list[tuple[str, str]]:
    return [(f["id"], s) for f in library_features() for s in f["strategies"]]
