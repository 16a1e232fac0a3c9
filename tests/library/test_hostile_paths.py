"""Hostile path names, generated, through every strategy that puts a path in front of the kernel:
bytes that are not UTF-8, spaces, commas, colons, backslashes, newlines. Each strategy either
does its job with the name (content read back through the mount, the mount found where it is)
or refuses it as beyond itself (StrategyUnsupported: a comma before 6.5, say), never an
encoding error. On the host only (hypothesis is not in the guests)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mountcompat import OverlaySpec, attach_loop, list_mounts, mount_fs, mount_overlay, open_in_root
from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.attrs import set_mount_attrs
from mountcompat.errors import StrategyUnsupported
from mountcompat.features import FEATURES
from mountcompat.loop import sysfs_loop
from mountcompat.mounts import MountAttr
from mountcompat.mounttable import mount_at, read_mountinfo
from mountcompat.testing.leaks import loop_backings

SETTINGS = settings(
    database=None,
    deadline=None,
    max_examples=12,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A file name as bytes: anything but "/" and NUL, the hostile ones often, decoded the way
# Python decodes names it reads (os.fsdecode: surrogateescape for what is not UTF-8).
HOSTILE = st.lists(
    st.sampled_from([b" ", b",", b":", b"\\", b"\n", b"\t", b"\xff", b"\xc3(", b"a", b"\xe9"])
    | st.binary(min_size=1, max_size=3).filter(lambda b: b"/" not in b and b"\0" not in b),
    min_size=1,
    max_size=8,
).map(lambda parts: os.fsdecode(b"".join(parts)))


def strategies(feature: str) -> list[str]:
    return [s.name for s in FEATURES[feature].strategies]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A private tmpfs of its own (the suites' plugin put this process in its own namespace)."""
    # Not "mountcompat-*": the fault tests count those as the library's leftovers.
    base = Path(tempfile.mkdtemp(prefix="hostile-names."))
    sys_.mount("hostile", base, "tmpfs", 0, "size=16m")
    try:
        yield base
    finally:
        sys_.umount2(base, C.MNT_DETACH)
        os.rmdir(base)


def fresh(base: Path) -> Path:
    path = Path(tempfile.mkdtemp(dir=base))
    return path


@pytest.mark.parametrize("strategy", strategies("overlay.layers"))
@SETTINGS
@given(name=HOSTILE)
def test_overlay_layers(scratch: Path, strategy: str, name: str) -> None:
    base = fresh(scratch)
    try:
        lower, upper, work, merged = (base / f"{name}{i}" for i in "luwm")
        for d in (lower, upper, work, merged):
            d.mkdir()
        (lower / "f").write_text("from the lower layer")
        spec = OverlaySpec(lower=(lower,), upper=upper, work=work)
        try:
            mounted = mount_overlay(spec, merged, force=strategy)
        except StrategyUnsupported:
            return  # a limit of the strategy (a comma, a length), said as such
        with mounted:
            assert (merged / "f").read_text() == "from the lower layer"
            assert mount_at(read_mountinfo(), str(merged)) is not None
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("strategy", strategies("mount.api"))
@SETTINGS
@given(name=HOSTILE)
def test_mount_api_targets(scratch: Path, strategy: str, name: str) -> None:
    base = fresh(scratch)
    try:
        target = base / name
        target.mkdir()
        with mount_fs("tmpfs", "hostile-target", target, {"size": "1m"}, force=strategy):
            assert mount_at(read_mountinfo(), str(target)).source == "hostile-target"
            listed = {e.mountpoint for e in list_mounts()}
            assert str(target) in listed
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("strategy", strategies("mount.attr"))
@SETTINGS
@given(name=HOSTILE)
def test_mount_attr_paths(scratch: Path, strategy: str, name: str) -> None:
    base = fresh(scratch)
    try:
        target = base / name
        target.mkdir()
        with mount_fs("tmpfs", "hostile-attr", target, {"size": "1m"}):
            set_mount_attrs(target, MountAttr.RDONLY, force=strategy)
            assert mount_at(read_mountinfo(), str(target)).readonly
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("strategy", strategies("mounts.list"))
@SETTINGS
@given(name=HOSTILE)
def test_mounts_list_names(scratch: Path, strategy: str, name: str) -> None:
    base = fresh(scratch)
    try:
        target = base / name
        target.mkdir()
        with mount_fs("tmpfs", "hostile-list", target, {"size": "1m"}):
            found = [e for e in list_mounts(force=strategy) if e.mountpoint == str(target)]
            assert [e.source for e in found] == ["hostile-list"]
            assert os.path.ismount(found[0].mountpoint)  # the name still opens the same path
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("strategy", strategies("path.resolve"))
@SETTINGS
@given(name=HOSTILE)
def test_path_resolve_names(scratch: Path, strategy: str, name: str) -> None:
    from mountcompat.choices import forced

    root = fresh(scratch)
    try:
        (root / name).mkdir()
        (root / name / name).write_text("inside")
        os.symlink(f"/{name}/{name}", root / "link")
        with forced({"path.resolve": strategy}):
            fd = open_in_root(root, "link")
        try:
            assert os.read(fd, 100) == b"inside"
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("strategy", strategies("loop.attach"))
@SETTINGS
@given(name=HOSTILE)
def test_loop_backing_names(scratch: Path, strategy: str, name: str) -> None:
    base = fresh(scratch)
    try:
        backing = base / name
        backing.write_bytes(b"hostile" * 4096)
        with attach_loop(backing, read_only=True, force=strategy) as device:
            # The library's and the leak checker's readers of sysfs both name it as it is.
            assert sysfs_loop(device.number)["backing_file"] == str(backing)
            assert loop_backings()[f"loop{device.number}"] == str(backing)
            with open(device.path, "rb") as read:
                assert read.read(7) == b"hostile"
    finally:
        shutil.rmtree(base)
