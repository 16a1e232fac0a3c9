"""mount.api and fs.create: a filesystem really mounted, seen in the table, used, unmounted."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import (
    Contract,
    assert_default_choice,
    expect_errno,
    mounted_at,
    not_mounted,
    require_tool,
)

from mountcompat import MountAttr, attach_loop, mount_fs
from mountcompat.choices import LOG
from mountcompat.fscontext import FsContext
from mountcompat.mountapi import create_superblock


class MountApiContract(Contract):
    feature = "mount.api"

    def test_tmpfs_is_mounted_listed_and_usable(self, workdir: Path) -> None:
        target = workdir / "m"
        target.mkdir()
        with mount_fs(
            "tmpfs", "mc-api", target, {"size": "4m", "mode": "0750"}, force=self.strategy
        ):
            entry = mounted_at(target)
            assert (entry.fstype, entry.source) == ("tmpfs", "mc-api")
            assert "size=4096k" in entry.super_options
            assert "mode=750" in entry.super_options
            (target / "f").write_text("through the mount")
            assert (target / "f").read_text() == "through the mount"
        assert not_mounted(target)
        assert not (target / "f").exists()

    def test_read_only_and_nosuid_attributes(self, workdir: Path) -> None:
        target = workdir / "m"
        target.mkdir()
        with mount_fs(
            "tmpfs", "mc-api", target, {}, MountAttr.RDONLY | MountAttr.NOSUID, force=self.strategy
        ):
            entry = mounted_at(target)
            assert entry.readonly and "nosuid" in entry.options
            with pytest.raises(OSError) as caught:
                (target / "f").write_text("x")
            expect_errno(caught.value, errno.EROFS)


class TestFsmount(MountApiContract):
    strategy = "fsmount"


class TestMount2(MountApiContract):
    strategy = "mount2"


@pytest.mark.default_choice("mount.api")
def test_default_choice_is_the_first_that_works(workdir: Path) -> None:
    since = LOG.mark()
    with mount_fs("tmpfs", "mc-default", workdir):
        assert mounted_at(workdir).source == "mc-default"
    assert assert_default_choice("mount.api", since) in ("fsmount", "mount2")


def test_fsconfig_error_carries_the_kernel_message(workdir: Path) -> None:
    """Quirk: the fs-context fd holds the kernel's own explanation of a refusal."""
    with pytest.raises(OSError) as caught:
        mount_fs("tmpfs", "mc", workdir, {"no-such-option": "1"}, force="fsmount")
    expect_errno(caught.value, errno.EINVAL)
    messages = getattr(caught.value, "kernel_messages", [])
    assert any("no-such-option" in m for m in messages), messages


def test_a_wrong_option_with_attributes_is_not_a_missing_attribute(workdir: Path) -> None:
    """With attributes, fsmount's EINVAL could also mean an attribute it does not know
    (NOSYMFOLLOW before 5.14): the probe finds these (known since fsmount, 5.2) known, so the
    bad option is raised, with the kernel's message, and mount(2) is not tried in its place."""
    since = LOG.mark()
    with pytest.raises(OSError) as caught:
        mount_fs("tmpfs", "mc", workdir, {"no-such-option": "1"}, MountAttr.NOSUID)
    expect_errno(caught.value, errno.EINVAL)
    messages = getattr(caught.value, "kernel_messages", [])
    assert any("no-such-option" in m for m in messages), messages
    records = [(r.strategy, r.outcome) for r in LOG.since(since) if r.feature == "mount.api"]
    assert records == [("fsmount", "failed")]
    assert not_mounted(workdir)


def test_context_stays_usable_after_a_failed_parameter(workdir: Path) -> None:
    """Quirk: after a refused fsconfig the context still works, so parameters can be probed."""
    with FsContext.open("tmpfs") as ctx:
        with pytest.raises(OSError):
            ctx.set_string("no-such-option", "1")
        ctx.set_string("size", "1m")
        ctx.create()
        with ctx.mount() as detached:
            detached.attach(workdir).close()


def ext4_image(directory: Path) -> Path:
    require_tool("mkfs.ext4")
    image = directory / "fs.ext4"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    return image


def ext4_context(device: Path) -> FsContext:
    ctx = FsContext.open("ext4")
    ctx.set_string("source", str(device))
    return ctx


