"""results/<kernel>/ directories -> matrix.json (schema 1, docs/results-schema.md).

Only files that the runs wrote are read; every cell's outcome comes from the suites' own
verdicts in outcomes.json, and a kernel that did not complete gives ``not-run`` cells.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.files import read_json_object
from harness.report.expectations import Expectations, KernelFacts, parse_config

SCHEMA = 1


@dataclass
class KernelDir:
    path: Path
    kernel: dict[str, Any]
    guest: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    release: str | None = None

    @property
    def name(self) -> str:
        return str(self.kernel.get("name", self.path.name))


def load_kernel_dir(path: Path) -> KernelDir | None:
    kernel = read_json_object(path / "kernel.json")
    if not kernel:
        return None
    release_file = path / "uname.txt"
    config_file = path / "config"
    return KernelDir(
        path=path,
        kernel=kernel,
        guest=read_json_object(path / "guest.json"),
        outcomes=read_json_object(path / "outcomes.json"),
        facts=read_json_object(path / "facts.json"),
        config=parse_config(config_file.read_text()) if config_file.exists() else {},
        release=release_file.read_text().strip() if release_file.exists() else None,
    )


def find_kernel_dirs(roots: Iterable[Path]) -> list[KernelDir]:
    """Kernel directories under each root (a results/ directory, or one kernel's own)."""
    found: dict[str, KernelDir] = {}
    for root in roots:
        candidates = [root] if (root / "kernel.json").exists() else sorted(root.iterdir())
        for candidate in candidates:
            loaded = load_kernel_dir(candidate) if candidate.is_dir() else None
            if loaded is not None:
                found[loaded.name] = loaded  # a later root wins for the same kernel name
    return list(found.values())


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def kernel_entry(k: KernelDir, out_dir: Path) -> dict[str, Any]:
    info = k.kernel
    packages = [
        {
            key: p.get(key)
            for key in ("name", "version", "sha256", "suite", "url", "file")
            if p.get(key) is not None
        }
        for p in info.get("packages", [])
    ]
    files = {
        name: _relative(k.path / name, out_dir)
        for name in (
            "console.log",
            "pytest.log",
            "junit.xml",
            "dmesg.txt",
            "config",
            "reproduce.sh",
            "outcomes.json",
            "probe.json",
        )
        if (k.path / name).exists()
    }
    return {
        "name": k.name,
        "note": info.get("note", ""),
        "tags": info.get("tags", []),
        "source": info.get("source", ""),
        "release": k.release,
        "package_release": info.get("package_release"),
        "status": info.get("status", "not-run"),
        "detail": info.get("detail", ""),
        "accelerator": info.get("accelerator"),
        "packages": packages,
        "qemu": info.get("qemu"),
        "virtme_ng": info.get("virtme_ng"),
        "boot_seconds": info.get("boot_seconds"),
        "bare_boot_seconds": info.get("bare_boot_seconds"),
        "test_seconds": round(k.guest["suites_seconds"], 1)
        if "suites_seconds" in k.guest
        else None,
        "wall_seconds": info.get("wall_seconds"),
        "finished": info.get("finished"),
        "reproduce": info.get("reproduce"),
        "command": info.get("command"),
        "scratch": k.guest.get("scratch"),
        "pytest_exit": k.guest.get("pytest_exit"),
        "evidence": info.get("evidence", []),
        "files": files,
    }


def facts_of(k: KernelDir) -> KernelFacts:
    return KernelFacts(
        release=k.release,
        tags=tuple(k.kernel.get("tags", [])),
        symbols=frozenset(k.facts["symbols"]) if "symbols" in k.facts else None,
        config=k.config,
    )


def _evidence(cell: dict[str, Any], tests: list[dict[str, Any]]) -> dict[str, Any]:
    by_test = {
        t["nodeid"]: t
        for t in tests
        if t.get("feature") == cell["feature"] and t.get("strategy") == cell["strategy"]
    }
    records = []
    for t in by_test.values():
        records.extend(t.get("records", [])[:6])
    return {
        "tests": cell.get("tests", []),
        "errno": cell.get("errno"),
        "errname": cell.get("errname"),
        "message": cell.get("message", ""),
        "limits": cell.get("limits", []),
        "records": records[:30],
    }


def kernel_cells(
    k: KernelDir, strategies: list[tuple[str, str]], expectations: Expectations
) -> list[dict[str, Any]]:
    ran = {(c["feature"], c["strategy"]): c for c in k.outcomes.get("cells", [])}
    tests = k.outcomes.get("tests", [])
    facts = facts_of(k)
    status = k.kernel.get("status", "not-run")
    cells = []
    for feature, strategy in strategies:
        expected, why = expectations.expected(feature, strategy, facts)
        cell = ran.get((feature, strategy))
        if cell is None or status != "ok":
            reason = f"kernel {status}" if status != "ok" else "no test ran for this strategy"
            outcome, backings = "not-run", []
            evidence: dict[str, Any] = {
                "tests": [],
                "errno": None,
                "errname": None,
                "message": reason,
                "limits": [],
                "records": [],
            }
        else:
            outcome, evidence, backings = (
                cell["outcome"],
                _evidence(cell, tests),
                cell.get("backings", []),
            )
        surprise = outcome == "broken" or (
            outcome in ("works", "unsupported")
            and expected in ("works", "unsupported")
            and outcome != expected
        )
        cells.append(
            {
                "kernel": k.name,
                "feature": feature,
                "strategy": strategy,
                "outcome": outcome,
                "expected": expected,
                "expected_because": why,
                "surprise": surprise,
                "evidence": evidence,
                "backings": backings,
            }
        )
    return cells


def compare(
    cells: list[dict[str, Any]], kernels: list[dict[str, Any]], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """Against the previous matrix: new, fixed, regressed, flaky (changed with the same
    kernel packages), per cell."""
    if not previous:
        return {"previous": None, "changes": []}
    before = {(c["kernel"], c["feature"], c["strategy"]): c for c in previous.get("cells", [])}
    packages_before = {
        k["name"]: [p.get("sha256") for p in k.get("packages", [])]
        for k in previous.get("kernels", [])
    }
    packages_now = {k["name"]: [p.get("sha256") for p in k.get("packages", [])] for k in kernels}
    rank = {"works": 2, "unsupported": 1, "broken": 0}
    changes = []
    for cell in cells:
        key = (cell["kernel"], cell["feature"], cell["strategy"])
        old = before.get(key)
        if old is None:
            kind = "new"
        elif old["outcome"] == cell["outcome"] or "not-run" in (old["outcome"], cell["outcome"]):
            continue
        elif packages_before.get(cell["kernel"]) == packages_now.get(cell["kernel"]):
            kind = "flaky"
        elif rank.get(cell["outcome"], -1) > rank.get(old["outcome"], -1):
            kind = "fixed"
        else:
            kind = "regressed"
        changes.append(
            {
                "kernel": key[0],
                "feature": key[1],
                "strategy": key[2],
                "kind": kind,
                "was": old["outcome"] if old else None,
                "now": cell["outcome"],
            }
        )
    return {"previous": previous.get("generated"), "changes": changes}


def default_entry(kernel: str, feature: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # a single answer
        return {"kernel": kernel, "feature": feature, "strategy": value, "by_backing": {}}
    return {
        "kernel": kernel,
        "feature": feature,
        "strategy": value.get("strategy"),
        "by_backing": value.get("by_backing", {}),
    }


def build_matrix(
    kernel_dirs: list[KernelDir],
    strategies: list[tuple[str, str]],
    summaries: dict[str, str],
    expectations: Expectations,
    out_dir: Path,
    run: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    order = {name: i for i, name in enumerate((run or {}).get("kernels", []))}
    kernel_dirs = sorted(kernel_dirs, key=lambda k: (order.get(k.name, len(order)), k.name))
    kernels = [kernel_entry(k, out_dir) for k in kernel_dirs]
    cells = [c for k in kernel_dirs for c in kernel_cells(k, strategies, expectations)]
    defaults = [
        default_entry(k.name, f, d)
        for k in kernel_dirs
        for f, d in sorted(k.outcomes.get("defaults", {}).items())
    ]
    features: list[dict[str, Any]] = []
    for feature, strategy in strategies:
        if not features or features[-1]["id"] != feature:
            features.append(
                {"id": feature, "summary": summaries.get(feature, ""), "strategies": []}
            )
        features[-1]["strategies"].append(strategy)
    run_keys = (
        "host",
        "host_kernel",
        "accelerator",
        "accelerator_reason",
        "wall_seconds",
        "started",
        "downloaded_bytes",
        "virtiofsd",
        "qemu",
        "virtme_ng",
    )
    return {
        "schema": SCHEMA,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": {**dict.fromkeys(run_keys), **(run or {})},
        "kernels": kernels,
        "features": features,
        "cells": cells,
        "defaults": defaults,
        "surprises": [c for c in cells if c["surprise"]],
        "comparison": compare(cells, kernels, previous),
        "totals": {
            o: sum(1 for c in cells if c["outcome"] == o)
            for o in ("works", "unsupported", "broken", "not-run")
        },
    }
