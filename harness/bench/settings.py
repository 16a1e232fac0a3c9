"""The emulator's own settings, old against new in one run (issue 22): for each setting, the
kernels of kernels.yaml with the setting as it was before this work ("old") and with its
candidate ("new"), everything else as the file says, interleaved round by round (old, new,
new, old, ...) so that other load on the machine moves both sides alike. Per kernel: the
bare boot (``vng --run <vmlinuz> --exec true``) and the full harness run; and whether the two
sides gave the same outcome in every cell (a setting that changes a verdict is not adopted,
whatever it saves).

Run as ``python -m harness.bench --only settings [--setting NAME] [--kernel NAME] [--rounds N]``.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.bench.matrix import bare_boot_of, harness, say
from harness.boot.vng import vng_environment
from harness.config import GUEST_APPEND, load_config
from harness.fetch.kernels import Fetcher, default_cache
from harness.host.qemu import ensure_qemu
from harness.host.virtiofsd import ensure_virtiofsd

REPO = Path(__file__).resolve().parents[2]
Change = Callable[[dict[str, Any], str], None]  # (a kernel's entry, its arch) -> edits it


@dataclass(frozen=True)
class Setting:
    name: str
    what: str
    why_safe: str
    old: Change
    new: Change
    qemu: tuple[str, str] = ("auto", "auto")  # --qemu of the old side and of the new


def _cpu(x86: str | None = None, arm64: str | None = None) -> Change:
    def change(entry: dict[str, Any], arch: str) -> None:
        cpu = x86 if arch == "x86_64" else arm64
        if cpu is not None:
            entry["tcg_cpu"] = cpu

    return change


def _x86(key: str, value: str) -> Change:
    """An x86_64 kernel's ``key`` set to ``value``."""

    def change(entry: dict[str, Any], arch: str) -> None:
        if arch == "x86_64":
            entry[key] = value

    return change


def _unchanged(entry: dict[str, Any], arch: str) -> None:
    pass


def _append(words: str) -> Change:
    def change(entry: dict[str, Any], arch: str) -> None:
        base = entry.get("append", GUEST_APPEND[arch])  # kernels.yaml's default, if none
        entry["append"] = " ".join(filter(None, [base, words]))

    return change


SETTINGS = {
    s.name: s
    for s in (
        Setting(
            "cpu-x86-v2",
            "x86_64: -cpu qemu64 with SSSE3, SSE4.1, SSE4.2 and POPCNT (x86-64-v2, no AVX, no "
            "cx16) instead of max,-cx16",
            "the mount API does not depend on the CPU's vector units; glibc and Python take "
            "their SSE2/SSE4 paths instead of AVX2 ones, which TCG emulates with more work; cx16 "
            "stays off as today's workaround needs",
            _cpu(x86="max,-cx16"),
            _cpu(x86="qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"),
        ),
        Setting(
            "cpu-x86-rdrand",
            "x86_64: the qemu64-based model with RDRAND and RDSEED and without SVM",
            "random numbers from the CPU instead of a pool that 5.10 fills slowly under TCG "
            "(its getrandom() then waits, in every mkfs); no SVM, so udev loads no kvm_amd; "
            "the mount API depends on neither",
            _cpu(x86="qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"),
            _cpu(x86="qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+rdrand,+rdseed,-svm"),
        ),
        Setting(
            "arm64-pauth-impdef",
            "arm64: -cpu max,pauth-impdef=on instead of max",
            "pointer authentication stays on, with QEMU's own cheap hash instead of the "
            "architected QARMA5, which QEMU's documentation names as slow under emulation; "
            "nothing the suites see depends on the hash",
            _cpu(arm64="max"),
            _cpu(arm64="max,pauth-impdef=on"),
        ),
        Setting(
            "x86-nodefaults",
            "x86_64: QEMU -nodefaults (no empty CD-ROM on q35's AHCI)",
            "the guest's disks are virtio and its consoles vng's own; the CD-ROM had no medium",
            _x86("qemu_opts", ""),
            _unchanged,
        ),
        Setting(
            "x86-blacklist",
            "x86_64: modprobe.blacklist=ahci,i6300esb,powernow_k8 on the kernel command line",
            "no SATA disk, a watchdog nobody opens, frequency scaling of an emulated CPU: "
            "nothing the suites use; loop, overlay, erofs, squashfs and virtio are untouched",
            _x86("append", ""),
            _unchanged,
        ),
        Setting(
            "qemu-trixie",
            "QEMU: a private copy of Debian trixie's (10.0) instead of the host's (bookworm: 7.2)",
            "the same machine, devices and CPU model, emulated by a newer translator; the "
            "guest's kernel and the suites are the same",
            _unchanged,
            _unchanged,
            qemu=("host", "private"),
        ),
        Setting(
            "mitigations-off",
            "kernel command line: mitigations=off",
            "the speculative-execution mitigations (page table isolation, retpolines, buffer "
            "clearing on each syscall) guard against other tenants of a real CPU; the guest is "
            "alone on an emulated one, and no mount API result depends on them",
            _unchanged,
            _append("mitigations=off"),
        ),
    )
}


