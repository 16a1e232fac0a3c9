"""``python -m harness.run.host [--results DIR] [-- PYTEST ARGS]``: the tests on this host,
kept as the host's own column of the matrix.

``nox -s tests`` runs the library's, the suites' and the harness's tests on the host kernel
through this module. The suites give verdicts there as in any guest; this module keeps them
as ``results/host`` (kernel.json, outcomes.json, junit.xml, the kernel's release, symbols and
config from /boot or /proc/config.gz), judged by the same rules as a guest's, so the report
shows the host beside the kernels of the matrix. Its exit status is pytest's.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from harness.fetch.imagefacts import all_known, find_strings
from harness.files import write_json
from harness.guest.__main__ import kernel_facts
from harness.leftovers import run_to_exit
from harness.run.judging import upstream_version
from harness.run.provenance import provenance
from harness.run.results import ResultStore, new_run_id
from harness.run.verdicts import judge

NAME = "host"
ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
REPO = Path(__file__).resolve().parent.parent.parent
WORKERS = ["-n", "2", "--dist", "loadfile"]  # guests of the harness's tests boot meanwhile


def kernel_config(release: str) -> bytes | None:
    """The running kernel's config: /boot/config-<release>, else /proc/config.gz."""
    try:
        return Path(f"/boot/config-{release}").read_bytes()
    except OSError:
        pass
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def run_pytest(staged: Path, user_args: list[str]) -> tuple[int, float]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        *WORKERS,
        f"--junitxml={staged / 'junit.xml'}",
        f"--mountcompat-results={staged / 'outcomes.json'}",
        *user_args,
    ]
    started = time.monotonic()
    with (staged / "pytest.log").open("w", buffering=1) as log:
        env = {**os.environ, "MOUNTCOMPAT_REQUIRE_TOOLS": "1"}  # the tests session has them
        status, leaked = run_to_exit(command, log, sys.stdout.write, cwd=REPO, env=env)
    for item in leaked:
        print(f"killed a process the tests left behind: {item['cmdline']}", file=sys.stderr)
    return status, time.monotonic() - started


def verdict(staged: Path, status: int) -> tuple[str, str]:
    """The guests' rule (harness.run.verdicts) applied to the host's run."""
    try:
        outcomes = json.loads((staged / "outcomes.json").read_text())
    except (OSError, ValueError):
        outcomes = None
    try:
        facts = json.loads((staged / "facts.json").read_text())
    except (OSError, ValueError) as exc:
        facts = {"error": f"facts.json unreadable: {exc}"}
    state, detail = judge(status, outcomes, facts)
    return state, ("the suites ran on the host kernel" if state == "ok" else detail)


def host_strings(release: str) -> dict[str, Any]:
    """The strings of the host's own kernel files, where this machine has them."""
    image = Path(f"/boot/vmlinuz-{release}")
    if not image.exists():
        return {"errors": [f"no kernel image of the host at {image}"]}
    return find_strings(image, Path(f"/lib/modules/{release}"), all_known())


def write_column(
    staged: Path, status: int, seconds: float, user_args: list[str], run_id: str
) -> dict[str, Any]:
    release = platform.release()
    (staged / "uname.txt").write_text(release + "\n")
    (staged / "proc-version.txt").write_text(Path("/proc/version").read_text())
    kernel_facts(staged)
    write_json(staged / "strings.json", host_strings(release))
    config = kernel_config(release)
    if config is not None:
        (staged / "config").write_bytes(config)
    write_json(
        staged / "guest.json",
        {"release": release, "pytest_exit": status, "suites_seconds": seconds},
    )
    state, detail = verdict(staged, status)
    record = {
        "name": NAME,
        "host": True,
        "note": "This machine's own kernel, as `nox -s tests` found it.",
        "tags": ["host"],
        "arch": ARCH.get(platform.machine(), platform.machine()),
        "source": f"the running kernel of {platform.node()}",
        "upstream_release": upstream_version(release),
        "status": state,
        "detail": detail,
        "run_id": run_id,
        "pytest_args": user_args,
        "wall_seconds": round(seconds, 1),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "accelerator": None,
        "evidence": [],
        "provenance": provenance(
            REPO / "kernels.yaml", REPO / "expectations.yaml", REPO, REPO / "suites"
        ),
    }
    write_json(staged / "kernel.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.run.host")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    results: Path = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    store = ResultStore(results, new_run_id())
    store.open()
    staged = store.stage(NAME)
    status, seconds = run_pytest(staged, args.pytest_args)
    record = write_column(staged, status, seconds, args.pytest_args, store.run_id)
    store.commit(NAME, staged, record["status"])
    store.clean()
    print(
        f"host column: {record['status']} ({record['detail']}): {results / NAME}", file=sys.stderr
    )
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
