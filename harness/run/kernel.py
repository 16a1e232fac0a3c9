"""One kernel's life, as a small state machine:

    planned -> fetching -> fetched -> booting -> running -> collected

and every way it can go wrong mapped to exactly one terminal status:

``ok``            the suites ran to the end and gave a verdict for every (feature, strategy)
``no-verdicts``   the guest ran, but pytest could not collect or run the suites (exit 2-5),
                  or wrote no outcomes, or left strategies without a verdict
``timeout``       the wall-clock limit passed
``panic``         the console showed a kernel panic
``boot-failed``   the guest's command never started (one more boot is tried first)
``incomplete``    the guest started but did not finish, or runs another kernel than asked
``interrupted``   the run was stopped (Ctrl-C, SIGTERM) before this kernel ended
``fetch-failed``  its packages could not be resolved, downloaded, verified or extracted
``unreachable``   a kernel that kernels.yaml marks ``needs_network``: its server could not be
                  reached at all (no name, no route, no answer). Not a failure of a local run;
                  only where that network is promised (the nightly's merge with
                  --require-complete) is it an incomplete kernel

The kernel owns its staging directory and the processes of its guest; the orchestrator only
schedules it, stops it, and reports on it.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness.boot.process import RunOutcome, end_process_group, run_guest
from harness.boot.vng import (
    GuestPlan,
    bare_boot_command,
    build_vng_command,
    preemption_args,
    reproduce_script,
    vng_environment,
    vng_executable,
)
from harness.config import KernelSpec, MatrixConfig
from harness.errors import HarnessError, Unreachable
from harness.evidence import bounded
from harness.fetch.archive import INDEX_MAX_AGE
from harness.fetch.imagefacts import all_known, find_strings
from harness.fetch.kernels import Fetcher, KernelTree
from harness.files import load_json_object, read_json_object, write_json
from harness.guest import SCRATCH_DISK_BYTES
from harness.host.accel import AccelProbe
from harness.host.facts import HostFacts
from harness.host.guestroot import (
    GUEST_REPO,
    GUEST_RESULTS,
    GUEST_SUITES,
    GuestRoot,
    install_modules,
)
from harness.run.results import ResultStore
from harness.run.verdicts import judge

TERMINAL = (
    "ok",
    "no-verdicts",
    "timeout",
    "panic",
    "boot-failed",
    "incomplete",
    "interrupted",
    "fetch-failed",
    "unreachable",
)
Say = Callable[[str, str], None]  # (kernel, message)


@dataclass
class RunContext:
    """What every kernel of one run shares."""

    config: MatrixConfig
    host: HostFacts
    store: ResultStore
    cache: Path
    repo: Path
    stop: threading.Event
    update: Say  # a live progress line
    milestone: Say  # a line for the log as well
    timeout: float | None = None
    index_max_age: float = INDEX_MAX_AGE
    pytest_args: list[str] = field(default_factory=list)
    suites: Path | None = None
    measure_bare_boot: bool = False
    profile: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    roots: dict[str, GuestRoot] = field(default_factory=dict)  # by architecture


class KernelRun:
    def __init__(self, spec: KernelSpec, ctx: RunContext) -> None:
        self.spec, self.ctx = spec, ctx
        self.state = "planned"
        self.dir = ctx.store.stage(spec.name)
        self.final = ctx.store.final(spec.name)
        self.tree: KernelTree | None = None
        self.record: dict[str, Any] = {
            "name": spec.name,
            "note": spec.note,
            "tags": list(spec.tags),
            "arch": spec.arch,
            "source": spec.source.describe(),
            "run_id": ctx.store.run_id,
            "pytest_args": list(ctx.pytest_args),
            "provenance": ctx.provenance,
            "needs_network": spec.needs_network,
            "stands_in_for": list(spec.stands_in_for),
            "status": "planned",
        }
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def _enter(self, state: str, **values: Any) -> None:
        self.state = state
        self.record.update(values, status=state)
        write_json(self.dir / "kernel.json", self.record)

    # --- fetched ---------------------------------------------------------------------------
    def fetch(self) -> bool:
        self._enter("fetching")
        fetcher = Fetcher(
            cache=self.ctx.cache,
            mirror=self.ctx.config.mirror,
            index_max_age=self.ctx.index_max_age,
            progress=lambda message: self.ctx.update(self.spec.name, message),
        )
        try:
            tree = fetcher.fetch(self.spec)
        except Unreachable as exc:
            needs = self.spec.needs_network
            self.end("unreachable" if needs else "fetch-failed", str(exc))
            return False
        except HarnessError as exc:
            self.end("fetch-failed", str(exc))
            return False
        if tree.config:
            shutil.copyfile(tree.config, self.dir / "config")
        # The strings expectations may rest on, from the files that boot (image, modules).
        write_json(self.dir / "strings.json", find_strings(tree.vmlinuz, tree.modules, all_known()))
        if self.root is not None:
            install_modules(self.root, tree.modules, tree.release)
        self.tree = tree
        self._enter(
            "fetched",
            package_release=tree.release,
            packages=list(tree.packages),
            tree=tree.provenance(),
            fetch_notes=list(tree.notes),
        )
        self.ctx.milestone(self.spec.name, f"ready: {tree.release}")
        return True

    # --- booting, running ------------------------------------------------------------------
    @property
    def root(self) -> GuestRoot | None:
        """The root of the guest's own architecture, for a guest that cannot use the host's."""
        return self.ctx.roots.get(self.spec.arch)

    @property
    def accel(self) -> str:
        # KVM runs guests of the host's architecture only.
        return "tcg" if self.root is not None else self.ctx.host.accel.accel

    def plan(self, scratch_disk: Path) -> GuestPlan:
        """The guest runs the harness's own interpreter on the host's read-only root (it sees
        this virtualenv there), or the root's Python in a root of its own architecture, with
        this checkout, the suites and its results directory mapped in."""
        root = self.root
        shared: list[tuple[Path, str]] = []
        extra: tuple[Path, ...]
        if root is None:
            python, repo, results = sys.executable, str(self.ctx.repo), str(self.dir)
            suites = str(self.ctx.suites) if self.ctx.suites else None
            extra = (self.ctx.suites,) if self.ctx.suites else ()
            cwd = self.ctx.repo
        else:
            python, repo, results = root.python, GUEST_REPO, GUEST_RESULTS
            suites = GUEST_SUITES if self.ctx.suites else None
            shared = [(self.dir, GUEST_RESULTS), (self.ctx.repo, GUEST_REPO)]
            if self.ctx.suites:
                shared.append((self.ctx.suites, GUEST_SUITES))
            extra = tuple(host for host, _ in shared[1:])
            cwd = root.path / GUEST_REPO.lstrip("/")
        guest = (
            python,
            "-m",
            "harness.guest",
            "--results",
            results,
            "--repo",
            repo,
            *(["--suites", suites] if suites else []),
            *(["--profile"] if self.ctx.profile else []),
            "--",
            *self.ctx.pytest_args,
        )
        # The suites read the accelerator from the command line to scale their timeouts.
        assert self.tree is not None
        append = " ".join(
            filter(
                None,
                [
                    self.spec.append,
                    f"mountcompat.accel={self.accel}",
                    *preemption_args(self.tree.config),
                ],
            )
        )
        return GuestPlan(
            name=self.spec.name,
            vmlinuz=self.tree.vmlinuz,
            results=self.dir,
            guest_command=guest,
            accel=self.accel,
            cpus=self.spec.cpus,
            memory=self.spec.memory,
            append=append,
            cwd=cwd,
            scratch_disk=scratch_disk,
            tcg_cpu=self.spec.tcg_cpu,
            qemu_opts=self.spec.qemu_opts,
            extra_dirs=extra,
            arch=self.spec.arch,
            root=root.path if root else None,
            guest_paths=tuple(shared),
        )

    def boot_and_collect(self) -> None:
        """Boot (once more if the first boot never started the guest's command), run the
        suites, collect: ends in a terminal status whatever happens."""
        if self.ctx.stop.is_set():
            self.end("interrupted", "stopped before booting")
            return
        try:
            outcome, attempts = self._boot()
        except Exception as exc:  # one kernel's harness bug must not lose the others' results
            self.end("incomplete", f"harness error: {exc!r}")
            return
        self.collect(outcome, attempts)

    def _boot(self) -> tuple[RunOutcome, list[dict[str, Any]]]:
        name, vng = self.spec.name, vng_executable()
        with tempfile.TemporaryDirectory(prefix=f"mountcompat-{name}.") as tmp:
            # A sparse raw disk, formatted ext4 by the guest: the suites' disk-backed case.
            disk = Path(tmp) / "scratch.img"
            with disk.open("wb") as f:
                f.truncate(SCRATCH_DISK_BYTES)
            plan = self.plan(disk)
            command = build_vng_command(plan, vng=vng)
            # The plan's accelerator, read once: another kernel may switch the run to TCG
            # meanwhile, and a KVM guest must not get the copy (harness/host/qemu.py).
            env = vng_environment(self.ctx.host.tool_dirs(self.spec.arch, plan.accel), Path(tmp))
            self._write_reproduce(plan, vng, env)
            self._enter(
                "booting",
                accelerator=plan.accel,
                reproduce=f"sh {self.final / 'reproduce.sh'}",
                command=command,
                qemu=self.ctx.host.qemu.line_on(self.spec.arch, env["PATH"]),
                root=self.root.provenance() if self.root else None,
                virtme_ng=self.ctx.host.vng,
            )
            if self.ctx.measure_bare_boot:
                self.record["bare_boot_seconds"] = self.bare_boot(env)
            attempts: list[dict[str, Any]] = []
            attempt, retried = 0, False
            while True:
                attempt += 1
                outcome = self._attempt(command, env, attempt)
                if outcome.accel_failure is not None and plan.accel == "kvm":
                    # Not the kernel's failure: it does not use up the kernel's one retry.
                    plan, command, env = self._without_kvm(outcome, disk, vng, Path(tmp))
                elif self._retry_worthy(outcome) and not retried:
                    retried = True
                else:
                    break
                # A boot that never reached the guest's command is an infrastructure failure,
                # not a verdict: keep its console and evidence, and boot once more.
                (self.dir / "console.log").rename(self.dir / f"console-attempt{attempt}.log")
                attempts.append({"attempt": attempt, **outcome.to_json()})
                self.ctx.milestone(
                    name, f"{outcome.status} ({escape(outcome.detail)}); booting again"
                )
        return outcome, attempts

    def _without_kvm(
        self, outcome: RunOutcome, disk: Path, vng: str, tmp: Path
    ) -> tuple[GuestPlan, list[str], dict[str, str]]:
        """KVM ran the probe guest and could not run this one: TCG for it and for every
        guest of the run from now on, said in the run's facts and in this kernel's (and the
        QEMU of TCG guests, which may be another one)."""
        reason = f"KVM failed in {self.spec.name}'s guest ({outcome.accel_failure}): TCG since"
        self.ctx.host.accel = AccelProbe("tcg", reason)
        self.ctx.milestone(self.spec.name, escape(reason))
        plan = self.plan(disk)
        command = build_vng_command(plan, vng=vng)
        env = vng_environment(self.ctx.host.tool_dirs(self.spec.arch, plan.accel), tmp)
        self._write_reproduce(plan, vng, env)
        self._enter(
            "booting",
            accelerator=plan.accel,
            accelerator_reason=reason,
            command=command,
            qemu=self.ctx.host.qemu.line_on(self.spec.arch, env["PATH"]),
        )
        return plan, command, env

    def _write_reproduce(self, plan: GuestPlan, vng: str, env: dict[str, str]) -> None:
        (self.dir / "reproduce.sh").write_text(reproduce_script(plan, vng, env))
        (self.dir / "reproduce.sh").chmod(0o755)

    def _attempt(self, command: list[str], env: dict[str, str], attempt: int) -> RunOutcome:
        assert self.tree is not None
        timeout = self.ctx.timeout or self.spec.timeout
        self.ctx.milestone(
            self.spec.name,
            f"booting {self.tree.release} ({self.accel})"
            + (f", attempt {attempt}" if attempt > 1 else ""),
        )

        def on_line(line: str) -> None:
            if self.state == "booting":
                self._enter("running")
            self.ctx.update(self.spec.name, escape(line))

        return run_guest(
            command,
            env,
            self.dir,
            timeout,
            self.ctx.stop,
            on_line,
            boot_timeout=min(self.spec.boot_timeout, timeout),
        )

    def _retry_worthy(self, outcome: RunOutcome) -> bool:
        """A boot that failed or panicked before the guest's command started: under TCG on a
        busy host that can be the emulation's timing, not the kernel; a kernel that really
        cannot boot fails the second time too, and both consoles are kept."""
        started = (self.dir / "guest-started.json").exists()
        return outcome.status in ("boot-failed", "panic") and not started

    def bare_boot(self, env: dict[str, str]) -> float | None:
        """Seconds of a bare ``vng --run <vmlinuz> --exec true``: the boot cost alone."""
        assert self.tree is not None
        self.ctx.update(self.spec.name, "timing a bare boot")
        root = self.root
        command = bare_boot_command(
            self.tree.vmlinuz,
            self.accel,
            self.spec.cpus,
            self.spec.tcg_cpu,
            self.spec.arch,
            root.path if root else None,
            self.spec.append,
            self.spec.qemu_opts,
        )
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
            proc.wait(timeout=self.spec.boot_timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            end_process_group(proc)
        return round(time.monotonic() - started, 1) if proc.returncode == 0 else None

    # --- collected -------------------------------------------------------------------------
    def collect(self, outcome: RunOutcome, attempts: list[dict[str, Any]]) -> None:
        self._enter("collecting")
        release = _read_line(self.dir / "uname.txt")
        status, detail, evidence = outcome.status, outcome.detail, outcome.evidence
        asked = self.record.get("package_release")
        # Read leniently, once: a damaged guest.json is the verdicts' to name.
        guest = read_json_object(self.dir / "guest.json")
        machine = str(guest["machine"]) if guest.get("machine") else None
        if status == "ok" and release != asked:
            # A verdict is only worth its kernel: results from another one are not kept as ok.
            status, detail = "incomplete", f"the guest runs {release}, not the {asked} asked for"
        elif status == "ok" and machine != GUEST_MACHINE[self.spec.arch]:
            status, detail = "incomplete", f"the guest is {machine}, not {self.spec.arch}"
        elif status == "ok":
            status, detail, evidence = self.verdicts(evidence)
        # A test's bug, not the kernel's: the verdicts stand, and the leak is on record.
        leaked = guest.get("leaked_processes") or []
        for item in leaked:
            self.ctx.milestone(
                self.spec.name,
                f"[yellow]a test left a process behind[/yellow]: {escape(str(item))}",
            )
        self.end(
            status,
            detail,
            release=release,
            machine=machine,
            returncode=outcome.returncode,
            wall_seconds=round(outcome.seconds, 1),
            boot_seconds=_boot_seconds(outcome.timeline),
            timeline=outcome.timeline,
            evidence=bounded(evidence),
            attempts=attempts,
            leaked_processes=leaked,
        )

    def verdicts(self, evidence: list[str]) -> tuple[str, str, list[str]]:
        """``ok`` only if pytest ran the suites (exit 0, or 1 for failed tests) and wrote a
        verdict for every (feature, strategy) its library defines; a run narrowed by pytest
        arguments needs verdicts only for what it selected."""
        try:
            guest = load_json_object(self.dir / "guest.json") or {}
            outcomes = load_json_object(self.dir / "outcomes.json", ("cells", "features"))
            facts = load_json_object(self.dir / "facts.json") or {"error": "no facts.json"}
        except HarnessError as exc:
            return "no-verdicts", str(exc), self._pytest_tail()
        status, detail = judge(guest.get("pytest_exit"), outcomes, facts)
        if status != "ok":
            return status, detail, self._pytest_tail()
        return "ok", "the guest ran the suites to the end", evidence

    def _pytest_tail(self) -> list[str]:
        try:
            lines = (self.dir / "pytest.log").read_text(errors="replace").splitlines()
        except OSError:
            return ["(no pytest.log)"]
        return lines[-30:]

    def end(self, status: str, detail: str, **values: Any) -> None:
        """The one way out: the terminal status, kernel.json, and the staged results put in
        their place (or kept aside, for a run that produced no verdict)."""
        assert status in TERMINAL, status
        with self._lock:
            if self.ended:
                return
            finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            self._enter(status, detail=detail, finished=finished, **values)
            self.where = self.ctx.store.commit(self.spec.name, self.dir, status)
        colour = "green" if status == "ok" else "red"
        seconds = values.get("wall_seconds")
        took = f" in {seconds:.0f} s" if isinstance(seconds, float) else ""
        self.ctx.milestone(self.spec.name, f"[{colour}]{status}[/{colour}]{took}: {escape(detail)}")


GUEST_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}  # uname -m of each architecture


def _boot_seconds(timeline: list[dict[str, Any]]) -> float | None:
    for point in timeline:
        if point["event"] == "command-started":
            return float(point["seconds"])
    return None


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
