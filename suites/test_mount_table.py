"""mounts.list: the library's table against util-linux's findmnt on the same namespace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import AWKWARD_NAME, Contract, assert_default_choice, require_tool

from mountcompat import MountAttr, list_mounts, mount_fs
from mountcompat.choices import LOG
from mountcompat.errors import StrategyUnsupported
from mountcompat.mounttable import MountEntry, build_tree, read_mountinfo, walk

COMPARED_ATTRS = (
    MountAttr.RDONLY | MountAttr.NOSUID | MountAttr.NODEV | MountAttr.NOEXEC | MountAttr.NOSYMFOLLOW
)


def findmnt() -> list[dict[str, str]]:
    require_tool("findmnt")
    out = subprocess.run(
        ["findmnt", "--json", "--list", "--output", "ID,PARENT,TARGET,SOURCE,FSTYPE,VFS-OPTIONS"],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout)["filesystems"])


def opts_attrs(words: str) -> MountAttr:
    from mountcompat.mounts import attrs_from_options

    return attrs_from_options(tuple(words.split(",")))


def agree(entries: list[MountEntry], oracle: list[dict[str, str]]) -> None:
    ours = {e.mount_id: e for e in entries}
    theirs = {int(f["id"]): f for f in oracle}
    assert set(ours) == set(theirs)
    for mount_id, f in theirs.items():
        e = ours[mount_id]
        assert e.mountpoint == f["target"], (e, f)
        assert e.fstype == f["fstype"], (e, f)
        assert e.parent_id == int(f["parent"]), (e, f)
        assert e.attrs & COMPARED_ATTRS == opts_attrs(f["vfs-options"]) & COMPARED_ATTRS, (e, f)
        if e.source is not None and f["source"] and "[" not in f["source"]:
            assert e.source == f["source"], (e, f)


class MountsListContract(Contract):
    feature = "mounts.list"

    def test_agrees_with_findmnt_including_escaped_names(self, workdir: Path) -> None:
        names = [AWKWARD_NAME, "plain", "with space", "back\\slash"]
        mounted = []
        for i, name in enumerate(names):
            target = workdir / name
            target.mkdir()
            mounted.append(
                mount_fs(
                    "tmpfs",
                    f"mc-table-{i}",
                    target,
                    attrs=MountAttr.NOEXEC if i % 2 else MountAttr.none(),
                    force="mount2",
                )
            )
        try:
            entries = list_mounts(force=self.strategy)
            agree(entries, findmnt())
            points = {e.mountpoint for e in entries}
            assert all(str(workdir / n) in points for n in names)
        finally:
            for m in reversed(mounted):
                m.close()

    def test_tree_has_one_root_and_every_mount(self) -> None:
        entries = list_mounts(force=self.strategy)
        roots = build_tree(entries)
        assert len(roots) == 1 and roots[0].entry.mountpoint == "/"
        assert sorted(e.mount_id for e in walk(roots)) == sorted(e.mount_id for e in entries)


class TestStatmount(MountsListContract):
    strategy = "statmount"


class TestMountinfo(MountsListContract):
    strategy = "mountinfo"


@pytest.mark.default_choice("mounts.list")
def test_mounts_list_default() -> None:
    since = LOG.mark()
    assert list_mounts()
    assert_default_choice("mounts.list", since)


def test_statmount_and_mountinfo_give_the_same_entries() -> None:
    """Same entry type whatever the source: ids, points, types, parents agree."""
    try:
        from_statmount = list_mounts(force="statmount")
    except StrategyUnsupported as exc:  # absent before 6.8: nothing to compare
        pytest.skip(f"statmount unavailable: {exc}")
    from_mountinfo = read_mountinfo()
    key = lambda e: (e.mount_id, e.parent_id, e.mountpoint, e.fstype, e.root)  # noqa: E731
    assert sorted(map(key, from_statmount)) == sorted(map(key, from_mountinfo))
