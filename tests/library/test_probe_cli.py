"""``python -m mountcompat probe`` run as a user would: a real interpreter, a real environment,
a real user namespace. The probe mounts only in a private mount namespace of its own, on
scratch directories it removes, so nothing is left on the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

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


# --- a user namespace: what the probe cannot tell ----------------------------------------


def _userns_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["unshare", "-r", "true"], capture_output=True, check=False)
    return done.returncode == 0


needs_userns = pytest.mark.skipif(
    not _userns_works(), reason="needs root and `unshare -r` (user namespaces allowed)"
)


def blocks(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The text output, feature by feature: its default, and each strategy's state."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for line in text.splitlines()[1:]:
        if not line.startswith(" "):
            feature, _, default = line.partition(" default: ")
            found[feature.strip()] = (default, {})
        else:
            name, state = line.split(None, 1)
            found[list(found)[-1]][1][name] = state
    return found


def check_default(feature: str, default: str, states: dict[str, str]) -> None:
    """A default is named only when the library was seen to use it; "none works" only when
    every strategy was refused; anything else is unknown."""
    if default == "none works":
        assert all(s.startswith("unsupported") for s in states.values()), (feature, states)
    elif default.startswith("unknown (could not tell"):
        assert any(not s.startswith("supported") for s in states.values()), (feature, states)
    else:
        assert default in states, (feature, default, states)


@needs_userns
def test_in_a_user_namespace_what_cannot_be_told_names_no_default() -> None:
    """Mapped root may mount tmpfs but not erofs (not mountable in a user namespace): the
    erofs strategies could not be told, and neither can the default."""
    done = run_probe(prefix=("unshare", "-r"))
    assert done.returncode == 0, done.stderr
    found = blocks(done.stdout)
    assert set(found) >= {"mount.api", "erofs.source"}, done.stdout
    for feature, (default, states) in found.items():
        check_default(feature, default, states)
    default, states = found["erofs.source"]
    assert all(s.startswith("could not tell") for s in states.values()), done.stdout
    assert default.startswith("unknown (could not tell"), done.stdout
    assert "none works" not in done.stdout


@needs_userns
def test_in_a_user_namespace_the_json_says_the_default_is_unknown() -> None:
    done = run_probe("--json", prefix=("unshare", "-r"))
    assert done.returncode == 0, done.stderr
    features: dict[str, Any] = json.loads(done.stdout)["features"]
    for feature, probe in features.items():
        supported = [s["supported"] for s in probe["strategies"].values()]
        if probe["default"] is not None:
            assert probe["default_state"] == "chosen", (feature, probe)
            assert probe["default"] in probe["strategies"], (feature, probe)
        elif probe["default_state"] == "none works":
            assert all(s is False for s in supported), (feature, probe)
        else:
            assert probe["default_state"] == "could not tell", (feature, probe)
    # Mapped root mounts tmpfs: a probe that could tell nothing anywhere fails here.
    assert features["mount.api"]["default_state"] == "chosen", features["mount.api"]
    erofs = features["erofs.source"]
    assert erofs["default"] is None and erofs["default_state"] == "could not tell", erofs
    assert erofs["default_run"]["supported"] is None, erofs  # why: its errno and message


DOUBLES = textwrap.dedent(
    """
    import errno, json
    from dataclasses import asdict
    from mountcompat import probe
    from mountcompat.__main__ import render_text
    from mountcompat.mounts import private_mount_namespace
    from mountcompat.strategy import Strategy, feature

    def refused(err):
        def run():
            raise OSError(err, "refused")
        return run

    ENOSYS = frozenset({errno.ENOSYS})
    features = {
        # every strategy refused as unsupported: none works
        "test.none": [Strategy("a", refused(errno.ENOSYS), unsupported=ENOSYS),
                      Strategy("b", refused(errno.ENOSYS), unsupported=ENOSYS)],
        # the first unsupported, the second refused for want of privilege: nobody can tell
        "test.eperm": [Strategy("a", refused(errno.ENOSYS), unsupported=ENOSYS),
                       Strategy("b", refused(errno.EPERM))],
        # each forced strategy unsupported, but the unforced run fails on another feature's
        # "none works": nobody can tell this one's default
        "test.other": [Strategy("a", refused(errno.ENOSYS), unsupported=ENOSYS)],
        # the unforced run says "none works" of this very feature, but forced, a strategy
        # failed for want of privilege: nobody can tell either
        "test.forced-eperm": [Strategy("a", refused(errno.ENOSYS), unsupported=ENOSYS)],
    }
    private_mount_namespace()  # the scratch tmpfs of each run is mounted here only
    made = {fid: feature(fid, fid, strategies) for fid, strategies in features.items()}
    for fid, run in made.items():
        probe.SCENARIOS[fid] = lambda base, force, run=run: run(force=force)

    def other(base, force):
        return made["test.other"](force=force) if force else made["test.none"]()

    def forced_eperm(base, force):
        if force:
            raise OSError(errno.EPERM, "refused")
        return made["test.forced-eperm"]()

    probe.SCENARIOS["test.other"] = other
    probe.SCENARIOS["test.forced-eperm"] = forced_eperm
    result = {"kernel": "test", "features": {}}
    for fid in features:
        result["features"][fid] = asdict(probe.probe_feature(fid))
    print(json.dumps({"json": result, "text": render_text(result)}))
    """
)


def test_none_works_only_when_every_strategy_was_refused() -> None:
    """Features of doubles whose strategies the kernel refuses (ENOSYS) or that lack
    privilege (EPERM): only the first may say "none works"."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(ENV_FORCE, None)
    done = subprocess.run(
        [sys.executable, "-c", DOUBLES],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    none, eperm = out["json"]["features"]["test.none"], out["json"]["features"]["test.eperm"]
    assert (none["default"], none["default_state"]) == (None, "none works"), none
    assert (eperm["default"], eperm["default_state"]) == (None, "could not tell"), eperm
    assert eperm["default_run"]["errname"] == "EPERM", eperm
    # Each of the two conditions of "none works" alone: neither is enough.
    for fid in ("test.other", "test.forced-eperm"):
        double = out["json"]["features"][fid]
        assert (double["default"], double["default_state"]) == (None, "could not tell"), double
    defaults = {b: d for b, (d, _) in blocks(out["text"]).items()}
    assert defaults == {
        "test.none": "none works",
        "test.eperm": "unknown (could not tell: EPERM)",
        "test.other": "unknown (could not tell)",
        "test.forced-eperm": "unknown (could not tell)",
    }


NO_FSOPEN = textwrap.dedent(
    """
    import errno, json
    from mountcompat import _syscalls, probe
    from mountcompat.mounts import private_mount_namespace

    def fsopen(*args, **kwargs):
        raise OSError(errno.ENOSYS, "fsopen")  # as a kernel before 5.2 answers

    private_mount_namespace()  # the scratch tmpfs of each run is mounted here only
    _syscalls.fsopen = fsopen
    found = {f: probe.probe_feature(f).strategies for f in ("mount.api", "mount.attr")}
    print(json.dumps({f: {n: p.supported for n, p in s.items()} for f, s in found.items()}))
    """
)


def test_another_features_forced_refusal_is_not_this_strategys() -> None:
    """mount.api forced to fsmount where fsopen is missing: the mount.attr scenario's tmpfs
    mount is refused, which says nothing of mount_setattr or remount."""
    env = {**os.environ, "PYTHONPATH": str(REPO), ENV_FORCE: "mount.api=fsmount"}
    done = subprocess.run(
        [sys.executable, "-c", NO_FSOPEN],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "mount.api": {"fsmount": False, "mount2": True},  # the forced one, itself refused
        "mount.attr": {"mount-setattr": None, "remount": None},  # could not tell
    }
