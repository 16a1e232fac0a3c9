"""Real guests that panic, hang or are interrupted: each gets its own status, with console
evidence, the others still complete, and no qemu or virtiofsd is left behind."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from guests import (
    BULLSEYE,
    fetch_kernel,
    harness,
    our_processes,
    status,
    tagged_config,
    wait_for_guest,
    write_config,
)

from harness.config import KernelSpec
from harness.fetch.download import TRANSFERS
from harness.fetch.kernels import Fetcher, KernelTree, default_cache

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel()


def test_a_second_fetch_downloads_nothing(kernel: KernelTree) -> None:
    from harness.fetch import archive as debian_archive

    debian_archive._LOADED.clear()  # as a new run would: the index comes from the disk cache
    before = TRANSFERS.bytes
    spec = KernelSpec("fetch", "", BULLSEYE)
    again = Fetcher(cache=default_cache()).fetch(spec)
    assert again.vmlinuz == kernel.vmlinuz
    assert TRANSFERS.bytes == before
    assert all(len(p["sha256"]) == 64 for p in again.packages)


def test_panic_and_timeout_do_not_stop_the_others(tmp_path: Path, kernel: KernelTree) -> None:
    tag = uuid.uuid4().hex[:8]
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    write_config(
        config,
        kernel,
        tag,
        {
            "good": "",
            "panics": "append: rdinit=/nonexistent",  # no init: the kernel panics at boot
            "hangs": "timeout: 2",  # no guest boots in 2 s under any accelerator
        },
    )
    proc = harness(config, results, "--jobs", "2")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1, out  # some kernels did not complete
    good, panics, hangs = (status(results, f"{n}-{tag}") for n in ("good", "panics", "hangs"))
    assert good["status"] == "ok", good
    assert (results / f"good-{tag}" / "outcomes.json").exists()
    assert panics["status"] == "panic"
    assert any("Kernel panic" in line for line in panics["evidence"])  # type: ignore[attr-defined]
    assert hangs["status"] == "timeout" and "2 s" in str(hangs["detail"])
    assert "Kernel panic" in (results / f"panics-{tag}" / "console.log").read_text()
    # A panic before the guest's command started may be the emulation's timing on a busy
    # host: booted once more, and the first console kept beside the second. (Where KVM ran
    # the probe and not this guest, that attempt comes first and is no retry of the kernel's.)
    tries = [a for a in panics["attempts"] if not a.get("accel_failure")]  # type: ignore[attr-defined]
    assert [a["status"] for a in tries] == ["panic"], panics
    kept = results / f"panics-{tag}" / f"console-attempt{tries[0]['attempt']}.log"
    assert "Kernel panic" in kept.read_text()
    assert our_processes(tag) == []
    matrix = json.loads((results / "matrix.json").read_text())
    assert {k["name"]: k["status"] for k in matrix["kernels"]} == {
        f"good-{tag}": "ok",
        f"panics-{tag}": "panic",
        f"hangs-{tag}": "timeout",
    }


def test_interrupt_stops_everything_and_keeps_results(tmp_path: Path, kernel: KernelTree) -> None:
    tag, config, results = tagged_config(tmp_path, kernel, {"first": "", "second": ""})
    proc = harness(config, results, "--jobs", "1")
    wait_for_guest(f"first-{tag}", proc)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert status(results, f"first-{tag}")["status"] == "interrupted"
    assert status(results, f"second-{tag}")["status"] == "interrupted"
    assert (results / "run.json").exists() and (results / "report.html").exists()
    assert our_processes(tag) == []
    assert os.path.exists(results / f"first-{tag}" / "console.log")


def test_local_deb_files_are_a_source(kernel: KernelTree, tmp_path: Path) -> None:
    """The `deb` source: the same package, given as a file, gives the same kernel."""
    from harness.config import DebFilesSource

    debs = sorted((default_cache() / "debs").glob("linux-image-5.10.0-*-cloud-amd64_*.deb"))
    assert debs, "the kernel fixture caches the package"
    spec = KernelSpec("local-deb", "", DebFilesSource(files=(debs[-1],)))
    tree = Fetcher(cache=tmp_path).fetch(spec)
    assert tree.release == kernel.release
    assert tree.vmlinuz.read_bytes() == kernel.vmlinuz.read_bytes()
    assert tree.packages[0]["sha256"] == kernel.packages[0]["sha256"]
