"""Open a report in headless Chromium, as a person would, and check what it shows.

``python -m harness.report.browser results/report.html`` checks that the page has one cell per
(kernel, feature, strategy) of its matrix.json and a drawn timeline bar per kernel that has a
timeline, that a cell's evidence opens, that the page logs no error and loads nothing from the
network; it saves a screenshot beside the report.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class BrowserCheck:
    cells: int = 0
    expected_cells: int = 0
    timelines: int = 0
    expected_timelines: int = 0
    evidence_opened: bool = False
    evidence_text: str = ""
    # A "works" cell's evidence must show the path that ran (docs/fallbacks.md).
    path_expected: bool = False
    evidence_screenshot: Path | None = None
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return (
            self.cells == self.expected_cells
            and self.timelines == self.expected_timelines
            and self.evidence_opened
            and (not self.path_expected or "Path seen" in self.evidence_text)
            and not self.errors
            and not self.requests
        )


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")


def check_report(html: Path, screenshot: Path) -> BrowserCheck:
    from playwright.sync_api import sync_playwright

    matrix = json.loads((html.parent / "matrix.json").read_text())
    result = BrowserCheck(
        expected_cells=len(matrix["cells"]),
        expected_timelines=sum(1 for k in matrix["kernels"] if k.get("timeline")),
        # The first button opens the first kernel's first strategy.
        path_expected=bool(matrix["cells"]) and matrix["cells"][0]["outcome"] == "works",
    )
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.on(
                "console", lambda m: result.errors.append(m.text) if m.type == "error" else None
            )
            page.on("pageerror", lambda e: result.errors.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    result.requests.append(r.url)
                    if not r.url.startswith(("file:", "data:", "about:"))
                    else None
                ),
            )
            page.goto(html.resolve().as_uri())
            result.cells = page.locator("td.cell").count()
            # A bar per kernel that has a timeline, each with its segments drawn.
            result.timelines = sum(
                1
                for row in page.locator(".timeline-row").all()
                if row.locator(".seg").count() > 0 and row.bounding_box() is not None
            )
            page.locator("td.cell .cell-btn").first.click()
            dialog = page.locator("#evidence-dialog")
            dialog.wait_for(state="visible", timeout=5000)
            result.evidence_opened = dialog.is_visible()
            result.evidence_text = dialog.inner_text()
            result.evidence_screenshot = screenshot.with_name(f"{screenshot.stem}-evidence.png")
            dialog.screenshot(path=str(result.evidence_screenshot))
            page.keyboard.press("Escape")
            page.screenshot(path=str(screenshot), full_page=True)
            result.screenshot = screenshot
        finally:
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    html = Path(args[0] if args else "results/report.html")
    check = check_report(html, html.with_name("report-screenshot.png"))
    print(
        f"{html}: {check.cells}/{check.expected_cells} cells, "
        f"{check.timelines}/{check.expected_timelines} timelines, evidence opens: "
        f"{check.evidence_opened}, page errors: {len(check.errors)}, network requests: "
        f"{len(check.requests)}, screenshot: {check.screenshot}, the first cell's evidence: "
        f"{check.evidence_screenshot}"
        + (f", its path shown: {'Path seen' in check.evidence_text}" if check.path_expected else "")
    )
    for problem in check.errors + check.requests:
        print(f"  {problem}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
