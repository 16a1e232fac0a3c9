"""The report in headless Chromium: every cell there, evidence opens, no page error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reportdata import all_strategies, kernel_dir
from test_report import make_two

from harness.report import write_report
from harness.report.browser import chromium_path

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.fixture
def report(tmp_path: Path) -> Path:
    make_two(tmp_path)
    kernel_dir(tmp_path, "dead", "6.1", {}, [], status="timeout")
    write_report([tmp_path], tmp_path)
    return tmp_path / "report.html"


def test_report_in_chromium(report: Path) -> None:
    pytest.importorskip("playwright")
    try:
        chromium_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from harness.report.browser import check_report

    RESULTS.mkdir(exist_ok=True)
    shot = RESULTS / "report-test-screenshot.png"
    check = check_report(report, shot)
    assert check.cells == check.expected_cells == 3 * len(all_strategies())
    assert check.evidence_opened and "Expected" in check.evidence_text
    assert check.errors == [] and check.requests == []
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, report.with_name("shot.png"))
