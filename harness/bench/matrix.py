"""The matrix's own cost: for each kernel, side by side in one run, the floor (a bare
``vng --run <vmlinuz> --exec true``), the harness with an empty suite (everything but the
tests: boot, Python, modules, scratch disk, pytest's start, probe, collection of results) and
the full run; then the kernels one at a time against side by side (``--jobs``).

Run as ``python -m harness.bench --only matrix`` (or within ``nox -s bench``); the figures go
to results/bench.json under ``matrix`` and docs/performance.md has a table of a run. Each
harness run writes into its own temporary results directory: nothing of results/ changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.boot.vng import bare_boot_command, vng_environment
from harness.config import KernelSpec, load_config
from harness.fetch.kernels import Fetcher, default_cache
from harness.fetch.mirror import debian_mirror
from harness.host.accel import guest_accel, probe_accel
from harness.host.guestroot import ensure_root, host_arch, install_modules
from harness.host.qemu import ensure_qemu, tool_dirs
from harness.host.virtiofsd import ensure_virtiofsd

REPO = Path(__file__).resolve().parents[2]
NOTHING = ["-k", "no_test_has_this_name"]  # pytest then collects the suites and runs none


def bare_boot(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, check=False, timeout=600)
    return time.monotonic() - started


def harness(
    kernels: list[str], jobs: int, pytest_args: list[str], options: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One harness run (with ``options`` of its command line, a --config say): its wall
    time, per kernel its own wall and suite times, and every cell's outcome."""
    with tempfile.TemporaryDirectory(prefix="mountcompat-bench.") as results:
        command = [sys.executable, "-m", "harness", "--results", results, "--jobs", str(jobs)]
        command += options
        for name in kernels:
            command += ["--kernel", name]
        command += ["--allow-surprises", "--", *pytest_args]
        started = time.monotonic()
        subprocess.run(command, cwd=REPO, capture_output=True, check=False, timeout=3600)
        wall = time.monotonic() - started
        per_kernel = {}
        for name in kernels:
            try:
                info = json.loads((Path(results) / name / "kernel.json").read_text())
                guest = json.loads((Path(results) / name / "guest.json").read_text())
            except (OSError, ValueError):
                per_kernel[name] = {"status": "no results"}
                continue
            per_kernel[name] = {
                "status": info.get("status"),
                "wall_seconds": info.get("wall_seconds"),
                "suites_seconds": round(guest.get("suites_seconds", 0.0), 1),
            }
        cells = {}
        with contextlib.suppress(OSError, ValueError):
            matrix = json.loads((Path(results) / "matrix.json").read_text())
            cells = {
                f"{c['kernel']} {c['feature']}/{c['strategy']}": c["outcome"]
                for c in matrix["cells"]
            }
    return {"wall_seconds": round(wall, 1), "kernels": per_kernel, "cells": cells}


def say(message: str) -> None:
    print(message, file=sys.stderr)


def bare_boot_of(
    spec: KernelSpec, fetcher: Fetcher, mirror: str | None, env: dict[str, str], accel: str
) -> float:
    """Seconds of a bare boot of ``spec``'s kernel as the harness boots it (a guest of another
    architecture into its own root, under TCG)."""
    tree = fetcher.fetch(spec)
    root = None
    if spec.arch != host_arch():
        root = ensure_root(spec.arch, fetcher.cache, debian_mirror(mirror), say)
        install_modules(root, tree.modules, tree.release)
    command = bare_boot_command(
        tree.vmlinuz,
        accel if root is None else "tcg",
        spec.cpus,
        spec.tcg_cpu,
        spec.arch,
        root.path if root else None,
        spec.append,
        spec.qemu_opts,
    )
    return round(bare_boot(command, env), 1)


def run(jobs: int | None = None) -> dict[str, Any]:
    config = load_config(REPO / "kernels.yaml")
    jobs = jobs or os.cpu_count() or 1
    # A kernel behind a network this machine may not reach has no time to measure here.
    specs = [k for k in config.kernels if not k.needs_network]
    names = [k.name for k in specs]
    cache = default_cache()
    fetcher = Fetcher(cache=cache, mirror=config.mirror)
    vfsd = ensure_virtiofsd(cache, config.mirror, say)
    qemu = ensure_qemu(cache, config.mirror, "auto", {k.arch for k in specs}, say)
    accel = probe_accel().accel
    floors = {}
    with tempfile.TemporaryDirectory(prefix="mountcompat-bench.") as tmp:
        for spec in specs:
            guest = guest_accel(accel, spec.arch, host_arch())
            env = vng_environment(tool_dirs(qemu, vfsd, spec.arch, guest), Path(tmp))
            floors[spec.name] = bare_boot_of(spec, fetcher, config.mirror, env, accel)
            say(f"{spec.name}: bare boot {floors[spec.name]} s")
    sequential_empty = harness(names, 1, NOTHING)
    sequential_full = harness(names, 1, [])
    parallel_empty = harness(names, jobs, NOTHING)
    parallel_full = harness(names, jobs, [])
    kernels = {}
    for name in names:
        empty = sequential_empty["kernels"].get(name, {})
        full = sequential_full["kernels"].get(name, {})
        kernels[name] = {
            "bare_boot_seconds": floors[name],
            "empty_suite_seconds": empty.get("wall_seconds"),
            "full_seconds": full.get("wall_seconds"),
            "suites_seconds": full.get("suites_seconds"),
            "status": full.get("status"),
        }
        say(f"{name}: {kernels[name]}")
    return {
        "jobs": jobs,
        "kernels": kernels,
        "sequential": {
            "empty_suite_seconds": sequential_empty["wall_seconds"],
            "full_seconds": sequential_full["wall_seconds"],
        },
        "parallel": {
            "empty_suite_seconds": parallel_empty["wall_seconds"],
            "full_seconds": parallel_full["wall_seconds"],
        },
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| kernel | bare boot | harness, empty suite | full run | suites | harness overhead |",
        "|---|---|---|---|---|---|",
    ]
    for name, k in result["kernels"].items():
        full, bare, suites = k["full_seconds"], k["bare_boot_seconds"], k["suites_seconds"]
        overhead = (
            f"{full - bare - suites:.1f} s ({100 * (full - bare - suites) / full:.0f}%)"
            if full and suites is not None
            else "?"
        )
        rows.append(
            f"| {name} | {bare} s | {k['empty_suite_seconds']} s | {full} s | {suites} s "
            f"| {overhead} |"
        )
    seq, par = result["sequential"], result["parallel"]
    rows += [
        "",
        f"All kernels, one at a time: {seq['full_seconds']} s (empty suite "
        f"{seq['empty_suite_seconds']} s); {result['jobs']} at a time: {par['full_seconds']} s "
        f"(empty suite {par['empty_suite_seconds']} s).",
    ]
    return "\n".join(rows)
