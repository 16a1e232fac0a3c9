"""The mount table, loop devices and overlay mounts: the library beside the tools people use.

At 100, 1,000 and 10,000 mounts: ``list_mounts`` through each strategy, the tree built from
it, ``findmnt --json --list`` (the reference), ``findmnt --json`` (tree) and psutil's
``disk_partitions(all=True)``; and the floors no parser can go under: what the kernel alone
costs (reading mountinfo, making the statmount calls), and reading plus splitting mountinfo
into fields in Python without looking at them. Then loop attach + detach
against ``losetup --find --show`` + ``losetup -d``, and an overlay mount (and its unmount)
against ``mount -t overlay``.

Everything runs in a child process that unshares its mount namespace: the mounts it makes
(up to 10,000) never reach the host's table, and vanish with the child. Loop devices are the
kernel's, not a namespace's: each one attached is detached before the child ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness.bench import interleaved
from mountcompat import OverlaySpec, attach_loop, mount_overlay
from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.choices import LOG
from mountcompat.errors import StrategyUnsupported
from mountcompat.listing import STATMOUNT_WANTED, all_mount_ids, list_mounts
from mountcompat.mounts import private_mount_namespace, unmount
from mountcompat.mounttable import build_tree, read_file, read_mountinfo

SIZES = (100, 1_000, 10_000)
# (rounds, calls per round): enough calls for a stable median of fast operations, few
# enough that findmnt's tree at 10,000 mounts (about a second each) stays affordable.
PLAN = {100: (31, 10), 1_000: (21, 3), 10_000: (11, 1)}
REFERENCE = "findmnt --json --list"
CHILD_TIMEOUT = 1800.0


def _tool(*argv: str) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, capture_output=True, check=True).stdout

    return run


class Table:
    """Mounts under one scratch tmpfs, added group by group like container root filesystems:
    a tmpfs, then binds of one directory onto volumes inside it. Every seventh volume name
    has a space (escaped in mountinfo), every fiftieth root filesystem is shared (an
    optional field)."""

    GROUP = 10

    def __init__(self, base: Path) -> None:
        self.base = base
        self.groups = 0
        self.volume = base / "volume"
        self.volume.mkdir()

    def grow(self, total: int) -> int:
        """Add mounts until this namespace has ``total`` (or more, if it had them)."""
        have = len(read_mountinfo())
        while have < total:
            rootfs = self.base / f"ctr{self.groups:05d}" / "rootfs"
            rootfs.mkdir(parents=True)
            sys_.mount(f"ctr{self.groups}", rootfs, "tmpfs", 0, "size=1m")
            if self.groups % 50 == 0:
                sys_.mount(None, rootfs, None, C.MS_SHARED)
            have += 1
            for j in range(1, 1 + min(self.GROUP - 1, total - have)):
                volume = rootfs / (f"vol {j}" if j % 7 == 0 else f"vol{j}")
                volume.mkdir()
                sys_.mount(str(self.volume), volume, None, C.MS_BIND)
                have += 1
            self.groups += 1
        return have


def _read_mountinfo_bytes() -> bytes:
    return read_file(Path("/proc/self/mountinfo"))


def _read_and_split() -> list[list[str]]:
    """Read, decode once, split into lines and fields: what any parser in Python does
    before it looks at a single field (its floor)."""
    return [line.split(" ") for line in os.fsdecode(_read_mountinfo_bytes()).split("\n")]


def _statmount_calls() -> Callable[[], object]:
    """The statmount syscalls of a listing and nothing else: the kernel's share."""

    def calls() -> object:
        call = sys_.StatmountBuffer(STATMOUNT_WANTED)
        for mnt_id in all_mount_ids():
            with contextlib.suppress(FileNotFoundError):
                call(mnt_id)
        return call

    return calls


