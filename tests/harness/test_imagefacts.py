"""Strings in a kernel's own files: found in a compressed image and in a compressed module,
never reported missing when the file could not be read."""

from __future__ import annotations

import lzma
import os
import subprocess
from pathlib import Path

import pytest

from harness.fetch.imagefacts import find_strings
from harness.run.expectations import Expectations, KernelFacts

MESSAGE = "reusing existing filesystem not allowed"


def image_payload(with_message: bool) -> bytes:
    """Text like a kernel's (its banner, maybe the message), in a megabyte of noise."""
    body = b"Linux version 6.99.0 (test)\0" + (MESSAGE.encode() + b"\0" if with_message else b"")
    return os.urandom(1 << 20) + body + os.urandom(4096)


def vmlinuz(tmp_path: Path, tool: list[str], payload: bytes) -> Path:
    """A boot stub, then the payload compressed by ``tool`` (as a bzImage holds it)."""
    compressed = subprocess.run(tool, input=payload, capture_output=True, check=True).stdout
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ" + b"\0" * 510 + compressed + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "tool", [["zstd", "-c"], ["lz4", "-l", "-c"], ["gzip", "-c"], ["xz", "-c"]], ids=lambda t: t[0]
)
def test_a_message_in_a_compressed_image(tmp_path: Path, tool: list[str]) -> None:
    for present in (True, False):
        image = vmlinuz(tmp_path, tool, image_payload(present))
        found = find_strings(image, tmp_path, [("image", MESSAGE)])
        assert found["image"] == {MESSAGE: present}, found


def test_an_image_that_cannot_be_read_whole_answers_nothing(tmp_path: Path) -> None:
    """A payload the harness cannot decompress: the banner is not found, so the message's
    absence proves nothing: no answer, and the error says why."""
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"MZ" + os.urandom(1 << 16))
    found = find_strings(image, tmp_path, [("image", MESSAGE)])
    assert "image" not in found
    assert "not read whole" in found["errors"][0]


def test_a_parameter_name_in_a_compressed_module(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    module = modules / "kernel" / "fs" / "overlayfs" / "overlay.ko.xz"
    module.parent.mkdir(parents=True)
    module.write_bytes(lzma.compress(b"\x7fELF...lowerdir\0upperdir\0lowerdir+\0"))
    found = find_strings(
        tmp_path / "none", modules, [("overlay", "lowerdir+"), ("overlay", "datadir+")]
    )
    assert found["overlay"] == {"lowerdir+": True, "datadir+": False}


def test_expectations_rest_on_the_strings_found() -> None:
    expectations = Expectations(
        Path("expectations.yaml"),
        {"fs.create": {"create-excl": {"image_string": MESSAGE}}},
    )

    def facts(strings: dict | None) -> KernelFacts:
        return KernelFacts(release="6.99.0", strings=strings)

    assert (
        expectations.expected("fs.create", "create-excl", facts({"image": {MESSAGE: True}}))[0]
        == "works"
    )
    assert (
        expectations.expected("fs.create", "create-excl", facts({"image": {MESSAGE: False}}))[0]
        == "unsupported"
    )
    unknown, why = expectations.expected(
        "fs.create", "create-excl", facts({"errors": ["image: not read whole"]})
    )
    assert unknown == "unknown" and "not read whole" in why
    assert expectations.expected("fs.create", "create-excl", facts(None))[0] == "unknown"


def test_a_string_nobody_looks_for_is_refused_in_the_expectations(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.run.expectations import load_expectations

    path = tmp_path / "expectations.yaml"
    path.write_text("fs.create:\n  create-excl: {image_string: something else}\n")
    with pytest.raises(ConfigError, match="not looked for"):
        load_expectations(path)


def test_a_strategy_given_twice_in_the_expectations_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    """PyYAML keeps the last of two keys: the first condition would vanish silently."""
    from harness.errors import ConfigError
    from harness.run.expectations import load_expectations

    path = tmp_path / "expectations.yaml"
    path.write_text(
        "fs.create:\n  create-excl: {symbol: __x64_sys_fsopen}\n  mount2: {}\n  create-excl: {}\n"
    )
    with pytest.raises(
        ConfigError, match=r"line 4: key 'create-excl' given twice \(first on line 2\)"
    ):
        load_expectations(path)
