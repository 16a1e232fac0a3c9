"""Kernel symbols that cannot be read, or that lack a symbol every kernel has, leave no verdict:
every syscall would otherwise count as absent, and a library refusing everything would
match the expectations."""

from __future__ import annotations

import re
from pathlib import Path

from harness.guest.__main__ import read_kernel_facts
from harness.run.verdicts import judge

# A whole run's outcomes: one feature, both strategies with a verdict.
OUTCOMES = {
    "features": [{"id": "mount.api", "strategies": ["fsmount", "mount2"]}],
    "cells": [
        {"feature": "mount.api", "strategy": "fsmount", "outcome": "unsupported"},
        {"feature": "mount.api", "strategy": "mount2", "outcome": "works"},
    ],
}


def test_the_real_kallsyms_gives_verdicts() -> None:
    facts = read_kernel_facts()
    assert "error" not in facts, facts
    assert any(name.endswith("_sys_mount") for name in facts["symbols"])
    assert judge(0, OUTCOMES, facts)[0] == "ok"


def test_unreadable_kallsyms_gives_no_verdicts(tmp_path: Path) -> None:
    facts = read_kernel_facts(tmp_path)  # a directory: EISDIR, as a real read fails
    assert "cannot read" in facts["error"]
    status, detail = judge(0, OUTCOMES, facts)
    assert status == "no-verdicts"
    assert "kernel symbols unusable" in detail


def test_kallsyms_without_the_control_symbol_gives_no_verdicts(tmp_path: Path) -> None:
    """The real file with every sys_mount line cut out, as a torn or filtered read would be."""
    text = Path("/proc/kallsyms").read_bytes()
    cut = re.sub(rb"^\S+ \S __(?:x64|arm64)_sys_mount\n", b"", text, flags=re.M)
    assert cut != text
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_bytes(cut)
    facts = read_kernel_facts(kallsyms)
    assert "lacks sys_mount" in facts["error"]
    assert judge(0, OUTCOMES, facts)[0] == "no-verdicts"


def test_facts_without_a_symbol_list_give_no_verdicts() -> None:
    assert judge(0, OUTCOMES, {})[0] == "no-verdicts"