def table_operations() -> dict[str, Callable[[], object]]:
    import psutil  # type: ignore[import-untyped,unused-ignore]  # the bench group only

    ops: dict[str, Callable[[], object]] = {
        "list (mountinfo)": lambda: list_mounts(force="mountinfo"),
        "tree (mountinfo)": lambda: build_tree(list_mounts(force="mountinfo")),
        "list (statmount)": lambda: list_mounts(force="statmount"),
        "tree (statmount)": lambda: build_tree(list_mounts(force="statmount")),
        REFERENCE: _tool("findmnt", "--json", "--list"),
        "findmnt --json": _tool("findmnt", "--json"),
        "psutil.disk_partitions(all=True)": lambda: psutil.disk_partitions(all=True),
        "kernel: read mountinfo": _read_mountinfo_bytes,
        "floor: read + decode + split fields": _read_and_split,
        "kernel: statmount calls": _statmount_calls(),
    }
    try:
        list_mounts(force="statmount")
    except StrategyUnsupported:  # before 6.8
        for name in ("list (statmount)", "tree (statmount)", "kernel: statmount calls"):
            del ops[name]
    return ops


def _figures(medians: dict[str, float], reference: str) -> dict[str, dict[str, float]]:
    return {
        name: {
            "median_ms": round(m * 1e3, 3),
            "ratio": round(m / medians[reference], 3),
        }
        for name, m in medians.items()
    }


def bench_table(base: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    table = Table(base)
    out: dict[str, Any] = {}
    for size in sizes:
        mounts = table.grow(size)
        ops = table_operations()
        for op in ops.values():  # warm: imports, the strategy's first probe, page cache
            op()
        rounds, per_round = PLAN.get(size, (11, 1))
        medians = interleaved(ops, rounds, per_round)
        out[str(size)] = {
            "mounts": mounts,
            "rounds": rounds,
            "per_round": per_round,
            "reference": REFERENCE,
            "operations": _figures(medians, REFERENCE),
        }
    return out


@contextlib.contextmanager
def _detached_after(devices: list[str]) -> Iterator[None]:
    """losetup devices attached by the benchmark and not yet detached are detached at the
    end, whatever happened."""
    try:
        yield
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def bench_loop(base: Path) -> dict[str, Any]:
    backing = base / "loop.img"
    backing.write_bytes(b"\0" * (1 << 20))
    pending: list[str] = []

    def library() -> None:
        attach_loop(backing, autoclear=False).close()

    def losetup() -> None:
        out = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            text=True,
            check=True,
        )
        device = out.stdout.strip()
        pending.append(device)
        subprocess.run(["losetup", "-d", device], check=True)
        pending.remove(device)

    reference = "losetup --find --show + losetup -d"
    ops = {"library attach + detach": library, reference: losetup}
    with _detached_after(pending):
        library()
        losetup()
        medians = interleaved(ops, 15, 5)
    return {"reference": reference, "operations": _figures(medians, reference)}


def bench_overlay(base: Path) -> dict[str, Any]:
    lower = [base / f"lower{i}" for i in range(4)]
    for d in lower:
        d.mkdir()
        (d / f"f{d.name}").write_text("x")
    target = base / "merged"
    target.mkdir()
    spec = OverlaySpec(lower=tuple(lower))
    data = "lowerdir=" + ":".join(str(d) for d in lower)

    def library() -> None:
        mount_overlay(spec, target).close()

    def tool() -> None:
        # -n: no utab entry (libmount would write one under /run, shared with the host).
        subprocess.run(
            ["mount", "-n", "-t", "overlay", "overlay", "-o", data, str(target)], check=True
        )
        unmount(target)

    reference = "mount -n -t overlay + umount2"
    ops = {"library mount_overlay + close": library, reference: tool}
    mark = LOG.mark()
    library()
    used = [
        r.strategy for r in LOG.since(mark) if r.outcome == "used" and r.feature == "overlay.layers"
    ]
    tool()
    medians = interleaved(ops, 15, 5)
    return {"reference": reference, "strategy": used, "operations": _figures(medians, reference)}


