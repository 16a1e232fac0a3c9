"""Sessions: `tests` (host), `matrix` (every kernel in kernels.yaml), `report`, `lint`, `bench`.

Each session installs the project into its own virtualenv; the matrix guests run the suites
with that same virtualenv, which they see through the host's read-only root.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"


def install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """The library's, the suites' and the harness's tests, on the host, as root."""
    install(session)
    session.run("python", "-m", "harness.hostprep", "--for", "tests")
    # Two workers by file: the guests of the harness's tests boot while the rest runs.
    # The host's verdicts and JUnit XML go to results/host/.
    session.run(
        "pytest",
        "-n",
        "2",
        "--dist",
        "loadfile",
        "--junitxml=results/host/junit.xml",
        "--mountcompat-results=results/host/outcomes.json",
        *session.posargs,
    )


@nox.session
def matrix(session: nox.Session) -> None:
    """Boot every kernel of kernels.yaml (or `-- --kernel NAME`) and run the suites in each."""
    install(session)
    session.run("python", "-m", "harness", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild results/matrix.json and results/report.html from result directories."""
    install(session)
    session.run("python", "-m", "harness.report", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "mountcompat", "harness")


@nox.session
def bench(session: nox.Session) -> None:
    """Each strategy's speed as a ratio to its fallback, side by side (results/bench.json)."""
    install(session)
    session.run("python", "-m", "harness.bench")
