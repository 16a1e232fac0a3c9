"""The real el9 kernel beside its stand-in: its expectations come from its own kallsyms and
config, never from its 5.14 alone, and the report says which answers of the two differ once a
run has had both."""

from __future__ import annotations

import json
from pathlib import Path

from reportdata import kernel_dir

from harness.report import write_report
from harness.run.expectations import KernelFacts, load_expectations

REPO = Path(__file__).resolve().parents[2]
EXPECTATIONS = load_expectations(REPO / "expectations.yaml")


def el9(symbols: set[str], config: dict[str, str] | None = None) -> KernelFacts:
    return KernelFacts(
        release="5.14.0-503.el9.x86_64",
        upstream="5.14.0",
        tags=("el9", "backported"),
        symbols=frozenset(symbols),
        config=config or {},
    )


def test_a_backported_kernel_decides_no_expectation_by_its_version() -> None:
    """fd-reopen needs fsopen and 6.13: by version alone el9's 5.14 would be 'unsupported',
    which a backport makes wrong. Unknown, saying why; the same cell on Debian's 5.10 is
    decided by its version as before."""
    facts = el9({"__x64_sys_fsopen"})
    expected, why = EXPECTATIONS.expected("overlay.layers", "fd-reopen", facts)
    assert expected == "unknown"
    assert "backported" in why and "5.14.0" in why and "6.13" in why
    debian = KernelFacts(
        release="5.10.0-32-cloud-amd64", upstream="5.10.223", symbols=frozenset(facts.symbols)
    )
    assert EXPECTATIONS.expected("overlay.layers", "fd-reopen", debian)[0] == "unsupported"


def test_a_backported_kernel_is_still_judged_by_its_symbols_and_config() -> None:
    # No fsopen at all: the version cannot matter, fd-reopen is unsupported.
    assert EXPECTATIONS.expected("overlay.layers", "fd-reopen", el9(set()))[0] == "unsupported"
    # Expectations that rest on symbols and config alone are decided as for any kernel.
    facts = el9({"__x64_sys_mount_setattr"}, {"CONFIG_EROFS_FS_BACKED_BY_FILE": "y"})
    assert EXPECTATIONS.expected("mount.attr", "mount-setattr", facts)[0] == "works"
    assert EXPECTATIONS.expected("mounts.list", "statmount", facts)[0] == "unsupported"
    assert EXPECTATIONS.expected("erofs.source", "file", facts)[0] == "works"


def edit(path: Path, **values: object) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


def standin_report(tmp_path: Path, real_status: str) -> dict[str, object]:
    works = {("mount.api", "fsmount"): "works", ("mounts.list", "statmount"): "unsupported"}
    real = {("mount.api", "fsmount"): "works", ("mounts.list", "statmount"): "works"}
    standin = kernel_dir(tmp_path, "rhel9-era", "5.10.0-32-cloud-amd64", works, [])
    edit(standin / "kernel.json", stands_in_for=["el9"])
    el9 = kernel_dir(
        tmp_path, "el9", "5.14.0-503.el9.x86_64", real, [], status=real_status, sha="b"
    )
    if real_status == "ok":
        # The real kernel's library lists the mounts with statmount, unforced; the stand-in
        # with mountinfo.
        choice = {"strategy": "statmount", "by_backing": {"tmpfs:tmpfs": "statmount"}}
        outcomes = json.loads((el9 / "outcomes.json").read_text())
        edit(el9 / "outcomes.json", defaults={**outcomes["defaults"], "mounts.list": choice})
        choice = {"strategy": "mountinfo", "by_backing": {"tmpfs:tmpfs": "mountinfo"}}
        outcomes = json.loads((standin / "outcomes.json").read_text())
        edit(standin / "outcomes.json", defaults={**outcomes["defaults"], "mounts.list": choice})
    matrix = write_report([tmp_path], tmp_path)
    return dict(matrix)


def test_the_report_lists_the_cells_where_the_standin_and_the_real_kernel_differ(
    tmp_path: Path,
) -> None:
    matrix = standin_report(tmp_path, "ok")
    (entry,) = matrix["standin_differences"]  # type: ignore[misc]
    assert entry["standin"] == "rhel9-era" and entry["real"] == "el9"
    assert entry["not_compared"] is None
    assert entry["cells"] == [
        {
            "feature": "mounts.list",
            "strategy": "statmount",
            "standin": "unsupported",
            "real": "works",
        }
    ]
    # The same answer for mount.api: only the feature whose unforced choice differs.
    assert entry["defaults"] == [
        {"feature": "mounts.list", "standin": "mountinfo", "real": "statmount"}
    ]
    html = (tmp_path / "report.html").read_text()
    assert 'id="standin-rhel9-era-el9"' in html and "1 cells differ" in html
    assert "chose another strategy unforced: mounts.list" in html
    assert "stand-in for el9: 2 differ" in html  # beside the stand-in's column header


def test_until_both_completed_the_report_says_why_they_were_not_compared(
    tmp_path: Path,
) -> None:
    matrix = standin_report(tmp_path, "unreachable")
    (entry,) = matrix["standin_differences"]  # type: ignore[misc]
    assert entry["cells"] == [] and entry["not_compared"] == "el9 is unreachable"
    assert "not compared (el9 is unreachable)" in (tmp_path / "report.html").read_text()


def test_a_kernel_unreachable_in_this_run_names_the_run_its_results_are_of(
    tmp_path: Path,
) -> None:
    """Its earlier results stay in place (as after fetch-failed); the first screen says that
    this run could not reach it, not the earlier run's detail."""
    kernel_dir(tmp_path, "el9", "5.14.0-503.el9.x86_64", {}, [], run_id="20261201T000000Z-0001")
    edit(
        tmp_path / "run.json",
        run_id="20261202T000000Z-0002",
        statuses={"el9": "unreachable"},
    )
    matrix = write_report([tmp_path], tmp_path)
    assert matrix["unreachable"] == [
        {
            "kernel": "el9",
            "why": "unreachable in this run; the results shown are of run 20261201T000000Z-0001",
        }
    ]
