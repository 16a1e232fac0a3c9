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


def test_the_tmpdir_clone_is_never_seen_by_a_peer(
    shared_with_peer: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, peer = shared_with_peer
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    seen: list[tuple[list[str], list[str]]] = []
    # open_tree runs while the source is attached at its scratch directory.
    spy_on(
        monkeypatch,
        "open_tree",
        lambda: seen.append((mountpoints(peer, shared), mountpoints("self", shared))),
    )
    with (
        open_fs("tmpfs", "source") as source,
        detached.clone_detached(source, force="tmpdir") as clone,
    ):
        assert clone.fileno() >= 0
    assert seen, "the tmpdir way never ran"
    assert seen == [([], [])], f"the scratch mount was seen (peer, here): {seen}"
    assert [p.name for p in shared.iterdir()] == []


def test_the_overlay_probes_scratch_is_never_seen_by_a_peer(
    shared_with_peer: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, peer = shared_with_peer
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    seen: list[tuple[list[str], list[str]]] = []

    def look() -> None:
        seen.append((mountpoints(peer, shared), mountpoints("self", shared)))

    # fsopen("overlay") and mount(..., "overlay") run while the scratch tmpfs is mounted.
    spy_on(monkeypatch, "fsopen", look, lambda fstype, *a: fstype == "overlay")
    spy_on(monkeypatch, "mount", look, lambda _s, _t, fstype=None, *a: fstype == "overlay")
    overlay._context_works(overlay._fill_lowerdir_string, data=False, comma=False)
    overlay._mount2_works(data=False, comma=False)
    assert len(seen) == 2, "a probe never reached the kernel"
    assert seen == [([], []), ([], [])], f"a probe's scratch mount was seen: {seen}"
    assert [p.name for p in shared.iterdir()] == []
