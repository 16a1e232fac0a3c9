"""Scratch mounts are private: a peer mount namespace never sees them.

The ``tmpdir`` clone of a detached mount and the overlay probes mount for a moment under
``mkdtemp()``. Here that directory is on a shared mount whose peer is another process's mount
namespace (a container's view, say). At the moment each scratch mount exists, the peer's
mount table (and this process's own) must not show it."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat import detached, overlay
from mountcompat.mountapi import open_fs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts")


def mountpoints(pid: int | str, under: Path) -> list[str]:
    points = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(f"{under}/"):
            points.append(point)
    return points


@pytest.fixture
def shared_with_peer(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A tmpfs made shared, and a process in a mount namespace of its own whose copy of it is
    a peer: what is mounted under it here appears there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    sys_.mount("scratch-shared", shared, "tmpfs", 0, "size=4m")
    peer = None
    try:
        sys_.mount(None, shared, None, C.MS_SHARED)
        peer = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "unchanged", "--", "sleep", "120"]
        )
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{peer.pid}/ns/mnt") == ours:
            assert time.monotonic() < deadline, "the peer never entered its namespace"
            time.sleep(0.01)
        # The setup propagates: a mount made here under the shared tmpfs shows in the peer.
        control = shared / "control"
        control.mkdir()
        sys_.mount("control", control, "tmpfs", 0, "size=1m")
        assert str(control) in mountpoints(peer.pid, shared)
        sys_.umount2(control, 0)
        control.rmdir()
        yield shared, peer.pid
    finally:
        if peer is not None:
            peer.kill()
            peer.wait()
        sys_.umount2(shared, C.MNT_DETACH)


def spy_on(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    look: Callable[[], None],
    when: Callable[..., bool] = lambda *a: True,
) -> None:
    real = getattr(sys_, name)

    def spy(*args: Any) -> Any:
        if when(*args):
            look()
        return real(*args)

    monkeypatch.setattr(sys_, name, spy)


class Views:
    """At each look: the scratch mounts under ``shared`` in the peer's namespace, in this
    process's (its main thread's, /proc/self), and in the calling thread's own (the helper's,
    /proc/thread-self), where they must be: that proves each look came while one existed."""

    def __init__(self, shared: Path, peer: int) -> None:
        self.shared, self.peer = shared, peer
        self.seen: list[tuple[list[str], list[str], int]] = []

    def look(self) -> None:
        self.seen.append(
            (
                mountpoints(self.peer, self.shared),
                mountpoints("self", self.shared),
                len(mountpoints("thread-self", self.shared)),
            )
        )


def test_the_tmpdir_clone_is_never_seen_by_a_peer(
    shared_with_peer: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, peer = shared_with_peer
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    views = Views(shared, peer)
    # The clone of the scratch directory, while the source is attached there. A library that
    # took another way under this name (a direct clone of the fd) never makes it.
    spy_on(monkeypatch, "open_tree", views.look, lambda _fd, path, *a: str(shared) in str(path))
    with (
        open_fs("tmpfs", "source") as source,
        detached.clone_detached(source, force="tmpdir") as clone,
    ):
        assert clone.fileno() >= 0
    assert views.seen, "the tmpdir way never ran"
    assert views.seen == [([], [], 1)], f"seen (peer, here, by the helper): {views.seen}"
    assert [p.name for p in shared.iterdir()] == []


def test_the_overlay_probes_scratch_is_never_seen_by_a_peer(
    shared_with_peer: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, peer = shared_with_peer
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    views = Views(shared, peer)
    # fsopen("overlay") and mount(..., "overlay") run while the scratch tmpfs is mounted.
    spy_on(monkeypatch, "fsopen", views.look, lambda fstype, *a: fstype == "overlay")
    spy_on(monkeypatch, "mount", views.look, lambda _s, _t, fstype=None, *a: fstype == "overlay")
    overlay._context_works(overlay._fill_lowerdir_string, data=False, comma=False)
    overlay._mount2_works(data=False, comma=False)
    assert views.seen == [([], [], 1), ([], [], 1)], f"seen: {views.seen}"
    assert [p.name for p in shared.iterdir()] == []
