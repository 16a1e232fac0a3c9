"""Overlay option strings: escaping, and the one-page limit said before the kernel."""

from __future__ import annotations

from pathlib import Path

from mountcompat.overlay import OverlaySpec, data_string, escape_layer, lowerdir_value


def test_escaping_of_backslash_comma_colon() -> None:
    assert escape_layer("/a\\b,c:d e") == "/a\\\\b\\,c\\:d e"


def test_lowerdir_with_data_layers() -> None:
    spec = OverlaySpec(lower=(Path("/l1"), Path("/l:2")), data=(Path("/d"),))
    assert lowerdir_value(spec) == "/l1:/l\\:2::/d"


def test_data_string_with_upper_and_options() -> None:
    spec = OverlaySpec(
        lower=(Path("/l"),),
        upper=Path("/u,1"),
        work=Path("/w"),
        options={"redirect_dir": "on", "userxattr": None},
    )
    assert data_string(spec) == "lowerdir=/l,upperdir=/u\\,1,workdir=/w,redirect_dir=on,userxattr"
