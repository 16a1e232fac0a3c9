"""``python -m harness``: the only place that parses arguments and exits."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from rich.console import Console

from harness.config import load_config
from harness.errors import HarnessError
from harness.kernels import default_cache
from harness.matrix import REPO, MatrixOptions, MatrixRun, default_jobs
from harness.ui import MatrixUI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nox -s matrix --", description="Boot each kernel of kernels.yaml and run the suites."
    )
    p.add_argument(
        "--config",
        type=Path,
        default=REPO / "kernels.yaml",
        help="the kernels file (default: %(default)s)",
    )
    p.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this kernel (repeatable)",
    )
    p.add_argument("--list", action="store_true", help="print the kernels and exit")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=default_jobs(),
        help="kernels booted at once (default: %(default)s, from the CPU count)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=REPO / "results",
        help="results directory (default: %(default)s)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="download and kernel cache (default: %(default)s)",
    )
    p.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto uses KVM only if a probe guest really runs with it",
    )
    p.add_argument("--timeout", type=float, help="seconds per kernel, overriding kernels.yaml")
    p.add_argument(
        "--refresh-index",
        action="store_true",
        help="download the suites' Packages indexes even if cached today",
    )
    p.add_argument(
        "--allow-surprises",
        action="store_true",
        help="exit 0 even when outcomes contradict expectations.yaml",
    )
    p.add_argument(
        "--measure-bare-boot",
        action="store_true",
        help="also time a bare `vng --run <vmlinuz> --exec true` per kernel",
    )
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest in the guests")
    return p


def list_kernels(config_path: Path, console: Console) -> None:
    config = load_config(config_path)
    for k in config.kernels:
        tags = ", ".join(k.tags)
        console.print(f"[bold]{k.name:<12}[/bold] {k.source.describe()}  [dim]({tags})[/dim]")
        console.print(f"{'':12} {k.note}", soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    if args.list:
        list_kernels(args.config, Console(highlight=False))
        return 0
    config = load_config(args.config)
    options = MatrixOptions(
        config=config,
        kernels=config.select(args.kernel),
        results=args.results.resolve(),
        cache=args.cache,
        jobs=max(1, args.jobs),
        accel=args.accel,
        timeout=args.timeout,
        index_max_age=0.0 if args.refresh_index else 24 * 3600.0,
        pytest_args=args.pytest_args,
        allow_surprises=args.allow_surprises,
        measure_bare_boot=args.measure_bare_boot,
    )
    with MatrixUI(console) as ui:
        status = MatrixRun(options, ui).run()
    return status


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted; results collected so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
