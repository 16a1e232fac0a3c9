"""A GitHub-hosted runner's parts this machine lacks, made in a directory and shown to act
only inside a private mount namespace: Ubuntu-only apt sources, the ``runner`` user with
password-less sudo, and its home with the repository checked out."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.workflow import RUNNER_UID, UBUNTU_SOURCES, Action


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def give_to_runner(path: Path) -> None:
    run(["chown", "-R", f"{RUNNER_UID}:{RUNNER_UID}", str(path)])


# Files of /etc the namespace replaces, each by the runner's version.
OVERLAID = ("apt", "passwd", "group", "shadow", "sudoers.d")


@dataclass(frozen=True)
class Runner:
    root: Path  # everything simulated lives here

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def home(self) -> Path:
        return self.root / "home/runner"

    @property
    def checkout(self) -> Path:
        return self.home / "work/mountcompat/mountcompat"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def actions(self) -> Path:
        return self.root / "actions"


def copy_actions(actions: list[Action], source: Path, runner: Runner) -> None:
    """The actions' work trees where the runner user can read them (not under root's home),
    without their build-time node_modules: what runs is the bundled dist/."""
    for key in sorted({a.key for a in actions}):
        shutil.copytree(
            source / key,
            runner.actions / key,
            ignore=shutil.ignore_patterns("node_modules", ".git"),
            symlinks=True,
        )


def make_apt(etc: Path) -> None:
    """The host's apt configuration with its sources replaced by Ubuntu-only ones."""
    shutil.copytree("/etc/apt", etc / "apt", symlinks=True)
    (etc / "apt/sources.list").unlink(missing_ok=True)
    sources = etc / "apt/sources.list.d"
    shutil.rmtree(sources, ignore_errors=True)
    sources.mkdir()
    (sources / "ubuntu.sources").write_text(UBUNTU_SOURCES)


def make_user(etc: Path, home: Path) -> None:
    """``runner`` in copies of passwd, group and shadow, and its sudoers entry as GitHub's
    image has it."""
    for name in ("passwd", "group", "shadow"):
        shutil.copy2(f"/etc/{name}", etc / name)
    with (etc / "passwd").open("a") as passwd:
        passwd.write(f"runner:x:{RUNNER_UID}:{RUNNER_UID}:runner:{home}:/bin/bash\n")
    with (etc / "group").open("a") as group:
        group.write(f"runner:x:{RUNNER_UID}:\n")
    with (etc / "shadow").open("a") as shadow:
        shadow.write("runner:*:20000:0:99999:7:::\n")
    sudoers = etc / "sudoers.d"
    if Path("/etc/sudoers.d").is_dir():
        shutil.copytree("/etc/sudoers.d", sudoers, symlinks=True)
    else:
        sudoers.mkdir()
    (sudoers / "runner").write_text("runner ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(sudoers / "runner", 0o440)


def make_checkout(repo: Path, checkout: Path) -> None:
    """A clone of ``repo``'s HEAD where a runner keeps it. Its origin is a placeholder GitHub
    repository, from which act takes the workflow's ``github.repository``."""
    checkout.parent.mkdir(parents=True)
    run(["git", "clone", "-q", "--no-local", str(repo), str(checkout)])
    run(["git", "-C", str(checkout), "remote", "set-url", "origin", PLACEHOLDER_REPOSITORY])


PLACEHOLDER_REPOSITORY = "https://github.com/mountcompat-local/mountcompat.git"


def make_runner(root: Path, repo: Path) -> Runner:
    runner = Runner(root)
    runner.etc.mkdir(parents=True)
    runner.home.mkdir(parents=True)
    runner.artifacts.mkdir()
    make_apt(runner.etc)
    make_user(runner.etc, runner.home)
    make_checkout(repo, runner.checkout)
    # act asks which image to use on its first start unless told: host mode, always.
    (runner.home / ".actrc").write_text("-P ubuntu-latest=-self-hosted\n")
    for path in (runner.home, runner.artifacts):
        give_to_runner(path)
    os.chmod(root, 0o755)
    return runner


def overlay_etc(runner: Runner) -> None:
    """Inside the private mount namespace: the runner's /etc files over the host's."""
    for name in OVERLAID:
        source = runner.etc / name
        target = Path("/etc") / name
        run(["mount", "--bind", str(source), str(target)])
