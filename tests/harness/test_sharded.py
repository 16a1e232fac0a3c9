"""The sharded path CI takes, run locally with real guests: each kernel in its own process
into its own directory, then merged. The merged matrix must be the single run's, timings,
dates, run ids and paths aside."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from guests import REPO, fetch_kernel, harness, write_config

from harness.fetch.kernels import KernelTree

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel()


def comparable(matrix: dict[str, Any]) -> dict[str, Any]:
    """What must be equal: every verdict and what it rests on, not when or where."""
    return {
        "features": matrix["features"],
        "cells": sorted(
            (
                c["kernel"],
                c["feature"],
                c["strategy"],
                c["outcome"],
                c["expected"],
                c["expected_because"],
                c["surprise"],
                tuple(c["backings"]),
            )
            for c in matrix["cells"]
        ),
        "defaults": sorted(json.dumps(d, sort_keys=True) for d in matrix["defaults"]),
        "kernels": sorted(
            (
                k["name"],
                k["status"],
                k["release"],
                k["arch"],
                json.dumps(k["packages"]),
                json.dumps(k["provenance"], sort_keys=True),
            )
            for k in matrix["kernels"]
        ),
        "totals": matrix["totals"],
        "surprises": len(matrix["surprises"]),
    }


def test_sharded_then_merged_equals_one_run(tmp_path: Path, kernel: KernelTree) -> None:
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "kernels.yaml"
    write_config(config, kernel, tag, {"one": "", "two": ""})
    names = [f"one-{tag}", f"two-{tag}"]
    merged = tmp_path / "merged"
    # As the merge job downloads them: every shard under the merge directory.
    shard_dirs = [merged / "shards" / f"results-{name}" for name in names]
    whole = harness(config, tmp_path / "whole", "--jobs", "2")
    shards = [
        harness(config, shard_dir, "--kernel", name, "--jobs", "1")
        for name, shard_dir in zip(names, shard_dirs, strict=True)
    ]
    # Every run waited for before any is judged: a failed one must not leave the others running.
    outputs = [(proc, proc.communicate(timeout=800)[0]) for proc in (whole, *shards)]
    for proc, out in outputs:
        assert proc.returncode == 0, out
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.report",
            *map(str, shard_dirs),
            "--out",
            str(merged),
            "--publish",
            str(site),
            *(a for n in names for a in ("--expect", n)),
            "--require-complete",
            "--allow-surprises",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    one = json.loads((tmp_path / "whole" / "matrix.json").read_text())
    many = json.loads((merged / "matrix.json").read_text())
    assert comparable(many) == comparable(one)
    assert {k["name"] for k in many["kernels"]} == set(names)
    check_published_site(merged, site, many)


def check_published_site(merged: Path, site: Path, matrix: dict[str, Any]) -> None:
    """The site holds the report and every file it links, and nothing readers do not need:
    no lock file, no shard file the report does not link."""
    every = {str(p.relative_to(merged)) for p in merged.rglob("*") if p.is_file()}
    linked = {rel for k in matrix["kernels"] for rel in k["files"].values()}
    published = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    assert any(Path(rel).name.startswith(".") for rel in every), "no lock file to leave out"
    assert every - linked - published, "the shards hold nothing unlinked to leave out"
    assert published == linked | {"report.html", "matrix.json", "history.json"}
    assert all((site / rel).read_bytes() == (merged / rel).read_bytes() for rel in published)
