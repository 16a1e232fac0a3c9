"""Damaged result files are named, their kernel marked ``unreadable``, never dropped or passed
off as ``ok``; two report builds at once neither crash nor interleave.

The report is built by its real command line (``python -m harness.report``) from result
directories that are then damaged the way a full disk or a killed writer damages them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reportdata import kernel_dir

REPO = Path(__file__).resolve().parents[2]


def report(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.report", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    kernel_dir(
        root,
        "good",
        "6.12.117+deb13-cloud-amd64",
        {("mounts.list", "mountinfo"): "works"},
        ["__x64_sys_fsopen"],
    )
    kernel_dir(
        root,
        "victim",
        "6.1.0-50-cloud-amd64",
        {("mounts.list", "mountinfo"): "works"},
        ["__x64_sys_fsopen"],
    )
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


Damage = Callable[[Path], None]
DAMAGES: dict[str, tuple[str, Damage]] = {
    "truncated kernel.json": ("kernel.json", truncate),
    "truncated outcomes.json": ("outcomes.json", truncate),
    "outcomes.json of the wrong shape": (
        "outcomes.json",
        lambda p: p.write_text(json.dumps({"cells": {"not": "a list"}})),
    ),
    "kernel.json that is a list": ("kernel.json", lambda p: p.write_text("[1, 2]")),
    "kernel.json not UTF-8": ("kernel.json", lambda p: p.write_bytes(b'{"name": "\xff"}')),
    "truncated junit.xml": (
        "junit.xml",
        lambda p: p.write_text('<?xml version="1.0"?><testsuites><testsuite name="p'),
    ),
    "a binary config": ("config", lambda p: p.write_bytes(b"\x7fELF\x00\x01\x02CONFIG_X=y")),
    "kernel.json gone, the rest there": ("kernel.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_file_is_named_and_its_kernel_unreadable(tmp_path: Path, case: str) -> None:
    root = results(tmp_path)
    name, damage = DAMAGES[case]
    victim = root / "victim" / name
    if not victim.exists():
        victim.write_text("")
    damage(victim)
    done = report(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(victim) in done.stderr, done.stderr
    matrix = json.loads((root / "matrix.json").read_text())
    statuses = {k["name"]: k["status"] for k in matrix["kernels"]}
    assert statuses == {"good": "ok", "victim": "unreadable"}, statuses
    victim_cells = {c["outcome"] for c in matrix["cells"] if c["kernel"] == "victim"}
    assert victim_cells == {"not-run"}
    assert any(str(victim) in p for p in matrix["problems"])
    assert str(victim) in (root / "report.html").read_text()


def _set(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _cell(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda o: o["cells"][0].update({field: value})


def _test_verdict(o: dict[str, Any]) -> None:
    o["cells"][0]["tests"][0]["verdict"] = "passed"


def _package_sha(k: dict[str, Any]) -> None:
    k["packages"][0]["sha256"] = "not a digest"


# Values the matrix's schema does not allow where the report puts them: (file, change, the
# field as the line must name it).
BAD_VALUES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "cell outcome fails": ("outcomes.json", _cell("outcome", "fails"), "$.cells[0].outcome"),
    "kernel status bogus": ("kernel.json", lambda k: k.update(status="bogus"), "$.status"),
    "test verdict passed": ("outcomes.json", _test_verdict, "$.cells[0].tests[0].verdict"),
    "errno a string": ("outcomes.json", _cell("errno", "ENOSYS"), "$.cells[0].errno"),
    "arch riscv64": ("kernel.json", lambda k: k.update(arch="riscv64"), "$.arch"),
    "accelerator hvf": ("kernel.json", lambda k: k.update(accelerator="hvf"), "$.accelerator"),
    "package sha256": ("kernel.json", _package_sha, "$.packages[0].sha256"),
    "timeline without seconds": (
        "kernel.json",
        lambda k: k.update(timeline=[{"event": "guest-exit"}]),
        "$.timeline[0]",
    ),
    "default a list": (
        "outcomes.json",
        lambda o: o.update(defaults={"mount.api": ["fsmount"]}),
        "$.defaults['mount.api']",
    ),
    "a feature without strategies": (
        "outcomes.json",
        lambda o: o["features"][0].update(strategies=[]),
        "$.features[0].strategies",
    ),
    "symbols a number": ("facts.json", lambda f: f.update(symbols=5), "$.symbols"),
    "tags a number": ("kernel.json", lambda k: k.update(tags=5), "$.tags"),
    "command a number": ("kernel.json", lambda k: k.update(command=5), "$.command"),
    "provenance a string": ("kernel.json", lambda k: k.update(provenance="x"), "$.provenance"),
    "scratch without fstype": (
        "guest.json",
        lambda g: g.update(scratch={"path": "/s"}),
        "$.scratch",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_value_outside_the_schema_names_file_and_field(tmp_path: Path, case: str) -> None:
    """A value the matrix's schema refuses (issue 21: "fails", "bogus") is one line naming
    the file and the field; the kernel is unreadable and the rest is reported, exit 1."""
    root = results(tmp_path)
    name, change, field = BAD_VALUES[case]
    victim = root / "victim" / name
    _set(victim, change)
    done = report(root)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if str(victim) in line]
    assert line.startswith(f"unreadable: {victim}: field {field}"), line
    matrix = json.loads((root / "matrix.json").read_text())
    statuses = {k["name"]: k["status"] for k in matrix["kernels"]}
    assert statuses == {"good": "ok", "victim": "unreadable"}, statuses
    assert {c["outcome"] for c in matrix["cells"] if c["kernel"] == "good"} >= {"works"}
    assert line.removeprefix("unreadable: ") in matrix["problems"]
    assert str(victim) in (root / "report.html").read_text()


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


# outcomes.json of another schema than 1, or of schema 1 as written before works needed its
# path (no witness): (change, the line's field and the schema it must name).
OTHER_OUTCOMES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "schema 0": (lambda o: o.update(schema=0), "field $.schema: outcomes schema 0;"),
    "schema 2": (lambda o: o.update(schema=2), "field $.schema: outcomes schema 2;"),
    "schema '1'": (lambda o: o.update(schema="1"), 'field $.schema: outcomes schema "1";'),
    "schema true": (lambda o: o.update(schema=True), "field $.schema: outcomes schema true;"),
    "no schema": (_without("schema"), "field $.schema: missing (no schema named);"),
    "schema 1 before the path rule": (
        _without("witness"),
        "field $.witness: missing: outcomes schema 1 as written before commit 581c8f5",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_OUTCOMES))
def test_outcomes_of_another_schema_are_refused_by_name(tmp_path: Path, case: str) -> None:
    """Issue 21: outcomes of another schema were read as if current. Now the file is named
    with its schema and the one the report reads, and its kernel is unreadable."""
    root = results(tmp_path)
    change, words = OTHER_OUTCOMES[case]
    victim = root / "victim" / "outcomes.json"
    _set(victim, change)
    done = report(root)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if str(victim) in line]
    assert line.startswith(f"unreadable: {victim}: {words}"), line
    assert "this report reads outcomes schema 1" in line
    matrix = json.loads((root / "matrix.json").read_text())
    statuses = {k["name"]: k["status"] for k in matrix["kernels"]}
    assert statuses == {"good": "ok", "victim": "unreadable"}, statuses
    assert {c["outcome"] for c in matrix["cells"] if c["kernel"] == "victim"} == {"not-run"}


def test_the_plugin_writes_the_outcomes_the_report_reads(tmp_path: Path) -> None:
    """The contract between writer and reader: outcomes.json as the suites' plugin really
    writes it passes every check of the report (its schema, its witness, every value)."""
    from harness.report import inputs

    (tmp_path / "test_one.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.strategy("mount.api", "fsmount")\n'
        "def test_never_used():\n"
        "    pass\n"
    )
    out = tmp_path / "outcomes.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-p", "mountcompat.testing.plugin", f"--mountcompat-results={out}", "test_one.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    data = json.loads(out.read_text())
    inputs.check_outcomes_schema(out, data)
    assert inputs.errors(data, inputs.outcomes_file()) == []


def test_a_damaged_previous_matrix_is_named(tmp_path: Path) -> None:
    root = results(tmp_path)
    assert report(root).returncode == 0
    (root / "previous-matrix.json").write_text('{"schema": 2, "cells": [')
    done = report(root)
    assert done.returncode == 1
    assert "previous-matrix.json" in done.stderr


def _first_cell(m: dict[str, Any]) -> None:
    m["cells"][0] = {"kernel": "good"}


def _kernel_without_digests(h: dict[str, Any]) -> None:
    h["runs"][0]["kernels"]["good"] = {"version": "6.12"}


# previous-matrix.json and history.json of this schema whose parts the comparison and the
# history read are of the wrong shape: (file, change, the field the line names).
BAD_BASELINES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "baseline cell without outcome": ("previous-matrix.json", _first_cell, "$.cells[0]"),
    "baseline kernels a dict": (
        "previous-matrix.json",
        lambda m: m.update(kernels={"good": {}}),
        "$.kernels",
    ),
    "baseline kernel name a list": (
        "previous-matrix.json",
        lambda m: m["kernels"][0].update(name=["good"]),
        "$.kernels[0].name",
    ),
    "history cells a list": (
        "history.json",
        lambda h: h["runs"][0].update(cells=[]),
        "$.runs[0].cells",
    ),
    "history kernel without sha256": (
        "history.json",
        _kernel_without_digests,
        "$.runs[0].kernels.good",
    ),
    "history outcome 5": (
        "history.json",
        lambda h: h["runs"][0]["cells"].update({"good mounts.list/mountinfo": 5}),
        "$.runs[0].cells['good mounts.list/mountinfo']",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BASELINES))
def test_a_baseline_or_history_of_the_wrong_shape_is_named(tmp_path: Path, case: str) -> None:
    """Of the right schema but the wrong shape, they gave a TypeError or KeyError traceback
    and no report. Now: one line naming the file and the field, not used (the history set
    aside as .damaged), the report built, exit 1 as for any damaged file."""
    root = results(tmp_path)
    assert report(root).returncode == 0
    name, change, field = BAD_BASELINES[case]
    victim = root / name
    if name == "previous-matrix.json":
        victim.write_text((root / "matrix.json").read_text())
    else:  # an earlier run, kept (this run's own entry is replaced, damaged or not)
        _set(victim, lambda h: h["runs"].insert(0, {**h["runs"][0], "id": "earlier"}))
    _set(victim, change)
    done = report(root)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if str(victim) in line]
    assert line.startswith(f"unreadable: {victim}: field {field}"), line
    matrix = json.loads((root / "matrix.json").read_text())
    assert {k["name"]: k["status"] for k in matrix["kernels"]} == {"good": "ok", "victim": "ok"}
    if name == "history.json":
        assert (root / "history.json.damaged").exists() and matrix["history"]["runs"] == 1
    else:
        assert matrix["comparison"]["previous"] is None, "a damaged baseline is not compared"


def test_a_summary_into_a_missing_directory_makes_it(tmp_path: Path) -> None:
    """Issue 21: --summary into a directory that did not exist was a FileNotFoundError
    traceback. Its parents are made, as --out's always were."""
    root = results(tmp_path)
    summary = tmp_path / "ci" / "job" / "summary.md"
    done = report(root, "--summary", str(summary))
    assert done.returncode == 0, done.stderr
    assert "| victim |" in summary.read_text()


