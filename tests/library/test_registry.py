"""The library's registry of features and strategies is the one source: every strategy it
defines has a contract test in the suites, an expectation, a row in docs/fallbacks.md and a
scenario in the probe, and nothing names a strategy the library does not have."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import yaml

from mountcompat.features import ordered
from mountcompat.probe import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
PAIRS = {(f.id, s.name) for f in ordered() for s in f.strategies}


def contract_classes() -> set[tuple[str, str]]:
    """(feature, strategy) of every contract test class of the suites."""
    sys.path.insert(0, str(REPO / "suites"))
    try:
        found = set()
        for path in sorted((REPO / "suites").glob("test_*.py")):
            module = importlib.import_module(path.stem)
            for value in vars(module).values():
                if isinstance(value, type) and "strategy" in vars(value):
                    found.add((value.feature, value.strategy))  # type: ignore[attr-defined]
        return found
    finally:
        sys.path.remove(str(REPO / "suites"))


def test_every_strategy_has_a_contract_test() -> None:
    tested = contract_classes()
    assert sorted(PAIRS - tested) == [], "strategies without a contract test class"
    assert sorted(tested - PAIRS) == [], "contract tests of strategies the library lacks"


def test_every_strategy_has_an_expectation() -> None:
    data = yaml.safe_load((REPO / "expectations.yaml").read_text())
    expected = {(f, s) for f, strategies in data.items() for s in strategies}
    assert sorted(PAIRS - expected) == [], "strategies without an expectation"
    assert sorted(expected - PAIRS) == [], "expectations for strategies the library lacks"


@pytest.mark.parametrize(("feature", "strategy"), sorted(PAIRS))
def test_every_strategy_has_a_docs_row(feature: str, strategy: str) -> None:
    doc = (REPO / "docs" / "fallbacks.md").read_text()
    section = doc.split(f"## {feature}:", 1)
    assert len(section) == 2, f"no section for {feature}"
    assert f"| `{strategy}` |" in section[1].split("\n## ", 1)[0]


def test_every_feature_has_a_probe_scenario() -> None:
    assert set(SCENARIOS) == {f.id for f in ordered()}
