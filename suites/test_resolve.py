"""path.resolve: symlinks and .. that try to leave the root stay inside it."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from helpers import Contract, assert_default_choice, expect_errno

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


@pytest.mark.strategy("path.resolve", "openat2")
def test_openat2_retries_when_renames_race_its_dotdot(workdir: Path) -> None:
    """Under RESOLVE_IN_ROOT a ".." walked while any rename happens answers EAGAIN (the
    kernel cannot vouch for the walk; about one call in 25 here with one renaming thread):
    open_in_root asks again, so every call succeeds."""
    root = jail(workdir)
    (root / "data" / "deep").mkdir()
    churn = workdir / "churn"
    churn.mkdir()
    stop = threading.Event()

    def rename_all_the_time() -> None:
        (churn / "a").write_text("x")
        names = ("a", "b")
        i = 0
        while not stop.is_set():
            os.rename(churn / names[i % 2], churn / names[(i + 1) % 2])
            i += 1

    renamer = threading.Thread(target=rename_all_the_time)
    renamer.start()
    try:
        for _ in range(3000):
            fd = open_in_root(root, "data/deep/../../data/deep/../file", force="openat2")
            os.close(fd)
    finally:
        stop.set()
        renamer.join()
