"""The syscall numbers come from the interpreter's own architecture, and an architecture
without a table is refused per call with a clear error, never given x86_64's numbers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mountcompat import _syscalls as sys_


def test_the_interpreters_architecture_is_known_here() -> None:
    assert sys_.ARCH in ("x86_64", "aarch64") and sys_.KNOWN_ARCH
    assert sys_.NR["fsopen"] == 430


def run_as(multiarch: str, body: str) -> str:
    """``body`` in an interpreter that says it was built for ``multiarch`` (a riscv64 or i386
    build, as far as the library can tell), inside a mount namespace of its own."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.implementation._multiarch = {multiarch!r}
        from mountcompat.mounts import private_mount_namespace
        private_mount_namespace()
        """
    ) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_unknown_architecture_is_refused_per_call_and_falls_back_through_libc() -> None:
    out = run_as(
        "riscv64-linux-gnu",
        """
        import errno, os, tempfile
        from mountcompat import _syscalls as sys_, mount_fs
        from mountcompat.choices import LOG
        assert sys_.ARCH == "riscv64" and not sys_.KNOWN_ARCH
        try:
            sys_.fsopen("tmpfs")
        except OSError as exc:
            assert exc.errno == errno.ENOSYS, exc
            print("refused:", exc)
        target = tempfile.mkdtemp()
        with mount_fs("tmpfs", "mc-arch", target):
            print("used:", [r.strategy for r in LOG.records("mount.api") if r.outcome == "used"])
        os.rmdir(target)
        """,
    )
    assert "no syscall numbers for riscv64 (known: x86_64, aarch64)" in out
    assert "used: ['mount2']" in out


def test_a_32_bit_interpreter_on_a_64_bit_kernel_gets_no_x86_64_numbers() -> None:
    out = run_as(
        "i386-linux-gnu",
        """
        from mountcompat import _syscalls as sys_
        print(sys_.ARCH, sys_.NR["fsopen"], sys_.NR["statx"])
        """,
    )
    assert out.split() == ["i386", "-1", "-1"]