@pytest.mark.parametrize(
    ("option", "where", "said"),
    [
        ("--summary", "afile/summary.md", "--summary {tmp}/afile: cannot make it a directory: "),
        ("--summary", "adir", "--summary {tmp}/adir: is a directory"),
        ("--out", "afile/out", "--out {tmp}/afile/out: cannot make it a directory: "),
    ],
)
def test_a_summary_or_out_that_cannot_be_is_one_line(
    tmp_path: Path, option: str, where: str, said: str
) -> None:
    """A path that cannot become the summary or the output directory (a file in the way, a
    directory where the summary goes) is one line before anything is built, exit 2."""
    root = results(tmp_path)
    (tmp_path / "afile").write_text("in the way")
    (tmp_path / "adir").mkdir()
    done = report(root, option, str(tmp_path / where))
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: " + said.format(tmp=tmp_path)), line
    assert not (root / "matrix.json").exists()


def test_two_report_builds_at_once(tmp_path: Path) -> None:
    """Eight builds into the same directory at the same moment: each succeeds, and what is
    left is one whole matrix.json with the report.html written from it."""
    root = results(tmp_path)
    for _ in range(3):
        builds = [
            subprocess.Popen(
                [sys.executable, "-m", "harness.report", str(root)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(8)
        ]
        outputs = [b.communicate(timeout=120)[0] for b in builds]
        assert [b.returncode for b in builds] == [0] * 8, outputs
        matrix = json.loads((root / "matrix.json").read_text())
        assert matrix["generated"] in (root / "report.html").read_text()
    assert not list(root.glob(".*.tmp")), "temporary files left behind"
