"""The matrix run: check the host, fetch the kernels, boot them side by side, collect results.

Results are written as each kernel ends and once more in ``finally``, so an interrupted run
still leaves everything it collected, and a report of it.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.accel import AccelProbe, probe_accel
from harness.config import KernelSpec, MatrixConfig
from harness.download import TRANSFERS
from harness.errors import HarnessError
from harness.files import write_json
from harness.kernels import Fetcher, KernelTree
from harness.prereqs import MATRIX_TOOLS, SUITE_TOOLS, ensure_tools
from harness.runner import RunOutcome, end_process_group, run_guest
from harness.ui import MatrixUI
from harness.virtiofsd import Virtiofsd, ensure_virtiofsd
from harness.vng import (
    SCRATCH_DISK_BYTES,
    GuestPlan,
    build_vng_command,
    reproduce_script,
    vng_environment,
    vng_executable,
)

REPO = Path(__file__).resolve().parent.parent
UNFINISHED = ("not-run", "fetching", "fetched", "booting")


@dataclass
class MatrixOptions:
    config: MatrixConfig
    kernels: list[KernelSpec]
    results: Path
    cache: Path
    jobs: int
    accel: str = "auto"
    timeout: float | None = None
    index_max_age: float = 24 * 3600.0
    pytest_args: list[str] = field(default_factory=list)
    repo: Path = REPO
    allow_surprises: bool = False
    measure_bare_boot: bool = False


@dataclass
class HostFacts:
    accel: AccelProbe
    virtiofsd: Virtiofsd
    qemu: str
    vng: str
    host: str
    started: str

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerator": self.accel.accel,
            "accelerator_reason": self.accel.reason,
            "virtiofsd": {
                "path": str(self.virtiofsd.path),
                "version": self.virtiofsd.version,
                "origin": self.virtiofsd.origin,
                "packages": list(self.virtiofsd.packages),
            },
            "qemu": self.qemu,
            "virtme_ng": self.vng,
            "host": self.host,
            "host_kernel": platform.release(),
            "started": self.started,
        }


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def default_jobs() -> int:
    # Each guest gets two vCPUs; under TCG a vCPU is a busy host thread.
    return max(1, (os.cpu_count() or 2) // 2)


class MatrixRun:
    def __init__(self, options: MatrixOptions, ui: MatrixUI) -> None:
        self.options = options
        self.ui = ui
        self.stop = threading.Event()
        self.records: dict[str, dict[str, Any]] = {}
        self.facts: HostFacts | None = None

    # --- preparation -----------------------------------------------------------------------
    def prepare_host(self) -> HostFacts:
        ensure_tools((*MATRIX_TOOLS, *SUITE_TOOLS), self.ui.say)
        vfsd = ensure_virtiofsd(self.options.cache, self.options.config.mirror, self.ui.say)
        self.ui.say(f"virtiofsd {vfsd.version} ({vfsd.origin}): {vfsd.path}")
        accel = probe_accel(self.options.accel)
        self.ui.say(f"accelerator: [bold]{accel.accel}[/bold] ({accel.reason})")
        vng = vng_executable()
        return HostFacts(
            accel=accel,
            virtiofsd=vfsd,
            qemu=first_line(["qemu-system-x86_64", "--version"]),
            vng=first_line([vng, "--version"]),
            host=platform.node(),
            started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )

    def fetch(self, spec: KernelSpec) -> KernelTree:
        def progress(message: str) -> None:
            self.ui.update(spec.name, message)

        fetcher = Fetcher(
            cache=self.options.cache,
            mirror=self.options.config.mirror,
            index_max_age=self.options.index_max_age,
            progress=progress,
        )
        return fetcher.fetch(spec)

    # --- one kernel ------------------------------------------------------------------------
    def kernel_dir(self, spec: KernelSpec) -> Path:
        return self.options.results / spec.name

    def record(self, spec: KernelSpec, **values: Any) -> dict[str, Any]:
        rec = self.records.setdefault(
            spec.name,
            {
                "name": spec.name,
                "note": spec.note,
                "tags": list(spec.tags),
                "source": spec.source.describe(),
                "status": "not-run",
            },
        )
        rec.update(values)
        write_json(self.kernel_dir(spec) / "kernel.json", rec)
        return rec

    def plan(
        self, spec: KernelSpec, tree: KernelTree, facts: HostFacts, scratch_disk: Path | None = None
    ) -> GuestPlan:
        results = self.kernel_dir(spec)
        guest = (
            sys.executable,
            "-m",
            "harness.guest",
            "--results",
            str(results),
            "--repo",
            str(self.options.repo),
            "--",
            *self.options.pytest_args,
        )
        # The suites read the accelerator from the command line to scale their timeouts.
        append = " ".join(filter(None, [spec.append, f"mountcompat.accel={facts.accel.accel}"]))
        return GuestPlan(
            name=spec.name,
            vmlinuz=tree.vmlinuz,
            results=results,
            guest_command=guest,
            accel=facts.accel.accel,
            cpus=spec.cpus,
            memory=spec.memory,
            append=append,
            cwd=self.options.repo,
            scratch_disk=scratch_disk,
            tcg_cpu=spec.tcg_cpu,
        )

    def fetch_all(self) -> dict[str, KernelTree]:
        """Fetch every kernel before booting any, so a network problem shows at once."""
        trees = {}
        for spec in self.options.kernels:
            if self.stop.is_set():
                break
            results = self.kernel_dir(spec)
            shutil.rmtree(results, ignore_errors=True)
            results.mkdir(parents=True)
            self.record(spec, status="fetching")
            try:
                tree = self.fetch(spec)
            except HarnessError as exc:
                self.record(spec, status="fetch-failed", detail=str(exc))
                self.ui.finish(spec.name, f"[red]fetch failed[/red]: {exc}")
                continue
            if tree.config:
                shutil.copyfile(tree.config, results / "config")
            self.record(
                spec,
                status="fetched",
                package_release=tree.release,
                packages=list(tree.packages),
                provenance=tree.provenance(),
            )
            self.ui.milestone(spec.name, f"ready: {tree.release}")
            trees[spec.name] = tree
        return trees

    def boot(self, spec: KernelSpec, tree: KernelTree, facts: HostFacts) -> None:
        name, results = spec.name, self.kernel_dir(spec)
        with tempfile.TemporaryDirectory(prefix=f"mountcompat-{name}.") as tmp:
            # A sparse raw disk, formatted ext4 by the guest: the suites' disk-backed case.
            disk = Path(tmp) / "scratch.img"
            with disk.open("wb") as f:
                f.truncate(SCRATCH_DISK_BYTES)
            plan = self.plan(spec, tree, facts, scratch_disk=disk)
            command = build_vng_command(plan, vng=vng_executable())
            env = vng_environment(facts.virtiofsd.bin_dir, Path(tmp))
            (results / "reproduce.sh").write_text(reproduce_script(command, env))
            (results / "reproduce.sh").chmod(0o755)
            self.record(
                spec,
                status="booting",
                accelerator=facts.accel.accel,
                reproduce=f"sh {results / 'reproduce.sh'}",
                command=command,
                qemu=facts.qemu,
                virtme_ng=facts.vng,
            )
            booted: list[float] = []
            started = time.monotonic()

            def on_line(line: str) -> None:
                if not booted:
                    booted.append(time.monotonic() - started)
                self.ui.update(name, line)

            timeout = self.options.timeout or spec.timeout
            if self.options.measure_bare_boot:
                self.record(spec, bare_boot_seconds=self.bare_boot(spec, tree, facts, env))
            attempts: list[dict[str, Any]] = []
            for attempt in (1, 2):
                started = time.monotonic()
                self.ui.milestone(
                    name,
                    f"booting {tree.release} ({facts.accel.accel})"
                    + (f", attempt {attempt}" if attempt > 1 else ""),
                )
                outcome = run_guest(
                    command,
                    env,
                    results,
                    timeout,
                    self.stop,
                    on_line,
                    boot_timeout=min(spec.boot_timeout, timeout),
                )
                if not retry_worthy(outcome, results) or attempt == 2:
                    break
                # A boot that never reached the guest's command is an infrastructure failure,
                # not a verdict: keep its console and evidence, and boot once more.
                (results / "console.log").rename(results / f"console-attempt{attempt}.log")
                attempts.append({"attempt": attempt, **outcome.to_json()})
                self.ui.say(f"{name}: {outcome.status} ({outcome.detail}); booting again")
                booted.clear()
        self.record(spec, attempts=attempts)
        self.finish_kernel(spec, outcome, booted[0] if booted else None)

    def bare_boot(
        self, spec: KernelSpec, tree: KernelTree, facts: HostFacts, env: dict[str, str]
    ) -> float | None:
        """Seconds of a bare ``vng --run <vmlinuz> --exec true``: the boot cost alone."""
        self.ui.update(spec.name, "timing a bare boot")
        command = [vng_executable(), "--run", str(tree.vmlinuz), "--exec", "true"]
        if facts.accel.accel == "tcg":
            command += ["--disable-kvm", f"--qemu-opts=-cpu {spec.tcg_cpu}"]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=spec.boot_timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            end_process_group(proc)
        return round(time.monotonic() - started, 1) if proc.returncode == 0 else None

    def finish_kernel(
        self, spec: KernelSpec, outcome: RunOutcome, boot_seconds: float | None
    ) -> None:
        results = self.kernel_dir(spec)
        release = (
            (results / "uname.txt").read_text().strip()
            if (results / "uname.txt").exists()
            else None
        )
        asked = self.records.get(spec.name, {}).get("package_release")
        if outcome.status == "ok" and release != asked:
            # A verdict is only worth its kernel: results from another one are not kept as ok.
            outcome.status = "incomplete"
            outcome.detail = f"the guest runs {release}, not the {asked} that was asked for"
        self.record(
            spec,
            status=outcome.status,
            detail=outcome.detail,
            release=release,
            finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            returncode=outcome.returncode,
            wall_seconds=round(outcome.seconds, 1),
            boot_seconds=round(boot_seconds, 1) if boot_seconds else None,
            evidence=outcome.evidence,
        )
        colour = "green" if outcome.status == "ok" else "red"
        self.ui.finish(
            spec.name,
            f"[{colour}]{outcome.status}[/{colour}] in {outcome.seconds:.0f} s: {outcome.detail}",
        )

    # --- the whole run ---------------------------------------------------------------------
    def run(self) -> int:
        options = self.options
        options.results.mkdir(parents=True, exist_ok=True)
        keep_previous(options.results)
        self.facts = facts = self.prepare_host()
        for spec in options.kernels:
            self.ui.add_kernel(spec.name)
        started = time.monotonic()
        try:
            trees = self.fetch_all()
            with ThreadPoolExecutor(max_workers=options.jobs) as pool:
                futures: list[Future[None]] = [
                    pool.submit(self.guarded, spec, trees[spec.name], facts)
                    for spec in options.kernels
                    if spec.name in trees
                ]
                try:
                    while not all(f.done() for f in futures):
                        time.sleep(0.2)
                except KeyboardInterrupt:
                    # Before the pool's exit waits for its threads: they watch this event.
                    self.stop.set()
                    self.ui.say(
                        "[yellow]interrupted: stopping the guests, keeping the results[/yellow]"
                    )
                    raise
        finally:
            self.stop.set()
            for spec in options.kernels:
                if self.records.get(spec.name, {}).get("status") in UNFINISHED:
                    self.record(spec, status="interrupted", detail="the run stopped first")
            self.write_run(time.monotonic() - started)
            matrix = self.write_report()
        return self.exit_status(matrix)

    def write_report(self) -> dict[str, Any] | None:
        from harness.report import write_report

        try:
            matrix = write_report([self.options.results], self.options.results)
        except Exception as exc:  # the results are on disk; nox -s report can retry
            self.ui.say(f"[red]could not write the report[/red]: {exc!r}")
            return None
        self.ui.say(f"report: {self.options.results / 'report.html'}")
        return matrix

    def exit_status(self, matrix: dict[str, Any] | None) -> int:
        from harness.report import surprise_lines

        incomplete = [n for n, r in self.records.items() if r.get("status") != "ok"]
        surprises = surprise_lines(matrix) if matrix else []
        for line in surprises:
            self.ui.say(f"[bold red]surprise[/bold red]: {line}")
        if incomplete:
            self.ui.say(f"[red]did not complete[/red]: {', '.join(incomplete)}")
        if incomplete or matrix is None:
            return 1
        if surprises and not self.options.allow_surprises:
            self.ui.say("surprises make the exit status 5 (--allow-surprises to accept them)")
            return 5
        return 0

    def guarded(self, spec: KernelSpec, tree: KernelTree, facts: HostFacts) -> None:
        if self.stop.is_set():
            self.record(spec, status="interrupted", detail="stopped before booting")
            return
        try:
            self.boot(spec, tree, facts)
        except Exception as exc:  # one kernel's harness bug must not lose the others' results
            self.record(spec, status="incomplete", detail=f"harness error: {exc!r}")
            self.ui.finish(spec.name, f"[red]harness error[/red]: {exc!r}")

    def write_run(self, seconds: float) -> None:
        run = {
            **(self.facts.to_json() if self.facts else {}),
            "kernels": [k.name for k in self.options.kernels],
            "statuses": {n: r.get("status") for n, r in self.records.items()},
            "wall_seconds": round(seconds, 1),
            "downloaded_bytes": TRANSFERS.bytes,
            "downloaded_files": TRANSFERS.files,
            "config": str(self.options.config.path),
        }
        write_json(self.options.results / "run.json", run)


def retry_worthy(outcome: RunOutcome, results: Path) -> bool:
    return outcome.status == "boot-failed" and not (results / "guest-started.json").exists()


def keep_previous(results: Path) -> None:
    """The last run's matrix becomes the baseline the report compares with."""
    current = results / "matrix.json"
    if current.exists():
        shutil.copyfile(current, results / "previous-matrix.json")
