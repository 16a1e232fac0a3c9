"""``python -m harness.report [DIR...] [--out DIR]``: rebuild matrix.json and report.html.

DIRs are results directories (or single kernel directories), possibly from other machines;
for a kernel present in several, the last one given wins. Exit status: 0; 1 when a result
file is damaged (named on stderr, its kernel shown as unreadable) or, with
--require-complete, a kernel did not complete; 2 for a usage error (an --out or --summary
that cannot be made: their missing parent directories are made), or directories of
different runs merged without --allow-mixed; 5 for surprises.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jsonschema

from harness.errors import HarnessError
from harness.report import (
    DEFAULT_EXPECTATIONS,
    REPO,
    inputs,
    markdown_summary,
    write_report,
)
from harness.report.publish import READER_FILES, publish_site
from harness.run.exits import matrix_exit


def _unusable_paths(out: Path, summary: Path | None) -> str | None:
    """Where the report and the summary go, made directories with their parents before
    anything is built (as the output directory always was); else why one cannot be."""
    for option, directory in [("--out", out), ("--summary", summary.parent if summary else None)]:
        if directory is None:
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"{option} {directory}: cannot make it a directory: {exc.strerror}"
    if summary is not None and summary.is_dir():
        return f"--summary {summary}: is a directory"
    return None


def _write_summary(path: Path, matrix: dict[str, Any], absent: list[str]) -> bool:
    """The Markdown summary, with a line for each expected kernel that left no results."""
    text = markdown_summary(matrix) + "".join(
        f"\n**No results at all for kernel {name}** (its job left none)\n" for name in absent
    )
    try:
        path.write_text(text)  # not atomic: it may be a pipe or /dev/stdout
    except OSError as exc:
        print(f"error: --summary {path}: cannot write: {exc.strerror}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nox -s report --")
    p.add_argument("dirs", nargs="*", type=Path, help="results directories (default: results/)")
    p.add_argument(
        "--out",
        type=Path,
        help="where matrix.json and report.html go (default: the single DIR given, else results/)",
    )
    p.add_argument("--expectations", type=Path, default=DEFAULT_EXPECTATIONS)
    p.add_argument(
        "--allow-surprises",
        action="store_true",
        help="exit 0 even when outcomes contradict the expectations",
    )
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="merge directories even if their kernels.yaml, expectations or library differ",
    )
    p.add_argument(
        "--history",
        type=Path,
        help="the history to extend (default: history.json in the output directory)",
    )
    p.add_argument(
        "--history-size",
        type=int,
        default=60,
        help="runs the history keeps (default: %(default)s)",
    )
    p.add_argument(
        "--summary",
        type=Path,
        help="also write a Markdown summary here (a CI job summary, say; missing parent "
        "directories are made)",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="KERNEL",
        help="a kernel whose results must be among the directories (repeatable): one whose "
        "shard left nothing is named, not left out",
    )
    p.add_argument(
        "--require-complete",
        action="store_true",
        help="exit 1 when a kernel did not complete (a merge of CI shards, say)",
    )
    p.add_argument(
        "--publish",
        type=Path,
        metavar="SITE",
        help="then copy the report, its data and the files it links (nothing else: no raw "
        "shards, no lock files) into the new directory SITE, for a web server",
    )
    p.add_argument(
        "--browser-check",
        action="store_true",
        help="then open the report in headless Chromium, check it, screenshot it",
    )
    args = p.parse_args(argv)
    dirs = args.dirs or [REPO / "results"]
    out = args.out or (dirs[0] if len(dirs) == 1 else REPO / "results")
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        print(f"error: no such directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    unusable = _unusable_paths(out, args.summary)
    if unusable:
        print(f"error: {unusable}", file=sys.stderr)
        return 2
    try:
        matrix = write_report(
            dirs,
            out,
            args.expectations,
            allow_mixed=args.allow_mixed,
            history_from=args.history,
            history_size=max(1, args.history_size),
        )
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except jsonschema.ValidationError as exc:
        # The inputs are checked as they are read (harness/report/inputs.py): a matrix that
        # still does not fit its schema is the report's own bug, said in one line.
        print(
            f"error: {out / 'matrix.json'}: {inputs.in_words(exc)} "
            "(a bug in the report: the matrix does not fit harness/report/schema.json; "
            "nothing written)",
            file=sys.stderr,
        )
        return 1
    totals = ", ".join(f"{n} {o}" for o, n in matrix["totals"].items())
    print(f"{out / 'report.html'}: {len(matrix['kernels'])} kernels, {totals}")
    present = {k["name"] for k in matrix["kernels"]}
    absent = [name for name in args.expect if name not in present]
    if args.summary and not _write_summary(args.summary, matrix, absent):
        return 1
    if args.publish:
        try:
            copied = publish_site(out, matrix, args.publish)
        except HarnessError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_status
        print(
            f"{args.publish}: the report and the {len(copied) - len(READER_FILES)} files it links"
        )
    if args.browser_check:
        from harness.report.browser import main as browser_main

        if browser_main([str(out / "report.html")]) != 0:
            return 1
    incomplete = [k["name"] for k in matrix["kernels"] if k["status"] != "ok" and not k["host"]]
    incomplete += absent
    for name in absent:
        print(f"no results at all for kernel {name}", file=sys.stderr)
    return matrix_exit(
        matrix,
        incomplete,
        args.allow_surprises,
        lambda line: print(line, file=sys.stderr),
        incomplete_fails=args.require_complete,
    )


if __name__ == "__main__":
    sys.exit(main())
