"""Real guests that panic, hang or are interrupted: each gets its own status, with console
evidence, the others still complete, and no qemu or virtiofsd is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.config import DebianSource, KernelSpec
from harness.fetch.download import TRANSFERS
from harness.fetch.kernels import Fetcher, KernelTree, default_cache

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
SMALL_SUITE = ["-k", "test_plain_path or test_tmpfs_is_mounted"]


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    """Debian's 5.10 cloud kernel through the harness's own fetcher (cached after once)."""
    spec = KernelSpec("fetch", "", DebianSource("bullseye", "linux-image-5.10.0-*-cloud-amd64"))
    return Fetcher(cache=default_cache()).fetch(spec)


def test_a_second_fetch_downloads_nothing(kernel: KernelTree) -> None:
    from harness.fetch import archive as debian_archive

    debian_archive._LOADED.clear()  # as a new run would: the index comes from the disk cache
    before = TRANSFERS.bytes
    spec = KernelSpec("fetch", "", DebianSource("bullseye", "linux-image-5.10.0-*-cloud-amd64"))
    again = Fetcher(cache=default_cache()).fetch(spec)
    assert again.vmlinuz == kernel.vmlinuz
    assert TRANSFERS.bytes == before
    assert all(len(p["sha256"]) == 64 for p in again.packages)


def write_config(path: Path, kernel: KernelTree, tag: str, entries: dict[str, str]) -> None:
    lines = ["kernels:"]
    for name, extra in entries.items():
        lines += [
            f"  - name: {name}-{tag}",
            f"    note: {name}",
            "    source:",
            f"      local: {{vmlinuz: {kernel.vmlinuz}, modules: {kernel.modules}}}",
        ]
        lines += [f"    {line}" for line in extra.splitlines() if line]
    path.write_text("\n".join(lines) + "\n")


def our_processes(tag: str) -> list[str]:
    """qemu, virtiofsd or vng processes of this test's guests still alive."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag in text and "pytest" not in text:
            found.append(text[:200])
    return found


def harness(config: Path, results: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "--config",
            str(config),
            "--results",
            str(results),
            "--allow-surprises",
            *extra,
            "--",
            *SMALL_SUITE,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(results: Path, name: str) -> dict[str, object]:
    return dict(json.loads((results / name / "kernel.json").read_text()))


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
    assert our_processes(tag) == []
    matrix = json.loads((results / "matrix.json").read_text())
    assert {k["name"]: k["status"] for k in matrix["kernels"]} == {
        f"good-{tag}": "ok",
        f"panics-{tag}": "panic",
        f"hangs-{tag}": "timeout",
    }


def test_interrupt_stops_everything_and_keeps_results(tmp_path: Path, kernel: KernelTree) -> None:
    tag = uuid.uuid4().hex[:8]
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    write_config(config, kernel, tag, {"first": "", "second": ""})
    proc = harness(config, results, "--jobs", "1")
    deadline = time.monotonic() + 300
    while not our_processes(f"first-{tag}") and time.monotonic() < deadline:
        time.sleep(0.2)
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
