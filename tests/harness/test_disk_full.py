"""A results disk that is full, for real: a small tmpfs, filled. The run says so in one line
naming the file, and what was written before stays whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from guests import REPO, fetch_kernel, gone_within, wait_for_guest, write_config

from harness.errors import DiskFull
from harness.files import write_json
from harness.run.matrix import keep_previous
from mountcompat import _syscalls as sys_
from mountcompat.mounts import unmount


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    sys_.mount("small", where, "tmpfs", 0, "size=20m")
    try:
        yield where
    finally:
        unmount(where)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free (tmpfs counts whole pages)."""
    with (disk / "filler").open("ab") as f:
        while (free := _free(disk)) > leave:
            f.write(b"\0" * min(free - leave, 1 << 20))
            f.flush()


def _free(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def test_the_baseline_is_never_cut_short(small_disk: Path) -> None:
    baseline = {"schema": 2, "kernels": ["the run before the last"]}
    write_json(small_disk / "previous-matrix.json", baseline)
    write_json(small_disk / "matrix.json", {"schema": 2, "pad": "m" * 20_000})
    fill(small_disk, 12 * 1024)
    with pytest.raises(DiskFull, match=r"previous-matrix\.json: cannot write it: No space left"):
        keep_previous(small_disk)
    assert json.loads((small_disk / "previous-matrix.json").read_text()) == baseline
    assert sorted(p.name for p in small_disk.iterdir()) == [
        "filler",
        "matrix.json",
        "previous-matrix.json",
    ], "no temporary file left behind"


def test_a_nearly_full_results_disk_is_refused_before_anything_boots(
    tmp_path: Path, small_disk: Path
) -> None:
    fill(small_disk, 12 * 1024)
    (tmp_path / "kernels.yaml").write_text(
        "kernels:\n  - name: k\n    note: never booted\n    source:\n"
        "      local: {vmlinuz: /nonexistent/vmlinuz, modules: /nonexistent/modules}\n"
    )
    config = tmp_path / "kernels.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "harness", f"--config={config}", f"--results={small_disk}/r"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "KiB free there; a run needs at least" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_the_disk_filling_during_a_run_is_one_line_and_damages_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    kernel = fetch_kernel()
    tag = uuid.uuid4().hex[:8]
    config, results = tmp_path / "kernels.yaml", small_disk / "results"
    write_config(config, kernel, tag, {"fills": ""})
    earlier = {"schema": 2, "kernels": [], "note": "the last run's matrix"}
    results.mkdir()
    write_json(results / "matrix.json", earlier)
    argv = [sys.executable, "-m", "harness", f"--config={config}", f"--results={results}"]
    proc = subprocess.Popen(
        [*argv, "--allow-surprises", "--", "-k", "test_plain_path"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_guest(f"fills-{tag}", proc)
    time.sleep(2)
    fill(small_disk, 0)
    out, _ = proc.communicate(timeout=600)
    assert gone_within(tag, 15) == []
    assert proc.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], out
    assert str(results) in errors[0], "the line names the file"
    assert "Traceback" not in out, out
    # What was there before is whole: the baseline it made, and the matrix it came from.
    assert json.loads((results / "previous-matrix.json").read_text()) == earlier
    assert json.loads((results / "matrix.json").read_text()) == earlier
    # The kernel's staged evidence is not thrown away: the next run will find it.
    assert list((results / ".staging").glob(f"*/fills-{tag}/console.log")), out
