"""``nox -s bench``: speed, as ratios within one run, never as assertions.

:mod:`harness.bench.strategies` times each strategy of a feature against its last-resort
fallback; :mod:`harness.bench.mounttable` times reading the mount table (and loop devices,
overlay mounts) through the library beside util-linux and psutil, at 100, 1,000 and 10,000
mounts. Both interleave their contenders round by round, so that drift in the machine's speed
(other work on it, frequency scaling) hits them alike, and report medians. The figures go to
results/bench.json; docs/performance.md says what they mean.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(
    ops: Mapping[str, Callable[[], object]], rounds: int, per_round: int
) -> dict[str, float]:
    """Median seconds per call of each operation. Each round calls every operation
    ``per_round`` times in a row, starting one further along the list each round, so that
    none always runs right after the same other one."""
    names = list(ops)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            op = ops[name]
            started = time.perf_counter()
            for _ in range(per_round):
                op()
            times[name].append((time.perf_counter() - started) / per_round)
    return {name: statistics.median(t) for name, t in times.items()}