def variant(config: Path, change: Change, out: Path) -> Path:
    """kernels.yaml with ``change`` applied to every kernel; written beside the original so
    that the paths it names (keys, local files) still resolve."""
    data = yaml.safe_load(config.read_text())
    defaults = data.get("defaults", {})
    for entry in data["kernels"]:
        change(entry, entry.get("arch", defaults.get("arch", "x86_64")))
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _bare_boots(config: Path, names: list[str], env: dict[str, str]) -> dict[str, float]:
    """Seconds of a bare boot per kernel, as the harness would boot it under ``config``."""
    matrix_config = load_config(config)
    fetcher = Fetcher(cache=default_cache(), mirror=matrix_config.mirror)
    return {
        spec.name: bare_boot_of(spec, fetcher, matrix_config.mirror, env, "tcg")
        for spec in matrix_config.select(names)
    }


def measure(setting: Setting, names: list[str], rounds: int, jobs: int) -> dict[str, Any]:
    original = REPO / "kernels.yaml"
    sides: dict[str, dict[str, Any]] = {
        side: {"bare": {n: [] for n in names}, "full": {n: [] for n in names}, "wall": []}
        for side in ("old", "new")
    }
    cells: dict[str, list[dict[str, str]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="mountcompat-settings.") as tmp:
        configs = {
            side: variant(
                original,
                setting.old if side == "old" else setting.new,
                REPO / f".kernels-{side}-{Path(tmp).name}.yaml",
            )
            for side in ("old", "new")
        }
        config = load_config(original)
        mirror = config.mirror
        vfsd = ensure_virtiofsd(default_cache(), mirror, say)
        archs = {k.arch for k in config.select(names)}
        # Every guest of the bench runs under TCG: each side's copies, one per arch.
        envs = {
            side: vng_environment(
                (
                    *ensure_qemu(default_cache(), mirror, choice, archs, say).copies.values(),
                    vfsd.bin_dir,
                ),
                Path(tmp),
            )
            for side, choice in zip(("old", "new"), setting.qemu, strict=True)
        }
        try:
            for r in range(rounds):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for side in order:
                    for name, seconds in _bare_boots(configs[side], names, envs[side]).items():
                        sides[side]["bare"][name].append(seconds)
                    qemu = setting.qemu[0 if side == "old" else 1]
                    options = ("--config", str(configs[side]), "--accel", "tcg", "--qemu", qemu)
                    full = harness(names, jobs, [], options)
                    sides[side]["wall"].append(full["wall_seconds"])
                    for name in names:
                        k = full["kernels"].get(name, {})
                        sides[side]["full"][name].append(k.get("wall_seconds"))
                    cells[side].append(full["cells"])
                    say(
                        f"{setting.name} round {r + 1} {side}: {full['wall_seconds']} s "
                        f"{ {n: full['kernels'].get(n, {}).get('status') for n in names} }"
                    )
        finally:
            for path in configs.values():
                path.unlink(missing_ok=True)
    differ = sorted(
        key
        for old, new in zip(cells["old"], cells["new"], strict=True)
        for key in set(old) | set(new)
        if old.get(key) != new.get(key)
    )
    return {
        "what": setting.what,
        "why_safe": setting.why_safe,
        "rounds": rounds,
        "jobs": jobs,
        "kernels": names,
        "old": sides["old"],
        "new": sides["new"],
        "cells_compared": sum(len(c) for c in cells["new"]),
        "cells_that_differ": differ,
    }


def _median(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(numbers), 1) if numbers else None


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| setting | kernel | bare boot old | new | ratio | full run old | new | ratio | cells "
        "that differ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for kernel in r["kernels"]:
            figures = []
            for part in ("bare", "full"):
                old, new = _median(r["old"][part][kernel]), _median(r["new"][part][kernel])
                ratio = f"x{new / old:.2f}" if old and new else "?"
                figures += [f"{old} s", f"{new} s", ratio]
            rows.append(
                f"| {name} | {kernel} | {' | '.join(figures)} | {len(r['cells_that_differ'])} "
                f"of {r['cells_compared']} |"
            )
    return "\n".join(rows)


def run(settings: list[str], names: list[str], rounds: int, jobs: int) -> dict[str, Any]:
    config = load_config(REPO / "kernels.yaml")
    names = names or [k.name for k in config.kernels if not k.needs_network]
    return {name: measure(SETTINGS[name], names, rounds, jobs) for name in settings}
