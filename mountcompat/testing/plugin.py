"""The suites' pytest plugin: private mount namespace, leak checks, verdicts, results file.

It acts only where it is asked for (``-p mountcompat.testing.plugin``, as this repository's
pyproject.toml does for its own tests and suites): installing mountcompat registers no
plugin, so a project that merely depends on the library sees no namespace, no leak check and
no timeout of ours. Its state lives in ``config.stash``.

Options:
  --mountcompat-results=FILE   write every test's verdicts and the cells as JSON
  --mountcompat-scratch=DIR    a disk-backed or shared directory for the "disk" backing
  --mountcompat-no-namespace   do not enter a private mount namespace (not for mounting tests)

Markers:
  @pytest.mark.strategy(feature, strategy)  the test is evidence for that cell; the library's
                                            StrategyUnsupported for it means "unsupported"
  @pytest.mark.default_choice(feature)      the test checks the library's unforced choice
  @pytest.mark.no_leak_check                (for tests of the leak checker itself)
  @pytest.mark.refused_only_if_missing      a refusal other than "the kernel lacks it" is broken

Per-test timeout: pytest-timeout's own order decides (marker, command line, PYTEST_TIMEOUT,
ini); only when none of them gives one does this plugin set a default, scaled for an
emulated CPU and kept far below the harness's per-kernel deadline, so that a hung test costs
that test and not the whole kernel.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from mountcompat import _syscalls
from mountcompat._syscalls import KernelLogCursor
from mountcompat.choices import LOG
from mountcompat.errors import StrategyUnsupported, errno_name
from mountcompat.mounts import private_mount_namespace
from mountcompat.testing.kernel_trace import KernelCall, KernelWitness, confirms
from mountcompat.testing.leaks import Snapshot, leaks_since
from mountcompat.testing.outcomes import TestEvidence, aggregate, defaults_from
from mountcompat.testing.paths import Paths, path_of_records
from mountcompat.testing.slowness import timeout_factor

PROPERTY = "mountcompat"
SYSCALLS = "mountcompat_syscalls"
# Seconds per test on real hardware; times timeout_factor() under TCG (10x: 200 s), far
# below the harness's 1200 s per kernel.
BASE_TIMEOUT = 20.0
records_mark = pytest.StashKey[int]()
owned_dirs = pytest.StashKey[list[str]]()
backing_kind = pytest.StashKey[str]()
state_key = pytest.StashKey["SuitesState"]()
refusal_key = pytest.StashKey[StrategyUnsupported]()
# The kernel's own report of a bug of its own (a WARN_ON, a BUG, an oops): logged during a
# test, it makes every cell of that test broken, whatever the test saw.
KERNEL_TROUBLE = re.compile(
    r"(WARNING: CPU: \d+ PID: |------------\[ cut here \]|kernel BUG at |BUG: |Oops|"
    r"general protection fault|UBSAN: |KASAN: |Kernel panic)"
)
KERNEL_LOG_KEPT = 40
paths_key = pytest.StashKey[Paths]()
kernel_calls_key = pytest.StashKey[list[KernelCall]]()
notes_key = pytest.StashKey[list[str]]()


def register_paths(config: pytest.Config, paths: Paths) -> None:
    """The suites' table of strategy paths (suites/paths.py): from then on a test is
    ``works`` evidence for a cell only if each attempt of the strategy followed its path."""
    config.stash[paths_key] = paths


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mountcompat")
    group.addoption("--mountcompat-results", metavar="FILE", help="write verdicts as JSON")
    group.addoption(
        "--mountcompat-scratch",
        metavar="DIR",
        default="/var/tmp",
        help="disk-backed or shared directory for the 'disk' backing (default: %(default)s)",
    )
    group.addoption(
        "--mountcompat-no-namespace",
        action="store_true",
        help="stay in the caller's mount namespace",
    )


class SuitesState:
    """Everything the plugin keeps for one pytest run: the evidence gathered from test reports
    (in the xdist controller, or the only process) and the kernel log reader. Registered as
    a plugin of its own so that hooks without a ``config`` argument reach it."""

    def __init__(self) -> None:
        self.evidence: dict[tuple[str, str, str], TestEvidence] = {}
        self.records: list[dict[str, Any]] = []
        self.known_cells: set[tuple[str, str]] = set()
        # What the kernel says during each test is part of its evidence: some refusals carry
        # their reason only there.
        self.kernel_log = KernelLogCursor()
        self.worker_syscalls: collections.Counter[str] = collections.Counter()
        self.deselected = 0
        self.narrowing_args: list[str] = []
        # The kernel's witness of each test's calls, or why there is none.
        self.witness: KernelWitness | None = None
        self.no_witness = ""

    def start_witness(self) -> None:
        """Before the first test's leak snapshot (its trace instance and pipe are the run's);
        root only."""
        started = KernelWitness.start() if os.geteuid() == 0 else "not root"
        if isinstance(started, KernelWitness):
            self.witness = started
        else:
            self.no_witness = started

    def witness_name(self) -> str:
        if self.witness is not None:
            return f"the library's raw syscall layer and {self.witness.describe()}"
        return f"the library's raw syscall layer only ({self.no_witness})"

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """An xdist worker ended: its syscall counts (the controller calls none itself)."""
        self.worker_syscalls.update(getattr(node, "workeroutput", {}).get(SYSCALLS, {}))

    def add(self, items: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
        for item in items:
            ev = TestEvidence(**item)
            key = (ev.nodeid, ev.feature, ev.strategy)
            earlier = self.evidence.get(key)
            # A teardown failure (a leak) turns an earlier verdict into "broken".
            if earlier is None or ev.verdict == "broken":
                self.evidence[key] = ev
        self.records.extend(records)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Runs in the xdist controller too, with reports (and their properties) from workers.
        for name, value in report.user_properties:
            if name == PROPERTY:
                data = json.loads(str(value))
                self.add(data["items"], data["records"])

    def write(self, path: Path, exit_status: int) -> None:
        from mountcompat import _syscalls
        from mountcompat.features import ordered

        cells = aggregate(self.evidence.values(), self.known_cells)
        data = {
            "schema": 1,
            "kernel": platform.release(),
            "exit_status": exit_status,
            # The library's own list of what should have a verdict: the report's rows, and
            # what the harness checks the verdicts against.
            "features": [
                {"id": f.id, "summary": f.summary, "strategies": [s.name for s in f.strategies]}
                for f in ordered()
            ],
            "tests": [e.to_json() for e in self.evidence.values()],
            "cells": [c.to_json() for c in cells],
            "defaults": defaults_from(self.records),
            # Every number of this architecture's table, and how often the suites called it
            # (in this process): a number never called was never checked on this kernel.
            # Whether this run was narrowed (tests deselected, or single files or tests named):
            # only a whole run must give every strategy a verdict.
            "selection": {
                "narrowed": bool(self.deselected or self.narrowing_args),
                "deselected": self.deselected,
                "args": self.narrowing_args,
            },
            "syscalls": {
                name: _syscalls.CALLED[name] + self.worker_syscalls[name]
                for name in sorted(_syscalls.NR)
            },
            "witness": self.witness_name(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, path)


def _state(config: pytest.Config) -> SuitesState:
    return config.stash[state_key]


def _set_default_timeout(config: pytest.Config) -> None:
    """Our default, only where pytest-timeout has none from the command line, the environment
    or the ini file (a marker still wins over it, per test)."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return
    if config.getini("timeout"):
        return
    config.option.timeout = BASE_TIMEOUT * timeout_factor()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "strategy(feature, strategy): evidence for that cell")
    config.addinivalue_line("markers", "default_choice(feature): checks the unforced choice")
    config.addinivalue_line("markers", "no_leak_check: skip the mount/loop/fd leak check")
    config.addinivalue_line(
        "markers",
        "refused_only_if_missing: the request is valid wherever the strategy exists, so only "
        "the kernel's lack of the strategy may refuse it",
    )
    if os.geteuid() == 0 and not config.getoption("--mountcompat-no-namespace"):
        private_mount_namespace()
    # Every strategy's calls go into its choice records: the evidence of the path it took.
    _syscalls.set_tracing(True)
    _set_default_timeout(config)
    state = SuitesState()
    state.narrowing_args = [a for a in config.args if "::" in a or a.endswith(".py")]
    state.start_witness()
    config.stash[state_key] = state
    config.pluginmanager.register(state, "mountcompat-suites-state")


