"""The report: schema, expectations and surprises, comparison, and combining directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from reportdata import all_strategies, kernel_dir

from harness.report import write_report

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "harness" / "report" / "schema.json").read_text()
)
ALL_SYMBOLS = [
    "__x64_sys_fsopen",
    "__x64_sys_open_tree",
    "__x64_sys_mount_setattr",
    "__x64_sys_statmount",
    "__x64_sys_open_tree_attr",
    "__x64_sys_openat2",
]


def make_two(root: Path) -> tuple[Path, Path]:
    old = kernel_dir(
        root,
        "old",
        "5.10.0-32-cloud-amd64",
        {
            ("mounts.list", "statmount"): "unsupported",
            ("mounts.list", "mountinfo"): "works",
            ("mount.api", "fsmount"): "works",
        },
        ["__x64_sys_fsopen", "__x64_sys_openat2"],
    )
    new = kernel_dir(
        root,
        "new",
        "7.2.13+deb14-cloud-amd64",
        {
            ("mounts.list", "statmount"): "unsupported",  # contradicts the symbol
            ("mounts.list", "mountinfo"): "works",
        },
        ALL_SYMBOLS,
        sha="b",
    )
    return old, new


def test_matrix_validates_and_has_every_cell(tmp_path: Path) -> None:
    make_two(tmp_path)
    matrix = write_report([tmp_path], tmp_path)
    jsonschema.validate(matrix, SCHEMA)
    assert len(matrix["cells"]) == 2 * len(all_strategies())
    assert json.loads((tmp_path / "matrix.json").read_text())["schema"] == 2
    html = (tmp_path / "report.html").read_text()
    assert html.count('<td class="cell') == 2 * len(all_strategies())
    assert "http://" not in html.split("<body>")[1].replace("http://www.w3.org", "")


def test_surprises_come_from_facts_not_versions(tmp_path: Path) -> None:
    make_two(tmp_path)
    matrix = write_report([tmp_path], tmp_path)
    surprises = {(c["kernel"], c["feature"], c["strategy"]) for c in matrix["surprises"]}
    assert surprises == {("new", "mounts.list", "statmount")}
    cell = next(c for c in matrix["cells"] if c["kernel"] == "old" and c["strategy"] == "statmount")
    assert cell["expected"] == "unsupported" and "absent" in cell["expected_because"]


def test_a_kernel_that_did_not_run_has_not_run_cells(tmp_path: Path) -> None:
    kernel_dir(tmp_path, "dead", "6.1", {}, [], status="panic")
    matrix = write_report([tmp_path], tmp_path)
    assert {c["outcome"] for c in matrix["cells"]} == {"not-run"}
    assert not matrix["surprises"]
    assert matrix["kernels"][0]["status"] == "panic"


def strip(matrix: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (c["kernel"], c["feature"], c["strategy"], c["outcome"], c["expected"], c["surprise"])
        for c in matrix["cells"]
    ]


def test_separate_directories_give_the_combined_matrix(tmp_path: Path) -> None:
    combined, a, b = tmp_path / "all", tmp_path / "a", tmp_path / "b"
    make_two(combined)
    a.mkdir()
    b.mkdir()
    shutil.copytree(combined / "old", a / "old")
    shutil.copytree(combined / "new", b / "new")
    one = write_report([combined], combined)
    two = write_report([a, b], tmp_path / "out")
    assert sorted(strip(one)) == sorted(strip(two))
    assert one["defaults"] == two["defaults"]


@pytest.mark.parametrize(("same_packages", "kind"), [(True, "flaky"), (False, "regressed")])
def test_comparison_with_the_previous_run(tmp_path: Path, same_packages: bool, kind: str) -> None:
    old, _ = make_two(tmp_path)
    first = write_report([tmp_path], tmp_path)
    (tmp_path / "previous-matrix.json").write_text(json.dumps(first))
    outcomes = json.loads((old / "outcomes.json").read_text())
    for cell in outcomes["cells"]:
        if cell["strategy"] == "fsmount":
            cell["outcome"] = "broken"
    (old / "outcomes.json").write_text(json.dumps(outcomes))
    if not same_packages:
        info = json.loads((old / "kernel.json").read_text())
        info["packages"][0]["sha256"] = "c" * 64
        (old / "kernel.json").write_text(json.dumps(info))
    second = write_report([tmp_path], tmp_path)
    (change,) = second["comparison"]["changes"]
    assert (change["kernel"], change["strategy"], change["kind"]) == ("old", "fsmount", kind)


def test_an_invalid_matrix_is_refused_before_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matrix.json is checked against its schema on every write: a document the schema
    refuses raises, and nothing is written."""
    from harness import report
    from harness.report import validate

    make_two(tmp_path)
    good = write_report([tmp_path], tmp_path)
    broken = json.loads(json.dumps(good))
    broken["cells"][0]["outcome"] = "splendid"
    with pytest.raises(jsonschema.ValidationError, match="splendid"):
        validate(broken)
    (tmp_path / "matrix.json").unlink()
    real = report.build_matrix

    def build_bad(*args: Any, **kwargs: Any) -> dict[str, Any]:
        matrix = real(*args, **kwargs)
        matrix["kernels"][0]["status"] = "fine, probably"
        return matrix

    monkeypatch.setattr(report, "build_matrix", build_bad)
    with pytest.raises(jsonschema.ValidationError, match="fine, probably"):
        write_report([tmp_path], tmp_path)
    assert not (tmp_path / "matrix.json").exists()


