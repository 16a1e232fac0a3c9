"""KVM that runs the probe guest and then cannot run a real kernel (seen on this project's own
machines: "emulation failure" on lock cmpxchg16b in SLUB's first allocations, QEMU then waits
forever): the guest is booted again under TCG, and so is every guest of the run after it.

Real KVM cannot be made to fail on demand, so QEMU is wrapped: a qemu-system-x86_64 first on
PATH answers the probe as a KVM guest that ran, and for a real guest asked to run under KVM
prints QEMU's own words for that failure and hangs, as QEMU does; under TCG it is the real
QEMU."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from guests import fetch_kernel, harness, our_processes, tagged_config

from harness.boot.process import run_guest
from harness.fetch.kernels import KernelTree

FAILING_KVM = """#!/bin/sh
case " $* " in
  *" kvm "*|*accel=kvm*|*-enable-kvm*)
    case " $* " in
      *isa-debug-exit*) exit 99 ;;  # the probe: "a KVM guest ran"
    esac
    echo "KVM internal error. Suberror: 1" >&2
    echo "emulation failure" >&2
    echo "RAX=ffff8ba741041040 RBX=0000000000000000" >&2
    exec sleep 600 ;;
esac
exec {real} "$@"
"""


def failing_kvm(tmp_path: Path) -> Path:
    real = shutil.which("qemu-system-x86_64")
    assert real, "qemu-system-x86_64 is not installed"
    wrapper = tmp_path / "bin" / "qemu-system-x86_64"
    wrapper.parent.mkdir()
    wrapper.write_text(FAILING_KVM.format(real=real))
    wrapper.chmod(0o755)
    return wrapper.parent


def test_qemu_saying_kvm_failed_ends_the_attempt_at_once(tmp_path: Path) -> None:
    """Not the boot timeout (300 s): a few seconds after QEMU's line."""
    bin_dir = failing_kvm(tmp_path)
    outcome = run_guest(
        [str(bin_dir / "qemu-system-x86_64"), "-accel", "kvm"],
        dict(os.environ),
        tmp_path,
        timeout=120,
        stop=threading.Event(),
        on_line=lambda line: None,
        boot_timeout=100,
    )
    assert outcome.status == "boot-failed"
    assert outcome.accel_failure == "KVM internal error. Suberror: 1"
    assert "KVM could not run the guest on" in outcome.detail
    assert outcome.seconds < 30
    assert any("emulation failure" in line for line in outcome.evidence)


@pytest.mark.vm
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK),
    reason="no /dev/kvm: the probe and vng do not try KVM at all, so it cannot fail",
)
def test_a_guest_kvm_cannot_run_is_booted_again_under_tcg(tmp_path: Path) -> None:
    kernel: KernelTree = fetch_kernel()
    tag, config, results = tagged_config(tmp_path, kernel, {"first": "", "second": ""})
    path = f"{failing_kvm(tmp_path)}:{os.environ['PATH']}"
    proc = harness(config, results, "--jobs", "1", env={**os.environ, "PATH": path})
    out, _ = proc.communicate(timeout=850)
    assert proc.returncode == 0, out
    first = json.loads((results / f"first-{tag}" / "kernel.json").read_text())
    second = json.loads((results / f"second-{tag}" / "kernel.json").read_text())
    assert first["status"] == second["status"] == "ok"
    # The first guest: KVM's failure kept as the first attempt, then TCG.
    assert first["accelerator"] == "tcg" and "KVM failed" in first["accelerator_reason"]
    assert first["attempts"][0]["accel_failure"] == "KVM internal error. Suberror: 1"
    kept = (results / f"first-{tag}" / "console-attempt1.log").read_text()
    assert "emulation failure" in kept
    # The second guest never tried KVM again; the run's facts say why.
    assert second["accelerator"] == "tcg"
    assert not second.get("attempts"), "the second guest tried KVM again"
    run = json.loads((results / "run.json").read_text())
    assert run["accelerator"] == "tcg" and "KVM failed" in run["accelerator_reason"]
    # KVM guests ran under the host's QEMU (the wrapper, which failed them); once under TCG,
    # the private copy, where this host has one (harness/host/qemu.py).
    if run["qemu_emulators"]["copies"]:
        assert "copy" in first["qemu"] and "copy" in second["qemu"], (first["qemu"], second)
    assert our_processes(tag) == []
