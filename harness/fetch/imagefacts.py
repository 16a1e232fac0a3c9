"""Traces a feature leaves in a kernel's own files: strings in its image and in its modules.

Some features add neither a syscall (kallsyms) nor a config option, but they do add text: a
parameter name that overlayfs's parser matches (``lowerdir+``), a message the VFS logs
(``reusing existing filesystem not allowed``, FSCONFIG_CMD_CREATE_EXCL's refusal). Their
presence in the files that boot is evidence of the feature, backports included, where a
version number is only a guess. Expectations name them (``image_string``, ``module_string``);
they are looked for here, on the host, in the fetched tree, and written as strings.json.

The image is decompressed from the compressed payload inside vmlinuz: zstd and LZ4 (x86_64
Debian kernels) with their command-line tools, gzip and xz (arm64's Image.gz) with Python's.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# What the expectations may ask for, by where it is looked for: "image" or a module's name.
KNOWN = {
    "image": ("reusing existing filesystem not allowed",),
    "overlay": ("lowerdir+", "datadir+"),
}
MODULE_PATHS = {"overlay": "kernel/fs/overlayfs/overlay.ko"}
# Text every version has, where the strings are looked for: without it the file was not read
# as it should be (a payload not decompressed), and an absent string would prove nothing.
CONTROL = {"image": b"Linux version ", "overlay": b"lowerdir\0"}
SMALLEST_IMAGE = 1 << 20  # a decompressed payload smaller than this was a false magic


def _tool(name: str, *args: str) -> Callable[[bytes], bytes]:
    def decompress(data: bytes) -> bytes:
        if shutil.which(name) is None:
            raise OSError(f"{name} is not installed")
        # Trailing bytes after the payload make the tools complain after writing it whole.
        done = subprocess.run([name, *args], input=data, capture_output=True, check=False)
        return done.stdout

    return decompress


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor().decompress(data)


PAYLOADS: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
    (b"\x28\xb5\x2f\xfd", _tool("zstd", "-dc", "--no-progress")),
    (b"\x02\x21\x4c\x18", _tool("lz4", "-dc")),
    (b"\x1f\x8b\x08", _gzip),
    (b"\xfd7zXZ\x00", _xz),
)


def image_text(vmlinuz: Path) -> bytes:
    """The kernel image decompressed (or as it is, when it is not compressed)."""
    data = vmlinuz.read_bytes()
    for magic, decompress in PAYLOADS:
        start = data.find(magic)
        while start >= 0:
            try:
                text = decompress(data[start:])
            except (OSError, EOFError, lzma.LZMAError, zlib.error):
                text = b""
            if len(text) >= SMALLEST_IMAGE:
                return text
            start = data.find(magic, start + 1)
    return data


def module_text(modules: Path, name: str) -> bytes | None:
    """A module's file, decompressed (.ko, .ko.xz, .ko.gz, .ko.zst); None when it is not
    there (built in, or absent)."""
    base = modules / MODULE_PATHS[name]
    for suffix, read in (
        ("", Path.read_bytes),
        (".xz", lambda p: lzma.decompress(p.read_bytes())),
        (".gz", lambda p: gzip.decompress(p.read_bytes())),
        (".zst", lambda p: _tool("zstd", "-dc")(p.read_bytes())),
    ):
        path = base.with_name(base.name + suffix)
        if path.exists():
            return bytes(read(path))
    return None


def find_strings(vmlinuz: Path, modules: Path, wanted: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """{where: {string: present}}, and ``errors`` naming what could not be read (those
    strings are then absent from the answer: unknown, never "missing"). Each file is read
    and decompressed once, the image too when a module is built into it."""
    found: dict[str, Any] = {"errors": []}
    texts: dict[str, bytes | None] = {}

    def text_of(where: str) -> bytes | None:
        if where not in texts:
            try:
                text = image_text(vmlinuz) if where == "image" else module_text(modules, where)
                if text is None:  # not a module here: built into the image, or not built
                    text = text_of("image")
            except OSError as exc:
                found["errors"].append(f"{where}: {exc}")
                text = None
            control = CONTROL.get(where, CONTROL["image"])
            if text is not None and control not in text:
                found["errors"].append(f"{where}: no {control!r} in it: not read whole")
                text = None
            texts[where] = text
        return texts[where]

    for where, string in wanted:
        text = text_of(where)
        if text is not None:
            found.setdefault(where, {})[string] = string.encode() + b"\0" in text
    return found


def all_known() -> list[tuple[str, str]]:
    return [(where, s) for where, strings in KNOWN.items() for s in strings]
