"""History across runs, and merging results of several runs.

Three runs of one kernel are reported one after the other into the same directory, as
nightly runs would be: the second without a change of packages but with a cell that changed
(flaky), the third after Debian moved the kernel from 7.2.12 to 7.2.13 with a cell that broke.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markupsafe import escape
from reportdata import PROVENANCE, kernel_dir

from harness.report import MergeRefused, write_report
from harness.report.browser import CHROMIUM_ARGS, chromium_path

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["__x64_sys_fsopen", "__x64_sys_statmount", "__x64_sys_open_tree"]
RUNS = [
    ("20261101T030000Z-0001", "7.2.12-1", "a", "works", "works"),
    ("20261102T030000Z-0002", "7.2.12-1", "a", "works", "unsupported"),  # same packages
    ("20261103T030000Z-0003", "7.2.13-1", "b", "broken", "unsupported"),  # Debian moved
]


def nightly(out: Path, runs: list[tuple[str, str, str, str, str]], size: int = 60) -> dict:
    matrix: dict = {}
    for run_id, version, sha, fd_opath, statmount in runs:
        shutil.rmtree(out / "sid", ignore_errors=True)
        kernel_dir(
            out,
            "sid",
            f"{version.split('-')[0]}+deb14-cloud-amd64",
            {
                ("overlay.layers", "fd-opath"): fd_opath,
                ("mounts.list", "statmount"): statmount,
                ("mounts.list", "mountinfo"): "works",
            },
            SYMBOLS,
            sha=sha,
            version=version,
            run_id=run_id,
        )
        matrix = write_report([out], out, history_size=size)
    return matrix


def test_the_history_shows_strips_changes_and_flaky_cells(tmp_path: Path) -> None:
    matrix = nightly(tmp_path, RUNS)
    history = matrix["history"]
    assert history["runs"] == 3
    fd_opath = history["cells"]["sid overlay.layers/fd-opath"]
    assert fd_opath["strip"] == ["works", "works", "broken"] and not fd_opath["flaky"]
    assert fd_opath["changed"] is not None
    statmount = history["cells"]["sid mounts.list/statmount"]
    assert statmount["strip"] == ["works", "unsupported", "unsupported"] and statmount["flaky"]
    (change,) = history["kernel_changes"]
    assert (change["kernel"], change["was"], change["now"]) == ("sid", "7.2.12", "7.2.13")
    assert change["cells"] == [{"cell": "overlay.layers/fd-opath", "was": "works", "now": "broken"}]


def test_rebuilding_a_report_does_not_add_a_run(tmp_path: Path) -> None:
    nightly(tmp_path, RUNS)
    again = write_report([tmp_path], tmp_path)
    assert again["history"]["runs"] == 3


def test_the_history_keeps_the_last_n_runs(tmp_path: Path) -> None:
    matrix = nightly(tmp_path, RUNS, size=2)
    assert matrix["history"]["runs"] == 2
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["kernels"]["sid"]["run_id"] for r in saved["runs"]] == [r[0] for r in RUNS[1:]]


def test_the_history_in_chromium(tmp_path: Path) -> None:
    """The kernel change and the strips as a reader sees them (screenshot kept beside)."""
    nightly(tmp_path, RUNS)
    try:
        executable = chromium_path()
    except FileNotFoundError as exc:
        pytest.fail(f"the tests session installs chromium: {exc}")
    from playwright.sync_api import sync_playwright

    shot = REPO / "results" / "history-test-screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((tmp_path / "report.html").as_uri())
            changes = page.locator("#kernel-changes").inner_text()
            strips = page.locator("td.cell .strip").count()
            flaky = page.locator("td.cell .flaky-mark").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "moved from 7.2.12 to 7.2.13" in changes and "overlay.layers/fd-opath" in changes
    assert "works" in changes and "broken" in changes
    assert strips >= 3 and flaky == 1


def other(root: Path, **changes: object) -> Path:
    provenance = json.loads(json.dumps(PROVENANCE))
    for key, value in changes.items():
        if key == "commit":
            provenance["library"]["commit"] = value
        else:
            provenance[key] = value
    kernel_dir(
        root, "b", "6.12.1", {("mounts.list", "mountinfo"): "works"}, SYMBOLS, provenance=provenance
    )
    return root


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"kernels_yaml_sha256": "x" * 64}, "kernels.yaml"),
        ({"expectations_sha256": "x" * 64}, "expectations.yaml"),
        ({"commit": "d" * 40}, "the library"),
    ],
)
def test_merging_different_runs_is_refused_and_says_why(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    kernel_dir(a, "a", "6.1.1", {("mounts.list", "mountinfo"): "works"}, SYMBOLS)
    other(b, **change)
    with pytest.raises(MergeRefused, match=named):
        write_report([a, b], tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "harness.report", str(a), str(b), "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and named in done.stderr and "--allow-mixed" in done.stderr
    merged = write_report([a, b], tmp_path / "out", allow_mixed=True)
    assert {k["name"] for k in merged["kernels"]} == {"a", "b"}


def report_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.report", str(root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("schema", [1, 3, "2"])
def test_a_previous_matrix_of_another_schema_is_said_and_not_used(
    tmp_path: Path, schema: object
) -> None:
    """Issue 21: previous-matrix.json of another schema was compared with as if it were this
    one's. Now it is one line (stderr, the report's first screen, the job summary), and no
    change since the last run is shown from it; the exit status stays 0."""
    nightly(tmp_path, RUNS[:1])
    previous = json.loads((tmp_path / "matrix.json").read_text())
    previous["schema"] = schema
    for cell in previous["cells"]:
        if cell["strategy"] == "fd-opath":
            cell["outcome"] = "unsupported"  # a change, were it compared
    (tmp_path / "previous-matrix.json").write_text(json.dumps(previous))
    summary = tmp_path / "summary.md"
    done = report_cli(tmp_path, "--summary", str(summary))
    assert done.returncode == 0, done.stderr
    said = f"{tmp_path / 'previous-matrix.json'}: matrix schema {json.dumps(schema)}; this "
    said += "report writes schema 2, so no changes since the last run are shown"
    assert [line for line in done.stderr.splitlines() if "previous-matrix" in line] == [
        f"not used: {said}"
    ]
    matrix = json.loads((tmp_path / "matrix.json").read_text())
    assert matrix["comparison"] == {"previous": None, "changes": []}
    assert matrix["not_used"] == [said]
    html = (tmp_path / "report.html").read_text()
    assert 'id="not-used"' in html and str(escape(said)) in html
    assert said in summary.read_text()


def test_a_history_of_another_schema_is_said_set_aside_and_started_again(tmp_path: Path) -> None:
    """Issue 21: a history.json of another schema was extended as if it were this one's. Now
    it is one line, kept as history.json.schema-1 (never overwritten), and the history starts
    again with this run; the exit status stays 0."""
    nightly(tmp_path, RUNS[:2])
    history = tmp_path / "history.json"
    old = json.loads(history.read_text())
    old["schema"] = 1
    history.write_text(json.dumps(old))
    before = history.read_text()
    done = report_cli(tmp_path, "--allow-surprises")
    assert done.returncode == 0, done.stderr
    kept = tmp_path / "history.json.schema-1"
    said = f"{history}: matrix schema 1; this report writes schema 2, so the history starts "
    said += f"again with this run (the old one is kept as {kept})"
    assert [line for line in done.stderr.splitlines() if "history" in line] == [f"not used: {said}"]
    assert kept.read_text() == before
    matrix = json.loads((tmp_path / "matrix.json").read_text())
    assert matrix["history"]["runs"] == 1 and matrix["not_used"] == [said]
    assert json.loads(history.read_text())["schema"] == 2
    assert said in (tmp_path / "report.html").read_text()


def test_a_history_that_names_no_schema_is_read_as_schema_2(tmp_path: Path) -> None:
    """Every history written before it named its schema was of matrix schema 2: read on, and
    named from now on."""
    nightly(tmp_path, RUNS[:2])
    history = tmp_path / "history.json"
    old = json.loads(history.read_text())
    del old["schema"]
    history.write_text(json.dumps(old))
    matrix = nightly(tmp_path, RUNS[2:])
    assert matrix["history"]["runs"] == 3 and matrix["not_used"] == []
    assert json.loads(history.read_text())["schema"] == 2
