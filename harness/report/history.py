"""The matrix's history: the last N runs (60 by default), per kernel its exact package version
and per cell its outcome, kept in history.json beside matrix.json.

From it the report shows, per cell, a strip of its last outcomes and the run where it last
changed; per kernel, each change of its package version with the cells that changed with it
("sid moved from 7.2.12 to 7.2.13 and overlay.layers/fd-opath went from works to broken");
and which cells are flaky: they changed between two runs of the same kernel packages and the
same library.

A run is known by the ids of the kernel runs it holds: rebuilding the report of the same
results replaces its entry instead of adding one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UnreadableResult
from harness.files import load_json_object
from harness.report import inputs
from harness.report.collect import SCHEMA

FILE = "history.json"
DEFAULT_SIZE = 60
NOT_OUTCOMES = ("not-run",)


def cell_key(kernel: str, feature: str, strategy: str) -> str:
    return f"{kernel} {feature}/{strategy}"


def run_entry(matrix: dict[str, Any]) -> dict[str, Any]:
    """This matrix as one entry of the history."""
    kernels = {}
    for k in matrix["kernels"]:
        packages = k.get("packages", [])
        kernels[k["name"]] = {
            "version": k.get("upstream_release")
            or (packages[0].get("version") if packages else None)
            or k.get("release"),
            "package_version": packages[0].get("version") if packages else None,
            # A kernel without packages (the host's, a local build) is known by its release.
            "sha256": [p.get("sha256") for p in packages] or [k.get("release")],
            "status": k["status"],
            "run_id": k.get("run_id"),
            "library": ((k.get("provenance") or {}).get("library") or {}).get("commit"),
        }
    runs = sorted({str(v["run_id"]) for v in kernels.values() if v["run_id"]})
    return {
        "id": hashlib.sha256(" ".join(runs).encode()).hexdigest()[:12],
        "generated": matrix["generated"],
        "kernels": kernels,
        "cells": {
            cell_key(c["kernel"], c["feature"], c["strategy"]): c["outcome"]
            for c in matrix["cells"]
        },
    }


class OtherSchema(UnreadableResult):
    """A history written for another schema of matrix.json: its outcomes and statuses are
    not this one's, and no conversion is defined."""

    def __init__(self, path: object, schema: object) -> None:
        self.schema = schema
        super().__init__(path, f"matrix schema {schema!r}, not {SCHEMA}")


def load(path: Path) -> list[dict[str, Any]]:
    """The runs of a history file, oldest first; none if there is no file. A damaged file is
    an UnreadableResult (the report names it rather than start the history over silently),
    one of another schema an :class:`OtherSchema`. A history that names no schema is of
    schema 2: it was only written in it, before it said so."""
    data = load_json_object(path, ("runs",))
    if data is None:
        return []
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:  # (True == 1, but SCHEMA is 2)
        raise OtherSchema(path, schema)
    runs: list[dict[str, Any]] = inputs.check(path, data, inputs.history_file())["runs"]
    return runs


def extended(runs: list[dict[str, Any]], entry: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """``runs`` with ``entry`` last (in place of an older entry of the same id), the last
    ``size`` kept."""
    kept = [r for r in runs if r["id"] != entry["id"]]
    return [*kept, entry][-size:]


@dataclass
class CellHistory:
    strip: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    changed: str | None = None  # "generated" of the last run whose outcome differed
    flaky: bool = False


@dataclass
class KernelChange:
    kernel: str
    generated: str
    was: str | None
    now: str | None
    cells: list[dict[str, str]]  # what changed with it: cell, was, now


def _same_kernel(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a["sha256"] == b["sha256"] and a.get("library") == b.get("library"))


def analyse(runs: list[dict[str, Any]]) -> tuple[dict[str, CellHistory], list[KernelChange]]:
    """Per cell, its strip, last change and flakiness; per kernel, its package changes."""
    cells: dict[str, CellHistory] = {}
    changes: list[KernelChange] = []
    for before, after in zip([None, *runs], runs, strict=False):
        for key, outcome in after["cells"].items():
            kernel = key.split(" ", 1)[0]
            history = cells.setdefault(key, CellHistory())
            history.strip.append({"generated": after["generated"], "outcome": outcome})
            old = before["cells"].get(key) if before else None
            if old is None or outcome == old or {old, outcome} & set(NOT_OUTCOMES):
                continue
            history.changed = after["generated"]
            if _same_kernel(
                before["kernels"].get(kernel) if before else None, after["kernels"].get(kernel)
            ):
                history.flaky = True
        if before is None:
            continue
        for name, now in after["kernels"].items():
            was = before["kernels"].get(name)
            if was is None or was["sha256"] == now["sha256"]:
                continue
            moved = [
                {"cell": key.split(" ", 1)[1], "was": before["cells"][key], "now": outcome}
                for key, outcome in after["cells"].items()
                if key.split(" ", 1)[0] == name and before["cells"].get(key) not in (None, outcome)
            ]
            changes.append(
                KernelChange(
                    name, after["generated"], was.get("version"), now.get("version"), moved
                )
            )
    return cells, changes


def summary(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What matrix.json says of the history: how many runs, and the changes."""
    runs = list(runs)
    cells, changes = analyse(runs)
    return {
        "runs": len(runs),
        "cells": {
            key: {"strip": [s["outcome"] for s in h.strip], "changed": h.changed, "flaky": h.flaky}
            for key, h in cells.items()
        },
        "kernel_changes": [
            {
                "kernel": c.kernel,
                "generated": c.generated,
                "was": c.was,
                "now": c.now,
                "cells": c.cells,
            }
            for c in changes
        ],
    }
