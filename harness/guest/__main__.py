"""Runs inside a guest: records what kernel this is, runs the suites, writes the results.

Everything goes into the results directory that the host shares read-write; ``guest.json`` is
written last, so its presence tells the host the guest finished. Lines starting with
``mountcompat-guest:`` on stdout are the progress the host shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.guest import SCRATCH_DISK_BYTES
from harness.leftovers import run_to_exit

MODULES = ("loop", "overlay", "erofs", "squashfs", "virtio_blk", "ext4")
SCRATCH_MOUNT = Path("/run/mountcompat-disk")


def say(message: str) -> None:
    print(f"mountcompat-guest: {message}", flush=True)


def mark(event: str, detail: str = "") -> None:
    """A point of the kernel's timeline; the host times it as the line arrives."""
    say(f"@{event} {detail}".rstrip())


def write(results: Path, name: str, text: str) -> None:
    (results / name).write_text(text)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


FACT_SYMBOLS = (
    "fsopen",
    "open_tree",
    "mount_setattr",
    "statmount",
    "listmount",
    "open_tree_attr",
    "openat2",
)


# mount(2) is in every kernel: a symbol list without it was not read whole, and absent
# symbols in it would pass for absent syscalls.
CONTROL_SYMBOL = "mount"


def read_kernel_facts(kallsyms: Path = Path("/proc/kallsyms")) -> dict[str, Any]:
    """Which syscalls this kernel has, from /proc/kallsyms: facts for the expectations, found
    independently of the library whose behaviour they judge. ``error`` says why they cannot
    be trusted (unreadable, or the control symbol missing): then no verdict stands."""
    # One regular expression over the whole file (over 100,000 lines): a Python loop over
    # its lines takes a second under an emulated CPU.
    names = "|".join((*FACT_SYMBOLS, CONTROL_SYMBOL))
    pattern = re.compile(rf"^\S+ \S (__(?:x64|arm64)_sys_(?:{names}))$".encode(), re.M)
    try:
        with open(kallsyms, "rb") as symbols:
            present = {m.decode() for m in pattern.findall(symbols.read())}
    except OSError as exc:
        return {"symbols": [], "error": f"cannot read {kallsyms}: {exc.strerror or exc}"}
    facts: dict[str, Any] = {"symbols": sorted(present)}
    if not any(name.endswith(f"_sys_{CONTROL_SYMBOL}") for name in present):
        facts["error"] = (
            f"{kallsyms} lacks sys_{CONTROL_SYMBOL}, which every kernel has: its symbols "
            "cannot tell a missing syscall"
        )
    return facts


def kernel_facts(results: Path, kallsyms: Path = Path("/proc/kallsyms")) -> None:
    write(results, "facts.json", json.dumps(read_kernel_facts(kallsyms), indent=2))


def load_modules(results: Path) -> dict[str, Any]:
    """Load the modules the suites need: some devices (/dev/loop-control) only appear then."""
    # One modprobe for all (each process costs a fraction of a second under TCG); whether each
    # module is there is read from /sys/module, built in or loaded alike.
    done = run(["modprobe", "-a", *MODULES])
    outcome: dict[str, Any] = {
        "modprobe": {"returncode": done.returncode, "stderr": done.stderr.strip()}
    }
    for module in MODULES:
        outcome[module] = {"present": Path("/sys/module", module).exists()}
    write(results, "modules.json", json.dumps(outcome, indent=2))
    return outcome


def find_scratch_disk() -> Path | None:
    """The host's scratch disk, known by the size the harness gave it."""
    for _ in range(50):  # the device can appear a moment after the module loads
        for block in sorted(Path("/sys/block").glob("[sv]d*")):
            try:
                sectors = int((block / "size").read_text())
            except (OSError, ValueError):
                continue
            if sectors * 512 == SCRATCH_DISK_BYTES:
                return Path("/dev") / block.name
        time.sleep(0.1)
    return None


def prepare_scratch(results: Path) -> dict[str, Any]:
    """ext4 on the scratch disk, for the "disk" backing; the shared results directory
    (virtiofs) if there is no disk. Which one is recorded."""
    fallback = results / "scratch"
    device = find_scratch_disk()
    if device is None:
        return {"path": str(fallback), "fstype": "virtiofs", "why": "no scratch disk found"}
    mkfs = run(
        ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(device)]
    )
    SCRATCH_MOUNT.mkdir(parents=True, exist_ok=True)
    mounted = run(["mount", "-t", "ext4", str(device), str(SCRATCH_MOUNT)])
    if mkfs.returncode or mounted.returncode:
        why = (mkfs.stderr + mounted.stderr).strip()
        return {"path": str(fallback), "fstype": "virtiofs", "why": why}
    return {"path": str(SCRATCH_MOUNT), "fstype": "ext4", "device": str(device)}


