"""Cells and defaults against the expectations: the one rule the report applies to every
column, guests and host alike, beside run/verdicts.py (whether a run gave verdicts at all)
and run/exits.py (what the run's exit status is).
"""

from __future__ import annotations

import re
from typing import Any


def upstream_version(version: str | None) -> str | None:
    """A Debian package version's upstream part: "6.1.153-1" -> "6.1.153". The kernel's own
    ``uname -r`` (6.1.0-50-cloud-amd64 on bookworm) does not say which stable release it is."""
    if not version:
        return None
    match = re.match(r"(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", version)
    return match.group(1) if match else None


def is_surprise(outcome: str, expected: str, kernel_ok: bool, selected: bool) -> bool:
    """``broken``; ``works``/``unsupported`` against the expectation; and, on a kernel that
    ran the whole suites, ``not-run`` where the strategy is expected to work (a gap that
    would otherwise pass for nothing)."""
    if outcome == "broken":
        return True
    if outcome in ("works", "unsupported") and expected in ("works", "unsupported"):
        return outcome != expected
    return outcome == "not-run" and expected == "works" and kernel_ok and not selected


def judge_default(entry: dict[str, Any], cells: list[dict[str, Any]], order: list[str]) -> None:
    """The library's unforced choice against expectations.yaml's own order of preference (its
    strategies of the feature, best first): the first one expected to work on this kernel.
    Where an earlier one's expectation is unknown, the default cannot be judged."""
    expected: dict[str, str] = {
        c["strategy"]: c["expected"]
        for c in cells
        if c["kernel"] == entry["kernel"] and c["feature"] == entry["feature"]
    }
    wanted, why = None, "no strategy of the feature is expected to work here"
    for strategy in order:
        answer = expected.get(strategy, "unknown")
        if answer == "unknown":
            wanted, why = None, f"the expectation for {strategy} is unknown"
            break
        if answer == "works":
            wanted, why = strategy, f"the first of {', '.join(order)} expected to work"
            break
    entry["expected"] = wanted
    entry["expected_because"] = why
    entry["surprise"] = wanted is not None and entry["strategy"] != wanted
