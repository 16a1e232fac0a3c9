"""erofs.source, and squashfs through a loop device: images built by the real tools."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import (
    AWKWARD_NAME,
    Contract,
    assert_default_choice,
    build_erofs,
    build_squashfs,
    expect_errno,
    make_tree,
    mounted_at,
    not_mounted,
    require_tool,
)

from mountcompat import mount_erofs, mount_squashfs
from mountcompat.choices import LOG
from mountcompat.loop import sysfs_loop

CONTENT = {"hello.txt": "hello from the image", "sub/dir/file": "deep", AWKWARD_NAME: "awkward"}


def image_of(kind: str, backing: Path) -> Path:
    content = make_tree(backing / "content", CONTENT)
    if kind == "erofs":
        require_tool("mkfs.erofs")
        return build_erofs(content, backing / "image.erofs")
    require_tool("mksquashfs")
    return build_squashfs(content, backing / "image.squashfs")


def check_content(target: Path) -> None:
    for name, text in CONTENT.items():
        assert (target / name).read_text() == text
    with pytest.raises(OSError) as caught:
        (target / "new").write_text("x")
    expect_errno(caught.value, errno.EROFS)


def loop_number(source: str | None) -> int | None:
    if source and source.startswith("/dev/loop"):
        return int(source.removeprefix("/dev/loop"))
    return None


class ErofsContract(Contract):
    feature = "erofs.source"

    def test_image_content_through_the_mount(self, backing: Path) -> None:
        image = image_of("erofs", backing)
        target = backing / "m"
        target.mkdir()
        with mount_erofs(image, target, force=self.strategy):
            entry = mounted_at(target)
            assert entry.fstype == "erofs" and entry.readonly
            check_content(target)
            number = loop_number(entry.source)
            if self.strategy == "loop":
                assert number is not None, entry
                assert sysfs_loop(number)["backing_file"] == str(image)
            else:
                assert number is None, f"file strategy went through {entry.source}"
        assert not_mounted(target)


class TestErofsFile(ErofsContract):
    strategy = "file"


class TestErofsLoop(ErofsContract):
    strategy = "loop"


@pytest.mark.default_choice("erofs.source")
def test_erofs_default(backing: Path) -> None:
    image = image_of("erofs", backing)
    since = LOG.mark()
    with mount_erofs(image, backing / "content"):
        check_content(backing / "content")
    assert_default_choice("erofs.source", since)


def test_squashfs_through_loop(backing: Path) -> None:
    image = image_of("squashfs", backing)
    target = backing / "m"
    target.mkdir()
    with mount_squashfs(image, target):
        entry = mounted_at(target)
        assert entry.fstype == "squashfs"
        number = loop_number(entry.source)
        assert number is not None and sysfs_loop(number)["backing_file"] == str(image)
        assert sysfs_loop(number)["autoclear"] == "1"
        check_content(target)
    assert os.listdir(target) == []
