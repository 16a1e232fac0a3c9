"""pytest plugin: apply the mutant named by MOUNTCOMPAT_MUTANT and run only its cell's tests."""

from __future__ import annotations

import os

import pytest

from tests.mutation.mutants import Mutant, by_id

ENV = "MOUNTCOMPAT_MUTANT"
mutant_key = pytest.StashKey[Mutant]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    mutant = by_id(os.environ[ENV])
    mutant.apply()
    config.stash[mutant_key] = mutant


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mutant = config.stash[mutant_key]
    cell = (mutant.feature, mutant.strategy)
    keep, drop = [], []
    for item in items:
        cells = {(m.args[0], m.args[1]) for m in item.iter_markers("strategy")}
        (keep if cell in cells else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