class FsCreateContract(Contract):
    feature = "fs.create"
    # Whether a second context for a device already mounted gets that device's superblock.
    shares_superblocks: bool

    def test_new_superblock_mounts(self, workdir: Path) -> None:
        with FsContext.open("tmpfs") as ctx:
            ctx.set_string("size", "2m")
            create_superblock(ctx, force=self.strategy)
            with ctx.mount() as detached:
                mounted = detached.attach(workdir)
        with mounted:
            assert "size=2048k" in mounted_at(workdir).super_options
            # A superblock of its own: not the filesystem the directory was on.
            assert os.stat(workdir).st_dev != os.stat(workdir.parent).st_dev
            (workdir / "f").write_text("x")

    @pytest.mark.refused_only_if_missing
    def test_a_second_context_for_the_same_device(self, workdir: Path) -> None:
        """The difference between the two: block filesystems keep one superblock per device,
        and CMD_CREATE hands the existing one to a second context (its parameters ignored),
        where CMD_CREATE_EXCL refuses with EBUSY and says why on the context."""
        first_at, second_at = workdir / "first", workdir / "second"
        first_at.mkdir()
        second_at.mkdir()
        with attach_loop(ext4_image(workdir), read_only=False) as device:
            with ext4_context(device.path) as ctx:
                create_superblock(ctx, force=self.strategy)  # the first one is new either way
                first = ctx.mount().attach(first_at)
            with first, ext4_context(device.path) as ctx:
                (first_at / "written-through-the-first").write_text("one superblock")
                if self.shares_superblocks:
                    self._shared(ctx, first_at, second_at)
                else:
                    self._refused(ctx)

    def _shared(self, ctx: FsContext, first_at: Path, second_at: Path) -> None:
        create_superblock(ctx, force=self.strategy)
        with ctx.mount() as detached, detached.attach(second_at):
            assert os.stat(second_at).st_dev == os.stat(first_at).st_dev
            text = (second_at / "written-through-the-first").read_text()
            assert text == "one superblock"

    def _refused(self, ctx: FsContext) -> None:
        with pytest.raises(OSError) as caught:
            create_superblock(ctx, force=self.strategy)
        expect_errno(caught.value, errno.EBUSY)
        messages = getattr(caught.value, "kernel_messages", [])
        assert any("reusing existing filesystem not allowed" in m for m in messages), messages


class TestCreateExcl(FsCreateContract):
    strategy = "create-excl"
    shares_superblocks = False


class TestCreate(FsCreateContract):
    strategy = "create"
    shares_superblocks = True


@pytest.mark.default_choice("fs.create")
def test_fs_create_default(workdir: Path) -> None:
    since = LOG.mark()
    with FsContext.open("tmpfs") as ctx:
        create_superblock(ctx)
    assert assert_default_choice("fs.create", since) in ("create-excl", "create")


def test_fspick_reconfigures_a_mounted_filesystem(workdir: Path) -> None:
    """fspick(2) (5.2) takes the context of a mounted superblock; CMD_RECONFIGURE applies a
    new size, which the mount table then shows (the only test that calls fspick, so that its
    number is checked on every architecture)."""
    with mount_fs("tmpfs", "mc-pick", workdir, {"size": "1m"}, force="mount2"):
        with FsContext.pick(workdir) as ctx:
            ctx.set_string("size", "3m")
            ctx.reconfigure()
        assert "size=3072k" in mounted_at(workdir).super_options


def test_a_filesystem_that_refuses_create_excl_is_mounted_all_the_same(workdir: Path) -> None:
    """devpts answers EOPNOTSUPP to FSCONFIG_CMD_CREATE_EXCL on 6.12 (found by asking every
    type of /proc/filesystems in the guests; pstore and devtmpfs too; none on 7.3 or 6.18):
    it is mounted with CMD_CREATE, and the record of create-excl says which guarantee was
    given up. Where devpts takes CREATE_EXCL, create-excl is simply used."""
    since = LOG.mark()
    with mount_fs("devpts", "mc-devpts", workdir):
        assert mounted_at(workdir).fstype == "devpts"
    records = [r for r in LOG.since(since) if r.feature == "fs.create"]
    used = [r.strategy for r in records if r.outcome == "used"]
    refused = [r for r in records if r.strategy == "create-excl" and r.outcome == "unsupported"]
    assert used in (["create-excl"], ["create"]), records
    if used == ["create"] and refused and "missing (probed)" not in refused[0].message:
        assert "superblock of its own is given up" in refused[0].message
