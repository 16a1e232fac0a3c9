"""Imports every module that registers a feature, so that ``FEATURES`` is complete."""

from __future__ import annotations

from mountcompat import attrs, detached, images, listing, loop, mountapi, overlay, resolve
from mountcompat.strategy import FEATURES, Feature

# The order of the report's rows: from mounting at all, through images, to reading the table.
ORDER = (
    "mount.api",
    "fs.create",
    "overlay.layers",
    "erofs.source",
    "loop.attach",
    "mount.detached",
    "mount.attr",
    "tree.attr",
    "mounts.list",
    "path.resolve",
)


def ordered() -> list[Feature[object]]:
    rest = [f for f in FEATURES if f not in ORDER]
    return [FEATURES[f] for f in (*ORDER, *rest) if f in FEATURES]


__all__ = [
    "FEATURES",
    "ORDER",
    "attrs",
    "detached",
    "images",
    "listing",
    "loop",
    "mountapi",
    "ordered",
    "overlay",
    "resolve",
]
