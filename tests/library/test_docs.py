"""docs/fallbacks.md names every feature and strategy the library has, and each strategy's
docstring says what it needs and why (the reader's way in from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mountcompat.features import ordered

DOC = (Path(__file__).resolve().parents[2] / "docs" / "fallbacks.md").read_text()
PAIRS = [(f.id, s) for f in ordered() for s in f.strategies]


@pytest.mark.parametrize(("feature", "strategy"), [(f, s.name) for f, s in PAIRS])
def test_documented(feature: str, strategy: str) -> None:
    section = DOC.split(f"## {feature}:", 1)
    assert len(section) == 2, f"no section for {feature}"
    assert f"| `{strategy}` |" in section[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(("feature", "strategy"), PAIRS, ids=lambda x: getattr(x, "name", x))
def test_docstring(feature: str, strategy: object) -> None:
    doc = strategy.doc  # type: ignore[attr-defined]
    assert len(doc) > 40, f"{feature}/{strategy}: the docstring must say which kernel and why"
