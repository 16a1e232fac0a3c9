"""Inputs that make no sense are refused before anything boots: one clear line, exit 2.

Each case runs the real command line (``python -m harness``) in a subprocess, with a kernel
whose files do not exist: a run that got past the checks would fail to fetch it instead, so
exit status 2 and the message show that the check, and nothing later, stopped it.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.boot.vng import SHAREABLE_PATH
from harness.config import parse_config
from harness.errors import UsageError
from harness.run.matrix import MatrixOptions, check_inputs
from mountcompat import _syscalls as sys_
from mountcompat.mounts import unmount

REPO = Path(__file__).resolve().parents[2]
KERNEL = """kernels:
  - name: k
    note: a kernel that is never booted
    source:
      local: {vmlinuz: /nonexistent/vmlinuz, modules: /nonexistent/modules}
"""


def harness(tmp_path: Path, *args: str, config: str = KERNEL, **env: str) -> tuple[int, str]:
    path = tmp_path / "kernels.yaml"
    if not path.exists():
        path.write_text(config)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "harness", "--config", str(path)]
    if not any(a.startswith("--results") for a in args):
        argv += ["--results", str(results)]
    done = subprocess.run(
        [*argv, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def refused(tmp_path: Path, *args: str, config: str = KERNEL, **env: str) -> str:
    status, out = harness(tmp_path, *args, config=config, **env)
    assert status == 2, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert errors, out
    assert not (tmp_path / "results" / "k").exists(), "something ran past the check"
    return out


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf", "soon"])
def test_timeout_must_be_positive_and_finite(tmp_path: Path, value: str) -> None:
    out = refused(tmp_path, f"--timeout={value}")
    assert "--timeout" in out


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_jobs_must_be_one_or_more(tmp_path: Path, value: str) -> None:
    assert "--jobs" in refused(tmp_path, f"--jobs={value}")


def test_the_same_kernel_twice(tmp_path: Path) -> None:
    assert "more than once" in refused(tmp_path, "--kernel", "k", "--kernel", "k")


def test_list_with_an_unknown_kernel(tmp_path: Path) -> None:
    assert "no such kernel" in refused(tmp_path, "--list", "--kernel", "nope")


def kernel_with(line: str, name: str = "k") -> str:
    return KERNEL.replace("  - name: k\n", f"  - name: {name}\n    {line}\n")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("memory: 100000G", "more than this host has"),
        ("memory: 16M", "at least 256M"),
        ("memory: lots", "like 2G"),
        ("cpus: 0", "1 to 255"),
        ("cpus: 4096", "1 to 255"),
        ("append: quiet init=/bin/sh", "init="),
        ("timeout: .nan", "positive"),
        ("arch: sparc", "x86_64 or arm64"),
    ],
)
def test_values_qemu_or_vng_cannot_honour(tmp_path: Path, line: str, words: str) -> None:
    assert words in refused(tmp_path, config=kernel_with(line))


@pytest.mark.parametrize("name", ["host", "matrix.json", "run.json", "report.html", "attempts"])
def test_reserved_names(tmp_path: Path, name: str) -> None:
    assert "reserved" in refused(tmp_path, config=KERNEL.replace("name: k", f"name: {name}"))


def test_a_name_with_a_trailing_newline(tmp_path: Path) -> None:
    config = KERNEL.replace("name: k", 'name: "k\\n"')
    assert "control characters" in refused(tmp_path, config=config)


def test_a_mirror_that_is_not_a_url(tmp_path: Path) -> None:
    config = "mirror: deb.example.org/debian\n" + KERNEL
    assert "URL" in refused(tmp_path, config=config)


def test_a_mirror_from_the_environment_that_is_not_a_url(tmp_path: Path) -> None:
    config = KERNEL.replace(
        "local: {vmlinuz: /nonexistent/vmlinuz, modules: /nonexistent/modules}",
        'debian: {suite: bookworm, package: "linux-image-6.1.0-*-cloud-amd64"}',
    )
    out = refused(tmp_path, config=config, MOUNTCOMPAT_DEBIAN_MIRROR="not a url")
    assert "MOUNTCOMPAT_DEBIAN_MIRROR" in out


def test_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "kernels.yaml").write_bytes(KERNEL.encode() + b"# caf\xe9\n")
    assert "not UTF-8" in refused(tmp_path)


def test_results_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert "not a directory" in refused(tmp_path, f"--results={tmp_path / 'file'}")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only mount (root ignores permission bits, not a read-only filesystem)."""
    where = tmp_path / "ro"
    where.mkdir()
    sys_.mount("ro", where, "tmpfs", 0x1)  # MS_RDONLY
    try:
        yield where
    finally:
        unmount(where)


def test_results_on_a_read_only_filesystem(tmp_path: Path, read_only_dir: Path) -> None:
    assert "cannot write" in refused(tmp_path, f"--results={read_only_dir}")


