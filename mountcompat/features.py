"""Imports every module that registers a feature, so that ``FEATURES`` is complete."""

from __future__ import annotations

from mountcompat import attrs, detached, images, listing, loop, mountapi, overlay, resolve
from mountcompat.strategy import FEATURES

__all__ = ["FEATURES", "attrs", "detached", "images", "listing", "loop", "mountapi", "overlay",
           "resolve"]
