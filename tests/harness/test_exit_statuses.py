"""The README's table of exit statuses holds every status the command lines can end with, and
no other: collected from the code, so that a new one cannot go undocumented."""

from __future__ import annotations

import ast
import re
import signal
from pathlib import Path

import harness.report.__main__
import harness.run.cli
from harness.errors import HarnessError
from harness.run import exits, matrix

REPO = Path(__file__).resolve().parents[2]
# The modules that decide a status: the command lines, the run, and the rule for its end.
DECIDING = [harness.run.cli, harness.report.__main__, matrix, exits]


def error_statuses(cls: type[HarnessError] = HarnessError) -> set[int]:
    return {cls.exit_status}.union(*(error_statuses(sub) for sub in cls.__subclasses__()))


def literal_statuses(source: str) -> set[int]:
    """``return 2``, ``sys.exit(2)``: the statuses a module writes as numbers."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        value = None
        if isinstance(node, ast.Return):
            value = node.value
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.exit" and node.args:
            value = node.args[0]
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            found.add(value.value)
    return found


def code_statuses() -> set[int]:
    statuses = error_statuses() | {exits.SURPRISES, exits.INCOMPLETE, *matrix.EXIT_SIGNAL.values()}
    for module in DECIDING:
        assert module.__file__ is not None
        statuses |= literal_statuses(Path(module.__file__).read_text())
    statuses.add(2)  # argparse's, for a command line it cannot parse
    # The report sets no handler: these signals end it with Python's (the kernel's) defaults.
    statuses |= {128 + s for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    # ./nox, before it hands over to nox: "exit 3" when no virtualenv can be made.
    statuses |= {int(n) for n in re.findall(r"\bexit (\d+)", (REPO / "nox").read_text())}
    return statuses


def readme_statuses() -> set[int]:
    _, heading, rest = (REPO / "README.md").read_text().partition("### Exit statuses")
    section = rest.split("\n#", 1)[0] if heading else ""
    return {int(n) for n in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}


def test_the_readme_lists_every_exit_status_and_no_other() -> None:
    assert readme_statuses() == code_statuses()


def test_the_collection_finds_the_known_statuses() -> None:
    assert {0, 1, 2, 3, 4, 5, 129, 130, 143} <= code_statuses()