def _cells(item: pytest.Item) -> list[tuple[str, str]]:
    return [(m.args[0], m.args[1]) for m in item.iter_markers("strategy")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = _state(config)
    for item in items:
        state.known_cells.update(_cells(item))


@pytest.fixture
def cell_note(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``cell_note(text)``: a sentence for the evidence of the test's cells (what the test
    exercised: how often a retry ran, say)."""
    notes: list[str] = request.node.stash.setdefault(notes_key, [])
    return notes.append


@pytest.fixture(autouse=True)
def _mountcompat_guard(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """Fails the test if it leaves a mount, a loop device (of its own files) or an fd."""
    item = request.node
    item.stash[owned_dirs] = []
    if item.get_closest_marker("no_leak_check"):
        yield
        return
    before = Snapshot.take()
    yield
    problems = leaks_since(before, item.stash[owned_dirs])
    if problems:
        pytest.fail("leaked:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """The kernel's refusal of a test's own cell is that cell's "unsupported" verdict: kept
    for the report, which says "skipped", and taken off the call at once. (Left to fail,
    pytest would first format its traceback with the source of every frame, over half a
    second a test under an emulated CPU, only to throw it away.) An old-style wrapper, for
    the pytest 7 and pluggy 1.0 of Debian 12, which guest roots of another architecture use."""
    witness = _state(item.config).witness
    if witness is not None:
        witness.clear()
    outcome = yield
    if witness is not None:
        item.stash[kernel_calls_key] = witness.take()
    exc = outcome.excinfo[1] if outcome.excinfo else None
    if isinstance(exc, StrategyUnsupported) and (exc.feature, exc.strategy) in _cells(item):
        item.stash[refusal_key] = exc
        outcome.force_result(None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[records_mark] = LOG.mark()
    _state(item.config).kernel_log.lines()  # what earlier tests made the kernel say


def _verdict(
    report: pytest.TestReport,
    excinfo: pytest.ExceptionInfo[BaseException] | None,
    cell: tuple[str, str],
    outcomes: set[str],
    refusal: StrategyUnsupported | None,
    only_missing: bool = False,
    path_problems: list[str] | None = None,
    kernel_trouble: list[str] | None = None,
) -> tuple[str, int | None, str | None, str]:
    """One test's verdict for one cell. ``works`` needs a choice record ``used``: a test that
    passed while the strategy only failed (the error it expected) shows that the strategy
    refuses correctly, not that it works, and is ``expected-failure``."""
    exc = excinfo.value if excinfo is not None else None
    if kernel_trouble:
        return (
            "broken",
            None,
            None,
            "the kernel reported a bug during the test: " + "; ".join(kernel_trouble[:3]),
        )
    if getattr(report, "wasxfail", None) is not None:
        return "broken", None, None, "xfail and xpass are no verdict in the suites"
    if refusal is not None:
        if (refusal.feature, refusal.strategy) == cell:
            if only_missing and not refusal.missing:
                return (
                    "broken",
                    refusal.errno,
                    errno_name(refusal.errno),
                    "refused as beyond the strategy for this request, where only the kernel's "
                    f"lack of the strategy may refuse it: {refusal.message}",
                )
            return "unsupported", refusal.errno, errno_name(refusal.errno), refusal.message
        # Cut short by another cell's refusal: no evidence either way for this one.
        return "not-run", None, None, f"stopped: {refusal.feature}={refusal.strategy} unsupported"
    if report.skipped:
        return "not-run", None, None, str(report.longrepr)[-500:]
    if report.failed:
        err = getattr(exc, "errno", None)
        return "broken", err, errno_name(err), str(report.longrepr)[-2000:]
    if report.when == "call" and "used" not in outcomes:
        if "failed" in outcomes:
            return "expected-failure", None, None, "the strategy ran and failed as the test expects"
        return "broken", None, None, "passed, but the choice log never shows this strategy run"
    if path_problems:
        return "broken", None, None, "took another path: " + "; ".join(path_problems)
    return "works", None, None, ""


def _notes(item: pytest.Item) -> list[str]:
    notes: list[str] = item.stash.setdefault(notes_key, [])
    return notes


def _kernel_log(state: SuitesState) -> tuple[list[str], list[str]]:
    """What the kernel logged during the test (the last lines, and every line of a bug report
    of its own, however long the log)."""
    lines = state.kernel_log.lines(limit=100_000)
    trouble = [line for line in lines if KERNEL_TROUBLE.match(line)]
    kept = lines[-KERNEL_LOG_KEPT:]
    return [*(t for t in trouble if t not in kept), *kept], trouble


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    cells = _cells(item)
    if report.when in ("setup", "teardown") and report.passed:
        return
    records = [r.to_json() for r in LOG.since(item.stash.get(records_mark, 0))]
    state = _state(item.config)
    kernel_log, trouble = _kernel_log(state) if report.when == "call" else ([], [])
    default_test = item.get_closest_marker("default_choice") is not None
    if not cells and not default_test:
        return  # evidence for no cell and no default: nothing to report
    for r in records:
        r["default_test"] = default_test
        r["backing"] = item.stash.get(backing_kind, None)
    refusal = item.stash.get(refusal_key, None) if report.when == "call" else None
    only_missing = item.get_closest_marker("refused_only_if_missing") is not None
    items = []
    paths = item.config.stash.get(paths_key, None)
    kernel_calls = item.stash.get(kernel_calls_key, None)
    confirm = (
        (lambda noted: confirms(kernel_calls, dict(noted))) if kernel_calls is not None else None
    )
    for cell in cells:
        ran = {r["outcome"] for r in records if (r["feature"], r["strategy"]) == cell}
        path, path_problems = (
            path_of_records(paths, records, *cell, confirm) if paths is not None else ("", [])
        )
        verdict, err, errname, message = _verdict(
            report, call.excinfo, cell, ran, refusal, only_missing, path_problems, trouble
        )
        if verdict == "unsupported" and report.when == "call":
            report.outcome = "skipped"
            report.longrepr = (
                str(item.path),
                item.location[1] or 0,
                f"unsupported: {cell[0]}={cell[1]}: {errname}: {message}",
            )
        elif verdict == "broken" and report.passed:
            report.outcome = "failed"
            report.longrepr = f"{cell[0]}={cell[1]}: {message}"
        items.append(
            TestEvidence(
                nodeid=item.nodeid,
                feature=cell[0],
                strategy=cell[1],
                verdict=verdict,
                errno=err,
                errname=errname,
                message=message,
                backing=item.stash.get(backing_kind, None),
                records=[r for r in records if r["feature"] == cell[0]],
                kernel_log=kernel_log,
                duration=report.duration,
                missing=bool(refusal and refusal.missing and verdict == "unsupported"),
                path=path,
                notes=_notes(item),
            ).to_json()
        )
    defaults = records if default_test else []  # the only records read from the controller
    report.user_properties.append((PROPERTY, json.dumps({"items": items, "records": defaults})))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        from mountcompat import _syscalls

        config.workeroutput[SYSCALLS] = dict(_syscalls.CALLED)  # type: ignore[attr-defined]
        return
    path = config.getoption("--mountcompat-results")
    if path:
        _state(config).write(Path(path), int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(state_key, None)
    if state is not None:
        state.kernel_log.close()
        if state.witness is not None:
            state.witness.close()
        config.pluginmanager.unregister(state)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"mountcompat: kernel {platform.release()}, timeout factor {timeout_factor():g}, "
        f"private mount namespace: {os.geteuid() == 0}"
    )
