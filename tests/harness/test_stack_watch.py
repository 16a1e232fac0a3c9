"""The watch over a guest's stack, with real processes in a process group of their own: vng
asks each virtiofsd it may use for ``--version`` (and ``--help``) before it starts the daemon,
and those answers end while QEMU runs. Only a daemon that ends is a daemon that died.

Seen in a cold ``nox -s matrix``: two of eight kernels booted twice, "virtiofsd (pid N) died
while the guest booted", the pid being vng's ``virtiofsd --version``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.boot.process import StackWatch, end_process_group

# Stands for vng: asks "virtiofsd --version" (a process that ends), starts the daemon, then
# QEMU, as virtme's run.py does. Each program is a script of the name vng looks for.
VNG = """
set -e
"$BIN/virtiofsd" --version
"$BIN/virtiofsd" --syslog --socket-path "$SOCK" --shared-dir / --sandbox none &
echo $! > "$DAEMON_PID"
exec "$BIN/qemu-system-x86_64" -kernel vmlinuz
"""
# Both keep their own name in their argv, as the real ones do (``exec sleep`` would not).
VIRTIOFSD = """#!/bin/bash
case "$1" in --version) sleep 1.5; echo "virtiofsd 1.13.0"; exit 0;; esac
exec -a "$0" {python} -c "import time; time.sleep(600)" "$@"
"""
QEMU = '#!/bin/bash\nexec -a "$0" {python} -c \'import time; time.sleep(600)\' "$@"\n'
# A real binary: an interpreter reached through a shim would be started under its own name.
PYTHON = os.path.realpath(sys.executable)


@contextlib.contextmanager
def running_stack(
    tmp_path: Path, vng: str = VNG, qemu: str | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The stand-in vng with its virtiofsd and QEMU (``qemu``: a binary to copy in its place
    instead of the script), in a process group of its own; and where the daemon's pid goes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("virtiofsd", VIRTIOFSD), ("qemu-system-x86_64", QEMU)):
        (bin_dir / name).write_text(text.format(python=PYTHON))
        (bin_dir / name).chmod(0o755)
    if qemu is not None:
        shutil.copy(qemu, bin_dir / "qemu-system-x86_64")
    env = {
        **os.environ,
        "BIN": str(bin_dir),
        "SOCK": str(tmp_path / "sock"),
        "DAEMON_PID": str(tmp_path / "daemon.pid"),
    }
    proc = subprocess.Popen(["sh", "-c", vng], env=env, process_group=0)
    try:
        yield proc, tmp_path / "daemon.pid"
    finally:
        end_process_group(proc, grace=1.0)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    with running_stack(tmp_path) as running:
        yield running


def a_dead_daemon_is_named(proc: subprocess.Popen[bytes], daemon_pid: Path) -> None:
    """Quiet while everything runs; the daemon killed, named within seconds."""
    watch = fresh_watch(proc.pid)
    assert watch_until(watch, 3.0) is None
    pid = int(daemon_pid.read_text())
    os.kill(pid, signal.SIGKILL)
    assert watch_until(watch, 3.0) == f"virtiofsd (pid {pid})"


def watch_until(watch: StackWatch, seconds: float) -> str | None:
    """What the watch said within ``seconds``, scanning as often as it can."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (died := watch.died()) is not None:
            return died
        time.sleep(0.05)
    return None


def fresh_watch(pgid: int) -> StackWatch:
    watch = StackWatch(pgid)
    watch.SCAN_EVERY = 0.0  # every call looks: the ``--version`` answer lives 1.5 s here
    return watch


def test_the_version_question_that_ends_is_not_a_dead_daemon(
    stack: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, daemon_pid = stack
    watch = fresh_watch(proc.pid)
    assert watch_until(watch, 5.0) is None
    assert daemon_pid.exists()  # QEMU and the daemon both ran meanwhile


def test_the_daemon_that_dies_is_named(stack: tuple[subprocess.Popen[bytes], Path]) -> None:
    a_dead_daemon_is_named(*stack)


def test_a_qemu_run_through_its_own_loader_is_qemu(tmp_path: Path) -> None:
    """A private QEMU (harness/host/qemu.py) runs as "ld-linux... --library-path DIR
    .../qemu-system-x86_64": the watch must know it for QEMU, or no daemon's death counts."""
    loader = next(
        (
            p
            for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1")
            if Path(p).exists()
        ),
        None,
    )
    if loader is None:
        pytest.skip("no glibc loader at its usual place")
    vng = VNG.replace(
        'exec "$BIN/qemu-system-x86_64" -kernel vmlinuz',
        f'exec {loader} --library-path /nonexistent "$BIN/qemu-system-x86_64" 600',
    )
    with running_stack(tmp_path, vng, qemu="/bin/sleep") as running:
        a_dead_daemon_is_named(*running)
