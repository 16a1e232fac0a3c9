"""The orchestration of a run: check the inputs, prepare the host, let each kernel live its
life (fetched one after the other, so a network problem shows at once; booted side by side),
handle signals, write the report, decide the exit status.

Results are written as each kernel ends and the report once more in ``finally``, so an
interrupted run still leaves everything it collected, and a report of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.markup import escape

from harness.boot.vng import unshareable
from harness.config import KernelSpec, MatrixConfig, memory_mib
from harness.errors import DiskFull, FetchError, UsageError
from harness.fetch.archive import INDEX_MAX_AGE
from harness.fetch.download import TRANSFERS
from harness.fetch.mirror import debian_mirror
from harness.files import write_bytes, write_json
from harness.host.bytecode import warm
from harness.host.facts import HostFacts, prepare_host
from harness.host.guestroot import ensure_root, host_arch
from harness.run.exits import matrix_exit
from harness.run.kernel import KernelRun, RunContext
from harness.run.provenance import provenance
from harness.run.results import ResultStore, check_writable, exclusive, new_run_id
from harness.ui import MatrixUI

REPO = Path(__file__).resolve().parent.parent.parent
# SIGHUP is a closed terminal or a dropped ssh session: an unattended run stops as on SIGTERM
# (the guests run in a session of their own and would not get it).
EXIT_SIGNAL: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


@dataclass
class MatrixOptions:
    config: MatrixConfig
    kernels: list[KernelSpec]
    results: Path
    cache: Path
    jobs: int
    accel: str = "auto"
    qemu: str = "auto"
    timeout: float | None = None
    index_max_age: float = INDEX_MAX_AGE
    pytest_args: list[str] = field(default_factory=list)
    repo: Path = REPO
    suites: Path | None = None
    allow_surprises: bool = False
    measure_bare_boot: bool = False
    require_signatures: bool = False
    profile: bool = False
    expectations: Path = REPO / "expectations.yaml"


def default_jobs() -> int:
    # One guest per core: under TCG a vCPU is a busy host thread, and kernels.yaml gives each
    # guest one (see the README for the measurement behind both defaults).
    return max(1, os.cpu_count() or 1)


def host_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_inputs(options: MatrixOptions) -> None:
    """Everything a run can be refused for, said before anything is fetched or booted."""
    shared = (
        ("--results", options.results),
        ("--suites", options.suites),
        ("the checkout", options.repo),
        # The kernels, the arm64 root and each guest's scratch disk and sockets live there.
        ("--cache", options.cache),
        ("the temporary directory (TMPDIR)", Path(tempfile.gettempdir())),
    )
    for what, path in shared:
        if path is not None and (why := unshareable(path)):
            raise UsageError(f"{what} {path}: {why}")
    check_writable(options.results)
    try:
        options.cache.mkdir(parents=True, exist_ok=True)
        probe = options.cache / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cache {options.cache}: cannot write there ({exc.strerror})") from exc
    if options.suites is not None and not options.suites.is_dir():
        raise UsageError(f"--suites {options.suites}: not a directory")
    total = host_memory_mib()
    for spec in options.kernels:
        if total is not None and memory_mib(spec.memory) > total:
            raise UsageError(
                f"kernel {spec.name}: memory {spec.memory} is more than this host has ({total} MiB)"
            )
        if spec.source.kind == "debian":
            try:
                debian_mirror(getattr(spec.source, "mirror", None) or options.config.mirror)
            except FetchError as exc:
                raise UsageError(str(exc)) from exc


class MatrixRun:
    def __init__(self, options: MatrixOptions, ui: MatrixUI) -> None:
        self.options = options
        self.ui = ui
        self.stop = threading.Event()
        self.signal: int | None = None
        self.store = ResultStore(options.results, new_run_id())
        self.kernels: list[KernelRun] = []
        self.facts: HostFacts | None = None
        self.disk_full: DiskFull | None = None
        self._preparing = True  # host preparation and fetching: a signal interrupts them
        self.bytecode_seconds: float | None = None
        self.phases: dict[str, float] = {}
        self.provenance = provenance(
            options.config.path,
            options.expectations,
            options.repo,
            options.suites or options.repo / "suites",
        )

    # --- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            return  # already stopping: the report is being written
        self.signal = signum
        self.stop.set()
        if signum == signal.SIGHUP:
            detach_dead_terminal()
        self.ui.say(
            f"[yellow]{signal.Signals(signum).name}: stopping the guests, keeping the "
            "results[/yellow]"
        )
        if self._preparing:
            # Downloads and extraction run in this thread and would not look at the event.
            raise KeyboardInterrupt

    def _install_handlers(self) -> dict[int, Any]:
        return {s: signal.signal(s, self._on_signal) for s in EXIT_SIGNAL}

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        options = self.options
        check_inputs(options)
        with exclusive(options.results):
            self.store.open()
            for line in self.store.recover_stale():
                self.ui.say(f"[yellow]{escape(line)}[/yellow]")
            previous = self._install_handlers()
            try:
                return self._run()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    def _run(self) -> int:
        options = self.options
        started = time.monotonic()
        matrix: dict[str, Any] | None = None
        try:
            keep_previous(options.results)
            self.facts = prepare_host(
                options.cache,
                options.config.mirror,
                options.accel,
                self.ui.say,
                options.qemu,
                tuple(sorted({k.arch for k in options.kernels})),
            )
            self.bytecode_seconds = warm(options.repo, options.suites or options.repo / "suites")
            context = self._context(self.facts)
            self._prepare_roots(context)
            for spec in options.kernels:
                self.ui.add_kernel(spec.name)
                self.kernels.append(KernelRun(spec, context))
            fetched = [k for k in self.kernels if not self.stop.is_set() and k.fetch()]
            self._check_signatures(fetched)
            self._preparing = False
            self.phases["prepared"] = round(time.monotonic() - started, 1)
            self._boot_all(fetched)
            self.phases["booted"] = round(time.monotonic() - started, 1)
        except KeyboardInterrupt:
            self.stop.set()
        except DiskFull as exc:
            self._disk_full(exc)
        finally:
            self._preparing = False
            self.stop.set()
            for kernel in self.kernels:
                if not kernel.ended:
                    with self._space():
                        kernel.end("interrupted", "the run stopped first")
            if self.disk_full is None:
                # With the disk full, a kernel's staged results may not have been committed:
                # they stay, and the next run moves them under attempts/.
                self.store.clean()
            with self._space():
                self.write_run(time.monotonic() - started)
            matrix = self.write_report()
            # Seconds from the run's start: host and kernels ready (before the first boot),
            # every guest done, and the report written (also in run.json of the next write).
            self.phases["reported"] = round(time.monotonic() - started, 1)
            with self._space():
                self.write_run(time.monotonic() - started)
        if self.disk_full is not None:
            raise self.disk_full
        return self.exit_status(matrix)

    def _disk_full(self, exc: DiskFull) -> None:
        """The first write that found the disk full stops the run; it is what the run says."""
        if self.disk_full is None:
            self.disk_full = exc
        self.stop.set()

    @contextlib.contextmanager
    def _space(self) -> Iterator[None]:
        try:
            yield
        except DiskFull as exc:
            self._disk_full(exc)

    def _context(self, facts: HostFacts) -> RunContext:
        options = self.options
        return RunContext(
            config=options.config,
            host=facts,
            store=self.store,
            cache=options.cache,
            repo=options.repo,
            stop=self.stop,
            update=self.ui.update,
            milestone=self.ui.milestone,
            timeout=options.timeout,
            index_max_age=options.index_max_age,
            pytest_args=options.pytest_args,
            suites=options.suites,
            measure_bare_boot=options.measure_bare_boot,
            profile=options.profile,
            provenance=self.provenance,
        )

    def _prepare_roots(self, context: RunContext) -> None:
        """A root of their own for the guests of another architecture than the host's."""
        for arch in sorted({k.arch for k in self.options.kernels} - {host_arch()}):
            mirror = debian_mirror(self.options.config.mirror)
            context.roots[arch] = ensure_root(arch, self.options.cache, mirror, self.ui.say)
            self.ui.say(f"{arch} guests boot into {context.roots[arch].path}")

    def _check_signatures(self, fetched: list[KernelRun]) -> None:
        """With --require-signatures, a kernel from an index that gpgv did not verify is not
        booted."""
        for kernel in fetched:
            unverified = [
                p
                for p in kernel.record.get("packages", [])
                if p.get("index_signature", "verified") != "verified"
            ]
            if unverified:
                why = unverified[0]["index_signature"]
                self.ui.say(f"[yellow]{kernel.spec.name}: index signature {why}[/yellow]")
                if self.options.require_signatures:
                    kernel.end("fetch-failed", f"--require-signatures: index {why}")

    def _boot_all(self, fetched: list[KernelRun]) -> None:
        with ThreadPoolExecutor(max_workers=self.options.jobs) as pool:
            futures: list[Future[None]] = [
                pool.submit(k.boot_and_collect) for k in fetched if not k.ended
            ]
            for future in futures:
                # A full disk in one kernel stops the others at once: their results have
                # nowhere to go either.
                future.add_done_callback(self._after_kernel)
            # A signal sets the stop event; the guests watch it and end within seconds, and
            # the pool's exit waits for them.
            while not all(f.done() for f in futures):
                time.sleep(0.2)
        for f in futures:
            if (exc := f.exception()) is not None and not isinstance(exc, DiskFull):
                raise exc

    def _after_kernel(self, future: Future[None]) -> None:
        if isinstance(exc := future.exception(), DiskFull):
            self._disk_full(exc)

    def write_report(self) -> dict[str, Any] | None:
        from harness.report import write_report

        try:
            matrix = write_report([self.options.results], self.options.results)
        except DiskFull as exc:
            self._disk_full(exc)
            return None
        except Exception as exc:  # the results are on disk; nox -s report can retry
            self.ui.say(f"[red]could not write the report[/red]: {exc!r}")
            return None
        self.ui.say(f"report: {self.options.results / 'report.html'}")
        return matrix

    def exit_status(self, matrix: dict[str, Any] | None) -> int:
        if self.signal is not None:
            return EXIT_SIGNAL.get(self.signal, 130)
        # A kernel behind a network this machine does not reach fails no local run; a merge
        # that promises that network (--require-complete) counts it as incomplete.
        unreachable = [k for k in self.kernels if k.state == "unreachable"]
        for k in unreachable:
            detail = k.record.get("detail", "")
            self.ui.say(
                escape(
                    f"unreachable (needs its network, fails no local run): {k.spec.name}: {detail}"
                )
            )
        incomplete = [k.spec.name for k in self.kernels if k.state not in ("ok", "unreachable")]
        return matrix_exit(
            matrix, incomplete, self.options.allow_surprises, lambda line: self.ui.say(escape(line))
        )

    def write_run(self, seconds: float) -> None:
        run = {
            **(self.facts.to_json() if self.facts else {}),
            "run_id": self.store.run_id,
            "kernels": [k.name for k in self.options.kernels],
            "statuses": {k.spec.name: k.state for k in self.kernels},
            "attempts": {
                k.spec.name: str(k.where.relative_to(self.options.results))
                for k in self.kernels
                if getattr(k, "where", None) is not None and k.where != k.final
            },
            "wall_seconds": round(seconds, 1),
            "bytecode_seconds": round(self.bytecode_seconds, 1) if self.bytecode_seconds else None,
            "phases": self.phases,
            "downloaded_bytes": TRANSFERS.bytes,
            "downloaded_files": TRANSFERS.files,
            "config": str(self.options.config.path),
            "provenance": self.provenance,
            "features": library_features(),
            "pytest_args": self.options.pytest_args,
        }
        write_json(self.options.results / "run.json", run)


def detach_dead_terminal() -> None:
    """After a hangup, writes to the terminal fail with EIO: every line the run still has to
    say (stopping, the report) would raise instead. Like nohup, send standard output and
    error to /dev/null where they can no longer be written; a log file or pipe stays."""
    for fd in (1, 2):
        try:
            os.write(fd, b"")
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)


def keep_previous(results: Path) -> None:
    """The last run's matrix becomes the baseline the report compares with: written whole or
    not at all (a copy cut short by a full disk would be a baseline of broken JSON)."""
    try:
        current = (results / "matrix.json").read_bytes()
    except FileNotFoundError:
        return
    write_bytes(results / "previous-matrix.json", current)


def library_features() -> list[dict[str, Any]]:
    """The library's features as this checkout defines them: the guests run this very
    library, so these are the rows even when no guest lived to report them itself."""
    from mountcompat.features import ordered

    return [
        {"id": f.id, "summary": f.summary, "strategies": [s.name for s in f.strategies]}
        for f in ordered()
    ]
