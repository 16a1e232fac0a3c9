"""The mount table benchmark's bookkeeping (the timing itself is never asserted)."""

from __future__ import annotations

from typing import Any

from harness.bench import interleaved
from harness.bench.mounttable import REFERENCE, markdown, targets


def test_rounds_interleave_and_rotate() -> None:
    calls: list[str] = []
    ops = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    medians = interleaved(ops, rounds=3, per_round=2)
    assert set(medians) == {"a", "b", "c"} and all(m >= 0 for m in medians.values())
    assert calls == list("aabbcc" + "bbccaa" + "ccaabb")


def figures(**ms: float) -> dict[str, Any]:
    ref = ms[REFERENCE]
    return {name: {"median_ms": m, "ratio": m / ref} for name, m in ms.items()}


def test_targets_are_ratios_of_the_same_run() -> None:
    ops = figures(
        **{
            "list (mountinfo)": 30.0,
            "tree (mountinfo)": 33.0,
            REFERENCE: 50.0,
            "list (statmount)": 70.0,
        }
    )
    loop = {"operations": {"library attach + detach": {"median_ms": 0.1, "ratio": 0.05}}}
    result = {"sizes": {"10000": {"operations": ops}}, "loop": loop}
    found = {t["target"]: t for t in targets(result)}
    assert found["mountinfo / findmnt --json --list"]["ratio"] == 0.6
    assert not found["mountinfo / findmnt --json --list"]["met"]
    assert found["tree / flat list (mountinfo)"]["met"]
    assert found["statmount / mountinfo"]["ratio"] == 2.333
    assert "tree / flat list (statmount)" not in found  # not measured: not judged
    assert found["loop attach+detach / losetup"]["met"]
    result.update(overlay={"operations": {}}, targets=list(found.values()))
    table = markdown(result)
    assert "| list (mountinfo) | 30.00 ms (x0.60) |" in table and "**no**" in table
