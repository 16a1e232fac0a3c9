"""overlay.layers: every way of passing layers, checked by what the merged tree shows."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from helpers import (
    AWKWARD_NAME,
    Contract,
    assert_default_choice,
    expect_errno,
    make_tree,
    mounted_at,
    not_mounted,
)

from mountcompat import OverlaySpec, mount_overlay
from mountcompat._constants import PAGE_SIZE
from mountcompat.choices import LOG
from mountcompat.errors import OverlayOptionsTooLong


def layers(base: Path) -> tuple[Path, Path]:
    upper_layer = make_tree(base / "l1", {"shared": "from l1", "only1": "one"})
    lower_layer = make_tree(base / "l2", {"shared": "from l2", "only2": "two", "dir/deep": "d"})
    return upper_layer, lower_layer


class OverlayContract(Contract):
    feature = "overlay.layers"

    def test_read_only_layers_merge_in_order(self, backing: Path) -> None:
        l1, l2 = layers(backing)
        target = backing / "merged"
        target.mkdir()
        with mount_overlay(OverlaySpec(lower=(l1, l2)), target, force=self.strategy):
            assert mounted_at(target).fstype == "overlay"
            assert sorted(os.listdir(target)) == ["dir", "only1", "only2", "shared"]
            assert (target / "shared").read_text() == "from l1"
            assert (target / "dir" / "deep").read_text() == "d"
            with pytest.raises(OSError) as caught:
                (target / "new").write_text("x")
            expect_errno(caught.value, errno.EROFS)
        assert not_mounted(target)

    def test_writes_go_to_the_upper_layer(self, backing: Path) -> None:
        l1, l2 = layers(backing)
        upper, work, target = backing / "u", backing / "w", backing / "m"
        for d in (upper, work, target):
            d.mkdir()
        with mount_overlay(
            OverlaySpec(lower=(l1, l2), upper=upper, work=work), target, force=self.strategy
        ):
            (target / "new").write_text("written")
            (target / "only2").unlink()
            assert (upper / "new").read_text() == "written"
            whiteout = os.lstat(upper / "only2")
            assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
            assert (l2 / "only2").exists(), "a lower layer was modified"

    def test_data_only_layer_is_hidden(self, backing: Path) -> None:
        l1, _ = layers(backing)
        data = make_tree(backing / "data", {"blob": "only through redirects"})
        target = backing / "m"
        target.mkdir()
        # Data-only layers are reached through metacopy redirects: 6.12 refuses them without
        # metacopy=on ("lower data-only dirs require metacopy support"), 6.18 does not.
        spec = OverlaySpec(lower=(l1,), data=(data,), options={"metacopy": "on"})
        with mount_overlay(spec, target, force=self.strategy):
            assert not (target / "blob").exists()
            assert (target / "only1").read_text() == "one"

    def test_more_layers_than_one_page_of_options(self, backing: Path) -> None:
        # 40 layers of ~110-byte paths: ~4.4 KiB of lowerdir, more than a page.
        names = [f"layer-{i:02d}-" + "x" * 100 for i in range(40)]
        dirs = [make_tree(backing / n, {f"f{i}": str(i)}) for i, n in enumerate(names)]
        assert sum(len(str(d)) + 1 for d in dirs) > PAGE_SIZE
        target = backing / "m"
        target.mkdir()
        with mount_overlay(OverlaySpec(lower=tuple(dirs)), target, force=self.strategy):
            assert sorted(os.listdir(target)) == sorted(f"f{i}" for i in range(40))
            assert (target / "f39").read_text() == "39"

    def test_awkward_paths(self, backing: Path) -> None:
        base = backing / AWKWARD_NAME
        l1 = make_tree(base / ("low " + AWKWARD_NAME), {"a": "awkward lower"})
        upper, work = base / ("up:" + AWKWARD_NAME), base / ("wo,rk" + AWKWARD_NAME)
        target = base / ("mnt " + AWKWARD_NAME)
        for d in (upper, work, target):
            d.mkdir()
        with mount_overlay(
            OverlaySpec(lower=(l1,), upper=upper, work=work), target, force=self.strategy
        ):
            assert mounted_at(target).mountpoint == str(target)
            assert (target / "a").read_text() == "awkward lower"
            (target / "b").write_text("b")
            assert (upper / "b").read_text() == "b"


class TestFdOpath(OverlayContract):
    strategy = "fd-opath"


class TestFdReopen(OverlayContract):
    strategy = "fd-reopen"


class TestLowerdirPlus(OverlayContract):
    strategy = "lowerdir-plus"


class TestLowerdirString(OverlayContract):
    strategy = "lowerdir-string"


class TestMount2Data(OverlayContract):
    strategy = "mount2-data"


@pytest.mark.default_choice("overlay.layers")
def test_default_choice(backing: Path) -> None:
    l1, l2 = layers(backing)
    target = backing / "m"
    target.mkdir()
    since = LOG.mark()
    with mount_overlay(OverlaySpec(lower=(l1, l2)), target):
        assert (target / "shared").read_text() == "from l1"
    assert_default_choice("overlay.layers", since)


def test_one_page_limit_is_a_clear_error(workdir: Path) -> None:
    """mount(2) takes one page of options: longer ones are refused before the kernel would
    truncate them, with an error that says so."""
    dirs = [make_tree(workdir / (f"{i:02d}" + "y" * 200), {"f": "x"}) for i in range(25)]
    target = workdir / "m"
    target.mkdir()
    with pytest.raises(OverlayOptionsTooLong) as caught:
        mount_overlay(OverlaySpec(lower=tuple(dirs)), target, force="mount2-data")
    assert caught.value.errno == errno.E2BIG and "lowerdir+" in str(caught.value)
    assert not_mounted(target)


def test_a_missing_layer_is_a_real_error_not_unsupported(workdir: Path) -> None:
    """ENOENT for a layer that does not exist is raised as it is: no strategy is recorded
    "unsupported" for it and none after the first is tried."""
    target = workdir / "m"
    target.mkdir()
    since = LOG.mark()
    with pytest.raises(FileNotFoundError):
        mount_overlay(OverlaySpec(lower=(workdir / "missing",)), target)
    records = [r for r in LOG.since(since) if r.feature == "overlay.layers"]
    assert [r.outcome for r in records] == ["failed"], records
    assert not_mounted(target)