def relay(line: str) -> None:
    """pytest's output, turned into progress and timeline points: its header (pytest has
    started), "collected N items", and each file's line as the file ends."""
    text = line.strip()
    if text.startswith("platform linux"):
        mark("pytest-started")
    elif text.startswith("collected ") or " error during collection" in text:
        mark("collection-done", text)
    elif text.endswith("%]"):
        mark("file-done", text.split(" ", 1)[0])
        say(text[-100:])
    elif " passed" in text or " failed" in text:
        say(text[-100:])


def run_suites(
    results: Path,
    repo: Path,
    suites: Path,
    scratch: str,
    pytest_args: list[str],
    profile: bool = False,
) -> tuple[int, list[dict[str, Any]]]:
    profiler = ["-m", "cProfile", "-o", str(results / "pytest.prof")] if profile else []
    cmd = [
        sys.executable,
        *profiler,
        "-m",
        "pytest",
        str(suites),
        "-p",
        "no:cacheprovider",
        # Named here as well as in pyproject.toml: suites of the user's own (--suites) have
        # no such file, and the plugin acts only where it is asked for.
        "-p",
        "mountcompat.testing.plugin",
        # Plugins the host's tests use and the guest does not: not even imported.
        "-p",
        "no:xdist",
        "-p",
        "no:hypothesispytest",
        f"--junitxml={results / 'junit.xml'}",
        f"--mountcompat-results={results / 'outcomes.json'}",
        f"--mountcompat-scratch={scratch}",
        *pytest_args,
    ]
    # Lines as pytest writes them (not a pipe's blocks), so that the host times each one as
    # it happens; wide enough that a file's progress never wraps onto a second line.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "MOUNTCOMPAT_REQUIRE_TOOLS": "1",
    }
    # Line-buffered: what pytest said is on the disk even if the guest is cut short.
    with (results / "pytest.log").open("w", buffering=1) as log:
        status, leaked = run_to_exit(cmd, log, relay, cwd=repo, env=env)
    if profile:
        write_profile(results)
    return status, leaked


def write_profile(results: Path) -> None:
    """The profile's 60 most expensive functions, cumulative, as text beside the raw file."""
    import io
    import pstats

    out = io.StringIO()
    try:
        pstats.Stats(str(results / "pytest.prof"), stream=out).sort_stats("cumulative").print_stats(
            60
        )
    except (OSError, ValueError, TypeError) as exc:
        out.write(f"no profile: {exc}\n")
    write(results, "pytest-profile.txt", out.getvalue())


def run_probe(results: Path, repo: Path, scratch: str) -> int:
    """The library's probe (what ``python -m mountcompat probe --json`` prints), in this
    process: another interpreter's start-up costs a second under an emulated CPU. It enters
    a mount namespace of its own, which this process no longer needs for anything else."""
    sys.path.insert(0, str(repo))
    os.environ["MOUNTCOMPAT_SCRATCH"] = scratch
    try:
        from mountcompat.probe import probe_all

        write(results, "probe.json", json.dumps(probe_all(), indent=2))
    except Exception as exc:  # evidence either way; the verdicts come from the suites
        write(results, "probe.json", "{}")
        write(results, "probe.stderr", f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.guest")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--suites", type=Path, help="default: the repository's suites/")
    parser.add_argument("--profile", action="store_true", help="run pytest under cProfile")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    results: Path = args.results
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    mark("python-started")
    started = time.time()
    write(results, "guest-started.json", json.dumps({"time": started}))
    say(f"booted {os.uname().release}")
    write(results, "uname.txt", os.uname().release + "\n")
    write(results, "proc-version.txt", Path("/proc/version").read_text())
    modules = load_modules(results)
    mark("modules-loaded")
    kernel_facts(results)
    mark("facts-collected")
    scratch = prepare_scratch(results)
    mark("scratch-ready", scratch["fstype"])
    say(f"scratch for the disk backing: {scratch['fstype']} at {scratch['path']}")
    say("running the suites")
    suites_started = time.time()
    suites = args.suites or args.repo / "suites"
    pytest_status, leaked = run_suites(
        results, args.repo, suites, scratch["path"], args.pytest_args, args.profile
    )
    for item in leaked:
        say(f"killed a process the tests left behind: {item['cmdline']}")
    suites_seconds = time.time() - suites_started
    mark("suites-done", f"pytest exit {pytest_status}")
    probe_exit = run_probe(results, args.repo, scratch["path"])
    mark("probe-done")
    write(results, "dmesg.txt", run(["dmesg"]).stdout)
    mark("dmesg-collected")
    summary = {
        "release": os.uname().release,
        "machine": os.uname().machine,
        "pytest_exit": pytest_status,
        "leaked_processes": leaked,
        "probe_exit": probe_exit,
        "modules": modules,
        "scratch": scratch,
        "suites_seconds": suites_seconds,
        "guest_seconds": time.time() - started,
    }
    write(results, "guest.json", json.dumps(summary, indent=2))
    mark("results-written")
    say(f"done: pytest exit {pytest_status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
