"""kernels.yaml validation: one clear error naming the file, the kernel and the field."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.config import (
    MAX_NAME_BYTES,
    DebianSource,
    LocalSource,
    RpmSource,
    load_config,
    parse_config,
)
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GOOD = """
kernels:
  - name: k1
    note: a kernel
    tags: [a]
    source:
      debian: {suite: bookworm, package: "linux-image-6.1.0-*-cloud-amd64"}
  - name: k2
    note: local
    timeout: 30
    source:
      local: {vmlinuz: boot/vmlinuz, modules: lib/modules/6.1}
"""


def test_the_default_file_loads_with_every_kernel() -> None:
    config = load_config(REPO / "kernels.yaml")
    assert [k.name for k in config.kernels] == [
        "rhel9-era",
        "6.1",
        "6.12",
        "latest",
        "6.16",
        "newest",
        "centos-stream-9",
        "almalinux-9",
        "6.12-arm64",
        "newest-arm64",
    ]
    assert all(k.note and k.tags for k in config.kernels)
    # The real el9 kernels: out of reach here, and their keys are files of this repository.
    real = [k for k in config.kernels if k.needs_network]
    assert [k.name for k in real] == ["centos-stream-9", "almalinux-9"]
    assert all(isinstance(k.source, RpmSource) and k.source.key.is_file() for k in real)
    (standin,) = [k for k in config.kernels if k.stands_in_for]
    assert standin.name == "rhel9-era" and standin.stands_in_for == (
        "centos-stream-9",
        "almalinux-9",
    )
    assert {k.arch for k in config.kernels} == {"x86_64", "arm64"}
    assert {k.tcg_cpu for k in config.kernels if k.arch == "arm64"} == {"max,pauth-impdef=on"}
    assert {k.tcg_cpu for k in config.kernels if k.arch == "x86_64"} == {
        "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+rdrand,+rdseed,-svm"
    }


def test_a_good_file() -> None:
    config = parse_config(Path("/x/kernels.yaml"), GOOD)
    k1, k2 = config.kernels
    assert k1.source == DebianSource("bookworm", "linux-image-6.1.0-*-cloud-amd64")
    assert isinstance(k2.source, LocalSource) and k2.source.vmlinuz == Path("/x/boot/vmlinuz")
    assert k2.timeout == 30.0


@pytest.mark.parametrize(
    ("text", "kernel", "field", "words"),
    [
        (GOOD.replace("tags: [a]", "tagz: [a]"), "k1", "tagz", "unknown key"),
        (GOOD.replace("    note: a kernel\n", ""), "k1", "note", "missing"),
        (
            GOOD.replace("suite: bookworm", "suite: bookwurm"),
            "k1",
            "source.debian.suite",
            "unknown suite",
        ),
        (GOOD.replace("debian:", "rpmm:"), "k1", "source.rpmm", "unknown source kind"),
        (GOOD.replace("timeout: 30", "timeout: -1"), "k2", "timeout", "positive"),
        (GOOD.replace("name: k2", "name: k1"), "k1", "name", "defined twice"),
        (
            GOOD.replace("tags: [a]", "needs_network: yes please"),
            "k1",
            "needs_network",
            "expected bool",
        ),
        (
            GOOD.replace("tags: [a]", "stands_in_for: [k9]"),
            "k1",
            "stands_in_for",
            "'k9' is not another kernel here",
        ),
        (
            GOOD.replace("tags: [a]", "stands_in_for: [k1]"),
            "k1",
            "stands_in_for",
            "'k1' is not another kernel here",
        ),
    ],
)
def test_errors_name_file_kernel_and_field(text: str, kernel: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(Path("/x/kernels.yaml"), text)
    err = caught.value
    assert (err.path, err.kernel, err.field) == ("/x/kernels.yaml", kernel, field)
    assert words in str(err) and "/x/kernels.yaml" in str(err)


def test_the_command_line_exits_2_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "kernels.yaml"
    bad.write_text(GOOD.replace("suite: bookworm", "suite: nope"))
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--config", str(bad), "--list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "kernel 'k1'" in done.stderr and "source.debian.suite" in done.stderr


def test_list_prints_the_kernels() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    for name in ("rhel9-era", "6.1", "6.12", "latest"):
        assert name in done.stdout


# PyYAML keeps the last of two equal keys: each of these would lose a value silently.
@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (GOOD.replace("    note: local\n", "    note: local\n    note: again\n"), 10, "note"),
        (GOOD + "kernels:\n  - name: k3\n", 13, "kernels"),
        (GOOD.replace("suite: bookworm,", "suite: bookworm, suite: trixie,"), 7, "suite"),
        ("defaults: {cpus: 1, cpus: 2}\n" + GOOD, 1, "cpus"),
    ],
)
def test_a_key_given_twice_names_file_and_line(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: line {line}: key {key!r} given twice")


def test_a_merged_key_may_still_be_overridden() -> None:
    text = GOOD.replace("  - name: k2\n", "  - &first\n    name: k2\n") + (
        "  - <<: *first\n    name: k3\n"
    )
    assert [k.name for k in parse_config(Path("/x/kernels.yaml"), text).kernels] == [
        "k1",
        "k2",
        "k3",
    ]


def test_a_key_given_twice_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kernels.yaml"
    bad.write_text(GOOD + "kernels: []\n")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--config", str(bad), "--list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: {bad}: line 13: key 'kernels' given twice (first on line 2)\n"


def test_invalid_yaml_is_one_line_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(Path("/x/kernels.yaml"), GOOD + "  - [unclosed\n")
    assert "\n" not in str(caught.value) and "line 14" in str(caught.value)


def test_the_longest_name_leaves_room_for_virtiofsds_socket() -> None:
    """The guest's temporary directory and virtme-ng's socket in it, named as they are."""
    name = "k" * MAX_NAME_BYTES
    with tempfile.TemporaryDirectory(prefix=f"mountcompat-{name}.", dir="/tmp") as tmp:
        fd, path = tempfile.mkstemp(prefix="virtme", dir=tmp)
        os.close(fd)
        os.unlink(path)
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path)


@pytest.mark.parametrize(
    "opts",
    [
        "-cpu max",
        "nodefaults",
        "-m 4G -cpu host",
        "--cpu host",
        "-accel kvm",
        "-enable-kvm",
        "-append init=/bin/sh",
        "-nodefaults; touch /tmp/x",
        "-nodefaults $(id)",
    ],
)
def test_qemu_opts_that_are_not_ours_to_take_are_refused(opts: str) -> None:
    text = GOOD.replace("kernels:", f"defaults:\n  qemu_opts: {opts!r}\nkernels:", 1)
    with pytest.raises(ConfigError, match="qemu_opts"):
        parse_config(Path("/x/kernels.yaml"), text)


def test_qemu_opts_of_plain_options_are_taken() -> None:
    text = GOOD.replace("kernels:", "defaults:\n  qemu_opts: -nodefaults -m 4G\nkernels:", 1)
    config = parse_config(Path("/x/kernels.yaml"), text)
    assert {k.qemu_opts for k in config.kernels} == {"-nodefaults -m 4G"}
