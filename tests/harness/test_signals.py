"""Signals to the process that started the run, as a user or a CI runner sends them: to
``nox``. The harness must own them: stop vng, qemu and virtiofsd within seconds, mark the
kernels interrupted, rebuild the report, keep the last finished results, and exit with the
status the README documents.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from guests import (
    REPO,
    SMALL_SUITE,
    fetch_kernel,
    gone_within,
    harness,
    our_pids,
    qemu_runs,
    status,
    tagged_config,
    wait_for_guest,
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
    tag, config, results = tagged_config(tmp_path, kernel, {"first": "", "second": ""})
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


def nox_matrix_on_terminal(config: Path, results: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``nox -s matrix`` as a login shell would start it: the leader of a session whose
    controlling terminal is a fresh pty. Closing the returned master hangs the terminal up,
    as a closed terminal window or a dropped ssh connection does."""
    master, slave = os.openpty()
    # util-linux's setsid execs in place (its caller leads no group): a new session, whose
    # controlling terminal becomes the pty on its standard input.
    nox = [sys.executable, "-m", "nox", "-s", "matrix", "--", "--config", str(config)]
    proc = subprocess.Popen(
        ["setsid", "--ctty", *nox, "--results", str(results), "--jobs", "1", "--", *SMALL_SUITE],
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NOX"))},
    )
    os.close(slave)
    return proc, master


def drain(master: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                out += os.read(master, 65536)
            except OSError:
                break
    return out


def test_a_closed_terminal_stops_the_guests_and_keeps_the_evidence(
    tmp_path: Path, kernel: KernelTree
) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"first": ""})
    proc, master = nox_matrix_on_terminal(config, results)
    try:
        deadline = time.monotonic() + 300
        seen = b""
        while not qemu_runs(tag):
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode()
            seen += drain(master, 0.5)
        seen += drain(master, 2)
    finally:
        os.close(master)  # the hangup: SIGHUP to the session
    hung_up = time.monotonic()
    proc.wait(timeout=60)
    assert gone_within(tag, 15) == [], "the VM stack outlived the hangup"
    assert time.monotonic() - hung_up < 30
    assert proc.returncode == 129, seen.decode()
    assert status(results, f"first-{tag}")["status"] == "interrupted"
    assert (results / f"first-{tag}" / "console.log").stat().st_size > 0
    assert not (results / ".staging").exists(), "the results stayed stranded in staging"
    (column,) = json.loads((results / "matrix.json").read_text())["kernels"]
    assert column["status"] == "interrupted", column


def test_staging_of_a_run_that_died_is_found_and_kept(tmp_path: Path, kernel: KernelTree) -> None:
    """A run killed outright (SIGKILL: no handler runs) leaves its staging behind; the next
    run says so and moves it under attempts/, whole."""
    tag, config, results = tagged_config(tmp_path, kernel, {"first": ""})
    proc = harness(config, results)
    wait_for_guest(f"first-{tag}", proc)
    time.sleep(2)
    (stranded,) = (results / ".staging").iterdir()
    files = sorted(p.name for p in (stranded / f"first-{tag}").iterdir())
    proc.kill()
    proc.communicate(timeout=60)
    for pid in our_pids(tag):  # what SIGKILL left of the guest: not the point here
        os.kill(pid, signal.SIGKILL)
    assert gone_within(tag, 15) == []
    # And its temporary directory (a 2 GB sparse scratch disk, virtiofsd's sockets), which
    # no handler of the killed run could remove.
    for left in Path(tempfile.gettempdir()).glob(f"mountcompat-first-{tag}.*"):
        shutil.rmtree(left)
    again = harness(config, results)
    out, _ = again.communicate(timeout=600)
    assert f"run {stranded.name} ended without committing its results" in out, out
    kept = results / "attempts" / f"first-{tag}" / stranded.name
    assert sorted(p.name for p in kept.iterdir()) >= files, out
    assert not (results / ".staging").exists()
    assert status(results, f"first-{tag}")["status"] == "ok", out


def test_a_configuration_error_exits_2_through_nox(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text("kernels: []\n")
    proc = nox_matrix(config, tmp_path / "results")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, out
    assert "kernels" in out and "non-empty" in out
