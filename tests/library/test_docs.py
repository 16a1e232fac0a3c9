"""Each strategy's docstring says what it needs and why (the reader's way in from the code);
docs/fallbacks.md's rows are checked with the rest of the registry in test_registry.py."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from mountcompat.features import ordered

ROOT = Path(__file__).resolve().parents[2]

PAIRS = [(f.id, s) for f in ordered() for s in f.strategies]


@pytest.mark.parametrize(("feature", "strategy"), PAIRS, ids=lambda x: getattr(x, "name", x))
def test_docstring(feature: str, strategy: object) -> None:
    doc = strategy.doc  # type: ignore[attr-defined]
    assert len(doc) > 40, f"{feature}/{strategy}: the docstring must say which kernel and why"


def test_the_mutation_table_names_every_strategy_and_its_mutants() -> None:
    """docs/fallbacks.md's table of paths and mutants against the mutant list itself: a strategy
    or a mutant added without its row, or a count that no longer holds, fails here."""
    from tests.mutation.mutants import all_mutants

    text = (ROOT / "docs" / "fallbacks.md").read_text()
    rows = {
        cell: int(total)
        for cell, total in re.findall(r"^\| `([\w.]+/[\w-]+)` \|.*\| (\d+)/\2 \|$", text, re.M)
    }
    wanted = collections.Counter(f"{m.feature}/{m.strategy}" for m in all_mutants())
    assert rows == dict(wanted)
