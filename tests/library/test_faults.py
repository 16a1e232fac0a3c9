"""Nothing left behind on failure (issue 9).

Every call to the kernel that a multi-step operation makes fails in turn: a double of the raw
syscall layer (``mountcompat._syscalls``), of the loop ioctl, and of the os functions the
library calls directly, since the real kernel cannot be made to fail midway on demand. All
the other calls are the real kernel's. After each failure:

- the error that reaches the caller is the failing step's own (not one from a cleanup after
  it) and names the step;
- no fd, mount or loop device of the operation survives;
- except where the failing step is the one that releases (umount2, LOOP_CLR_FD): what it
  could not release is still owned by its object, and a second ``close()`` releases it.

close(2) itself is not made to fail: it releases the fd whatever it answers, so it can leave
nothing behind. Reading the kernel log is optional by design (an error just carries no log
line), so a failure there must change nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mountcompat import (
    MountAttr,
    OverlaySpec,
    attach_loop,
    clone_detached,
    clone_tree,
    loop,
    mount_erofs,
    mount_fs,
    mount_overlay,
    open_fs,
    open_in_root,
    reset_probes,
    set_mount_attrs,
)
from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.mounts import FdOwner
from mountcompat.testing.leaks import Snapshot, leaks_since

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts: needs root")

INJECTED = errno.EIO  # an errno no strategy reads as "not here": a plain failure
SYSCALLS = (
    "fsopen",
    "fspick",
    "fsconfig",
    "fsmount",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    "openat2",
    "mount",
    "umount2",
)
OS_CALLS = ("open", "fstat", "readlink", "dup", "rmdir")
RELEASING = {"umount2", "LOOP_CLR_FD"}  # the steps whose failure leaves what they release
OPTIONAL = {"kmsg"}  # reading the kernel log: its failure only loses a message


@dataclass(frozen=True)
class Step:
    call: str  # the syscall, ioctl or os function
    mention: str  # what an error of this step must name


def _fd_name(fd: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return str(fd)


def _path_name(arg: Any) -> str:
    return os.path.basename(os.fspath(arg)) if isinstance(arg, str | os.PathLike) else str(arg)


class Injector:
    """Counts the library's calls to the kernel and makes call number ``fail_at`` fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[Step] = []
        self.fail_at: int | None = None
        self.failed: Step | None = None
        self.raised: OSError | None = None
        for name in SYSCALLS:
            self._wrap(monkeypatch, sys_, name, self._syscall_step(name), self._syscall_error)
        self._wrap(monkeypatch, loop, "_ioctl", self._ioctl_step, self._syscall_error)
        for name in OS_CALLS:
            self._wrap(monkeypatch, os, name, self._os_step(name), self._os_error)
        self._wrap(monkeypatch, tempfile, "mkdtemp", self._mkdtemp_step, self._mkdtemp_error)

    def arm(self, fail_at: int) -> None:
        """Count from now on, and fail call number ``fail_at`` (-1: none)."""
        self.steps, self.fail_at, self.failed, self.raised = [], fail_at, None, None

    def disarm(self) -> None:
        self.fail_at = None

    def _wrap(
        self,
        monkeypatch: pytest.MonkeyPatch,
        owner: Any,
        name: str,
        describe: Callable[..., Step],
        error: Callable[[Step, tuple[Any, ...]], OSError],
    ) -> None:
        real = getattr(owner, name)

        def double(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            from_library = caller.startswith("mountcompat") and ".testing" not in caller
            if self.fail_at is None or not from_library:
                return real(*args, **kwargs)
            step = describe(*args, **kwargs)
            self.steps.append(step)
            if len(self.steps) - 1 != self.fail_at:
                return real(*args, **kwargs)
            self.failed, self.raised = step, error(step, args)
            raise self.raised

        monkeypatch.setattr(owner, name, double)

    @staticmethod
    def _syscall_step(name: str) -> Callable[..., Step]:
        return lambda *args, **kwargs: Step(name, name)

    @staticmethod
    def _ioctl_step(fd: int, request: int, arg: Any, name: str) -> Step:
        return Step(name, name)

    @staticmethod
    def _os_step(name: str) -> Callable[..., Step]:
        def describe(*args: Any, **kwargs: Any) -> Step:
            first = args[0] if args else ""
            if str(first) == "/dev/kmsg":
                return Step(f"os.{name}", "kmsg")
            named = _fd_name(first) if name in ("fstat", "dup") else _path_name(first)
            return Step(f"os.{name}", named)

        return describe

    @staticmethod
    def _mkdtemp_step(*args: Any, **kwargs: Any) -> Step:
        return Step("tempfile.mkdtemp", str(kwargs.get("prefix", "tmp")))

    @staticmethod
    def _mkdtemp_error(step: Step, args: tuple[Any, ...]) -> OSError:
        # mkdir(2)'s error, as tempfile raises it: naming the directory it tried.
        tried = os.path.join(tempfile.gettempdir(), step.mention + "a1b2c3d4")
        return OSError(INJECTED, os.strerror(INJECTED), tried)

    @staticmethod
    def _syscall_error(step: Step, args: tuple[Any, ...]) -> OSError:
        return sys_.raise_errno(INJECTED, step.call, args[:1])

    @staticmethod
    def _os_error(step: Step, args: tuple[Any, ...]) -> OSError:
        # As Python raises them: with the path where the call had one, without for an fd.
        first = args[0] if args else None
        if isinstance(first, str | os.PathLike):
            return OSError(INJECTED, os.strerror(INJECTED), os.fspath(first))
        return OSError(INJECTED, os.strerror(INJECTED))


def names(step: Step, exc: BaseException) -> bool:
    text = " ".join([str(exc), *getattr(exc, "__notes__", [])])
    return step.mention in text


Operation = Callable[[Path, list[Any]], None]


def every_step_fails_in_turn(
    injector: Injector, operation: Operation, base: Path, owned: list[Path]
) -> list[str]:
    """Runs ``operation`` once whole, then once per step with that step failing; returns the
    steps tried, for the test to show."""
    injector.arm(fail_at=-1)  # counting only
    operation(base, [])
    count = len(injector.steps)
    assert count > 0, "the double saw no call of the library"
    tried = []
    for index in range(count):
        before = Snapshot.take()
        directories = our_temporary_directories()
        made: list[Any] = []
        injector.arm(index)
        error: BaseException | None = None
        try:
            operation(base, made)
        except Exception as exc:  # checked below: it must be the injected one
            error = exc
        finally:
            injector.disarm()
        step = injector.failed
        assert step is not None, f"step {index} of {count} never came"
        tried.append(step.call)
        check_failure(step, error, injector.raised)
        check_nothing_left(step, before, owned, made, error)
        left = our_temporary_directories() - directories
        if step.call == "os.rmdir" and step.mention in left:
            # The one directory the kernel refused to remove, named in the error (checked
            # above): nothing is mounted on it any more, so the test removes it.
            os.rmdir(os.path.join(tempfile.gettempdir(), step.mention))
            left.discard(step.mention)
        assert not left, f"after {step}, temporary directories left: {left}"
    return tried


def check_failure(step: Step, error: BaseException | None, raised: OSError | None) -> None:
    if error is None:
        assert step.mention in OPTIONAL, f"{step} failed and the operation went on silently"
        return
    assert error is raised, f"{step} failed, but the caller got {error!r} instead"
    assert names(step, error), f"the error of {step} does not name it: {error}"


def check_nothing_left(
    step: Step, before: Snapshot, owned: list[Path], made: list[Any], error: BaseException | None
) -> None:
    left = leaks_since(before, [str(p) for p in owned], wait=0.5)
    if left:
        assert step.call in RELEASING, f"{step} failed and left: {left}"
        for thing in reversed(made):
            thing.close()  # a second close() must release what the first could not
    # No object to retry: the error says where the mount stays, outside what the test owns,
    # so the leak check above cannot see it. It must really be there, and it goes now.
    for where in stays_mounted_on(error):
        assert step.call in RELEASING, f"{step} failed and left a mount on {where}"
        sys_.umount2(where, C.MNT_DETACH)
        os.rmdir(where)
    assert not leaks_since(before, [str(p) for p in owned]), f"after {step}, close() again"


def our_temporary_directories() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("mountcompat-")}


