"""mountcompat as a dependency people ship: the wheel holds the library alone, needs nothing
outside the standard library, installs into a bare virtualenv and works there; installed,
it leaves other people's pytest runs alone."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(600)


def run(*argv: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=540, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The sdist first, then the wheel from it (build's default): nothing is built in the
    # checkout itself, and the wheel is what a user of the sdist would get.
    run(sys.executable, "-m", "build", "--outdir", out, REPO)
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(out.iterdir()))
    return out


@pytest.fixture(scope="module")
def bare_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with nothing but pip, and the wheel installed into it."""
    where = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(where)
    (wheel,) = dist.glob("*.whl")
    run(where / "bin" / "python", "-m", "pip", "install", "--no-index", wheel)
    yield where


def test_the_wheel_holds_the_library_alone(dist: Path) -> None:
    (wheel,) = dist.glob("mountcompat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"mountcompat", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert "mountcompat/py.typed" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist" not in text, "the library must need nothing outside the stdlib"
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert entry_points == [], "no pytest plugin, no script registered on install"
    (sdist,) = dist.glob("mountcompat-*.tar.gz")
    assert sdist.stat().st_size > 0


def test_installed_alone_it_imports_and_probes(bare_venv: Path) -> None:
    python = bare_venv / "bin" / "python"
    installed = run(python, "-m", "pip", "list", "--format=json").stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert names <= {"mountcompat", "pip", "setuptools"}, names
    absent = run(
        python,
        "-c",
        "import importlib.util as u; print([m for m in ('pytest', 'virtme', 'jinja2', 'yaml', "
        "'rich', 'harness') if u.find_spec(m)])",
        cwd=bare_venv,
    )
    assert absent.stdout.strip() == "[]"
    probe = json.loads(run(python, "-m", "mountcompat", "probe", "--json", cwd=bare_venv).stdout)
    assert probe["features"]["mount.api"]["default"] in ("fsmount", "mount2")


UNRELATED = """
import os

def test_namespace_and_fds_untouched():
    assert os.readlink("/proc/self/ns/mnt") == os.environ["OUTER_NS"]
    os.open("/", os.O_RDONLY)  # an fd left open: the suites' leak check would fail this

def test_no_timeout_of_ours(request):
    assert request.config.getoption("timeout", None) is None
"""


def test_an_unrelated_project_is_untouched(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project that merely has mountcompat (and pytest-timeout) installed: its tests run in
    its own mount namespace, leak what they like, keep pytest-timeout's settings."""
    import os

    monkeypatch.setenv("OUTER_NS", os.readlink("/proc/self/ns/mnt"))
    monkeypatch.delenv("PYTEST_TIMEOUT", raising=False)
    pytester.makepyfile(UNRELATED)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)
    assert "mountcompat" not in result.stdout.str()
