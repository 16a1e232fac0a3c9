"""Each strategy's docstring says what it needs and why (the reader's way in from the code);
docs/fallbacks.md's rows are checked with the rest of the registry in test_registry.py."""

from __future__ import annotations

import pytest

from mountcompat.features import ordered

PAIRS = [(f.id, s) for f in ordered() for s in f.strategies]


@pytest.mark.parametrize(("feature", "strategy"), PAIRS, ids=lambda x: getattr(x, "name", x))
def test_docstring(feature: str, strategy: object) -> None:
    doc = strategy.doc  # type: ignore[attr-defined]
    assert len(doc) > 40, f"{feature}/{strategy}: the docstring must say which kernel and why"
