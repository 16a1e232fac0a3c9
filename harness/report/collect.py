"""results/<kernel>/ directories -> matrix.json (schema 2, docs/results-schema.md).

Only files that the runs wrote are read; every cell's outcome comes from the suites' own
verdicts in outcomes.json, and a kernel that did not complete gives ``not-run`` cells. The
rows (features and strategies) come from the results too: what the library in each guest
said it defines, never from whatever library this process happens to import.

A result file that exists but is damaged (truncated, not UTF-8, the wrong shape) is named,
with what is wrong with it, and its kernel is ``unreadable``: never ``ok`` with empty cells,
never left out without a word.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

from harness.errors import UnreadableResult
from harness.evidence import bounded
from harness.files import load_json_object, read_json_object
from harness.report import inputs
from harness.run.expectations import Expectations, KernelFacts, parse_config
from harness.run.judging import is_surprise, judge_default, upstream_version

SCHEMA = 2
T = TypeVar("T")
# Directories of results/ that are not kernels.
NOT_KERNELS = frozenset({"attempts"})
# Files whose presence says a directory holds a kernel's results.
KERNEL_FILES = ("kernel.json", "outcomes.json", "console.log", "guest.json")


@dataclass
class KernelDir:
    path: Path
    kernel: dict[str, Any]
    guest: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    config: dict[str, str] | None = None  # None: no config file at all
    strings: dict[str, Any] | None = None  # strings.json: text found in the image, modules
    release: str | None = None
    problems: list[str] = field(default_factory=list)  # "file: what is wrong"
    failed_tests: list[dict[str, str]] = field(default_factory=list)  # from junit.xml
    root_run_id: str | None = None  # the run.json of the directory it was found in

    @property
    def name(self) -> str:
        return str(self.kernel.get("name", self.path.name))

    @property
    def status(self) -> str:
        return "unreadable" if self.problems else str(self.kernel.get("status", "not-run"))


def _text(path: Path) -> str | None:
    """A text file that must be UTF-8 without NUL bytes (a config, uname.txt)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableResult(path, f"cannot read: {exc.strerror}") from exc
    if b"\0" in raw:
        raise UnreadableResult(path, "binary data where text was expected")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableResult(path, f"not UTF-8 (byte {exc.start})") from exc


def _failed_tests(path: Path) -> list[dict[str, str]]:
    """The tests that failed or errored, from JUnit XML: those outside any cell (defaults,
    comparisons, wrong requests) are seen nowhere else."""
    if not path.exists():
        return []
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as exc:
        raise UnreadableResult(path, f"not well-formed XML: {exc}") from exc
    failed = []
    for case in tree.iter("testcase"):
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                message = (problem.get("message") or problem.text or "").strip()
                failed.append({"test": name, "kind": kind, "message": message[:500]})
    return failed


