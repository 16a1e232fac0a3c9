"""The local workflow run's own parts: which actions it needs, when it is skipped, how it
reads act's log and the report artifact. (The run itself is ``./nox -s workflow``.)"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.workflow import (
    REPO,
    SKIPPED,
    Action,
    JobTimes,
    actions_used,
    load_workflow,
    missing_action,
    report_artifact,
)


def test_the_actions_of_plan_kernel_and_merge() -> None:
    used = {f"{a.key}/{a.folder}".rstrip("/") for a in actions_used(load_workflow(REPO))}
    assert used == {
        "actions/cache@v4/restore",
        "actions/cache@v4/save",
        "actions/upload-artifact@v4",
        "actions/download-artifact@v4",
        "actions/upload-pages-artifact@v3",
    }


def test_an_action_without_its_built_code_is_missing(tmp_path: Path) -> None:
    action = Action.parse("actions/upload-artifact@v4")
    assert "no " in (missing_action(action, tmp_path) or "")
    tree = tmp_path / "actions/upload-artifact@v4"
    tree.mkdir(parents=True)
    (tree / "action.yml").write_text("runs:\n  using: node20\n  main: dist/upload/index.js\n")
    assert "is not built" in (missing_action(action, tmp_path) or "")
    (tree / "dist/upload").mkdir(parents=True)
    (tree / "dist/upload/index.js").write_text("")
    assert missing_action(action, tmp_path) is None
    restore = Action.parse("actions/cache/restore@v4")
    assert (restore.key, restore.folder) == ("actions/cache@v4", "restore")


@pytest.mark.skipif(os.geteuid() != 0, reason="the session runs as root")
def test_without_the_actions_the_session_is_skipped(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.workflow"],
        cwd=REPO,
        env={**os.environ, "MOUNTCOMPAT_ACTIONS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == SKIPPED, done.stderr
    assert "skipped: the code of 5 action(s)" in done.stderr
    assert "actions/upload-pages-artifact@v3" in done.stderr
    assert "simulated" not in done.stderr  # nothing installed, no runner made


def test_each_jobs_time_and_verdict_from_acts_lines() -> None:
    times = JobTimes()
    lines = [
        (0.0, "[matrix/list and resolve the kernels] 🚀  Start image=-self-hosted"),
        (20.0, "[matrix/list and resolve the kernels]   ✅  Success - Complete job"),
        (21.0, "[matrix/list and resolve the kernels] 🏁  Job succeeded"),
        (22.0, "[matrix/kernel rhel9-era-1          ] 🚀  Start image=-self-hosted"),
        (130.0, "[matrix/kernel rhel9-era-1          ] 🏁  Job failed"),
        (131.0, "not a job's line"),
    ]
    for now, line in lines:
        times.see(line, now)
    assert times.verdict == {
        "matrix/list and resolve the kernels": "succeeded",
        "matrix/kernel rhel9-era-1": "failed",
    }
    assert list(times.lines()) == [
        "  matrix/list and resolve the kernels: succeeded, 21 s",
        "  matrix/kernel rhel9-era-1: failed, 108 s",
    ]


def test_the_report_artifact_unpacked(tmp_path: Path) -> None:
    """act's artifact server keeps an upload as a zip in a folder named after it."""
    store = tmp_path / "artifacts/1/report"
    store.mkdir(parents=True)
    with zipfile.ZipFile(store / "report.zip", "w") as archive:
        archive.writestr("report.html", "<html></html>")
        archive.writestr("shards/results-x/pytest.log", "log")
    site = report_artifact(tmp_path / "artifacts", tmp_path / "site")
    assert site is not None
    assert (site / "report.html").read_text() == "<html></html>"
    assert (site / "shards/results-x/pytest.log").read_text() == "log"
    assert report_artifact(tmp_path / "none", tmp_path / "site2") is None
    (tmp_path / "artifacts/1/results-x").mkdir()  # another artifact is not the report
    assert report_artifact(tmp_path / "artifacts", tmp_path / "site3") is not None
