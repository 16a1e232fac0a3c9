"""One kernel's guest: start vng, watch its console, enforce the deadline, always clean up.

The guest reports out of band, through files in its results directory; the console is only
evidence (and the way to see a panic). vng, qemu and virtiofsd share one process group, made
for this run, so the whole group can be ended, whatever happened: vng starts virtiofsd in the
background and only its own exit handler would stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

PANIC_MARKERS = ("Kernel panic - not syncing", "---[ end Kernel panic")
OOPS_MARKERS = ("BUG: ", "Oops: ", "WARNING: CPU: ", "general protection fault")
GUEST_PROGRESS = "mountcompat-guest:"
# A progress line "mountcompat-guest: @event detail" is also a point of the kernel's timeline,
# timed by the host when it arrives (the guest's clock is not the host's).
TIMELINE_MARK = "@"
PANIC_GRACE = 3.0  # seconds of console kept after a panic line, for the backtrace
# QEMU's own words when KVM cannot run the guest on: it stops the guest and waits forever. On
# some hosts a probe guest runs under KVM and a real kernel then fails so (lock cmpxchg16b in
# SLUB's first allocations, "emulation failure"); the harness boots it again under TCG.
KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure")

OnLine = Callable[[str], None]


@dataclass
class RunOutcome:
    status: str
    detail: str
    returncode: int | None
    seconds: float
    evidence: list[str] = field(default_factory=list)
    # Seconds from QEMU's start: its first console line, the guest's command starting, and
    # every event the guest marked, in order.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    accel_failure: str | None = None  # QEMU's line saying that KVM could not go on

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ConsoleWatcher:
    """Copies the console to a file line by line and notices panics and guest progress."""

    def __init__(self, stream: IO[bytes], log: IO[str], on_line: OnLine) -> None:
        self.stream, self.log, self.on_line = stream, log, on_line
        self.panic_at: float | None = None
        self.started_at: float | None = None  # the guest's command said something
        self.tail: deque[str] = deque(maxlen=60)
        self.first_line_at: float | None = None
        self.events: list[tuple[str, str, float]] = []  # (event, detail, monotonic time)
        self.panic_lines: list[str] = []
        self.accel_failure: str | None = None
        self.accel_failed_at: float | None = None
        self.oops_lines: list[str] = []
        self.log_error: OSError | None = None
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._keep(line)
            self.tail.append(line)
            if self.first_line_at is None:
                self.first_line_at = time.monotonic()
            if self.panic_at is None and any(m in line for m in PANIC_MARKERS):
                self.panic_at = time.monotonic()
                self.panic_lines = list(self.tail)[-20:]
            elif self.panic_at is not None and len(self.panic_lines) < 60:
                self.panic_lines.append(line)
            if self.accel_failure is None and any(m in line for m in KVM_FAILURE_MARKERS):
                self.accel_failure, self.accel_failed_at = line.strip(), time.monotonic()
            if any(m in line for m in OOPS_MARKERS) and not self.oops_lines:
                self.oops_lines = [line]
            elif self.oops_lines and len(self.oops_lines) < 40:
                self.oops_lines.append(line)
            if GUEST_PROGRESS in line:
                if self.started_at is None:
                    self.started_at = time.monotonic()
                said = line.split(GUEST_PROGRESS, 1)[1].strip()
                if said.startswith(TIMELINE_MARK):
                    event, _, detail = said[1:].partition(" ")
                    self.events.append((event, detail, time.monotonic()))
                else:
                    self.on_line(said)
        with contextlib.suppress(OSError):
            self.log.flush()

    def _keep(self, line: str) -> None:
        """The line into console.log, while it can be written. A full disk stops the copy,
        not the reading: QEMU would block on a console nobody reads, and the lines still
        count (progress, panic); the run says what it could not write."""
        if self.log_error is not None:
            return
        try:
            self.log.write(line + "\n")
        except OSError as exc:
            self.log_error = exc


def end_process_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the run's process group, wait, then SIGKILL whatever is left of it."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
            if proc.poll() is not None and not group_alive(pgid):
                return
    proc.wait()


class StackWatch:
    """The guest's stack beside vng: QEMU and the virtiofsd daemons that serve its
    filesystems. A virtiofsd that dies leaves QEMU running and the guest waiting forever on
    its next file access; only QEMU's own end (the guest powered off, after which vng stops
    the daemons) is an orderly one. So a daemon gone while QEMU still runs ends the guest."""

    SCAN_EVERY = 1.0

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.seen: dict[int, str] = {}  # pid -> what it is
        self._next = 0.0

    def died(self) -> str | None:
        """What died, as "virtiofsd (pid N)", once a daemon is gone while QEMU lives."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.SCAN_EVERY
        alive = _stack_members(self.pgid)
        self.seen.update(alive)
        qemu = [pid for pid, role in alive.items() if role == "qemu"]
        gone = [pid for pid, role in self.seen.items() if role != "qemu" and pid not in alive]
        # QEMU looked again after the daemon was found gone: in an orderly end it went first.
        if gone and qemu and any(_running(pid) for pid in qemu):
            pid = gone[0]
            return f"{self.seen[pid]} (pid {pid})"
        return None


