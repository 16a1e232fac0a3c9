"""Each strategy's speed as a ratio to its feature's last-resort fallback.

The strategies of a feature run side by side, interleaved round by round on the same scratch
tmpfs in a private mount namespace, so drift in the machine's speed hits them alike; the
result is the median time per operation and its ratio to the reference (the last strategy,
which every kernel has). Never an assertion: numbers for a person, in results/bench.json.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mountcompat import OverlaySpec, attach_loop, list_mounts, mount_fs, mount_overlay
from mountcompat import _syscalls as sys_
from mountcompat.errors import StrategyUnsupported
from mountcompat.mounts import private_mount_namespace, unmount
from mountcompat.resolve import open_in_root

ROUNDS, PER_ROUND = 15, 20
Operation = Callable[[str], None]


def _overlay(base: Path) -> Operation:
    lower = [base / f"l{i}" for i in range(4)]
    for d in lower:
        d.mkdir()
        (d / "f").write_text("x")
    target = base / "m"
    target.mkdir()

    def op(strategy: str) -> None:
        mount_overlay(OverlaySpec(lower=tuple(lower)), target, force=strategy).close()

    return op


def _mount(base: Path) -> Operation:
    target = base / "t"
    target.mkdir()
    return lambda s: mount_fs("tmpfs", "bench", target, force=s).close()


def _list(base: Path) -> Operation:
    def op(strategy: str) -> None:
        assert list_mounts(force=strategy)

    return op


def _resolve(base: Path) -> Operation:
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "b" / "f").write_text("x")
    os.symlink("/a/b", base / "link")
    return lambda s: os.close(open_in_root(base, "link/f", force=s))


def _loop(base: Path) -> Operation:
    backing = base / "img"
    backing.write_bytes(b"\0" * (1 << 20))
    return lambda s: attach_loop(backing, autoclear=False, force=s).close()


BENCHES: dict[str, tuple[Callable[[Path], Operation], list[str]]] = {
    "mount.api": (_mount, ["fsmount", "mount2"]),
    "overlay.layers": (
        _overlay,
        ["fd-opath", "fd-reopen", "lowerdir-plus", "lowerdir-string", "mount2-data"],
    ),
    "mounts.list": (_list, ["statmount", "mountinfo"]),
    "path.resolve": (_resolve, ["openat2", "userspace"]),
    "loop.attach": (_loop, ["loop-configure", "set-fd-status"]),
}


def run_feature(
    make: Callable[[Path], Operation], strategies: list[str], base: Path
) -> dict[str, Any]:
    op = make(base)
    usable = []
    for s in strategies:
        try:
            op(s)
            usable.append(s)
        except StrategyUnsupported:
            pass
    times: dict[str, list[float]] = {s: [] for s in usable}
    for _ in range(ROUNDS):
        for s in usable:
            started = time.perf_counter()
            for _ in range(PER_ROUND):
                op(s)
            times[s].append((time.perf_counter() - started) / PER_ROUND)
    medians = {s: statistics.median(t) for s, t in times.items()}
    reference = usable[-1] if usable else None
    return {
        "reference": reference,
        "strategies": {
            s: {
                "median_us": round(m * 1e6, 1),
                "ratio": round(m / medians[reference], 3) if reference else None,
            }
            for s, m in medians.items()
        },
        "unsupported": [s for s in strategies if s not in usable],
    }


def run() -> dict[str, Any]:
    """Every feature of BENCHES, in this process's own private mount namespace; prints one
    line per strategy and returns the figures by feature."""
    private_mount_namespace()
    results: dict[str, Any] = {}
    for feature, (make, strategies) in BENCHES.items():
        base = Path(tempfile.mkdtemp(prefix="mountcompat-bench."))
        sys_.mount("bench", base, "tmpfs", 0, "size=64m")
        try:
            results[feature] = run_feature(make, strategies, base)
        finally:
            unmount(base)
            os.rmdir(base)
        ref = results[feature]["reference"]
        for s, r in results[feature]["strategies"].items():
            print(
                f"{feature:<15} {s:<16} {r['median_us']:>10.1f} us  x{r['ratio']:<6} "
                f"(reference: {ref})"
            )
    return results
