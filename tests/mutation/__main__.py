"""python -m tests.mutation [--jobs N] [ID...]: every mutant against the contract suites on this
host; prints killed/total per strategy and exits 1 if any survived (or could not be judged)."""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mountcompat.testing.leaks import loop_backings
from tests.mutation.mutants import Mutant, all_mutants
from tests.mutation.plugin import ENV

ROOT = Path(__file__).resolve().parents[2]


def run_one(mutant: Mutant) -> tuple[Mutant, str, str]:
    """("killed" | "survived" | "error", the failing test or the reason)."""
    env = {**os.environ, ENV: mutant.id, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "suites",
        "-x",
        "-q",
        "-p",
        "tests.mutation.plugin",
        "-p",
        "no:randomly",
        "--timeout=120",
        "-o",
        "addopts=-p no:cacheprovider -p mountcompat.testing.plugin",
    ]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    lines = done.stdout.splitlines()
    failed = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), "")
    if done.returncode == 1 and failed:
        return mutant, "killed", failed
    if done.returncode == 0:
        return mutant, "survived", (lines[-1] if lines else "")
    return mutant, "error", f"pytest exited {done.returncode}: {(lines or [done.stderr])[-1]}"


def detach_new_loop_devices(before: set[str]) -> list[str]:
    """LOOP_CLR_FD on every loop device bound since ``before`` (names like loop3)."""
    from mountcompat import _constants as C
    from mountcompat import _syscalls as sys_

    detached = []
    for name in sorted(set(loop_backings()) - before):
        try:
            fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            sys_.ioctl(fd, C.LOOP_CLR_FD, 0, "LOOP_CLR_FD")
            detached.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return detached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="write every mutant's result here")
    parser.add_argument("ids", nargs="*")
    args = parser.parse_args()
    mutants = [m for m in all_mutants() if not args.ids or m.id in args.ids]
    started = time.monotonic()
    devices_before = set(loop_backings())
    results: list[tuple[Mutant, str, str]] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for mutant, verdict, why in pool.map(run_one, mutants):
            results.append((mutant, verdict, why))
            print(f"  {verdict:8} {mutant.id}  {why[:150]}", flush=True)
    # A wrong library that drops LO_FLAGS_AUTOCLEAR leaves its device bound when its test
    # fails (that is how it is killed): the check lets go of what the mutants left.
    left = detach_new_loop_devices(devices_before)
    if left:
        print(f"detached {len(left)} loop devices the wrong libraries left bound: {left}")
    per_cell: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for mutant, verdict, _ in results:
        per_cell[(mutant.feature, mutant.strategy)][verdict] += 1
    print("\nmutation check, per strategy (killed/total):")
    for (feature, strategy), counts in per_cell.items():
        print(f"  {feature}/{strategy}: {counts['killed']}/{sum(counts.values())}")
    killed = sum(1 for _, v, _ in results if v == "killed")
    print(
        f"mutation score: {killed}/{len(results)} killed "
        f"({100 * killed / max(1, len(results)):.0f}%) in {time.monotonic() - started:.0f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [{"id": m.id, "what": m.what, "verdict": v, "why": w} for m, v, w in results],
                indent=2,
            )
        )
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
