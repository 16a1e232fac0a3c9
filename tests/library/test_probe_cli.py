"""``python -m mountcompat probe`` run as a user would: a real interpreter, a real environment,
a real user namespace. The probe mounts only in a private mount namespace of its own, on
scratch directories it removes, so nothing is left on the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mountcompat import list_mounts
from mountcompat.choices import ENV_FORCE, forget_environment_forcing
from mountcompat.errors import MountCompatError

REPO = Path(__file__).resolve().parents[2]
PROBE = [sys.executable, "-m", "mountcompat", "probe"]


def run_probe(
    *args: str, force: str | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_FORCE}
    env["PYTHONPATH"] = str(REPO)  # this worktree's library, not an installed one
    if force is not None:
        env[ENV_FORCE] = force
    return subprocess.run(
        [*prefix, *PROBE, *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def library_refusal(monkeypatch: pytest.MonkeyPatch, force: str) -> str:
    """What the library itself says of this MOUNTCOMPAT_FORCE, used anywhere (a listing)."""
    monkeypatch.setenv(ENV_FORCE, force)
    forget_environment_forcing()
    try:
        with pytest.raises(MountCompatError) as refused:
            list_mounts()
    finally:
        monkeypatch.delenv(ENV_FORCE)
        forget_environment_forcing()
    return str(refused.value)


BAD_FORCING = [
    "nonsense",  # not feature=strategy
    "mount.api=nosuch",  # no such strategy
    "nosuch.choice=x",  # no such feature
    "mount.api=mount2,mount.api=fsmount",  # one feature forced two ways
    "path.resolve=userspace",  # weaker: the environment may not force it
]


@pytest.mark.parametrize("force", BAD_FORCING)
def test_the_probe_refuses_what_the_library_refuses(
    monkeypatch: pytest.MonkeyPatch, force: str
) -> None:
    expected = library_refusal(monkeypatch, force)
    for args in ((), ("--json",)):
        done = run_probe(*args, force=force)
        assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr == f"error: {expected}\n"  # one line, the library's text, no traceback


def test_a_conflict_in_the_environment_is_an_error_in_a_real_program() -> None:
    """mount.api forced two ways: a real mount through the library is refused before any
    strategy runs, in a fresh interpreter that read MOUNTCOMPAT_FORCE itself."""
    program = (
        "import sys, tempfile\n"
        "from mountcompat import mount_fs\n"
        "from mountcompat.mounts import private_mount_namespace\n"
        "private_mount_namespace()\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    try:\n"
        "        with mount_fs('tmpfs', 'conflict', d):\n"
        "            print('mounted')\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), ENV_FORCE: "mount.api=mount2,mount.api=fsmount"}
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == (
        "ForcingRefused MOUNTCOMPAT_FORCE: mount.api is forced to both mount2 and fsmount\n"
    )


def test_good_forcing_still_probes() -> None:
    done = run_probe("--json", force="mount.api=mount2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["features"]["mount.api"]["default"] == "mount2"
