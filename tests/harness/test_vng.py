"""The vng command line, built by a pure function."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.boot.vng import GuestPlan, bare_boot_command, build_vng_command, reproduce_script


def plan(**changes: object) -> GuestPlan:
    base = dict(
        name="6.1",
        vmlinuz=Path("/c/vmlinuz"),
        results=Path("/r/6.1"),
        guest_command=("python", "-m", "harness.guest", "--results", "/r/6.1"),
        accel="tcg",
        cpus=2,
        memory="2G",
        append="quiet",
        cwd=Path("/repo"),
        scratch_disk=Path("/t/scratch.img"),
        tcg_cpu="max,-cx16",
    )
    base.update(changes)
    return GuestPlan(**base)  # type: ignore[arg-type]


def test_tcg_command() -> None:
    cmd = build_vng_command(plan(), vng="vng")
    assert cmd[:4] == ["vng", "--verbose", "--run", "/c/vmlinuz"]
    assert "--disable-kvm" in cmd and "--qemu-opts=-cpu max,-cx16" in cmd
    assert cmd[cmd.index("--rwdir") + 1] == "/r/6.1"
    assert cmd[cmd.index("--disk") + 1] == "/t/scratch.img"
    # An emulated x86_64 kernel skips the IO-APIC timer check a busy host can fail.
    assert cmd[cmd.index("--append") + 1] == "quiet no_timer_check"
    assert cmd[-2:] == [
        "--exec",
        "echo mountcompat-guest: @command-started; exec python -m harness.guest --results /r/6.1",
    ]
    assert "--rw" not in cmd  # the host's root stays read-only in the guest


def test_kvm_command_has_no_tcg_options() -> None:
    cmd = build_vng_command(plan(accel="kvm"), vng="vng")
    assert "--disable-kvm" not in cmd and not any(c.startswith("--qemu-opts") for c in cmd)
    assert cmd[cmd.index("--append") + 1] == "quiet"


def test_no_timer_check_only_for_emulated_x86_64() -> None:
    arm = build_vng_command(plan(arch="arm64", append=""), vng="vng")
    assert "--append" not in arm
    bare = build_vng_command(plan(append=""), vng="vng")
    assert bare[bare.index("--append") + 1] == "no_timer_check"


def test_reproduce_script_makes_its_own_results_and_disk() -> None:
    text = reproduce_script(plan(vmlinuz=Path("/c/v m")), "vng", {"PATH": "/vfsd:/usr/bin"})
    assert "export PATH=/vfsd:/usr/bin" in text
    assert "vng --verbose --run '/c/v m'" in text
    # Neither the run's own results nor its scratch disk, both gone or precious later.
    assert "/r/6.1" not in text and "/t/scratch.img" not in text
    assert '--rwdir "$RESULTS"' in text and '--disk "$DISK"' in text
    assert "--results '\"$RESULTS\"'" in text


@pytest.mark.parametrize("where", ["my results", "a=b"])
def test_reproduce_refuses_results_vng_cannot_share(tmp_path: Path, where: str) -> None:
    fake_vng = tmp_path / "vng"
    fake_vng.write_text(f"#!/bin/sh\ntouch {tmp_path}/vng-ran\n")
    fake_vng.chmod(0o755)
    script = tmp_path / "reproduce.sh"
    script.write_text(reproduce_script(plan(), str(fake_vng), {"PATH": "/usr/bin:/bin"}))
    results = tmp_path / where
    done = subprocess.run(
        ["sh", str(script), str(results)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"{results}: vng shares a directory only if its path is letters, digits and _ + - . /\n"
    )
    assert not (tmp_path / "vng-ran").exists()


def test_a_bare_boot_has_the_kernels_own_command_line() -> None:
    """The floor a kernel's run is measured against boots as that run does: with the
    kernel's append from kernels.yaml (a setting that shortens boots shows in both)."""
    cmd = bare_boot_command(
        Path("/c/vmlinuz"), "tcg", 1, "qemu64", "x86_64", None, append="mitigations=off"
    )
    assert cmd[cmd.index("--append") + 1] == "mitigations=off no_timer_check"
    assert cmd[-2:] == ["--exec", "true"]
    plain = bare_boot_command(Path("/c/vmlinuz"), "kvm", 1, None, "x86_64", None)
    assert "--append" not in plain


def test_qemu_opts_go_to_qemu_under_either_accelerator() -> None:
    """kernels.yaml's qemu_opts (x86_64's default: -nodefaults) after the TCG CPU model, in
    one --qemu-opts, and alone under KVM, where vng picks the CPU."""
    tcg = build_vng_command(plan(qemu_opts="-nodefaults"), vng="vng")
    assert [c for c in tcg if c.startswith("--qemu-opts")] == [
        "--qemu-opts=-cpu max,-cx16 -nodefaults"
    ]
    kvm = build_vng_command(plan(accel="kvm", qemu_opts="-nodefaults"), vng="vng")
    assert [c for c in kvm if c.startswith("--qemu-opts")] == ["--qemu-opts=-nodefaults"]
    bare = bare_boot_command(
        Path("/c/vmlinuz"), "tcg", 1, "qemu64", "x86_64", None, qemu_opts="-nodefaults"
    )
    assert "--qemu-opts=-cpu qemu64 -nodefaults" in bare


def test_x86_guests_are_spared_hardware_they_never_use() -> None:
    """The defaults of kernels.yaml: on x86_64 no default devices (q35's empty CD-ROM) and no
    drivers for SATA, vng's watchdog and AMD frequency scaling; arm64 has none of them."""
    from harness.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "kernels.yaml")
    for spec in config.kernels:
        cmd = build_vng_command(
            plan(
                arch=spec.arch, append=spec.append, tcg_cpu=spec.tcg_cpu, qemu_opts=spec.qemu_opts
            ),
            vng="vng",
        )
        opts = next(c for c in cmd if c.startswith("--qemu-opts"))
        append = cmd[cmd.index("--append") + 1] if "--append" in cmd else ""
        if spec.arch == "x86_64":
            assert opts.endswith(" -nodefaults"), (spec.name, opts)
            assert "modprobe.blacklist=ahci,i6300esb,powernow_k8" in append.split(), spec.name
        else:
            assert "-nodefaults" not in opts and "modprobe.blacklist" not in append, spec.name
