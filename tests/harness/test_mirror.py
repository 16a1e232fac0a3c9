"""The Debian mirror comes from the host's apt sources, never from the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import FetchError, PrerequisiteError
from harness.fetch.mirror import (
    Debootstrap,
    debian_mirror,
    debootstrap_default,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_mirror,
)
from harness.host.prereqs import Tool, ensure_tools

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""
ONE_LINE = """\
# comment
deb [arch=amd64 signed-by=/k.gpg] https://other.example/debian trixie main
deb-src http://src.example/debian trixie main
deb http://vendor.example/apt cloud-sdk main
"""


def test_deb822() -> None:
    sources = list(parse_deb822_sources(DEB822))
    assert pick_debian_mirror(sources) == "http://mirror.example/debian"


def test_one_line_with_options() -> None:
    sources = list(parse_one_line_sources(ONE_LINE))
    assert [s.uri for s in sources] == ["https://other.example/debian", "http://vendor.example/apt"]
    assert pick_debian_mirror(sources) == "https://other.example/debian"


def test_security_and_vendor_archives_are_not_picked() -> None:
    sources = [s for s in parse_deb822_sources(DEB822) if "security" in s.uri]
    assert pick_debian_mirror(sources) is None


def test_order_of_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    monkeypatch.delenv("MOUNTCOMPAT_DEBIAN_MIRROR", raising=False)
    assert debian_mirror(None, tmp_path) == "http://mirror.example/debian"
    assert debian_mirror("http://configured.example/d/", tmp_path) == "http://configured.example/d"
    monkeypatch.setenv("MOUNTCOMPAT_DEBIAN_MIRROR", "http://env.example/d")
    assert debian_mirror("http://configured.example/d", tmp_path) == "http://env.example/d"


# What a GitHub-hosted Ubuntu runner's apt sources look like: Ubuntu archives only (the host is a
# placeholder: the runner's real one is named nowhere here).
UBUNTU_SOURCES = """\
Types: deb
URIs: http://ubuntu-archive.example/ubuntu/
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse
"""


def fake_debootstrap(root: Path, suite_script: str = "mirror_style release\n") -> Debootstrap:
    """debootstrap's files as its package lays them out: bookworm a link to sid's script."""
    scripts = root / "usr/share/debootstrap/scripts"
    scripts.mkdir(parents=True)
    (scripts / "sid").write_text(suite_script)
    (scripts / "bookworm").symlink_to("sid")
    program = root / "usr/sbin/debootstrap"
    program.parent.mkdir(parents=True)
    program.write_text('#!/bin/sh\nset -e\nDEF_MIRROR="http://default.example/debian/"\n')
    return Debootstrap(scripts=scripts, program=program)


def ubuntu_etc_apt(root: Path) -> Path:
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/apt/sources.list.d/ubuntu.sources").write_text(UBUNTU_SOURCES)
    return root / "etc/apt"


def test_a_runner_with_only_ubuntu_sources_takes_debootstraps_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOUNTCOMPAT_DEBIAN_MIRROR", raising=False)
    etc_apt = ubuntu_etc_apt(tmp_path)
    where = fake_debootstrap(tmp_path)
    assert debian_mirror(None, etc_apt, where) == "http://default.example/debian"
    # The apt sources and kernels.yaml still come first.
    assert debian_mirror("http://configured.example/d", etc_apt, where) == (
        "http://configured.example/d"
    )


def test_a_suites_own_default_mirror_wins_over_debootstraps(tmp_path: Path) -> None:
    where = fake_debootstrap(tmp_path, "default_mirror http://suite.example/debian\n")
    assert debootstrap_default("bookworm", where) == "http://suite.example/debian"
    # One that depends on the architecture is not taken for the suite's.
    (where.scripts / "sid").write_text(
        'case "$ARCH" in\n  amd64)\n    default_mirror http://amd64.example/d\n    ;;\nesac\n'
    )
    assert debootstrap_default("bookworm", where) == "http://default.example/debian"
    assert debootstrap_default("no-such-suite", where) is None


def test_the_hosts_debootstrap_names_a_debian_archive() -> None:
    """The real package's files parse: the default for bookworm is an archive with a Release."""
    where = Debootstrap()
    if not where.program.exists():
        pytest.skip("debootstrap is not installed on this host")
    mirror = debootstrap_default("bookworm", where)
    assert mirror is not None and mirror.startswith(("http://", "https://"))
    assert mirror.endswith("/debian")


def test_no_mirror_says_how_to_name_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOUNTCOMPAT_DEBIAN_MIRROR", raising=False)
    monkeypatch.setenv("MOUNTCOMPAT_NO_INSTALL", "1")
    nowhere = Debootstrap(scripts=tmp_path / "none", program=tmp_path / "none/debootstrap")
    with pytest.raises(FetchError, match=r"no Debian mirror found.*MOUNTCOMPAT_DEBIAN_MIRROR"):
        debian_mirror(None, ubuntu_etc_apt(tmp_path), nowhere)


def test_an_optional_tool_that_cannot_be_had_is_said_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner without Debian's keyring still runs (unverified, and the report says so)."""
    monkeypatch.setenv("MOUNTCOMPAT_NO_INSTALL", "1")
    keyring = Tool(
        str(tmp_path / "no-keyring.gpg"),
        "verifies signatures",
        "no-such-keyring",
        "x",
        "x",
        optional=True,
    )
    said: list[str] = []
    ensure_tools((keyring,), said.append)
    assert len(said) == 1 and "going on without" in said[0] and "no-such-keyring" in said[0]
    (tmp_path / "no-keyring.gpg").write_bytes(b"")
    said.clear()
    ensure_tools((keyring,), said.append)
    assert said == []
    with pytest.raises(PrerequisiteError, match="no-such-tool"):
        ensure_tools(
            (Tool(str(tmp_path / "no-such-tool"), "is needed", "p", "p", "p"),), said.append
        )
