"""Helpers shared by the suites (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from mountcompat.choices import LOG
from mountcompat.errors import NoStrategyWorked
from mountcompat.mounttable import MountEntry, mount_at, read_mountinfo

# Names that mountinfo must escape and overlayfs options must escape: space, tab, newline,
# backslash, comma, colon.
AWKWARD_NAME = "sp ace,comma:colon\\back\ttab\nnl"


class Contract:
    """The behaviour every strategy of a feature must have, written once; a subclass per
    strategy sets ``strategy`` and becomes evidence for that (feature, strategy) cell."""

    feature: ClassVar[str]
    strategy: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "strategy" in cls.__dict__:
            cls.pytestmark = [pytest.mark.strategy(cls.feature, cls.strategy)]


def mounted_at(path: Path) -> MountEntry:
    """The mount on top at exactly ``path``, from mountinfo (read by the parser alone)."""
    entry = mount_at(read_mountinfo(), str(path))
    assert entry is not None, f"nothing mounted at {path!r} according to mountinfo"
    return entry


def not_mounted(path: Path) -> bool:
    return mount_at(read_mountinfo(), str(path)) is None


def used_strategies(feature: str, since: int) -> list[str]:
    return [r.strategy for r in LOG.since(since) if r.feature == feature and r.outcome == "used"]


def assert_default_choice(feature: str, since: int) -> str:
    """The library used exactly one strategy, and passed over the earlier ones only because
    the kernel said "not here" (recorded unsupported or skipped), never after a failure."""
    records = [r for r in LOG.since(since) if r.feature == feature]
    used = [r for r in records if r.outcome == "used"]
    assert len(used) >= 1, f"no strategy of {feature} recorded as used: {records}"
    first_used = records.index(used[0])
    before = records[:first_used]
    assert all(r.outcome in ("unsupported", "skipped") for r in before), before
    return used[0].strategy


@contextlib.contextmanager
def unless_nothing_works(feature: str) -> Iterator[None]:
    """For default-choice tests: a kernel where every strategy is unsupported (each refusal
    recorded as such, none a failure) skips the test, saying so, rather than failing it."""
    try:
        yield
    except NoStrategyWorked as exc:
        assert exc.feature == feature
        records = LOG.records(feature)
        assert records and all(
            r.outcome in ("unsupported", "skipped") for r in records[-len(exc.attempts) :]
        ), records
        pytest.skip(f"no strategy of {feature} works on this kernel: {exc}")


def expect_errno(exc: BaseException, *errnos: int) -> None:
    assert isinstance(exc, OSError) and exc.errno in errnos, (
        f"expected {[errno.errorcode[e] for e in errnos]}, got {exc!r}"
    )


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def build_erofs(content: Path, image: Path) -> Path:
    subprocess.run(
        ["mkfs.erofs", "--quiet", str(image), str(content)], check=True, capture_output=True
    )
    return image


def build_squashfs(content: Path, image: Path) -> Path:
    subprocess.run(
        ["mksquashfs", str(content), str(image), "-quiet", "-noappend", "-no-progress"],
        check=True,
        capture_output=True,
    )
    return image


def require_tool(name: str) -> None:
    """A tool the test needs. Where the run must be complete (the matrix's guests, the host
    column: MOUNTCOMPAT_REQUIRE_TOOLS is set) a missing one fails the test, rather than skip
    the check that, say, tells create from create-excl while the cell still says works."""
    if shutil.which(name) is None:
        if os.environ.get("MOUNTCOMPAT_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is not installed, and this run must have it")
        pytest.skip(f"{name} is not installed (nox -s tests installs it)")
