"""Progress in a CI log: lines, not a spinner's frames."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from harness.ui import MatrixUI


def run_ui(out: io.StringIO) -> None:
    with MatrixUI(Console(file=out, force_terminal=True, color_system=None, width=100)) as ui:
        ui.add_kernel("6.12")
        for step in range(5):
            ui.update("6.12", f"step {step}")
            time.sleep(0.05)
        ui.milestone("6.12", "booting")
        time.sleep(0.3)
        ui.finish("6.12", "ok")


def test_a_ci_job_gets_only_the_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """act gives a step a terminal and GitHub's log keeps every redraw: in a CI job the live
    line is off, and the milestones still tell the story."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    out = io.StringIO()
    run_ui(out)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines == ["6.12: booting", "6.12: ok"]


def test_a_terminal_gets_the_live_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    out = io.StringIO()
    run_ui(out)
    assert "step" in out.getvalue()  # the live line was drawn
