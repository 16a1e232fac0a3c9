"""Real guests whose suites cannot give verdicts, whose tests hang, whose QEMU refuses to
start; and the evidence a run leaves, replayed by hand afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from guests import (
    REPO,
    fetch_kernel,
    harness,
    our_pids_and_lines,
    our_processes,
    status,
    tagged_config,
)

from harness.fetch.kernels import KernelTree
from mountcompat.testing.plugin import BASE_TIMEOUT
from mountcompat.testing.slowness import TCG_FACTOR

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel()


def suites_with(tmp_path: Path, name: str, text: str) -> Path:
    """The repository's suites plus one file of the test's own."""
    suites = tmp_path / "suites"
    shutil.copytree(REPO / "suites", suites, ignore=shutil.ignore_patterns("__pycache__"))
    (suites / name).write_text(text)
    return suites


@pytest.mark.parametrize(
    ("injected", "says"),
    [
        ("def test_x(:\n    pass\n", "SyntaxError"),
        ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    ],
    ids=["syntax-error", "missing-import"],
)
def test_suites_that_cannot_be_collected_give_no_verdicts(
    tmp_path: Path, kernel: KernelTree, injected: str, says: str
) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"broken": ""})
    suites = suites_with(tmp_path, "test_injected.py", injected)
    proc = harness(config, results, "--suites", str(suites), pytest_args=[])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out  # a kernel that did not complete
    info = status(results, f"broken-{tag}")
    assert info["status"] == "no-verdicts", info
    assert "pytest exited 2" in str(info["detail"])
    assert any(says in line for line in info["evidence"]), info["evidence"]  # type: ignore[attr-defined]
    matrix = json.loads((results / "matrix.json").read_text())
    assert {c["outcome"] for c in matrix["cells"]} == {"not-run"}
    assert our_processes(tag) == []


HANGS = """
import time
import pytest

@pytest.mark.strategy("path.resolve", "userspace")
def test_hangs_forever():
    time.sleep(100000)
"""


def test_a_hung_test_costs_that_test_not_the_kernel(tmp_path: Path, kernel: KernelTree) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"hangs": "timeout: 600"})
    suites = suites_with(tmp_path, "test_hangs.py", HANGS)
    # A short per-test limit from the command line (pytest-timeout's order: it wins over
    # the plugin's default), so that the test does not wait out the default.
    selection = ["-k", "test_hangs_forever or test_plain_path", "--timeout=20"]
    proc = harness(config, results, "--suites", str(suites), pytest_args=selection)
    out, _ = proc.communicate(timeout=800)
    info = status(results, f"hangs-{tag}")
    assert info["status"] == "ok", (info, out)
    outcomes = json.loads((results / f"hangs-{tag}" / "outcomes.json").read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in outcomes["tests"]}
    hung = tests["test_hangs_forever"]
    assert hung["verdict"] == "broken" and "Timeout" in hung["message"], hung
    assert "time.sleep" in hung["message"], "the hung test's traceback is its evidence"
    assert tests["test_plain_path"]["verdict"] == "works"  # the rest still ran


def test_the_default_per_test_limit_is_far_below_the_kernels() -> None:
    """Under TCG the plugin's default per-test limit leaves room for many hung tests within
    one kernel's default deadline (kernels.yaml: 1200 s)."""
    assert BASE_TIMEOUT * TCG_FACTOR <= 1200 / 4


def test_a_boot_qemu_refuses_says_why(tmp_path: Path, kernel: KernelTree) -> None:
    tag, config, results = tagged_config(
        tmp_path, kernel, {"nocpu": 'tcg_cpu: "no-such-cpu-model"'}
    )
    proc = harness(config, results, "--accel", "tcg")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    info = status(results, f"nocpu-{tag}")
    assert info["status"] == "boot-failed", info
    evidence = "\n".join(info["evidence"])  # type: ignore[arg-type]
    assert "no-such-cpu-model" in evidence, evidence  # QEMU's own words
    assert our_processes(tag) == []


