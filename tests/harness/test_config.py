"""kernels.yaml validation: one clear error naming the file, the kernel and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import DebianSource, LocalSource, load_config, parse_config
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
        "6.12-arm64",
        "newest-arm64",
    ]
    assert all(k.note and k.tags for k in config.kernels)
    assert {k.arch for k in config.kernels} == {"x86_64", "arm64"}
    assert {k.tcg_cpu for k in config.kernels if k.arch == "arm64"} == {"max"}


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