def test_a_matrix_the_schema_refuses_is_one_line_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the input checks let through and the schema still refuses is the report's own
    bug: one line naming matrix.json and the field, exit 1, nothing written; no traceback."""
    from harness import report
    from harness.report.__main__ import main

    make_two(tmp_path)
    real = report.build_matrix

    def build_bad(*args: Any, **kwargs: Any) -> dict[str, Any]:
        matrix = real(*args, **kwargs)
        matrix["kernels"][0]["status"] = "fine, probably"
        return matrix

    monkeypatch.setattr(report, "build_matrix", build_bad)
    assert main([str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'matrix.json'}: field $.kernels[0].status: ")
    assert "fine, probably" in line and "a bug in the report" in line
    assert not (tmp_path / "matrix.json").exists()


def test_a_failed_test_outside_any_cell_is_a_surprise(tmp_path: Path) -> None:
    old, _ = make_two(tmp_path)
    (old / "junit.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="suites.test_overlay" name="test_default_choice">'
        '<failure message="AssertionError: no strategy used">trace</failure></testcase>'
        "</testsuite></testsuites>"
    )
    matrix = write_report([tmp_path], tmp_path)
    (failure,) = matrix["failed_tests"]
    assert failure["kernel"] == "old" and failure["test"].endswith("test_default_choice")
    from harness.report import surprise_lines

    assert any("test_default_choice" in line for line in surprise_lines(matrix))


def test_an_ok_kernel_without_its_outcomes_is_unreadable(tmp_path: Path) -> None:
    old, _ = make_two(tmp_path)
    (old / "outcomes.json").unlink()
    matrix = write_report([tmp_path], tmp_path)
    statuses = {k["name"]: k["status"] for k in matrix["kernels"]}
    assert statuses["old"] == "unreadable"
    assert any("outcomes.json: missing" in p for p in matrix["problems"])


def test_two_directories_claiming_one_kernel_are_named(tmp_path: Path) -> None:
    old, _ = make_two(tmp_path)
    shutil.copytree(old, tmp_path / "old.copy")
    matrix = write_report([tmp_path], tmp_path)
    assert any("claims kernel 'old'" in p for p in matrix["problems"])


@pytest.mark.parametrize(
    ("selection", "status"),
    [
        ({"narrowed": False}, "no-verdicts"),  # -v or --timeout narrow nothing
        ({"narrowed": True}, "ok"),
        (None, "no-verdicts"),
    ],
)
def test_only_a_narrowed_run_may_leave_cells_without_verdicts(
    selection: dict[str, bool] | None, status: str
) -> None:
    from harness.run.verdicts import judge

    outcomes: dict[str, Any] = {
        "features": [{"id": "f", "strategies": ["a", "b"]}],
        "cells": [{"feature": "f", "strategy": "a", "outcome": "works"}],
    }
    if selection is not None:
        outcomes["selection"] = selection
    assert judge(0, outcomes)[0] == status
    assert judge(0, {**outcomes, "cells": []})[0] == "no-verdicts"  # never with none at all
    assert judge(2, outcomes)[0] == "no-verdicts"


def _set_default(kernel: Path, feature: str, strategy: str) -> None:
    outcomes = json.loads((kernel / "outcomes.json").read_text())
    outcomes["defaults"] = {feature: {"strategy": strategy, "by_backing": {"disk:ext4": strategy}}}
    (kernel / "outcomes.json").write_text(json.dumps(outcomes))


def test_a_default_out_of_the_expected_order_is_a_surprise(tmp_path: Path) -> None:
    """expectations.yaml lists each feature's strategies best first: where fsopen exists the
    unforced choice must be fsmount; a library preferring mount(2) there is a surprise,
    named in the terminal's lines, the job summary and the report's first screen."""
    old, _ = make_two(tmp_path)
    _set_default(old, "mount.api", "mount2")  # old has fsopen: fsmount is expected
    matrix = write_report([tmp_path], tmp_path)
    (wrong,) = [d for d in matrix["defaults"] if d["surprise"]]
    assert (wrong["kernel"], wrong["strategy"], wrong["expected"]) == ("old", "mount2", "fsmount")
    from harness.report import markdown_summary, surprise_lines

    line = next(x for x in surprise_lines(matrix) if "chose mount2 unforced" in x)
    assert "expected fsmount" in line
    assert "**Surprises:**" in markdown_summary(matrix)
    html = (tmp_path / "report.html").read_text()
    assert 'the library chose <b class="broken">mount2</b> unforced' in html


def test_a_default_where_the_better_strategy_is_expected_missing_is_no_surprise(
    tmp_path: Path,
) -> None:
    old = kernel_dir(tmp_path, "old", "5.1.0-1-cloud-amd64", {}, ["__x64_sys_openat2"])
    _set_default(old, "mount.api", "mount2")  # no fsopen here: mount2 is the first expected
    matrix = write_report([tmp_path], tmp_path)
    (entry,) = matrix["defaults"]
    assert (entry["expected"], entry["surprise"]) == ("mount2", False)


def test_unknown_expectations_are_counted_on_the_first_screen(tmp_path: Path) -> None:
    """A kernel that reported no symbols and no config: every expectation resting on them is
    unknown, counted in matrix.json, the summary and the report's header."""
    old, _ = make_two(tmp_path)
    (old / "facts.json").write_text(json.dumps({"note": "no symbols"}))
    (old / "config").unlink()
    matrix = write_report([tmp_path], tmp_path)
    unknown = [u for u in matrix["unknown_expectations"] if u["kernel"] == "old"]
    assert any(u["cell"] == "mount.api/fsmount" and "symbols" in u["why"] for u in unknown)
    assert any(u["cell"] == "erofs.source/file" and "config" in u["why"] for u in unknown)
    html = (tmp_path / "report.html").read_text()
    header = html.split("</header>")[0]
    assert f"{len(matrix['unknown_expectations'])} expectations unknown" in header
    from harness.report import markdown_summary

    assert "**Expectations unknown**" in markdown_summary(matrix)
