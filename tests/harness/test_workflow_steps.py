"""The nightly workflow's own shell steps, run as GitHub runs them (bash -eo pipefail), on
the inputs a first real run meets: a repository named OWNER.github.io, no kernel results at
all, a pull request that changes only the report."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github/workflows/matrix.yml"


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def step(job: str, step_id: str) -> dict[str, Any]:
    for candidate in workflow()["jobs"][job]["steps"]:
        if candidate.get("id") == step_id:
            found: dict[str, Any] = candidate
            return found
    raise AssertionError(f"no step {step_id!r} in job {job!r}")


def run_step(
    job: str, step_id: str, cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    """The step's script with the workflow's env, GitHub's default shell, and its output and
    summary files; returns the process, the outputs it set and the summary it wrote."""
    outputs, summary = cwd / "github-output", cwd / "github-summary"
    outputs.write_text("")
    summary.write_text("")
    full_env = {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in workflow().get("env", {}).items()},
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        **env,
    }
    script = cwd / "step.sh"
    script.write_text(step(job, step_id)["run"])
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pairs = (line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return done, dict(pairs), summary.read_text()


@pytest.mark.parametrize(
    ("repository", "url"),
    [
        ("Some-Org/mountcompat", "https://some-org.github.io/mountcompat"),
        ("Some-Org/Some-Org.github.io", "https://some-org.github.io"),
        ("some-org/other.github.io", "https://some-org.github.io/other.github.io"),
    ],
)
def test_the_history_is_read_from_where_pages_serves_the_site(
    tmp_path: Path, repository: str, url: str
) -> None:
    owner = repository.split("/", maxsplit=1)[0]
    done, outputs, _ = run_step(
        "merge",
        "pages",
        tmp_path,
        {"GITHUB_REPOSITORY": repository, "GITHUB_REPOSITORY_OWNER": owner},
    )
    assert done.returncode == 0, done.stderr
    assert outputs["url"] == url


def test_no_kernel_results_at_all_is_one_line_and_no_site(tmp_path: Path) -> None:
    """Every kernel job failed before writing results: the merge says so in one line (and in
    the job summary), does not hand an unmatched glob to the report, and publishes nothing."""
    (tmp_path / "merged").mkdir()
    done, outputs, summary = run_step(
        "merge", "report", tmp_path, {"PLANNED": '[{"name": "6.12"}]'}
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "no kernel left results: every kernel job ended before writing any (see their logs)"
    ]
    assert "no kernel left results" in summary
    assert "site" not in outputs
    assert not (tmp_path / "site").exists()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("changed", "report_only"),
    [
        (["harness/report/render.py", "harness/templates/report.html.j2"], "true"),
        (["docs/ci.md", "README.md"], "true"),
        (["harness/report/render.py", "mountcompat/loop.py"], "false"),
        (["harness/run/kernel.py"], "false"),
    ],
)
def test_a_pull_request_that_changes_only_the_report_boots_no_kernel(
    tmp_path: Path, changed: list[str], report_only: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    git(
        work,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "base",
    )
    base = git(work, "rev-parse", "HEAD")
    for rel in changed:
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("changed\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "change")
    done, outputs, _ = run_step("plan", "scope", work, {"EVENT": "pull_request", "BASE": base})
    assert done.returncode == 0, done.stderr
    assert outputs["report-only"] == report_only
    # A scheduled run always boots its kernels.
    done, outputs, _ = run_step("plan", "scope", work, {"EVENT": "schedule", "BASE": ""})
    assert outputs["report-only"] == "false"


def test_a_kernel_job_saves_its_cache_whatever_its_verdict() -> None:
    """The downloads of a kernel that ended in surprises are as good as any: the save is a
    step of its own that runs always (actions/cache's combined form saves only on success)."""
    steps = workflow()["jobs"]["kernel"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert not any(u.startswith("actions/cache@") for u in uses)
    save = steps[next(i for i, u in enumerate(uses) if u.startswith("actions/cache/save@"))]
    assert save["if"].startswith("always()")
    boot = next(i for i, s in enumerate(steps) if "nox -s matrix" in s.get("run", ""))
    assert uses.index(save["uses"]) > boot


def test_the_published_site_is_the_reader_copy() -> None:
    """What Pages serves is --publish's directory, not the merge directory with its shards
    and lock files."""
    merge = workflow()["jobs"]["merge"]["steps"]
    pages = next(s for s in merge if s.get("uses", "").startswith("actions/upload-pages"))
    assert pages["with"]["path"] == "site"
    assert "--publish site" in step("merge", "report")["run"]
    assert "--out merged" in step("merge", "report")["run"]