def test_a_cache_that_cannot_be_written(tmp_path: Path, read_only_dir: Path) -> None:
    out = refused(tmp_path, f"--cache={read_only_dir / 'cache'}")
    assert "cache" in out


def test_one_line_not_a_traceback(tmp_path: Path) -> None:
    out = refused(tmp_path, "--timeout=nan")
    assert "Traceback" not in out


def limited_memory() -> None:
    # A harness that reads /dev/zero whole must fail here, not take the host's memory.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def config_refused(config: Path) -> str:
    """The command line's one error line for ``--config config``, or the test fails."""
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--config", str(config), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=limited_memory,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {config}: ") and done.stderr.count("\n") == 1
    return done.stderr


@pytest.mark.timeout(60)
def test_a_config_that_never_ends() -> None:
    assert "a character device, not a regular file" in config_refused(Path("/dev/zero"))


@pytest.mark.timeout(20)
def test_a_config_that_is_a_fifo_with_no_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "kernels.yaml"
    os.mkfifo(fifo)
    assert "a FIFO, not a regular file" in config_refused(fifo)


def test_a_config_that_is_a_directory(tmp_path: Path) -> None:
    assert "a directory, not a regular file" in config_refused(tmp_path)


def test_a_config_larger_than_a_kernels_file_can_be(tmp_path: Path) -> None:
    big = tmp_path / "kernels.yaml"
    big.write_text(KERNEL + ("#" * 1023 + "\n") * 1024)
    assert "larger than 1 MiB" in config_refused(big)


def test_a_name_too_long_for_a_file_name(tmp_path: Path) -> None:
    out = refused(tmp_path, "--list", config=KERNEL.replace("name: k", f"name: {'k' * 300}"))
    assert "kernel '#1 (kkkkkkkkkkkkkkkkkkkk...)': field 'name': 300 bytes long; at most 64" in out


def test_a_name_too_long_for_the_guests_socket_path(tmp_path: Path) -> None:
    out = refused(tmp_path, "--list", config=KERNEL.replace("name: k", f"name: {'k' * 65}"))
    assert "65 bytes long; at most 64" in out


def test_the_longest_name_is_listed(tmp_path: Path) -> None:
    status, out = harness(tmp_path, "--list", config=KERNEL.replace("name: k", f"name: {'k' * 64}"))
    assert status == 0 and "k" * 64 in out


def options(tmp_path: Path, **changes: Any) -> MatrixOptions:
    config = parse_config(tmp_path / "kernels.yaml", KERNEL)
    base: dict[str, Any] = dict(
        config=config, kernels=list(config.kernels), results=tmp_path / "results"
    )
    return MatrixOptions(**{**base, "cache": tmp_path / "cache", "jobs": 1, **changes})


# vng hands --rwdir and --rodir to virtme-run through a shell, unquoted; virtme-run refuses
# "=" (its guest=host separator) and other characters in a shared directory's path.
@pytest.mark.parametrize(
    ("flag", "where", "shown"),
    [
        ("results", "my results", "' '"),
        ("results", "a=b", "'='"),
        ("results", "tab\tin", "'\\t'"),
        ("suites", "x,y:z", "',', ':'"),
        ("cache", "my cache", "' '"),
    ],
)
def test_paths_vng_cannot_share_are_refused_before_anything_is_made(
    tmp_path: Path, flag: str, where: str, shown: str
) -> None:
    path = tmp_path / where
    path.mkdir()
    with pytest.raises(UsageError) as caught:
        check_inputs(options(tmp_path, **{flag: path}))
    assert str(caught.value) == (
        f"--{flag} {path}: holds {shown}; vng shares a directory only if its path is letters, "
        "digits and _ + - . /"
    )
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_results_with_a_blank_on_the_command_line(tmp_path: Path) -> None:
    out = refused(tmp_path, f"--results={tmp_path / 'my results'}")
    assert out == f"error: --results {tmp_path / 'my results'}: holds ' '; " + (
        "vng shares a directory only if its path is letters, digits and _ + - . /\n"
    )


def test_a_temporary_directory_vng_cannot_share_is_refused(tmp_path: Path) -> None:
    """The guests' scratch disks and virtiofsd's sockets are made under TMPDIR."""
    odd = tmp_path / "tmp dir"
    odd.mkdir()
    out = refused(tmp_path, TMPDIR=str(odd))
    assert f"the temporary directory (TMPDIR) {odd}: holds ' '" in out


def test_what_is_shareable_is_what_virtme_run_accepts() -> None:
    """The rule above, against virtme-run's own, less the blank vng's shell splits at."""
    from virtme.commands.run import _SAFE_PATH_PATTERN  # type: ignore[import-untyped]

    theirs = {c for c in map(chr, range(32, 127)) if re.fullmatch(_SAFE_PATH_PATTERN, c)}
    ours = {c for c in map(chr, range(32, 127)) if SHAREABLE_PATH.fullmatch(c)}
    assert ours == theirs - {" "}
