"""``python -m harness.bench [--only strategies|mounttable|matrix] [--sizes 100,1000,10000]``.

Writes results/bench.json: the strategies' figures by feature at the top level (as before),
the mount table's under ``mount_table``, the matrix's own cost under ``matrix`` (the kernels
of kernels.yaml booted bare, with an empty suite and in full, one at a time and side by side:
several minutes under TCG); prints them, the latter two also as markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness.bench import matrix, mounttable, settings, strategies
from harness.files import read_json_object, write_json

OUT = Path(__file__).resolve().parents[2] / "results" / "bench.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__)
    parser.add_argument("--only", choices=("strategies", "mounttable", "matrix", "settings"))
    parser.add_argument(
        "--setting",
        action="append",
        choices=sorted(settings.SETTINGS),
        help="with --only settings: this emulator setting (repeatable; default: all)",
    )
    parser.add_argument(
        "--kernel",
        action="append",
        default=[],
        help="with --only settings: this kernel (repeatable; default: all that need no network)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --only settings: old/new pairs")
    parser.add_argument("--jobs", type=int, default=1, help="with --only settings: guests at once")
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in mounttable.SIZES),
        help="mount table sizes, comma-separated (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark mounts: run it as root", file=sys.stderr)
        return 2
    sizes = tuple(int(s) for s in args.sizes.split(","))
    # A partial run (--only) updates its own part of an earlier file and keeps the rest.
    results: dict[str, Any] = {**read_json_object(OUT), "kernel": os.uname().release}
    if args.only in (None, "strategies"):
        results.update(strategies.run())
    if args.only in (None, "mounttable"):
        table = mounttable.run(sizes)
        results["mount_table"] = table
        print(mounttable.markdown(table))
    if args.only == "settings":
        chosen = args.setting or sorted(settings.SETTINGS)
        measured = settings.run(chosen, args.kernel, args.rounds, args.jobs)
        results["settings"] = {**results.get("settings", {}), **measured}
        print(settings.markdown(measured))
    if args.only in (None, "matrix"):
        results["matrix"] = matrix.run()
        print(matrix.markdown(results["matrix"]))
    OUT.parent.mkdir(exist_ok=True)
    write_json(OUT, results)
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
