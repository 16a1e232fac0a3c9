"""Installing host packages while another process holds dpkg's lock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from harness.host.prereqs import apt_install

LOCK = "/var/lib/dpkg/lock-frontend"
HOLD = """
import fcntl, sys, time
fd = open(sys.argv[1], "w")
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None, reason="needs root and apt"
)
def test_a_held_dpkg_lock_is_waited_for() -> None:
    """Two shards started side by side on a new machine both install their prerequisites:
    the second must wait for the first's dpkg lock, not fail. apt takes the lock with fcntl,
    as the holder here does; the package asked for is installed already, so nothing changes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, LOCK, "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        apt_install(["coreutils"], lambda _message: None)
        assert time.monotonic() - started >= 2, "apt-get did not wait for the lock"
    finally:
        holder.kill()
        holder.wait()
