"""Staging left by a run that died: found by the next run, kept under attempts/, and never
taken from a run that is still alive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.run.results import ResultStore

HOLDER = """
import sys, time
from pathlib import Path
from harness.run.results import ResultStore
store = ResultStore(Path(sys.argv[1]), "20260101T000000Z-live")
store.open()
(store.stage("host") / "pytest.log").write_text("still writing")
print("holding", flush=True)
time.sleep(600)
"""


def stranded(results: Path, run_id: str, kernels: dict[str, str]) -> None:
    for name, text in kernels.items():
        (results / ".staging" / run_id / name).mkdir(parents=True)
        (results / ".staging" / run_id / name / "console.log").write_text(text)


def test_staging_no_run_holds_is_moved_under_attempts_whole(tmp_path: Path) -> None:
    stranded(tmp_path, "20260101T000000Z-dead", {"6.1": "a console", "6.12": "another"})
    store = ResultStore(tmp_path, "20260102T000000Z-next")
    store.open()
    (line,) = store.recover_stale()
    assert line.startswith("run 20260101T000000Z-dead ended without committing its results")
    assert "attempts/6.1/20260101T000000Z-dead" in line
    for name, text in {"6.1": "a console", "6.12": "another"}.items():
        kept = tmp_path / "attempts" / name / "20260101T000000Z-dead" / "console.log"
        assert kept.read_text() == text
    assert not (tmp_path / ".staging" / "20260101T000000Z-dead").exists()
    store.clean()
    assert not (tmp_path / ".staging").exists()


def test_a_live_runs_staging_is_left_alone(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        store = ResultStore(tmp_path, "20260102T000000Z-next")
        store.open()
        assert store.recover_stale() == []
        live = tmp_path / ".staging" / "20260101T000000Z-live" / "host" / "pytest.log"
        assert live.read_text() == "still writing"
        store.clean()
        assert live.exists()
    finally:
        holder.kill()
        holder.wait()
