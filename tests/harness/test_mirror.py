"""The Debian mirror comes from the host's apt sources, never from the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import FetchError
from harness.fetch.mirror import (
    debian_mirror,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_mirror,
)

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


def test_no_mirror_says_how_to_name_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOUNTCOMPAT_DEBIAN_MIRROR", raising=False)
    with pytest.raises(FetchError, match="MOUNTCOMPAT_DEBIAN_MIRROR"):
        debian_mirror(None, tmp_path)
