"""path.resolve: symlinks and .. that try to leave the root stay inside it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Contract, assert_default_choice, expect_errno

from mountcompat import _syscalls as sys_
from mountcompat import open_in_root
from mountcompat.choices import LOG


def jail(root: Path) -> Path:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("the jail's passwd")
    (root / "data").mkdir()
    (root / "data" / "file").write_text("data")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("../../../../etc/passwd", root / "data" / "climb")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    # Paths that stay below the root: a walk that sends every ".." or link back to the root
    # would get these wrong.
    (root / "data" / "sub").mkdir()
    (root / "data" / "sub" / "file").write_text("sub")
    os.symlink("file", root / "data" / "rel")
    os.symlink("../data/file", root / "data" / "up")
    os.symlink("sub/../sub/file", root / "data" / "down")
    return root


def read_fd(fd: int) -> str:
    with os.fdopen(fd) as f:
        return f.read()


class ResolveContract(Contract):
    feature = "path.resolve"

    @pytest.mark.parametrize(
        "path", ["abs-link", "data/climb", "/../../etc/passwd", "data/../../etc/passwd"]
    )
    def test_escapes_stay_inside(self, workdir: Path, path: str) -> None:
        root = jail(workdir)
        assert read_fd(open_in_root(root, path, force=self.strategy)) == "the jail's passwd"

    def test_plain_path(self, workdir: Path) -> None:
        root = jail(workdir)
        assert read_fd(open_in_root(root, "data/file", force=self.strategy)) == "data"

    @pytest.mark.parametrize(
        ("path", "content"),
        [
            ("data/sub/../file", "data"),
            ("data/sub/../sub/file", "sub"),
            ("data/rel", "data"),
            ("data/up", "data"),
            ("data/down", "sub"),
            ("data/sub/../../data/sub/file", "sub"),
        ],
    )
    def test_dotdot_and_links_inside_the_root(self, workdir: Path, path: str, content: str) -> None:
        root = jail(workdir)
        assert read_fd(open_in_root(root, path, force=self.strategy)) == content

    def test_symlink_loop_is_eloop(self, workdir: Path) -> None:
        root = jail(workdir)
        with pytest.raises(OSError) as caught:
            open_in_root(root, "loop-a", force=self.strategy)
        expect_errno(caught.value, errno.ELOOP)


class TestOpenat2(ResolveContract):
    strategy = "openat2"


class TestUserspace(ResolveContract):
    strategy = "userspace"


@pytest.mark.default_choice("path.resolve")
def test_resolve_default(workdir: Path) -> None:
    root = jail(workdir)
    since = LOG.mark()
    assert read_fd(open_in_root(root, "abs-link")) == "the jail's passwd"
    assert_default_choice("path.resolve", since)


def preemption_mid_syscall() -> str | None:
    """How this kernel lets a task be preempted inside a syscall (``full``, ``rt``), or None
    where it does not soon enough for a rename to run during a lookup (``none``,
    ``voluntary``, and ``lazy``, which waits for the next tick: no EAGAIN in 1,728 calls on
    one vCPU of 7.3 arm64): debugfs's sched/preempt names the mode where it is mounted; else
    the command line (``preempt=``) and the build (uname -v)."""
    with contextlib.suppress(OSError):
        mode = Path("/sys/kernel/debug/sched/preempt").read_text()
        chosen = re.search(r"\((\w+)\)", mode)
        if chosen:
            return chosen.group(1) if chosen.group(1) in ("full", "rt") else None
    cmdline = Path("/proc/cmdline").read_text()
    chosen = re.search(r"\bpreempt=(\w+)", cmdline)
    if chosen:
        return chosen.group(1) if chosen.group(1) == "full" else None
    build = os.uname().version
    # A "PREEMPT" build is full or, from 6.13, lazy: the build string does not tell which.
    for word, mode_name in (("PREEMPT_RT", "rt"), ("PREEMPT ", "full or lazy (a PREEMPT build)")):
        if word in build and "PREEMPT_DYNAMIC" not in build:
            return mode_name
    return None


@pytest.mark.strategy("path.resolve", "openat2")
def test_openat2_retries_when_renames_race_its_dotdot(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, cell_note: Callable[[str], None]
) -> None:
    """Under RESOLVE_IN_ROOT a ".." walked while any rename happens answers EAGAIN (the kernel
    cannot vouch for the walk). A process renaming all the time, and a path of two hundred
    ".." to widen the window, make the kernel answer EAGAIN for real (about one call in four
    on two host CPUs); the raw syscall is watched to prove it did.
    open_in_root asks again, so every call still opens the right file."""
    cpus = len(os.sched_getaffinity(0))
    preemption = preemption_mid_syscall()
    if cpus < 2 and preemption is None:
        # A rename then runs only when the lookup is preempted in the kernel, which a kernel
        # without full preemption never does mid-walk: no EAGAIN in 3,239 calls in
        # 30 s in a one-vCPU guest. Nothing to retry, so nothing this test could show. The
        # harness boots kernels that can choose (PREEMPT_DYNAMIC) with preempt=full.
        pytest.skip(
            "the EAGAIN retry was not exercised: one CPU and a kernel that does not preempt "
            "inside a syscall, so no rename can run during a lookup"
        )
    root = jail(workdir)
    (root / "data" / "deep").mkdir()
    churn = workdir / "churn"
    churn.mkdir()
    (churn / "a").write_text("x")
    eagains = 0
    real_openat2 = sys_.openat2

    def watched_openat2(dfd: int, path: str, how: sys_.OpenHow) -> int:
        nonlocal eagains
        try:
            return real_openat2(dfd, path, how)
        except BlockingIOError:
            eagains += 1
            raise

    monkeypatch.setattr(sys_, "openat2", watched_openat2)
    path = "data" + "/deep/.." * 200 + "/file"
    renamer = subprocess.Popen([sys.executable, "-c", RENAME_FOREVER, str(churn)])
    try:
        deadline = time.monotonic() + 30
        calls = 0
        while (eagains < 3 or calls < 200) and time.monotonic() < deadline:
            assert read_fd(open_in_root(root, path, force="openat2")) == "data"
            calls += 1
    finally:
        renamer.kill()
        renamer.wait()
    if eagains == 0 and cpus < 2:
        pytest.skip(
            f"the EAGAIN retry was not exercised: no rename raced a lookup in {calls} calls on "
            f"one CPU (preemption {preemption})"
        )
    assert eagains > 0, f"no rename raced a lookup in {calls} calls: nothing was retried"
    cell_note(
        f"the EAGAIN retry was exercised: the kernel answered EAGAIN {eagains} times in "
        f"{calls} calls, each retried to the right file ({cpus} CPU, preemption "
        f"{preemption or 'voluntary'})"
    )


# A rename pair, then a millisecond's pause: renames without pause on a CPU of their own race
# every lookup of an emulated CPU (EAGAIN 64 times in a row on two vCPUs of 7.3 arm64), which
# no bounded retry outlasts; with the pause some lookups race and some do not.
RENAME_FOREVER = """
import os, sys, time
churn = sys.argv[1]
while True:
    os.rename(churn + "/a", churn + "/b")
    os.rename(churn + "/b", churn + "/a")
    time.sleep(0.001)
"""
