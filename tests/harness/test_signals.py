"""Signals to the process that started the run, as a user or a CI runner sends them: to
``nox``. The harness must own them: stop vng, qemu and virtiofsd within seconds, mark the
kernels interrupted, rebuild the report, keep the last finished results, and exit with the
status the README documents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from guests import (
    REPO,
    SMALL_SUITE,
    fetch_kernel,
    gone_within,
    status,
    wait_for_guest,
    write_config,
)

from harness.fetch.kernels import KernelTree

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel()


def nox_matrix(config: Path, results: Path, *extra: str) -> subprocess.Popen[str]:
    """``nox -s matrix``, exactly as the README gives it (its virtualenv reused if there)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nox",
            "-s",
            "matrix",
            "--",
            "--config",
            str(config),
            "--results",
            str(results),
            "--jobs",
            "1",
            *extra,
            "--",
            *SMALL_SUITE,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NOX"))},
    )


def earlier_results(results: Path, name: str) -> dict[str, object]:
    """A finished kernel of an earlier run, as that run left it."""
    kernel = {
        "name": name,
        "status": "ok",
        "detail": "the guest ran the suites to the end",
        "run_id": "20260101T000000Z-0000",
        "note": "from before",
        "tags": [],
    }
    (results / name).mkdir(parents=True)
    (results / name / "kernel.json").write_text(json.dumps(kernel))
    (results / name / "console.log").write_text("the earlier run's console\n")
    return kernel


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_nox_stops_the_guests_and_keeps_the_evidence(
    tmp_path: Path, kernel: KernelTree, signum: int, code: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    write_config(config, kernel, tag, {"first": "", "second": ""})
    kept = earlier_results(results, f"first-{tag}")
    proc = nox_matrix(config, results)
    wait_for_guest(f"first-{tag}", proc)
    time.sleep(2)
    proc.send_signal(signum)
    signalled = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    assert gone_within(tag, 15) == [], "the VM stack outlived the run"
    assert time.monotonic() - signalled < 30, out
    assert proc.returncode == code, out
    # The kernel that was booting ran no verdict: its earlier results stay in place, and
    # this run's evidence of it is kept aside.
    assert status(results, f"first-{tag}") == kept
    (attempt,) = (results / "attempts" / f"first-{tag}").iterdir()
    assert json.loads((attempt / "kernel.json").read_text())["status"] == "interrupted"
    assert (attempt / "console.log").stat().st_size > 0
    # The one that never booted has nothing earlier: its record takes the place.
    assert status(results, f"second-{tag}")["status"] == "interrupted"
    matrix = json.loads((results / "matrix.json").read_text())
    columns = {k["name"]: k for k in matrix["kernels"]}
    assert columns[f"first-{tag}"]["from_this_run"] is False
    assert columns[f"first-{tag}"]["this_run"] == "interrupted"
    assert "earlier run" in (results / "report.html").read_text()
    assert (results / "report.html").stat().st_mtime > time.time() - 60


def test_a_configuration_error_exits_2_through_nox(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text("kernels: []\n")
    proc = nox_matrix(config, tmp_path / "results")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, out
    assert "kernels" in out and "non-empty" in out
