"""Damaged result files are named, their kernel marked ``unreadable``, never dropped or passed
off as ``ok``; two report builds at once neither crash nor interleave.

The report is built by its real command line (``python -m harness.report``) from result
directories that are then damaged the way a full disk or a killed writer damages them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from reportdata import kernel_dir

REPO = Path(__file__).resolve().parents[2]


def report(*dirs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.report", *map(str, dirs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    kernel_dir(
        root,
        "good",
        "6.12.117+deb13-cloud-amd64",
        {("mounts.list", "mountinfo"): "works"},
        ["__x64_sys_fsopen"],
    )
    kernel_dir(
        root,
        "victim",
        "6.1.0-50-cloud-amd64",
        {("mounts.list", "mountinfo"): "works"},
        ["__x64_sys_fsopen"],
    )
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


Damage = Callable[[Path], None]
DAMAGES: dict[str, tuple[str, Damage]] = {
    "truncated kernel.json": ("kernel.json", truncate),
    "truncated outcomes.json": ("outcomes.json", truncate),
    "outcomes.json of the wrong shape": (
        "outcomes.json",
        lambda p: p.write_text(json.dumps({"cells": {"not": "a list"}})),
    ),
    "kernel.json that is a list": ("kernel.json", lambda p: p.write_text("[1, 2]")),
    "kernel.json not UTF-8": ("kernel.json", lambda p: p.write_bytes(b'{"name": "\xff"}')),
    "truncated junit.xml": (
        "junit.xml",
        lambda p: p.write_text('<?xml version="1.0"?><testsuites><testsuite name="p'),
    ),
    "a binary config": ("config", lambda p: p.write_bytes(b"\x7fELF\x00\x01\x02CONFIG_X=y")),
    "kernel.json gone, the rest there": ("kernel.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_file_is_named_and_its_kernel_unreadable(tmp_path: Path, case: str) -> None:
    root = results(tmp_path)
    name, damage = DAMAGES[case]
    victim = root / "victim" / name
    if not victim.exists():
        victim.write_text("")
    damage(victim)
    done = report(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(victim) in done.stderr, done.stderr
    matrix = json.loads((root / "matrix.json").read_text())
    statuses = {k["name"]: k["status"] for k in matrix["kernels"]}
    assert statuses == {"good": "ok", "victim": "unreadable"}, statuses
    victim_cells = {c["outcome"] for c in matrix["cells"] if c["kernel"] == "victim"}
    assert victim_cells == {"not-run"}
    assert any(str(victim) in p for p in matrix["problems"])
    assert str(victim) in (root / "report.html").read_text()


def test_a_damaged_previous_matrix_is_named(tmp_path: Path) -> None:
    root = results(tmp_path)
    assert report(root).returncode == 0
    (root / "previous-matrix.json").write_text('{"schema": 2, "cells": [')
    done = report(root)
    assert done.returncode == 1
    assert "previous-matrix.json" in done.stderr


def test_two_report_builds_at_once(tmp_path: Path) -> None:
    """Eight builds into the same directory at the same moment: each succeeds, and what is
    left is one whole matrix.json with the report.html written from it."""
    root = results(tmp_path)
    for _ in range(3):
        builds = [
            subprocess.Popen(
                [sys.executable, "-m", "harness.report", str(root)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(8)
        ]
        outputs = [b.communicate(timeout=120)[0] for b in builds]
        assert [b.returncode for b in builds] == [0] * 8, outputs
        matrix = json.loads((root / "matrix.json").read_text())
        assert matrix["generated"] in (root / "report.html").read_text()
    assert not list(root.glob(".*.tmp")), "temporary files left behind"
