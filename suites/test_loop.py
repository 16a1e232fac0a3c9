"""loop.attach: devices really bound to their files, as sysfs and losetup(8) see them."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import Contract, assert_default_choice, expect_errno, require_tool

from mountcompat import attach_loop
from mountcompat.choices import LOG
from mountcompat.loop import sysfs_loop

SIZE = 1 << 20


def backing_file(directory: Path, name: str = "backing.img") -> tuple[Path, bytes]:
    data = bytes(range(256)) * (SIZE // 256)
    path = directory / name
    path.write_bytes(data)
    return path, data


def wait_detached(number: int, seconds: float = 5.0) -> bool:
    """True once the kernel has let the device go. LOOP_CLR_FD on a device someone else
    still holds only marks it autoclear (seen on 5.10), and autoclear acts on the last
    close: both finish a moment after our close returns."""
    deadline = time.monotonic() + seconds
    while "backing_file" in sysfs_loop(number):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_device(path: Path, length: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read(length)


def write_device(path: Path, data: bytes) -> None:
    """Open and write: a read-only device may refuse at either step, depending on the kernel."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def losetup_entry(device: Path) -> dict[str, object]:
    out = subprocess.run(
        ["losetup", "--json", "--list", "--output", "NAME,BACK-FILE,RO,AUTOCLEAR,DIO", str(device)],
        capture_output=True,
        text=True,
        check=True,
    )
    (entry,) = json.loads(out.stdout)["loopdevices"]
    return dict(entry)


class LoopContract(Contract):
    feature = "loop.attach"

    def test_read_only_device_serves_the_file(self, backing: Path) -> None:
        path, data = backing_file(backing)
        with attach_loop(path, read_only=True, autoclear=False, force=self.strategy) as dev:
            info = sysfs_loop(dev.number)
            assert info["backing_file"] == str(path)
            assert info["ro"] == "1" and dev.read_only
            assert read_device(dev.path, 4096) == data[:4096]
            with pytest.raises(OSError) as caught:
                write_device(dev.path, b"must not land")
            expect_errno(caught.value, errno.EROFS, errno.EACCES, errno.EPERM)
        assert path.read_bytes() == data
        assert wait_detached(dev.number)

    def test_writable_device_writes_through(self, backing: Path) -> None:
        path, _ = backing_file(backing)
        with attach_loop(path, read_only=False, autoclear=False, force=self.strategy) as dev:
            write_device(dev.path, b"written through the loop device")
        assert path.read_bytes().startswith(b"written through the loop device")

    def test_autoclear_detaches_on_close(self, backing: Path) -> None:
        path, _ = backing_file(backing)
        dev = attach_loop(path, autoclear=True, force=self.strategy)
        number = dev.number
        assert sysfs_loop(number)["autoclear"] == "1" and dev.autoclear
        dev.close()
        assert wait_detached(number)

    def test_direct_io_as_the_backing_allows(self, backing: Path) -> None:
        path, data = backing_file(backing)
        with attach_loop(path, direct_io=True, force=self.strategy) as dev:
            assert sysfs_loop(dev.number)["dio"] == ("1" if dev.direct_io else "0")
            if not dev.direct_io:
                assert dev.notes, "direct I/O was dropped without saying why"
            assert read_device(dev.path, 4096) == data[:4096]

    def test_losetup_agrees(self, backing: Path) -> None:
        require_tool("losetup")
        path, _ = backing_file(backing)
        with attach_loop(path, read_only=True, autoclear=True, force=self.strategy) as dev:
            entry = losetup_entry(dev.path)
            assert entry["back-file"] == str(path)
            assert entry["ro"] in (True, "1", 1)
            assert entry["autoclear"] in (True, "1", 1)

    def test_eight_processes_attach_at_once(self, backing: Path) -> None:
        """Eight processes race for free devices; each must get its own, bound to its file.
        They hold their devices until all have answered, so the numbers must differ."""
        files = [backing_file(backing, f"b{i}.img")[0] for i in range(8)]
        mine, _ = backing_file(backing, "parent.img")
        answers_r, answers_w = os.pipe()
        release_r, release_w = os.pipe()
        with attach_loop(mine, force=self.strategy) as held:  # this process races too
            children = [self._child(path, answers_w, release_r, release_w) for path in files]
            os.close(answers_w)
            os.close(release_r)
            lines = []
            with os.fdopen(answers_r) as answers:
                for _ in files:
                    lines.append(answers.readline().split())
                os.close(release_w)  # let them all go
            statuses = [os.waitpid(pid, 0)[1] for pid in children]
        assert statuses == [0] * 8, statuses
        assert all(len(line) == 2 and line[1] == "1" for line in lines), lines
        numbers = {line[0] for line in lines} | {str(held.number)}
        assert len(numbers) == 9, lines

    def _child(self, path: Path, answers: int, release: int, release_w: int) -> int:
        pid = os.fork()
        if pid:
            return pid
        status = 1  # pragma: no cover - the child
        try:
            os.close(release_w)
            with attach_loop(path, force=self.strategy) as dev:
                ok = sysfs_loop(dev.number).get("backing_file") == str(path)
                os.write(answers, f"{dev.number} {int(ok)}\n".encode())
                os.read(release, 1)
                status = 0
        finally:
            os._exit(status)


class TestLoopConfigure(LoopContract):
    strategy = "loop-configure"


class TestSetFdStatus(LoopContract):
    strategy = "set-fd-status"


@pytest.mark.default_choice("loop.attach")
def test_loop_default(workdir: Path) -> None:
    path, data = backing_file(workdir)
    since = LOG.mark()
    with attach_loop(path) as dev:
        assert read_device(dev.path, 16) == data[:16]
    assert_default_choice("loop.attach", since)
