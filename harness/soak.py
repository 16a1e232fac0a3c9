"""``./nox -s soak -- N [matrix options]``: the matrix N times in a row, with nothing changed
in between, and every answer that changed anyway: a flake.

Each run writes a results directory of its own under the soak's (``results/soak`` unless
``--out``), so that both sides of a flake keep their evidence. An answer is a kernel's
status, a cell's outcome, or the default strategy a feature took. A difference only counts
as a flake when the inputs of that kernel were the same in both runs: its packages, the
library, the suites, kernels.yaml and expectations.yaml. ``soak.json`` holds every run's
figures and every flake with both runs' evidence.

Exit status: 0 without flakes, 1 with one or more, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import write_json

REPO = Path(__file__).resolve().parent.parent
ABSENT = ("absent", None)


@dataclass
class Run:
    number: int
    results: Path
    exit_status: int
    seconds: float
    matrix: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.number,
            "results": str(self.results),
            "exit_status": self.exit_status,
            "seconds": round(self.seconds, 1),
            "statuses": {k["name"]: k["status"] for k in (self.matrix or {}).get("kernels", [])},
        }


def answers(matrix: dict[str, Any]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """Every answer of a matrix by what it answers: (value, its evidence)."""
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for k in matrix.get("kernels", []):
        found[("kernel", k["name"])] = (k["status"], {"detail": k.get("detail")})
    for c in matrix.get("cells", []):
        key = ("cell", c["kernel"], c["feature"], c["strategy"])
        found[key] = (c["outcome"], c.get("evidence"))
    for d in matrix.get("defaults", []):
        found[("default", d["kernel"], d["feature"])] = (str(d["strategy"]), d.get("by_backing"))
    return found


def inputs(matrix: dict[str, Any], kernel: str) -> Any:
    """What a kernel's answers may depend on: if these differ, a change is no flake."""
    for k in matrix.get("kernels", []):
        if k["name"] == kernel:
            packages = [p.get("sha256") for p in k.get("packages", [])]
            return {"packages": packages, "provenance": k.get("provenance")}
    return None


def flakes(earlier: Run, later: Run) -> Iterator[dict[str, Any]]:
    if earlier.matrix is None or later.matrix is None:
        return
    before, after = answers(earlier.matrix), answers(later.matrix)
    # An answer only one run gave (a cell the other lacks) changed too.
    for key in sorted(before.keys() | after.keys()):
        (was, was_evidence) = before.get(key, ABSENT)
        (now, now_evidence) = after.get(key, ABSENT)
        kernel = key[1]
        if was == now or inputs(earlier.matrix, kernel) != inputs(later.matrix, kernel):
            continue
        yield {
            "what": " ".join(key),
            "kernel": kernel,
            "runs": [
                side(earlier, kernel, was, was_evidence),
                side(later, kernel, now, now_evidence),
            ],
        }


def side(run: Run, kernel: str, answer: str, evidence: Any) -> dict[str, Any]:
    return {
        "run": run.number,
        "answer": answer,
        "evidence": evidence,
        "results": str(run.results / kernel),
        "report": str(run.results / "report.html"),
    }


def run_matrix(number: int, out: Path, matrix_args: list[str]) -> Run:
    results = out / f"run-{number}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--results", str(results), *matrix_args],
        cwd=REPO,
        check=False,
    )
    try:
        matrix = json.loads((results / "matrix.json").read_text())
    except (OSError, ValueError):
        matrix = None
    return Run(number, results, done.returncode, time.monotonic() - started, matrix)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nox -s soak --",
        description="The matrix N times in a row; every answer that changed is a flake.",
    )
    p.add_argument("runs", type=int, help="how many runs (at least 2)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "soak")
    return p


def main(argv: list[str] | None = None) -> int:
    # Everything the soak does not know is the matrix's (--kernel, --jobs, -- pytest args).
    args, matrix_args = parser().parse_known_args(argv)
    if args.runs < 2:
        print("error: a soak needs at least 2 runs", file=sys.stderr)
        return 2
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    found: list[dict[str, Any]] = []
    for number in range(1, args.runs + 1):
        print(f"soak: run {number} of {args.runs} into {out / f'run-{number}'}", flush=True)
        run = run_matrix(number, out, matrix_args)
        new = list(flakes(runs[-1], run)) if runs else []
        runs.append(run)
        found += new
        print(
            f"soak: run {number}: exit {run.exit_status} in {run.seconds:.0f} s"
            + (f", {len(new)} answers changed since run {number - 1}" if number > 1 else ""),
            flush=True,
        )
        write_json(out / "soak.json", {"runs": [r.to_json() for r in runs], "flakes": found})
    for flake in found:
        sides = ", ".join(f"run {r['run']}: {r['answer']}" for r in flake["runs"])
        print(f"flake: {flake['what']}: {sides}")
    print(f"soak: {len(runs)} runs, {len(found)} flakes: {out / 'soak.json'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
