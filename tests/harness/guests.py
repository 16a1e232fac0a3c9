"""Shared by the tests that boot real guests: a cached kernel, configs, the harness as a
process, and a look for processes it may have left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from harness.config import DebianSource, KernelSpec
from harness.fetch.kernels import Fetcher, KernelTree, default_cache

REPO = Path(__file__).resolve().parents[2]
# Two quick tests, one of each kind of cell: enough for a kernel to be "ok" under a selection.
SMALL_SUITE = ["-k", "test_plain_path or test_tmpfs_is_mounted"]
BULLSEYE = DebianSource("bullseye", "linux-image-5.10.0-*-cloud-amd64")


def fetch_kernel() -> KernelTree:
    """Debian's 5.10 cloud kernel through the harness's own fetcher (cached after once)."""
    return Fetcher(cache=default_cache()).fetch(KernelSpec("fetch", "", BULLSEYE))


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


def tagged_config(
    tmp_path: Path, kernel: KernelTree, entries: dict[str, str]
) -> tuple[str, Path, Path]:
    """A tag of this test's own (its guests' names carry it), a kernels.yaml of ``entries``
    so named, and where its results go."""
    tag = uuid.uuid4().hex[:8]
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    write_config(config, kernel, tag, entries)
    return tag, config, results


def _is_vm_stack(argv: list[str]) -> bool:
    """qemu, virtiofsd (also run through its own loader) or vng."""
    names = [Path(a).name for a in argv[:3]]
    return (
        names[0].startswith("qemu-system")
        or any(n == "virtiofsd" or n.startswith("ld-linux") for n in names)
        or "vng" in names
    )


def _vm_stack_argv(tag: str) -> dict[int, list[str]]:
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0] and _is_vm_stack(argv) and tag in " ".join(argv):
            found[int(cmdline.parent.name)] = argv
    return found


def _vm_stack(tag: str) -> dict[int, str]:
    return {pid: " ".join(argv)[:300] for pid, argv in _vm_stack_argv(tag).items()}


def our_processes(tag: str) -> list[str]:
    """qemu, virtiofsd or vng processes of this test's guests still alive (their command
    lines name the guest, which carries the test's tag). Zombies have no command line."""
    return list(_vm_stack(tag).values())


def our_pids(tag: str) -> list[int]:
    return list(_vm_stack(tag))


def our_pids_and_lines(tag: str) -> list[tuple[int, str]]:
    return list(_vm_stack(tag).items())


def qemu_runs(tag: str) -> bool:
    """Whether a qemu of ``tag`` runs: the host's, or a private copy through its loader."""
    return any(
        word.endswith("/qemu-system-x86_64")
        for argv in _vm_stack_argv(tag).values()
        for word in argv[:5]
    )


def wait_for_guest(tag: str, proc: subprocess.Popen[str], seconds: float = 300) -> None:
    """Until a qemu of ``tag`` runs; fails at once, with its output, if ``proc`` ends."""
    deadline = time.monotonic() + seconds
    while not qemu_runs(tag):
        if proc.poll() is not None:
            raise AssertionError(f"ended before a guest started: {proc.communicate()[0]}")
        assert time.monotonic() < deadline, f"no guest of {tag} started"
        time.sleep(0.2)


def gone_within(tag: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := our_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def harness(
    config: Path,
    results: Path,
    *extra: str,
    pytest_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
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
            *(SMALL_SUITE if pytest_args is None else pytest_args),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def status(results: Path, name: str) -> dict[str, object]:
    return dict(json.loads((results / name / "kernel.json").read_text()))
