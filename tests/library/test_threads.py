"""A program that embeds the library moves one thread into a mount namespace of its own
(``private_mount_namespace`` acts on the calling thread only): every reader of the mount table
must then answer for that thread's namespace, not the main thread's."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from mountcompat import _syscalls as sys_
from mountcompat.attrs import set_mount_attrs
from mountcompat.listing import find_mount, list_mounts, mount_id_of
from mountcompat.mounts import MountAttr, private_mount_namespace
from mountcompat.mounttable import mount_at, read_mountinfo


def in_a_thread_of_its_own_namespace(work: Any) -> dict[str, Any]:
    """Run ``work(base)`` in a new thread that unshared its mount namespace, with a tmpfs
    mounted on ``base`` there only; the thread's namespace (and the mount) go with it."""
    found: dict[str, Any] = {}

    def thread() -> None:
        try:
            private_mount_namespace()
            base = tempfile.mkdtemp(prefix="mountcompat-thread.")
            sys_.mount("mc-thread", base, "tmpfs", 0, "size=1m")
            try:
                found.update(work(base))
            finally:
                sys_.umount2(base, 2)
                os.rmdir(base)
        except BaseException as exc:  # handed to the test's thread
            found["error"] = exc

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    if "error" in found:
        raise found["error"]
    return found


def test_every_reader_answers_for_the_threads_namespace() -> None:
    def readers(base: str) -> dict[str, Any]:
        answers: dict[str, Any] = {
            "find_mount": find_mount(base),
            "read_mountinfo": mount_at(read_mountinfo(), base),
            "mountinfo strategy": [
                e for e in list_mounts(force="mountinfo") if e.mountpoint == base
            ],
            "statmount strategy": [e for e in list_mounts() if e.mountpoint == base],
            "mount_id_of": mount_id_of(base),
        }
        # remount reads the table to find the mount: the main thread's has none there.
        set_mount_attrs(base, MountAttr.RDONLY, force="remount")
        answers["remounted"] = mount_at(read_mountinfo(), base)
        return answers

    found = in_a_thread_of_its_own_namespace(readers)
    assert found["find_mount"] is not None and found["find_mount"].source == "mc-thread"
    assert found["read_mountinfo"] is not None
    assert found["read_mountinfo"].mount_id == found["mount_id_of"]
    assert [e.source for e in found["mountinfo strategy"]] == ["mc-thread"]
    assert [e.source for e in found["statmount strategy"]] == ["mc-thread"]
    assert found["remounted"].readonly
    # The main thread's namespace never had it.
    assert not any(e.source == "mc-thread" for e in read_mountinfo())


def test_the_main_threads_table_stays_its_own() -> None:
    """The other way round: the main thread's reads are not the worker's."""
    seen = in_a_thread_of_its_own_namespace(lambda base: {"base": base})
    assert mount_at(read_mountinfo(), seen["base"]) is None
    assert not Path(seen["base"]).exists()
