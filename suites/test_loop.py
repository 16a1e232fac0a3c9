"""loop.attach: devices really bound to their files, as sysfs and losetup(8) see them."""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Contract, assert_default_choice, expect_errno, require_tool

from mountcompat import attach_loop
from mountcompat.choices import LOG
from mountcompat.loop import LOOP_ATTACH, LOOP_CONFIGURE_KNOWN, _Request, sysfs_loop
from mountcompat.testing.leaks import loop_backings
from mountcompat.testing.slowness import timeout_factor

SIZE = 1 << 20
CYCLES = 50 if timeout_factor() == 1 else 5


def nothing_of_ours_attached(directory: Path, seconds: float = 10.0) -> bool:
    """True once no loop device is backed by a file under ``directory``."""
    deadline = time.monotonic() + seconds
    while any(b.startswith(f"{directory}/") for b in loop_backings().values()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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


def backing_takes_o_direct(path: Path) -> bool:
    """Whether the file's filesystem opens it O_DIRECT, asked here, not through the library."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True


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
                if backing_takes_o_direct(path):
                    # Then only the loop driver may have refused it, never the filesystem.
                    assert all("direct I/O refused (EINVAL)" in n for n in dev.notes), dev.notes
            assert read_device(dev.path, 4096) == data[:4096]

    def test_losetup_agrees(self, backing: Path) -> None:
        require_tool("losetup")
        path, _ = backing_file(backing)
        with attach_loop(
            path, read_only=True, autoclear=True, direct_io=True, force=self.strategy
        ) as dev:
            entry = losetup_entry(dev.path)
            assert entry["back-file"] == str(path)
            assert entry["ro"] in (True, "1", 1)
            assert entry["autoclear"] in (True, "1", 1)
            # util-linux's word on direct I/O, against the library's: where the backing takes
            # O_DIRECT, only the loop driver's refusal may leave it off.
            assert entry["dio"] in ((True, "1", 1) if dev.direct_io else (False, "0", 0))
            if backing_takes_o_direct(path) and not dev.direct_io:
                assert all("direct I/O refused (EINVAL)" in n for n in dev.notes), dev.notes

    @pytest.mark.refused_only_if_missing
    def test_a_backing_the_kernel_refuses_is_a_failure_not_unsupported(self, workdir: Path) -> None:
        """EINVAL from LOOP_CONFIGURE also means "unknown ioctl" before 5.8: the probe finds
        it known, so the kernel's refusal of a directory as backing (loop_validate_file) is
        raised, recorded failed. (attach() says so earlier, naming the path: here the
        request goes to the kernel as it is.)"""
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            request = _Request(fd, str(workdir), True, True, False)
            since = LOG.mark()
            with pytest.raises(OSError) as caught:
                LOOP_ATTACH(request, force=self.strategy)
        finally:
            os.close(fd)
        expect_errno(caught.value, errno.EINVAL)
        assert "LOOP_" in str(caught.value)  # the operation is named
        assert outcomes_since(since) == [(self.strategy, "failed")]

    def test_eight_processes_attach_at_once(self, backing: Path) -> None:
        """Eight processes race for free devices; each must get its own, bound to its file.
        They hold their devices until all have answered, so the numbers must differ."""
        files = [backing_file(backing, f"b{i}.img")[0] for i in range(8)]
        mine, _ = backing_file(backing, "parent.img")
        with attach_loop(mine, force=self.strategy) as held:  # this process races too
            with Children() as children:
                for path in files:
                    children.start(functools.partial(self._hold_one, path))
                lines = [line.split() for line in children.answers()]
                children.release()
            assert children.statuses == [0] * 8, (children.statuses, lines)
        assert all(len(line) == 2 and line[1] == "1" for line in lines), lines
        numbers = {line[0] for line in lines} | {str(held.number)}
        assert len(numbers) == 9, lines

    def _hold_one(
        self, path: Path, answer: Callable[[str], None], wait: Callable[[], None]
    ) -> None:
        with attach_loop(path, force=self.strategy) as dev:
            ok = sysfs_loop(dev.number).get("backing_file") == str(path)
            answer(f"{dev.number} {int(ok)}")
            wait()

    @pytest.mark.parametrize("autoclear", [False, True], ids=["no-autoclear", "autoclear"])
    def test_eight_processes_fifty_cycles(self, workdir: Path, autoclear: bool) -> None:
        """8 processes x 50 cycles of attach, check, detach: every attach succeeds, no device
        is handed to two holders at once (each sees its own file behind its device, and the
        holding times of one device never overlap), and none is left attached. Under an
        emulated CPU (the matrix's guests) 8 x 5: the race is the same, each cycle costs
        a hundred times more."""
        files = [backing_file(workdir, f"c{i}.img")[0] for i in range(8)]
        mine, _ = backing_file(workdir, "parent.img")
        # This process holds a device all along (and is the one whose choice log the
        # verdict reads), so the children race for the rest.
        with attach_loop(mine, autoclear=autoclear, force=self.strategy), Children() as children:
            for path in files:
                children.start(functools.partial(self._cycles, path, autoclear))
            reports = [json.loads(line) for line in children.answers()]
            children.release()
        assert children.statuses == [0] * 8, (children.statuses, reports)
        failures = [f for r in reports for f in r["failures"]]
        assert not failures, failures
        assert sum(r["ok"] for r in reports) == 8 * CYCLES
        assert_never_shared([hold for r in reports for hold in r["holds"]])
        # A detach with another opener (udev probing the device, say) is only marked
        # autoclear (seen on 5.10) and happens when that opener lets go.
        assert nothing_of_ours_attached(workdir), loop_backings()

    def _cycles(
        self, path: Path, autoclear: bool, answer: Callable[[str], None], wait: Callable[[], None]
    ) -> None:
        report: dict[str, Any] = {"ok": 0, "failures": [], "holds": []}
        for _ in range(CYCLES):
            try:
                with attach_loop(path, autoclear=autoclear, force=self.strategy) as dev:
                    start = time.monotonic()
                    seen = sysfs_loop(dev.number).get("backing_file")
                    end = time.monotonic()
                report["holds"].append([dev.number, start, end])
                if seen == str(path):
                    report["ok"] += 1
                else:
                    report["failures"].append(f"loop{dev.number} serves {seen}, not {path}")
            except OSError as exc:
                report["failures"].append(repr(exc))
        answer(json.dumps(report))
        wait()


def _write_line(fd: int, line: str) -> None:
    os.write(fd, line.encode() + b"\n")


def _wait_for_release(fd: int) -> None:
    os.read(fd, 1)  # returns at end of file: the parent closed its end, or died


def outcomes_since(since: int) -> list[tuple[str, str]]:
    return [(r.strategy, r.outcome) for r in LOG.since(since) if r.feature == "loop.attach"]


def assert_never_shared(holds: list[list[Any]]) -> None:
    """No two holding times of one device overlap (the clock is CLOCK_MONOTONIC, one for
    all processes)."""
    by_device: dict[int, list[tuple[float, float]]] = {}
    for number, start, end in holds:
        by_device.setdefault(number, []).append((start, end))
    for number, spans in by_device.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start > end, f"loop{number} held twice at once"


class Children:
    """Forked children that each answer one line and then wait to be released.

    Each child has an answer pipe of its own, whose write end no other process holds (the
    parent closes its copy before forking the next child): a child that dies before it
    answers shows as end of file on its pipe, at once, instead of a read that waits for
    ever. A deadline bounds the whole wait as well; on any failure the rest are released,
    and every child is reaped (killed if it does not end)."""

    DEADLINE = 120.0

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.pipes: list[int] = []
        self.statuses: list[int] = []
        self._release_r, self._release_w = os.pipe()

    def start(self, work: Callable[[Callable[[str], None], Callable[[], None]], None]) -> None:
        answer_r, answer_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            status = 1
            try:
                os.close(self._release_w)
                for fd in [answer_r, *self.pipes]:
                    os.close(fd)
                work(
                    lambda line: _write_line(answer_w, line),
                    lambda: _wait_for_release(self._release_r),
                )
                status = 0
            finally:
                os._exit(status)
        os.close(answer_w)
        self.pids.append(pid)
        self.pipes.append(answer_r)

    def answers(self) -> list[str]:
        deadline = time.monotonic() + self.DEADLINE
        return [
            self._one_answer(fd, pid, deadline)
            for fd, pid in zip(self.pipes, self.pids, strict=True)
        ]

    def _one_answer(self, fd: int, pid: int, deadline: float) -> str:
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"child {pid} gave no answer in {self.DEADLINE} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"child {pid} ended without an answer")
            data += chunk
        return data.decode().strip()

    def release(self) -> None:
        if self._release_w >= 0:
            os.close(self._release_w)
            self._release_w = -1

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        deadline = time.monotonic() + 30
        for pid in self.pids:
            self.statuses.append(self._reap(pid, deadline))
        for fd in [self._release_r, *self.pipes]:
            os.close(fd)

    @staticmethod
    def _reap(pid: int, deadline: float) -> int:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1]


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


def test_a_child_that_dies_before_answering_ends_the_wait(workdir: Path) -> None:
    """The eight-process tests must fail, not hang, when a child dies: its answer pipe has no
    other writer, so its end shows at once, and the children still waiting are let go."""

    def dies(answer: Callable[[str], None], wait: Callable[[], None]) -> None:
        raise RuntimeError("a child that dies before it answers")

    def answers_and_waits(answer: Callable[[str], None], wait: Callable[[], None]) -> None:
        answer("here")
        wait()

    started = time.monotonic()
    with pytest.raises(AssertionError, match="ended without an answer"), Children() as children:
        children.start(answers_and_waits)
        children.start(dies)
        children.start(answers_and_waits)
        children.answers()
    assert time.monotonic() - started < 10
    assert children.statuses[0] == 0 and children.statuses[1] != 0, children.statuses


def test_a_refused_backing_ends_the_attempt(workdir: Path) -> None:
    """Unforced, the same refusal is not taken for "LOOP_CONFIGURE unknown": set-fd-status
    is not tried for it."""
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        since = LOG.mark()
        with pytest.raises(OSError) as caught:
            LOOP_ATTACH(_Request(fd, str(workdir), True, True, False))
    finally:
        os.close(fd)
    expect_errno(caught.value, errno.EINVAL)
    # Passed over only on a kernel without LOOP_CONFIGURE (5.8), where set-fd-status then
    # gets the same refusal.
    expected = (
        [("loop-configure", "failed")]
        if LOOP_CONFIGURE_KNOWN.present()
        else [("loop-configure", "unsupported"), ("set-fd-status", "failed")]
    )
    assert outcomes_since(since) == expected


@pytest.mark.parametrize("read_only", [True, False], ids=["ro", "rw"])
def test_a_directory_is_refused_naming_it(workdir: Path, read_only: bool) -> None:
    with pytest.raises(IsADirectoryError) as caught:
        attach_loop(workdir, read_only=read_only)
    assert str(workdir) in str(caught.value)
