"""overlay.layers: every way of passing layers, checked by what the merged tree shows."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
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
from mountcompat.errors import MountCompatError, NoStrategyWorked, OverlayOptionsTooLong


def layers(base: Path) -> tuple[Path, Path]:
    upper_layer = make_tree(base / "l1", {"shared": "from l1", "only1": "one"})
    lower_layer = make_tree(base / "l2", {"shared": "from l2", "only2": "two", "dir/deep": "d"})
    return upper_layer, lower_layer


def one_lower_no_upper(base: Path) -> tuple[OverlaySpec, tuple[str, ...]]:
    lower = make_tree(base / "only", {"f": "x"})
    return OverlaySpec(lower=(lower,)), ("at least 2 lowerdir are needed",)


def workdir_inside_upper(base: Path) -> tuple[OverlaySpec, tuple[str, ...]]:
    l1, l2 = layers(base)
    upper = base / "u"
    work = upper / "w"
    work.mkdir(parents=True)
    spec = OverlaySpec(lower=(l1, l2), upper=upper, work=work)
    return spec, ("workdir and upperdir must be separate subtrees",)


def a_file_as_a_layer(base: Path) -> tuple[OverlaySpec, tuple[str, ...]]:
    l1, _ = layers(base)
    plain = base / "plain-file"
    plain.write_text("not a directory")
    # fd strategies open it O_DIRECTORY (ENOTDIR naming it); string ones get the kernel's
    # "<path> is not a directory" (6.5 on) or "'<path>' not a directory" (before).
    return OverlaySpec(lower=(plain, l1)), ("not a directory",)


WRONG_REQUESTS: dict[str, Callable[[Path], tuple[OverlaySpec, tuple[str, ...]]]] = {
    "one-lower-no-upper": one_lower_no_upper,
    "workdir-inside-upper": workdir_inside_upper,
    "a-file-as-a-layer": a_file_as_a_layer,
}


def assert_kernel_reason(exc: BaseException, reasons: tuple[str, ...]) -> None:
    """Not "no strategy works", nor "unsupported": the kernel's own error and its words."""
    assert isinstance(exc, OSError) and not isinstance(exc, MountCompatError), repr(exc)
    assert any(r.lower() in str(exc).lower() for r in reasons), f"{reasons} not in {exc}"


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

    @pytest.mark.refused_only_if_missing
    @pytest.mark.parametrize("case", list(WRONG_REQUESTS))
    def test_a_wrong_request_is_raised_with_the_kernels_reason(
        self, workdir: Path, case: str
    ) -> None:
        """EINVAL is also what a kernel without this way of passing layers answers: the
        strategy's probe finds it present, so the kernel's own error is raised, with its
        reason (from the context fd, or the kernel log where overlayfs only logs it), and
        the strategy is recorded failed, never unsupported."""
        spec, reasons = WRONG_REQUESTS[case](workdir)
        target = workdir / "m"
        target.mkdir()
        since = LOG.mark()
        with pytest.raises(OSError) as caught:
            mount_overlay(spec, target, force=self.strategy)
        assert_kernel_reason(caught.value, reasons)
        records = [r for r in LOG.since(since) if r.feature == "overlay.layers"]
        assert [r.outcome for r in records] == ["failed"], records
        assert not_mounted(target)


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
    "unsupported" for it and none after the first is tried. Two lower layers, one missing:
    with a single one and no upper, 5.10 and 6.1 refuse the shape first ("at least 2 lowerdir
    are needed"), before they look for the path."""
    present = make_tree(workdir / "present", {"f": "x"})
    target = workdir / "m"
    target.mkdir()
    since = LOG.mark()
    with pytest.raises(FileNotFoundError):
        mount_overlay(OverlaySpec(lower=(present, workdir / "missing")), target)
    records = [r for r in LOG.since(since) if r.feature == "overlay.layers"]
    # Strategies this kernel lacks are passed over (found unsupported now, or skipped as
    # known), never for the missing path; the first one that runs fails with ENOENT, and
    # nothing after it is tried.
    *passed_over, last = records
    assert all(r.outcome in ("unsupported", "skipped") for r in passed_over), records
    assert all(r.errno != errno.ENOENT for r in passed_over), records
    assert (last.outcome, last.errno) == ("failed", errno.ENOENT), records
    assert not_mounted(target)


@pytest.mark.parametrize("case", list(WRONG_REQUESTS))
def test_a_wrong_request_ends_with_the_kernels_reason(workdir: Path, case: str) -> None:
    """Unforced: the strategies before the one that fails may be passed over only because
    this kernel lacks them (recorded unsupported); the request's error ends the attempt with
    the kernel's reason, never as "no strategy works on this kernel"."""
    spec, reasons = WRONG_REQUESTS[case](workdir)
    target = workdir / "m"
    target.mkdir()
    since = LOG.mark()
    with pytest.raises(OSError) as caught:
        mount_overlay(spec, target)
    assert_kernel_reason(caught.value, reasons)
    outcomes = [r.outcome for r in LOG.since(since) if r.feature == "overlay.layers"]
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) <= {"unsupported", "skipped"}
    assert not_mounted(target)


def test_more_than_500_layers_is_the_kernels_limit(workdir: Path) -> None:
    """OVL_MAX_STACK is 500: a 501st layer is refused ("too many lower directories, limit is
    500"), and that is what the caller is told, not "no strategy works on this kernel"."""
    base = workdir / "l"
    base.mkdir()
    dirs = []
    for i in range(501):
        (base / str(i)).mkdir()
        dirs.append(base / str(i))
    target = workdir / "m"
    target.mkdir()
    with pytest.raises(OSError) as caught, only_length_limits_skip():
        mount_overlay(OverlaySpec(lower=tuple(dirs)), target)
    assert_kernel_reason(caught.value, ("too many lower directories, limit is 500",))
    assert not_mounted(target)


@contextlib.contextmanager
def only_length_limits_skip() -> Iterator[None]:
    """Before 6.7 no way of passing layers takes 501 of them (255 bytes a value, one page in
    all): the string strategies refusing for length (E2BIG) and the per-layer ones missing
    from the kernel is that kernel's honest answer. A per-layer strategy that is there
    reaches the kernel's own limit instead, which is what the test is about."""
    try:
        yield
    except NoStrategyWorked as exc:
        per_layer = [a for a in exc.attempts if a.errno != errno.E2BIG]
        if any(a.errno == errno.E2BIG for a in exc.attempts) and all(
            a.strategy in ("fd-opath", "fd-reopen", "lowerdir-plus") for a in per_layer
        ):
            pytest.skip(f"no way of passing 501 layers on this kernel: {exc}")
        raise