def test_reproduce_sh_boots_the_kernel_again_after_the_run(
    tmp_path: Path, kernel: KernelTree
) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"again": ""})
    proc = harness(config, results)
    out, _ = proc.communicate(timeout=600)
    assert status(results, f"again-{tag}")["status"] == "ok", out
    script = results / f"again-{tag}" / "reproduce.sh"
    replay = tmp_path / "replay"
    done = subprocess.run(
        ["sh", str(script), str(replay)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    guest = json.loads((replay / "guest.json").read_text())
    assert guest["release"] == kernel.release and guest["pytest_exit"] == 0
    assert json.loads((replay / "outcomes.json").read_text())["cells"]
    # The run's own results are untouched by the replay.
    assert status(results, f"again-{tag}")["status"] == "ok"
    assert our_processes(tag) == []


SLEEPS = """
import time
import pytest

@pytest.mark.strategy("path.resolve", "userspace")
def test_sleeps_a_while():
    time.sleep(600)
"""


def test_a_dead_virtiofsd_ends_the_kernel_at_once_and_is_named(
    tmp_path: Path, kernel: KernelTree
) -> None:
    """A virtiofsd killed while the guest runs: QEMU lives on and the guest would wait on
    its filesystem until the kernel's deadline, saying nothing."""
    tag, config, results = tagged_config(tmp_path, kernel, {"daemon": "timeout: 500"})
    suites = suites_with(tmp_path, "test_sleeps.py", SLEEPS)
    proc = harness(config, results, "--suites", str(suites), pytest_args=["-k", "sleeps_a_while"])
    deadline = time.monotonic() + 400
    while not list(results.glob(".staging/*/daemon-*/guest-started.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    time.sleep(3)
    daemons = [pid for pid, line in our_pids_and_lines(tag) if "virtiofsd" in line]
    assert daemons, our_processes(tag)
    os.kill(daemons[0], signal.SIGKILL)
    killed = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    assert time.monotonic() - killed < 60, out
    info = status(results, f"daemon-{tag}")
    assert info["status"] == "incomplete", info
    assert f"virtiofsd (pid {daemons[0]}) died" in str(info["detail"]), info
    assert our_processes(tag) == []


LEAVES_A_DAEMON = """
import os
import subprocess
import pytest
from mountcompat import open_in_root

@pytest.mark.strategy("path.resolve", "userspace")
def test_leaves_a_daemon(tmp_path):
    (tmp_path / "file").write_text("data")
    os.close(open_in_root(tmp_path, "file", force="userspace"))
    # pytest's own output pipe (it keeps a copy of its stdout while it captures): a daemon
    # in a session of its own holding it, as a careless test's server would.
    pipes = []
    for fd in os.listdir("/proc/self/fd"):
        try:  # the listing's own descriptor is gone by now
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                pipes.append(int(fd))
        except OSError:
            pass
    subprocess.Popen(["sleep", "86400"], stdout=pipes[0], pass_fds=pipes,
                     start_new_session=True)
"""


def test_a_daemon_a_test_leaves_behind_is_killed_and_recorded(
    tmp_path: Path, kernel: KernelTree
) -> None:
    """pytest has exited, its output pipe is still held: the guest must not wait for the
    pipe's end (the kernel's deadline, a false timeout) but for pytest."""
    tag, config, results = tagged_config(tmp_path, kernel, {"leaves": "timeout: 400"})
    suites = suites_with(tmp_path, "test_leaves.py", LEAVES_A_DAEMON)
    proc = harness(config, results, "--suites", str(suites), pytest_args=["-k", "leaves_a_daemon"])
    out, _ = proc.communicate(timeout=600)
    info = status(results, f"leaves-{tag}")
    assert info["status"] == "ok", (info, out)
    (leak,) = info["leaked_processes"]  # type: ignore[misc]
    assert leak["cmdline"] == "sleep 86400", leak
    (column,) = json.loads((results / "matrix.json").read_text())["kernels"]
    assert column["leaked_processes"] == [leak], "the matrix shows the leak too"
    log = (results / f"leaves-{tag}" / "pytest.log").read_text()
    assert "1 passed" in log, log
    assert "left a process behind" in out, out


HUGE_OUTPUT = """
import sys
sys.stdout.write("y" * (30 * 1024 * 1024) + "\\n")
raise RuntimeError("collection fails after 30 MB")
"""


def test_huge_output_stays_in_the_log_and_the_evidence_is_bounded(
    tmp_path: Path, kernel: KernelTree
) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"huge": ""})
    suites = suites_with(tmp_path, "test_huge.py", HUGE_OUTPUT)
    proc = harness(config, results, "--suites", str(suites), pytest_args=["-s"])
    out, _ = proc.communicate(timeout=600)
    info = status(results, f"huge-{tag}")
    assert info["status"] == "no-verdicts", (info, out)
    assert (results / f"huge-{tag}" / "pytest.log").stat().st_size > 30 * 1024 * 1024
    for name in (f"huge-{tag}/kernel.json", "matrix.json", "report.html"):
        assert (results / name).stat().st_size < 1024 * 1024, name
    evidence = "\n".join(info["evidence"])  # type: ignore[arg-type]
    assert "bytes left out" in evidence
    assert "collection fails after 30 MB" in evidence, "the tail, where the error is, is kept"
