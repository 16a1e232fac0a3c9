"""The private QEMU (harness/host/qemu.py): Debian trixie's emulator and the libraries it needs,
made by the harness's own code from the host's Debian mirror, run through its own loader with
its own firmware; and the host's QEMU where no copy can be made or none is wanted.

The copy is made once in the harness's cache (the matrix uses it too); a test that moves it
checks that the wrapper finds everything from its own place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import HarnessError
from harness.fetch.kernels import default_cache
from harness.host.accel import BOOT_SECTOR, _run_probe
from harness.host.guestroot import host_arch
from harness.host.prereqs import distro_family, os_release
from harness.host.qemu import ensure_qemu, private_copy, version_of

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    host_arch() != "x86_64" or distro_family(os_release()) != "debian",
    reason="the private copy is made for x86_64 Debian hosts",
)


def mirror() -> str | None:
    return load_config(REPO / "kernels.yaml").mirror


def test_the_copy_boots_a_guest_from_another_place(tmp_path: Path) -> None:
    """Real guest code (the accelerator probe's boot sector) under the copy's own SeaBIOS,
    after the copy was moved: nothing of it is looked up at the path it was made under."""
    made = private_copy(default_cache(), mirror(), ["x86_64"], lambda line: None)
    assert made.origin.startswith("private trixie") and set(made.copies) == {"x86_64"}
    assert version_of(made.versions["x86_64"]) >= (10, 0)  # type: ignore[operator]
    moved = tmp_path / "elsewhere"
    shutil.copytree(made.copies["x86_64"].parent, moved, symlinks=True)
    # Nothing in the wrapper names where the copy was made (the original stays in place, so
    # a wrapper naming it would still run).
    assert str(made.copies["x86_64"].parent) not in (moved / "bin/qemu-system-x86_64").read_text()
    image = tmp_path / "boot.img"
    image.write_bytes(BOOT_SECTOR)
    ran, why = _run_probe(image, kvm=False, timeout=120, qemu=str(moved / "bin/qemu-system-x86_64"))
    assert ran, why
    names = {p["name"] for p in made.packages}
    assert {"qemu-system-x86", "seabios", "libc6", "libglib2.0-0t64"} <= names


@pytest.mark.timeout(180)  # the download retries a refused connection, with backoff
def test_no_copy_where_none_can_be_made_and_the_host_qemu_is_said(tmp_path: Path) -> None:
    """A mirror out of reach and no copy in the cache: auto runs the host's QEMU and says
    why; --qemu private stops, as asked."""
    said: list[str] = []
    unreachable = "http://127.0.0.1:9/debian"
    qemu = ensure_qemu(tmp_path / "cache", unreachable, "auto", ["x86_64"], said.append)
    assert qemu.origin == "host" and qemu.copies == {}
    assert qemu.reason.startswith("no private copy: ") and "127.0.0.1:9" in qemu.reason
    assert version_of(qemu.host_versions["x86_64"]) is not None, qemu.host_versions
    with pytest.raises(HarnessError):
        ensure_qemu(tmp_path / "cache", unreachable, "private", ["x86_64"], said.append)


def test_host_is_the_hosts_own(tmp_path: Path) -> None:
    qemu = ensure_qemu(tmp_path / "cache", "http://127.0.0.1:9/debian", "host", ["x86_64"], print)
    assert (qemu.origin, qemu.copies, qemu.reason) == ("host", {}, "--qemu host")


def test_the_copy_is_for_guests_under_tcg(tmp_path: Path) -> None:
    """A KVM guest runs under the host's QEMU: KVM's failure on such a guest is seen as
    QEMU 7.2 says it (harness/boot/process.py), where trixie's QEMU hangs silently (seen on
    this machine: a microvm guest stuck at "Probing EDD" for the 300 s boot timeout)."""
    made = private_copy(default_cache(), mirror(), ["x86_64"], lambda line: None)
    assert made.bin_dir("x86_64", "tcg") == made.copies["x86_64"]
    assert made.bin_dir("x86_64", "kvm") is None
    assert made.line("x86_64", "kvm").startswith("QEMU emulator version")
    assert "copy" not in made.line("x86_64", "kvm") and "copy" in made.line("x86_64", "tcg")


def test_a_damaged_copy_is_made_again(tmp_path: Path) -> None:
    """A cached copy whose emulator no longer runs (a truncated file, a disk that lost
    blocks) is made once more, not given up on in every later run."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for part in ("indexes", "debs"):  # the shared cache's downloads, linked: nothing fetched
        if (default_cache() / part).exists():
            shutil.copytree(default_cache() / part, cache / part, copy_function=os.link)
    made = private_copy(cache, mirror(), ["x86_64"], lambda line: None)
    binary = made.copies["x86_64"].parent / "usr/bin/qemu-system-x86_64"
    binary.unlink()
    binary.write_bytes(b"\x7fELF damaged")
    said: list[str] = []
    again = private_copy(cache, mirror(), ["x86_64"], said.append)
    assert version_of(again.versions["x86_64"]) == version_of(made.versions["x86_64"])
    assert any("fetching a private QEMU" in line for line in said), said