def _role(argv: list[str]) -> str | None:
    # QEMU also through its own loader, as a private copy runs it (harness/host/qemu.py).
    if any(Path(a).name.startswith("qemu-system") for a in argv[:5] if not a.startswith("-")):
        return "qemu"
    # Also when run through its own loader: "ld-linux... --library-path DIR .../virtiofsd".
    # Only the daemon serves a socket: vng first asks each virtiofsd it finds for --version
    # and --help, and those answers end while QEMU runs without anything having died.
    named = any(Path(a).name == "virtiofsd" for a in argv[:5] if not a.startswith("-"))
    if named and "--socket-path" in argv:
        return "virtiofsd"
    return None


def _stack_members(pgid: int) -> dict[int, str]:
    members = {}
    for pid, fields in _group(pgid):
        if fields[0] == "Z":
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        role = _role([os.fsdecode(a) for a in argv])
        if role is not None:
            members[pid] = role
    return members


def _running(pid: int) -> bool:
    fields = stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


def _group(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """Each process of the group with its /proc stat fields after the command name."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_fields(stat)
        if fields is not None and int(fields[2]) == pgid:
            yield int(stat.parent.name), fields


def stat_fields(stat: Path) -> list[str] | None:
    """The fields after the command name (which may hold blanks and parentheses), or None
    for a process that is gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _only_zombies(pgid)


def _only_zombies(pgid: int) -> bool:
    return all(fields[0] == "Z" for _, fields in _group(pgid))


def classify(
    results: Path,
    *,
    timed_out: bool,
    panicked: bool,
    interrupted: bool,
    returncode: int | None,
    timeout: float,
    boot_stalled: float | None = None,
    died: str | None = None,
    accel_failure: str | None = None,
) -> tuple[str, str]:
    if panicked:
        return "panic", "the kernel panicked"
    started = (results / "guest-started.json").exists()
    if accel_failure is not None:
        return ("incomplete" if started else "boot-failed"), (
            f"KVM could not run the guest on: {accel_failure}"
        )
    if died is not None:
        if started:
            return "incomplete", f"{died} died while the guest ran"
        return "boot-failed", f"{died} died while the guest booted"
    if boot_stalled is not None:
        return "boot-failed", f"the guest's command did not start within {boot_stalled:.0f} s"
    if timed_out:
        return "timeout", f"no result within {timeout:.0f} s"
    if interrupted:
        return "interrupted", "stopped by the user"
    if (results / "guest.json").exists():
        return "ok", "the guest ran the suites to the end"
    if started:
        return "incomplete", f"the guest started but did not finish (vng exited {returncode})"
    return "boot-failed", f"the guest never started its command (vng exited {returncode})"


def run_guest(
    command: list[str],
    env: dict[str, str],
    results: Path,
    timeout: float,
    stop: threading.Event,
    on_line: OnLine,
    boot_timeout: float | None = None,
) -> RunOutcome:
    """Run one guest to its end, its deadline, a panic, or ``stop``; never leave a process.
    ``boot_timeout``: how long the kernel may take to start the guest's command (an early
    oops can hang a boot that would otherwise wait out the whole deadline)."""
    started = time.monotonic()
    timed_out = interrupted = False
    boot_stalled: float | None = None
    died: str | None = None
    with (results / "console.log").open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        assert proc.stdout is not None
        watcher = ConsoleWatcher(proc.stdout, log, on_line)
        stack = StackWatch(proc.pid)
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if stop.is_set():
                    interrupted = True
                    break
                if now - started > timeout:
                    timed_out = True
                    break
                if boot_timeout and watcher.started_at is None and now - started > boot_timeout:
                    boot_stalled = boot_timeout
                    break
                if watcher.panic_at is not None and now - watcher.panic_at > PANIC_GRACE:
                    break
                failed_at = watcher.accel_failed_at
                if failed_at is not None and now - failed_at > PANIC_GRACE:
                    break  # QEMU's register dump is in; the guest will never go on
                if (died := stack.died()) is not None:
                    break
                time.sleep(0.2)
        finally:
            end_process_group(proc)
            watcher.thread.join(timeout=10)
    panicked = watcher.panic_at is not None
    status, detail = classify(
        results,
        timed_out=timed_out,
        panicked=panicked,
        interrupted=interrupted,
        returncode=proc.returncode,
        timeout=timeout,
        boot_stalled=boot_stalled,
        died=died,
        accel_failure=watcher.accel_failure,
    )
    if panicked:
        evidence = watcher.panic_lines
    elif status != "ok" and watcher.oops_lines:
        evidence = [*watcher.oops_lines, "[...]", *list(watcher.tail)[-10:]]
    else:
        # For a boot that failed, the last lines are vng's or QEMU's own words on why.
        evidence = list(watcher.tail)[-25:]
    ended = time.monotonic()
    return RunOutcome(
        status,
        detail,
        proc.returncode,
        ended - started,
        evidence,
        timeline(watcher, started, ended),
        watcher.accel_failure,
    )


def timeline(watcher: ConsoleWatcher, started: float, ended: float) -> list[dict[str, Any]]:
    points = [("qemu-started", "", started)]
    if watcher.first_line_at is not None:
        points.append(("console-first-line", "", watcher.first_line_at))
    points += watcher.events
    points.append(("guest-exit", "", ended))
    return [
        {"event": event, "detail": detail, "seconds": round(at - started, 2)}
        for event, detail, at in points
    ]
