"""The nightly workflow run on this machine, job by job, with nektos/act in host mode.

``./nox -s workflow`` runs ``.github/workflows/matrix.yml`` as GitHub would for one x86_64 and
one arm64 kernel: plan, the two kernel jobs, then merge (the ``checks`` job's commands are
what ``.ci/run`` runs itself; ``publish`` needs GitHub's Pages service). What this machine
lacks and a GitHub-hosted runner has is simulated, and each part is said when it starts:

- **the runner's apt sources**: Ubuntu archives only, no Debian one. A private mount
  namespace has its own /etc/apt whose sources name a placeholder Ubuntu archive (the
  runner's real one is named nowhere here); the host's own apt is untouched.
- **the runner's user**: ``runner`` (uid 1001) with password-less sudo, as on GitHub. The
  user and its sudoers entry exist only in that namespace (its own /etc/passwd, group,
  shadow and sudoers.d, bind-mounted); sudo is the real one, with the distribution's
  defaults (env_reset, secure_path), so ``sudo --preserve-env=...`` behaves as on Ubuntu.
- **the runner's preinstalled software** (git, jq, curl, node) and what the harness would
  install from the runner's archive: installed here first, from this host's own apt
  sources, before they are hidden.
- **the artifact and cache services**: act's own servers, on 127.0.0.1.
- **the actions**: their public repositories' code, at the newest tag of each major version
  the workflow names, from a directory of work trees (``MOUNTCOMPAT_ACTIONS``, default
  ``~/.cache/mountcompat-actions``, laid out as ``OWNER/NAME@REF``). None of that code is in
  this repository; where one is missing, the run says which and exits 77 (skipped).
- the KVM step of the kernel job is skipped (``if: !env.ACT``): it would change this
  machine's /dev/kvm.

The run is of this checkout's HEAD, cloned as the runner's checkout would be. Its results,
act's log and the merged site (extracted from the ``report`` artifact and opened in headless
Chromium) are kept in ``results/workflow/``.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = ".github/workflows/matrix.yml"
JOBS = ("plan", "kernel", "merge")  # act runs merge with what it needs
DEFAULT_KERNELS = ("rhel9-era", "6.12-arm64")
SKIPPED = 77  # automake's "skipped": what is needed to run is not on this machine
ACTIONS_VAR = "MOUNTCOMPAT_ACTIONS"
RUNNER_UID = 1001  # GitHub's runner user
# A placeholder, never a real host: the runner's archive only has to be an Ubuntu one.
UBUNTU_SOURCES = """\
# What a GitHub-hosted Ubuntu runner's apt sources name: Ubuntu archives only.
Types: deb
URIs: http://ubuntu-archive.invalid/ubuntu/
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse
"""


@dataclass(frozen=True)
class Action:
    """One ``uses:`` of the workflow: ``actions/cache/restore@v4`` is the repository
    actions/cache at v4, in its folder restore/."""

    repo: str
    ref: str
    folder: str

    @classmethod
    def parse(cls, uses: str) -> Action:
        name, _, ref = uses.partition("@")
        owner, repo, *folder = name.split("/")
        return cls(f"{owner}/{repo}", ref, "/".join(folder))

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.ref}"


def actions_used(workflow: dict[str, Any], jobs: tuple[str, ...] = JOBS) -> list[Action]:
    """The actions the jobs use, but the checkout act does itself for its own repository."""
    found: dict[str, Action] = {}
    for job in jobs:
        for step in workflow["jobs"][job]["steps"]:
            uses = step.get("uses", "")
            if uses and not uses.startswith("actions/checkout@"):
                action = Action.parse(uses)
                found.setdefault(f"{action.key}/{action.folder}", action)
    return list(found.values())


def actions_dir() -> Path:
    return Path(os.environ.get(ACTIONS_VAR, Path.home() / ".cache/mountcompat-actions"))


def missing_action(action: Action, root: Path) -> str | None:
    """Why the action's code cannot run from ``root``, or None when it can: its action.yml,
    and for a JavaScript action the built file it names (some tags lack their dist/)."""
    where = root / action.key / action.folder
    meta = next((where / n for n in ("action.yml", "action.yaml") if (where / n).is_file()), None)
    if meta is None:
        return f"{action.key}{'/' + action.folder if action.folder else ''}: no {where}/action.yml"
    runs = (yaml.safe_load(meta.read_text()) or {}).get("runs", {})
    for key in ("main", "post", "pre"):
        if runs.get(key) and not (where / runs[key]).is_file():
            return f"{action.key}: {where / runs[key]} is not built"
    return None


@dataclass
class JobTimes:
    """Each job's start and end as act's log shows them, and its verdict."""

    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    verdict: dict[str, str] = field(default_factory=dict)

    JOB_LINE = re.compile(r"^\[(?P<job>[^\]]+)\]\s*(?P<rest>.*)$")

    def see(self, line: str, now: float) -> None:
        match = self.JOB_LINE.match(line)
        if match is None:
            return
        job, rest = match["job"].strip(), match["rest"]
        self.started.setdefault(job, now)
        if "Job succeeded" in rest or "Job failed" in rest:
            self.ended[job] = now
            self.verdict[job] = "succeeded" if "succeeded" in rest else "failed"

    def lines(self) -> Iterator[str]:
        for job, start in self.started.items():
            end = self.ended.get(job)
            took = f"{end - start:.0f} s" if end is not None else "did not end"
            yield f"  {job}: {self.verdict.get(job, 'no verdict')}, {took}"


def report_artifact(artifacts: Path, into: Path) -> Path | None:
    """The merge job's ``report`` artifact, unpacked into ``into``: act's artifact server keeps
    each upload as a zip in a folder of the run's, named after the artifact."""
    archives = sorted(artifacts.glob("*/report/*.zip"))
    for archive in archives:
        with zipfile.ZipFile(archive) as unpacked:
            unpacked.extractall(into)
    return into if archives else None


def say(message: str) -> None:
    print(f"workflow: {message}", file=sys.stderr, flush=True)


def load_workflow(repo: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo / WORKFLOW).read_text())
    return loaded