def stays_mounted_on(error: BaseException | None) -> list[str]:
    notes = getattr(error, "__notes__", [])
    return [n.split("stays mounted on ", 1)[1].split()[0] for n in notes if "stays mounted on" in n]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def injector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Injector]:
    reset_probes()
    yield Injector(monkeypatch)
    reset_probes()


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    sys_.mount("mc-faults", tmp_path, "tmpfs", 0, "size=32m")
    try:
        yield tmp_path
    finally:
        sys_.umount2(tmp_path, C.MNT_DETACH)


def tree(base: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        (base / name).mkdir(exist_ok=True)
        made.append(base / name)
    return made


# --- the operations -------------------------------------------------------------------------


def mount_a_tmpfs(strategy: str) -> Operation:
    def operation(base: Path, made: list[Any]) -> None:
        (target,) = tree(base, "m")
        with mount_fs("tmpfs", "mc-faults", target, {"size": "1m"}, force=strategy) as mounted:
            made.append(mounted)
            (target / "f").write_text("through the mount")

    return operation


@pytest.mark.parametrize("strategy", ["fsmount", "mount2"])
def test_mount_fs(injector: Injector, base: Path, strategy: str) -> None:
    tried = every_step_fails_in_turn(injector, mount_a_tmpfs(strategy), base, [base])
    assert "umount2" in tried


def an_overlay(strategy: str) -> Operation:
    def operation(base: Path, made: list[Any]) -> None:
        l1, l2, upper, work, target = tree(base, "l1", "l2", "u", "w", "m")
        (l2 / "f").write_text("lower")
        spec = OverlaySpec(lower=(l1, l2), upper=upper, work=work)
        with mount_overlay(spec, target, force=strategy) as mounted:
            made.append(mounted)
            assert (target / "f").read_text() == "lower"

    return operation


@pytest.mark.parametrize(
    "strategy", ["fd-opath", "fd-reopen", "lowerdir-plus", "lowerdir-string", "mount2-data"]
)
def test_mount_overlay(injector: Injector, base: Path, strategy: str) -> None:
    tried = every_step_fails_in_turn(injector, an_overlay(strategy), base, [base])
    assert "umount2" in tried


def a_loop_device(strategy: str, autoclear: bool) -> Operation:
    def operation(base: Path, made: list[Any]) -> None:
        backing = base / "backing.img"
        if not backing.exists():
            backing.write_bytes(b"loop" * 4096)
        with attach_loop(backing, autoclear=autoclear, force=strategy) as device:
            made.append(device)
            with open(device.path, "rb", buffering=0) as f:
                assert f.read(4) == b"loop"

    return operation


@pytest.mark.parametrize("autoclear", [False, True], ids=["no-autoclear", "autoclear"])
@pytest.mark.parametrize("strategy", ["loop-configure", "set-fd-status"])
def test_attach_loop(injector: Injector, base: Path, strategy: str, autoclear: bool) -> None:
    tried = every_step_fails_in_turn(injector, a_loop_device(strategy, autoclear), base, [base])
    assert "LOOP_GET_STATUS64" in tried
    if not autoclear:
        assert "LOOP_CLR_FD" in tried


@pytest.fixture(scope="module")
def erofs_image() -> Iterator[Path]:
    """On a disk-backed directory: erofs cannot take a file on tmpfs as its source."""
    if shutil.which("mkfs.erofs") is None:
        pytest.skip("mkfs.erofs is not installed")
    directory = Path(tempfile.mkdtemp(prefix="mc-faults.", dir="/var/tmp"))
    (directory / "content").mkdir()
    (directory / "content" / "f").write_text("in the image")
    image = directory / "image.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(image), str(directory / "content")], check=True)
    yield image
    shutil.rmtree(directory)


@pytest.mark.parametrize("strategy", ["file", "loop"])
def test_mount_erofs(injector: Injector, base: Path, erofs_image: Path, strategy: str) -> None:
    def operation(base: Path, made: list[Any]) -> None:
        (target,) = tree(base, "m")
        with mount_erofs(erofs_image, target, force=strategy) as mounted:
            made.append(mounted)
            assert (target / "f").read_text() == "in the image"

    tried = every_step_fails_in_turn(injector, operation, base, [base, erofs_image.parent])
    assert "umount2" in tried


@pytest.mark.parametrize("strategy", ["direct", "tmpdir"])
def test_clone_detached(injector: Injector, base: Path, strategy: str) -> None:
    def operation(base: Path, made: list[Any]) -> None:
        (target,) = tree(base, "m")
        with open_fs("tmpfs", "mc-faults") as source:
            made.append(source)
            with clone_detached(source, force=strategy) as clone:
                made.append(clone)
                with clone.attach(target) as attached:
                    made.append(attached)

    every_step_fails_in_turn(injector, operation, base, [base])


def test_clone_detached_tmpdir_umount_failure_leaves_nothing(
    injector: Injector, base: Path
) -> None:
    """The one release step without an object to retry it: the source cannot be detached
    from its scratch directory. That happens in the helper thread's private namespace, which
    goes with the thread: the clone is closed (not dropped open), the error says what
    happened, and nothing is left in the caller's view, not even the directory."""
    injector.arm(fail_at=-1)
    with open_fs("tmpfs", "mc-faults") as source:
        clone_detached(source, force="tmpdir").close()
    umount_at = [s.call for s in injector.steps].index("umount2")
    before = Snapshot.take()
    injector.arm(umount_at)
    with open_fs("tmpfs", "mc-faults") as source:
        os.close(os.open("kept", os.O_CREAT | os.O_WRONLY, dir_fd=source.fileno()))
        with pytest.raises(OSError) as caught:
            clone_detached(source, force="tmpdir")
        assert os.listdir(f"/proc/self/fd/{source.fileno()}") == ["kept"]
    injector.disarm()
    assert caught.value is injector.raised
    assert any("private namespace" in n for n in caught.value.__notes__)
    assert not leaks_since(before, [str(base)])


@pytest.mark.parametrize("strategy", ["open-tree-attr", "open-tree-setattr"])
def test_clone_tree(injector: Injector, base: Path, strategy: str) -> None:
    def operation(base: Path, made: list[Any]) -> None:
        source, target = tree(base, "s", "m")
        with mount_fs("tmpfs", "mc-faults", source, force="mount2") as mounted:
            made.append(mounted)
            with clone_tree(source, MountAttr.RDONLY, force=strategy) as clone:
                made.append(clone)
                with clone.attach(target) as attached:
                    made.append(attached)

    every_step_fails_in_turn(injector, operation, base, [base])


@pytest.mark.parametrize("strategy", ["mount-setattr", "remount"])
def test_set_mount_attrs(injector: Injector, base: Path, strategy: str) -> None:
    def operation(base: Path, made: list[Any]) -> None:
        (target,) = tree(base, "m")
        with mount_fs("tmpfs", "mc-faults", target, force="mount2") as mounted:
            made.append(mounted)
            set_mount_attrs(target, MountAttr.RDONLY | MountAttr.NOSUID, force=strategy)

    every_step_fails_in_turn(injector, operation, base, [base])


@pytest.mark.parametrize("strategy", ["openat2", "userspace"])
def test_open_in_root(injector: Injector, base: Path, strategy: str) -> None:
    """Through a symlink and a "..", so that the walk opens, looks at and reads links."""

    def operation(base: Path, made: list[Any]) -> None:
        root = base / "root"
        if not root.exists():
            (root / "d" / "e").mkdir(parents=True)
            (root / "d" / "f").write_text("found")
            os.symlink("/d/e", root / "link")
        with FdOwner(open_in_root(root, "link/../f", force=strategy)) as opened:
            made.append(opened)
            assert os.pread(opened.fileno(), 5, 0) == b"found"

    tried = every_step_fails_in_turn(injector, operation, base, [base])
    if strategy == "userspace":
        assert {"os.fstat", "os.readlink"} <= set(tried)