def _child(conn: Connection, sizes: tuple[int, ...]) -> None:
    """In the spawned child: unshare, build the tables, measure, send the figures (or the
    error) back through ``conn``."""
    try:
        private_mount_namespace()
        base = Path(tempfile.mkdtemp(prefix="mountcompat-bench."))
        try:
            sys_.mount("bench", base, "tmpfs", 0, "size=256m")
            try:
                result = {
                    "loop": bench_loop(base),
                    "overlay": bench_overlay(base),
                    "sizes": bench_table(base, sizes),
                }
            finally:
                sys_.umount2(base, C.MNT_DETACH)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        conn.send(result)
    except BaseException as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        conn.close()


def _versions() -> dict[str, str]:
    import psutil  # type: ignore[import-untyped,unused-ignore]  # the bench group only

    findmnt = subprocess.run(["findmnt", "--version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "findmnt": findmnt.stdout.strip(),
        "psutil": psutil.__version__,
    }


def _machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": os.uname().release}


AIMS = (
    ("mountinfo / findmnt --json --list", "list (mountinfo)", REFERENCE, 0.5),
    ("statmount / mountinfo", "list (statmount)", "list (mountinfo)", 1.0),
    ("tree / flat list (mountinfo)", "tree (mountinfo)", "list (mountinfo)", 1.5),
    ("tree / flat list (statmount)", "tree (statmount)", "list (statmount)", 1.5),
)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The aims of docs/performance.md, each as a ratio of this run, met or not."""
    found = []
    for size, figures in result["sizes"].items():
        ops = figures["operations"]
        for name, a, b, limit in AIMS:
            if a in ops and b in ops:
                r = round(ops[a]["median_ms"] / ops[b]["median_ms"], 3)
                found.append(
                    {"size": int(size), "target": name, "at_most": limit, "ratio": r,
                     "met": r <= limit}
                )  # fmt: skip
    loop = result["loop"]["operations"]["library attach + detach"]["ratio"]
    found.append(
        {"target": "loop attach+detach / losetup", "at_most": 1.0, "ratio": loop,
         "met": loop < 1.0}
    )  # fmt: skip
    return found


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Measure in a spawned child that unshares its mount namespace; return the figures."""
    started = time.time()
    load_before = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, sizes), name="mountcompat-bench")
    child.start()
    sender.close()
    try:
        if not receiver.poll(CHILD_TIMEOUT):
            raise TimeoutError(f"the benchmark child gave nothing in {CHILD_TIMEOUT:.0f} s")
        result: dict[str, Any] | str = receiver.recv()
    finally:
        child.join(5)
        if child.is_alive():
            child.terminate()
            child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    if isinstance(result, str):
        raise RuntimeError(f"the benchmark child failed: {result}")
    result["machine"] = _machine()
    result["versions"] = _versions()
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    result["seconds"] = round(time.time() - started, 1)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["targets"] = targets(result)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The figures as the tables of docs/performance.md."""
    lines = []
    sizes = list(result["sizes"])
    names = list(result["sizes"][sizes[0]]["operations"])
    lines.append("| operation | " + " | ".join(f"{int(s):,} mounts" for s in sizes) + " |")
    lines.append("|---|" + "---|" * len(sizes))
    for name in names:
        cells = []
        for s in sizes:
            f = result["sizes"][s]["operations"].get(name)
            cells.append(f"{f['median_ms']:.2f} ms (x{f['ratio']:.2f})" if f else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for part in ("loop", "overlay"):
        lines.append("")
        lines.append("| operation | median | ratio |")
        lines.append("|---|---|---|")
        for name, f in result[part]["operations"].items():
            lines.append(f"| {name} | {f['median_ms'] * 1e3:.0f} us | x{f['ratio']:.2f} |")
    lines.append("")
    lines.append("| target | size | ratio | at most | met |")
    lines.append("|---|---|---|---|---|")
    for t in result["targets"]:
        size = f"{t['size']:,}" if "size" in t else "-"
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {size} | {t['ratio']:.2f} | {t['at_most']} | {met} |")
    return "\n".join(lines)