def load_kernel_dir(path: Path) -> KernelDir | None:
    """A kernel's results, every damaged file named in ``problems``; None for a directory
    that holds no kernel results at all."""
    if not any((path / name).exists() for name in KERNEL_FILES):
        return None
    k = KernelDir(path=path, kernel={})

    def noted(read: Callable[[], T | None]) -> T | None:
        try:
            return read()
        except UnreadableResult as exc:
            k.problems.append(str(exc))
            return None

    def fitting(
        name: str,
        schema: dict[str, Any],
        required: tuple[str, ...] = (),
        first: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> Any:
        """A JSON file whose values the matrix takes: what fits its schema (``first``, a check
        of the file's own schema, before anything else)."""

        def read() -> dict[str, Any] | None:
            data = load_json_object(path / name)
            if data is None:
                return None
            if first is not None:
                first(path / name, data)
            missing = [key for key in required if key not in data]
            if missing:
                raise UnreadableResult(path / name, f"missing {', '.join(missing)}")
            return data

        data = noted(read)
        return inputs.fitting(path / name, data, schema, k.problems) if data else data

    k.kernel = fitting("kernel.json", inputs.kernel_file(), ("name", "status")) or {}
    if not (path / "kernel.json").exists():
        k.problems.append(f"{path / 'kernel.json'}: missing")
    k.guest = fitting("guest.json", inputs.GUEST_FILE) or {}
    k.outcomes = (
        fitting("outcomes.json", inputs.outcomes_file(), ("cells",), inputs.check_outcomes_schema)
        or {}
    )
    k.facts = fitting("facts.json", inputs.FACTS_FILE) or {}
    k.strings = noted(lambda: load_json_object(path / "strings.json"))
    k.failed_tests = noted(lambda: _failed_tests(path / "junit.xml")) or []
    k.release = (noted(lambda: _text(path / "uname.txt")) or "").strip() or None
    config = noted(lambda: _text(path / "config"))
    k.config = parse_config(config) if config is not None else None
    if k.kernel.get("status") == "ok" and not k.problems:
        # An ok kernel is one whose verdicts are all here; their absence is damage, not "no
        # verdict" (which would show as not-run cells of a kernel that looks complete).
        for name, data in (("outcomes.json", k.outcomes), ("facts.json", k.facts)):
            if not data:
                k.problems.append(f"{path / name}: missing for a kernel that is ok")
    return k


def find_kernel_dirs(roots: Iterable[Path], problems: list[str] | None = None) -> list[KernelDir]:
    """Kernel directories under each root (a results/ directory, or one kernel's own). Two
    directories of one root claiming the same kernel are named as a problem; of two roots,
    the later wins."""
    found: dict[str, KernelDir] = {}
    for root in roots:
        in_root: dict[str, Path] = {}
        run_id = read_json_object(root / "run.json").get("run_id")
        if (root / "kernel.json").exists():
            candidates = [root]
        else:
            candidates = sorted(
                p
                for p in root.iterdir()
                if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_KERNELS
            )
        for candidate in candidates:
            loaded = load_kernel_dir(candidate)
            if loaded is None:
                continue
            if loaded.name in in_root and problems is not None:
                problems.append(
                    f"{candidate}: claims kernel {loaded.name!r}, as {in_root[loaded.name]} does"
                )
                continue
            in_root[loaded.name] = candidate
            loaded.root_run_id = str(run_id) if run_id else None
            found[loaded.name] = loaded  # a later root wins for the same kernel name
    return list(found.values())


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


RESULT_FILES = (
    "console.log",
    "pytest.log",
    "junit.xml",
    "dmesg.txt",
    "config",
    "reproduce.sh",
    "outcomes.json",
    "probe.json",
    "strings.json",
)
PACKAGE_KEYS = (
    "name",
    "version",
    "sha256",
    "suite",
    "url",
    "file",
    "index_signature",
    "index_stale",
)


def kernel_upstream(k: KernelDir) -> str | None:
    packages = k.kernel.get("packages") or []
    first = packages[0] if packages and isinstance(packages[0], dict) else {}
    return upstream_version(first.get("version")) or k.kernel.get("upstream_release")


def kernel_entry(k: KernelDir, out_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    info = k.kernel
    packages = [
        {key: p.get(key) for key in PACKAGE_KEYS if p.get(key) is not None}
        for p in info.get("packages", [])
        if isinstance(p, dict)
    ]
    files = {
        name: _relative(k.path / name, out_dir) for name in RESULT_FILES if (k.path / name).exists()
    }
    this_run = k.root_run_id or run.get("run_id")
    from_run = info.get("run_id")
    return {
        "name": k.name,
        "note": info.get("note", ""),
        "tags": info.get("tags", []),
        "needs_network": bool(info.get("needs_network")),
        "stands_in_for": [str(n) for n in info.get("stands_in_for") or []],
        "arch": info.get("arch", "x86_64"),
        "machine": info.get("machine"),
        "host": bool(info.get("host")),
        "source": info.get("source", ""),
        "release": k.release,
        "package_release": info.get("package_release"),
        "upstream_release": kernel_upstream(k),
        "status": k.status,
        "detail": "; ".join(k.problems) if k.problems else info.get("detail", ""),
        "problems": k.problems,
        "accelerator": info.get("accelerator"),
        "packages": packages,
        # Packages from an archive index say whether its signature was checked; local files
        # have no index to check.
        "signatures": sorted(
            {str(p["index_signature"]) for p in packages if "index_signature" in p}
        ),
        "qemu": info.get("qemu"),
        "virtme_ng": info.get("virtme_ng"),
        "boot_seconds": info.get("boot_seconds"),
        "bare_boot_seconds": info.get("bare_boot_seconds"),
        "test_seconds": round(k.guest["suites_seconds"], 1)
        if isinstance(k.guest.get("suites_seconds"), int | float)
        else None,
        "wall_seconds": info.get("wall_seconds"),
        "timeline": info.get("timeline", []),
        "finished": info.get("finished"),
        "run_id": from_run,
        "from_this_run": this_run is None or from_run == this_run,
        "this_run": (run.get("statuses") or {}).get(k.name) if from_run != this_run else None,
        "attempt": (run.get("attempts") or {}).get(k.name),
        "reproduce": info.get("reproduce"),
        "command": info.get("command"),
        "pytest_args": info.get("pytest_args", []),
        "provenance": info.get("provenance"),
        "scratch": k.guest.get("scratch"),
        "pytest_exit": k.guest.get("pytest_exit"),
        # Processes the tests left behind in the guest, killed when pytest had exited.
        "leaked_processes": info.get("leaked_processes", []),
        # Bounded here too: a kernel.json of an older run may hold it all.
        "evidence": bounded(info.get("evidence", [])),
        "failed_tests": k.failed_tests,
        "files": files,
    }


def facts_of(k: KernelDir) -> KernelFacts:
    return KernelFacts(
        release=k.release,
        upstream=kernel_upstream(k),
        arch=str(k.kernel.get("arch", "x86_64")),
        tags=tuple(k.kernel.get("tags", [])),
        symbols=frozenset(k.facts["symbols"]) if "symbols" in k.facts else None,
        config=k.config,
        strings=k.strings,
    )


def _evidence(
    cell: dict[str, Any], tests: list[dict[str, Any]], witness: str | None = None
) -> dict[str, Any]:
    by_test = {
        t["nodeid"]: t
        for t in tests
        if isinstance(t, dict)
        and t.get("feature") == cell["feature"]
        and t.get("strategy") == cell["strategy"]
    }
    records = []
    for t in by_test.values():
        records.extend(t.get("records", [])[:6])
    return {
        # The calls that define the strategy, seen during the forced call (the library's raw
        # syscall layer is the witness): what makes a "works" cell evidence of its path.
        "path": cell.get("path", ""),
        "witness": witness if cell.get("path") else None,
        "notes": cell.get("notes", []),
        "tests": cell.get("tests", []),
        "errno": cell.get("errno"),
        "errname": cell.get("errname"),
        "message": cell.get("message", ""),
        "limits": cell.get("limits", []),
        "records": records[:30],
    }


def _no_evidence(reason: str) -> dict[str, Any]:
    return {
        "path": "",
        "witness": None,
        "notes": [],
        "tests": [],
        "errno": None,
        "errname": None,
        "message": reason,
        "limits": [],
        "records": [],
    }


def kernel_cells(
    k: KernelDir, strategies: list[tuple[str, str]], expectations: Expectations
) -> list[dict[str, Any]]:
    ran = {(c["feature"], c["strategy"]): c for c in k.outcomes.get("cells", [])}
    tests = k.outcomes.get("tests", [])
    facts = facts_of(k)
    status = k.status
    selection = k.outcomes.get("selection")
    selected = (
        bool(selection.get("narrowed"))
        if isinstance(selection, dict)
        else bool(k.kernel.get("pytest_args"))
    )
    cells = []
    for feature, strategy in strategies:
        expected, why = expectations.expected(feature, strategy, facts)
        cell = ran.get((feature, strategy))
        backings: list[str] = []
        if status != "ok":
            outcome, evidence = "not-run", _no_evidence(f"kernel {status}")
        elif cell is None:
            reason = "deselected" if selected else "no test ran for this strategy"
            outcome, evidence = "not-run", _no_evidence(reason)
        else:
            outcome = cell["outcome"]
            witness = str(k.outcomes.get("witness") or "the library's raw syscall layer")
            evidence, backings = _evidence(cell, tests, witness), cell.get("backings", [])
        cells.append(
            {
                "kernel": k.name,
                "feature": feature,
                "strategy": strategy,
                "outcome": outcome,
                "expected": expected,
                "expected_because": why,
                "surprise": is_surprise(outcome, expected, status == "ok", selected),
                "evidence": evidence,
                "backings": backings,
            }
        )
    return cells


def compare(
    cells: list[dict[str, Any]], kernels: list[dict[str, Any]], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """Against the previous matrix: new, fixed, regressed, flaky (changed with the same
    kernel packages), per cell."""
    if not previous:
        return {"previous": None, "changes": []}
    before = {(c["kernel"], c["feature"], c["strategy"]): c for c in previous.get("cells", [])}
    packages_before = {
        k["name"]: [p.get("sha256") for p in k.get("packages", [])]
        for k in previous.get("kernels", [])
    }
    packages_now = {k["name"]: [p.get("sha256") for p in k.get("packages", [])] for k in kernels}
    rank = {"works": 2, "unsupported": 1, "broken": 0}
    changes = []
    for cell in cells:
        key = (cell["kernel"], cell["feature"], cell["strategy"])
        old = before.get(key)
        if old is None:
            kind = "new"
        elif old["outcome"] == cell["outcome"] or "not-run" in (old["outcome"], cell["outcome"]):
            continue
        elif packages_before.get(cell["kernel"]) == packages_now.get(cell["kernel"]):
            kind = "flaky"
        elif rank.get(cell["outcome"], -1) > rank.get(old["outcome"], -1):
            kind = "fixed"
        else:
            kind = "regressed"
        changes.append(
            {
                "kernel": key[0],
                "feature": key[1],
                "strategy": key[2],
                "kind": kind,
                "was": old["outcome"] if old else None,
                "now": cell["outcome"],
            }
        )
    return {"previous": previous.get("generated"), "changes": changes}


def default_entry(kernel: str, feature: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # a single answer
        return {"kernel": kernel, "feature": feature, "strategy": value, "by_backing": {}}
    return {
        "kernel": kernel,
        "feature": feature,
        "strategy": value.get("strategy"),
        "by_backing": value.get("by_backing", {}),
    }


def feature_rows(
    kernel_dirs: list[KernelDir], run: dict[str, Any]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Every (feature, strategy) that a guest's library (or the run, for a run whose guests
    all failed) says it defines, in the library's own order of preference."""
    order: dict[str, list[str]] = {}
    summaries: dict[str, str] = {}
    lists = [k.outcomes.get("features") or [] for k in kernel_dirs] + [run.get("features") or []]
    for features in lists:
        for f in features:
            if not isinstance(f, dict) or "id" not in f:
                continue
            strategies = order.setdefault(str(f["id"]), [])
            summaries.setdefault(str(f["id"]), str(f.get("summary", "")))
            strategies.extend(s for s in f.get("strategies", []) if s not in strategies)
    return [(f, s) for f, ss in order.items() for s in ss], summaries


RUN_KEYS = (
    "host",
    "host_kernel",
    "accelerator",
    "accelerator_reason",
    "wall_seconds",
    "started",
    "downloaded_bytes",
    "virtiofsd",
    "qemu",
    "virtme_ng",
    "run_id",
)


def build_matrix(
    kernel_dirs: list[KernelDir],
    expectations: Expectations,
    out_dir: Path,
    run: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    run = run or {}
    order = {name: i for i, name in enumerate(run.get("kernels", []))}
    kernel_dirs = sorted(
        kernel_dirs,
        key=lambda k: (bool(k.kernel.get("host")), order.get(k.name, len(order)), k.name),
    )
    strategies, summaries = feature_rows(kernel_dirs, run)
    kernels = [kernel_entry(k, out_dir, run) for k in kernel_dirs]
    cells = [c for k in kernel_dirs for c in kernel_cells(k, strategies, expectations)]
    defaults = [
        default_entry(k.name, f, d)
        for k in kernel_dirs
        if k.status == "ok"
        for f, d in sorted((k.outcomes.get("defaults") or {}).items())
    ]
    for entry in defaults:
        judge_default(entry, cells, expectations.preference(entry["feature"]))
    features: list[dict[str, Any]] = []
    for feature, strategy in strategies:
        if not features or features[-1]["id"] != feature:
            features.append(
                {"id": feature, "summary": summaries.get(feature, ""), "strategies": []}
            )
        features[-1]["strategies"].append(strategy)
    all_problems = [*(problems or []), *(p for k in kernel_dirs for p in k.problems)]
    differences = arch_differences(kernels, cells)
    standins = standin_differences(kernels, cells, defaults)
    ran = {k.name for k in kernel_dirs if k.status == "ok"}
    return {
        "schema": SCHEMA,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": {**dict.fromkeys(RUN_KEYS), **{k: v for k, v in run.items() if k in RUN_KEYS}},
        "kernels": kernels,
        "features": features,
        "cells": cells,
        "defaults": defaults,
        "surprises": [c for c in cells if c["surprise"]],
        "comparison": compare(cells, kernels, previous),
        "problems": all_problems,
        "arch_differences": differences,
        "standin_differences": standins,
        # Named on the first screen with the reason.
        "unreachable": unreachable_kernels(kernels),
        "failed_tests": [
            {"kernel": k.name, **failure} for k in kernel_dirs for failure in k.failed_tests
        ],
        "totals": {
            o: sum(1 for c in cells if c["outcome"] == o)
            for o in ("works", "unsupported", "broken", "not-run")
        },
        # Expectations that could not be decided (no config, no symbols, none written): the
        # cells they leave unjudged, counted on the report's first screen. Only of kernels that
        # ran: one that never booted has no cell to judge, and its status says why.
        "unknown_expectations": [
            {
                "kernel": c["kernel"],
                "cell": f"{c['feature']}/{c['strategy']}",
                "why": c["expected_because"],
            }
            for c in cells
            if c["expected"] == "unknown" and c["kernel"] in ran
        ],
    }


def differing(
    answers: dict[tuple[str, ...], str], a: str, b: str
) -> list[tuple[tuple[str, ...], str, str]]:
    """Where kernel ``a`` and kernel ``b`` both answered and answered differently: (the key
    without the kernel, a's answer, b's answer), in the order of ``answers``, keyed by
    (kernel, ...): a cell's (kernel, feature, strategy), or a default's (kernel, feature)."""
    found = []
    for (kernel, *rest), value in answers.items():
        other = answers.get((b, *rest))
        if kernel == a and other is not None and other != value:
            found.append((tuple(rest), value, other))
    return found


def _outcomes(cells: list[dict[str, Any]]) -> dict[tuple[str, ...], str]:
    return {(c["kernel"], c["feature"], c["strategy"]): c["outcome"] for c in cells}


def arch_differences(
    kernels: list[dict[str, Any]], cells: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Cells where the same kernel version answers differently on two architectures (both
    kernels complete): the same source, so the difference is the architecture's, or the
    library's on it."""
    outcome = _outcomes(cells)
    complete = [k for k in kernels if k["status"] == "ok" and k.get("upstream_release")]
    found = []
    for i, a in enumerate(complete):
        for b in complete[i + 1 :]:
            if a["upstream_release"] != b["upstream_release"] or a["arch"] == b["arch"]:
                continue
            for (feature, strategy), value, other in differing(outcome, a["name"], b["name"]):
                found.append(
                    {
                        "release": a["upstream_release"],
                        "feature": feature,
                        "strategy": strategy,
                        "kernels": {a["name"]: value, b["name"]: other},
                        "arches": {a["arch"]: value, b["arch"]: other},
                    }
                )
    return found


def _not_compared(standin: dict[str, Any], real: dict[str, Any] | None, name: str) -> str | None:
    if real is None:
        return f"{name} is not in this report"
    for k in (real, standin):
        if k["status"] != "ok":
            return f"{k['name']} is {k['status']}"
    return None


def standin_differences(
    kernels: list[dict[str, Any]], cells: list[dict[str, Any]], defaults: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each stand-in (kernels.yaml's stands_in_for) and the kernel it stands in for: the
    cells whose outcomes differ and the features where the library chose another strategy
    unforced, once both completed; until then, why they were not compared."""
    outcome = _outcomes(cells)
    chosen: dict[tuple[str, ...], str] = {
        (d["kernel"], d["feature"]): d["strategy"] for d in defaults
    }
    by_name = {k["name"]: k for k in kernels}
    found = []
    for standin in kernels:
        for name in standin["stands_in_for"]:
            why = _not_compared(standin, by_name.get(name), name)
            entry: dict[str, Any] = {
                "standin": standin["name"],
                "real": name,
                "not_compared": why,
                "cells": [],
                "defaults": [],
            }
            if why is None:
                entry["cells"] = [
                    {"feature": f, "strategy": st, "standin": value, "real": other}
                    for (f, st), value, other in differing(outcome, standin["name"], name)
                ]
                entry["defaults"] = [
                    {"feature": f, "standin": value, "real": other}
                    for (f,), value, other in differing(chosen, standin["name"], name)
                ]
            found.append(entry)
    return found


def unreachable_kernels(kernels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kernels whose server could not be reached (kernels.yaml's needs_network), in the run
    their results come from or in this one (its earlier results then stay in place, and
    their detail is not this run's reason)."""
    found = []
    for k in kernels:
        if k["status"] == "unreachable":
            found.append({"kernel": k["name"], "why": k["detail"] or "unreachable"})
        elif k["this_run"] == "unreachable":
            why = f"unreachable in this run; the results shown are of run {k['run_id']}"
            found.append({"kernel": k["name"], "why": why})
    return found
