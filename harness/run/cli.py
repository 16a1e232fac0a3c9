"""``python -m harness``: the only place that parses arguments and exits.

Exit statuses (the README's table, which a test holds to the code): 0 every kernel ok and no
surprise; 1 a kernel did not complete; 2 a configuration or usage error, 3 a host tool is
missing, 4 something could not be fetched (all before anything boots); 5 surprises; 129, 130,
143 ended by SIGHUP, SIGINT, SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.config import DebianSource, KernelSpec, MatrixConfig, RpmSource, load_config
from harness.errors import HarnessError, Unreachable
from harness.fetch.archive import INDEX_MAX_AGE
from harness.fetch.kernels import Fetcher, default_cache
from harness.fetch.rpm import resolve_rpm
from harness.host.qemu import CHOICES as QEMU_CHOICES
from harness.run.matrix import REPO, MatrixOptions, MatrixRun, default_jobs
from harness.ui import MatrixUI


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of seconds")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


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
        "--json",
        action="store_true",
        help="with --list: the kernels as JSON (for CI matrices)",
    )
    p.add_argument(
        "--resolve",
        action="store_true",
        help="with --list --json: each kernel's exact packages and a cache key made of them",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=positive_int,
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
    p.add_argument(
        "--qemu",
        choices=QEMU_CHOICES,
        default="auto",
        help="the emulator: auto takes a private copy of Debian trixie's QEMU on a Debian "
        "host whose own is older (faster under TCG), host the host's own",
    )
    p.add_argument(
        "--timeout", type=positive_seconds, help="seconds per kernel, overriding kernels.yaml"
    )
    p.add_argument(
        "--suites",
        type=Path,
        help="run the suites of this directory instead of the repository's",
    )
    p.add_argument(
        "--refresh-index",
        action="store_true",
        help="download the suites' InRelease and Packages indexes even if cached today "
        "(for --list --json --resolve too)",
    )
    p.add_argument(
        "--require-signatures",
        action="store_true",
        help="refuse to boot kernels whose archive index gpgv could not verify",
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
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the guests' pytest under cProfile (pytest.prof, pytest-profile.txt)",
    )
    p.add_argument("pytest_args", nargs="*", help="extra arguments for pytest in the guests")
    return p


def list_kernels(config: MatrixConfig, names: list[str], console: Console) -> None:
    for k in config.select(names):
        tags = ", ".join(k.tags)
        arch = f" [{k.arch}]" if k.arch != "x86_64" else ""
        console.print(f"[bold]{k.name:<12}[/bold]{arch} {k.source.describe()}  [dim]({tags})[/dim]")
        console.print(f"{'':12} {k.note}", soft_wrap=True)


def kernels_json(
    config: MatrixConfig,
    names: list[str],
    cache: Path,
    resolve: bool,
    index_max_age: float = INDEX_MAX_AGE,
) -> str:
    """The kernels as a JSON list, with (``resolve``) the exact packages each resolves to
    today and a cache key made of their digests, so that a CI job's cache and the report
    name the same packages."""
    entries = []
    fetcher = Fetcher(cache=cache, mirror=config.mirror, index_max_age=index_max_age)
    for k in config.select(names):
        entry: dict[str, Any] = {
            "name": k.name,
            "arch": k.arch,
            "source": k.source.describe(),
            "tags": list(k.tags),
        }
        if resolve:
            try:
                entry.update(_resolved(k, fetcher))
            except Unreachable as exc:
                if not k.needs_network:
                    raise
                # Its own job will end "unreachable" and the merge names it; the other
                # kernels' jobs run.
                entry.update(unreachable=str(exc), cache_key=f"{k.arch}-unreachable")
        entries.append(entry)
    return json.dumps(entries)


def _resolved(k: KernelSpec, fetcher: Fetcher) -> dict[str, Any]:
    """The packages a kernel resolves to today, and a cache key made of them: each package's
    SHA256 (Debian), or each RPM's NEVRA and SHA256. Kernels of local files have neither."""
    if isinstance(k.source, DebianSource):
        packages = [
            {"name": p.name, "version": p.version, "sha256": p.sha256}
            for p in fetcher.resolve_debian(k.source, k.arch)
        ]
        made_of = " ".join(p["sha256"] for p in packages)
    elif isinstance(k.source, RpmSource):
        rpms, _ = resolve_rpm(k.source, k.arch, fetcher.cache)
        packages = [{"nevra": p.nevra, "sha256": p.sha256} for p in rpms]
        made_of = " ".join(f"{p.nevra}:{p.sha256}" for p in rpms)
    else:
        return {}
    digest = hashlib.sha256(made_of.encode()).hexdigest()[:16]
    return {"packages": packages, "cache_key": f"{k.arch}-{digest}"}


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    config = load_config(args.config)
    index_max_age = 0.0 if args.refresh_index else INDEX_MAX_AGE
    if args.list and args.json:
        print(kernels_json(config, args.kernel, args.cache, args.resolve, index_max_age))
        return 0
    if args.list:
        list_kernels(config, args.kernel, Console(highlight=False))
        return 0
    options = MatrixOptions(
        config=config,
        kernels=config.select(args.kernel),
        results=args.results.resolve(),
        cache=args.cache,
        jobs=args.jobs,
        accel=args.accel,
        qemu=args.qemu,
        timeout=args.timeout,
        index_max_age=index_max_age,
        pytest_args=args.pytest_args,
        suites=args.suites.resolve() if args.suites else None,
        allow_surprises=args.allow_surprises,
        measure_bare_boot=args.measure_bare_boot,
        require_signatures=args.require_signatures,
        profile=args.profile,
    )
    with MatrixUI(console) as ui:
        return MatrixRun(options, ui).run()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted before the run began", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
