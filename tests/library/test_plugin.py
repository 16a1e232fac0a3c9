"""The suites' pytest plugin, run on small test files with pytester."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HEADER = """
import errno, os, pytest
from mountcompat import mount_fs, open_in_root
from mountcompat.strategy import Feature, Strategy
from mountcompat.errors import StrategyUnsupported
"""


def run(pytester: pytest.Pytester, body: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(HEADER + body)
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(
        f"--mountcompat-results={out}", "-p", "mountcompat.testing.plugin", "-p", "xdist"
    )
    return result, json.loads(out.read_text())


def cells(data: dict) -> dict:
    return {(c["feature"], c["strategy"]): c["outcome"] for c in data["cells"]}


def test_verdicts(pytester: pytest.Pytester) -> None:
    result, data = run(
        pytester,
        """
@pytest.mark.strategy("path.resolve", "openat2")
def test_works():
    os.close(open_in_root("/", "etc", force="openat2"))

@pytest.mark.strategy("path.resolve", "userspace")
def test_never_used():
    pass

@pytest.mark.strategy("mount.api", "fsmount")
def test_refused():
    raise StrategyUnsupported("mount.api", "fsmount", errno.ENOSYS, "no fsopen")

@pytest.mark.strategy("mount.api", "mount2")
def test_fails():
    assert False
""",
    )
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    assert cells(data) == {
        ("path.resolve", "openat2"): "works",
        ("path.resolve", "userspace"): "broken",
        ("mount.api", "fsmount"): "unsupported",
        ("mount.api", "mount2"): "broken",
    }


def test_a_leaked_mount_fails_the_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result, data = run(
        pytester,
        f"""
@pytest.mark.strategy("mount.api", "mount2")
def test_leaks():
    os.makedirs("{tmp_path}/m", exist_ok=True)
    mount_fs("tmpfs", "leak", "{tmp_path}/m", force="mount2")

@pytest.mark.strategy("mount.api", "fsmount")
def test_leaks_an_fd():
    os.open("/", os.O_RDONLY)
""",
    )
    result.assert_outcomes(passed=1, failed=1, errors=2)  # the fd test never used fsmount
    assert "mount left behind" in result.stdout.str()
    assert "file descriptor left open" in result.stdout.str()
    assert cells(data) == {("mount.api", "mount2"): "broken", ("mount.api", "fsmount"): "broken"}


def test_runs_in_a_private_mount_namespace(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("OUTER_NS", os.readlink("/proc/self/ns/mnt"))
    pytester.makepyfile("""
import os
def test_namespace():
    assert os.readlink("/proc/self/ns/mnt") != os.environ["OUTER_NS"]
""")
    pytester.runpytest_subprocess("-p", "mountcompat.testing.plugin").assert_outcomes(passed=1)


TIMEOUTS = """
import pytest

def test_default(request):
    print("TIMEOUT", request.config._env_timeout)

@pytest.mark.timeout(3)
def test_marker(request):
    marker = request.node.get_closest_marker("timeout")
    print("MARKER", marker.args[0])
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [("nothing", "default"), ("command line", "7.0"), ("environment", "9.0"), ("ini", "11.0")],
)
def test_pytest_timeouts_own_order_is_kept(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, expected: str
) -> None:
    """The plugin's default applies only where pytest-timeout has none from the command line,
    PYTEST_TIMEOUT or the ini file; a marker still wins per test."""
    from mountcompat.testing.plugin import BASE_TIMEOUT
    from mountcompat.testing.slowness import timeout_factor

    monkeypatch.delenv("PYTEST_TIMEOUT", raising=False)
    pytester.makepyfile(TIMEOUTS)
    args = ["-s", "-p", "mountcompat.testing.plugin"]
    if how == "command line":
        args.append("--timeout=7")
    elif how == "environment":
        monkeypatch.setenv("PYTEST_TIMEOUT", "9")
    elif how == "ini":
        pytester.makeini("[pytest]\ntimeout = 11\n")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)
    want = str(BASE_TIMEOUT * timeout_factor()) if expected == "default" else expected
    assert f"TIMEOUT {want}" in result.stdout.str()
    assert "MARKER 3" in result.stdout.str()


def test_a_strategy_found_missing_where_another_test_used_it_is_broken(
    pytester: pytest.Pytester,
) -> None:
    """Two tests of one cell that cannot both be right: one used the strategy, the other was
    told the kernel lacks it outright. Neither ``works`` nor ``unsupported`` may stand."""
    _result, data = run(
        pytester,
        """
@pytest.mark.strategy("path.resolve", "openat2")
def test_used():
    os.close(open_in_root("/", "etc", force="openat2"))

@pytest.mark.strategy("path.resolve", "openat2")
def test_told_missing():
    raise StrategyUnsupported("path.resolve", "openat2", errno.ENOSYS, "absent", missing=True)
""",
    )
    assert cells(data) == {("path.resolve", "openat2"): "broken"}
    (cell,) = data["cells"]
    assert "another test of this kernel used it" in cell["message"]


def test_refused_only_if_missing_accepts_no_other_refusal(pytester: pytest.Pytester) -> None:
    _result, data = run(
        pytester,
        """
@pytest.mark.refused_only_if_missing
@pytest.mark.strategy("mount.api", "fsmount")
def test_limit():
    raise StrategyUnsupported("mount.api", "fsmount", errno.E2BIG, "too long for it")

@pytest.mark.refused_only_if_missing
@pytest.mark.strategy("mount.api", "mount2")
def test_missing():
    raise StrategyUnsupported("mount.api", "mount2", errno.ENOSYS, "absent", missing=True)

@pytest.mark.strategy("path.resolve", "userspace")
@pytest.mark.xfail(reason="no verdict may come of this")
def test_xfail():
    assert False
""",
    )
    assert cells(data) == {
        ("mount.api", "fsmount"): "broken",
        ("mount.api", "mount2"): "unsupported",
        ("path.resolve", "userspace"): "broken",
    }


def test_a_kernel_warning_during_a_test_breaks_its_cells(pytester: pytest.Pytester) -> None:
    """A WARN's first line reaches the kernel log during the test (written to /dev/kmsg: a real
    WARN_ON cannot be provoked on demand on a host), and the test's cell is broken although
    the test passed and the strategy was used; the line is in the evidence."""
    result, data = run(
        pytester,
        """
@pytest.mark.strategy("path.resolve", "openat2")
def test_works_but_the_kernel_warned():
    os.close(open_in_root("/", "etc", force="openat2"))
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("WARNING: CPU: 0 PID: 1 at fs/namespace.c:1 mountcompat_test+0x0/0x0\\n")

@pytest.mark.strategy("path.resolve", "userspace")
def test_works_quietly():
    os.close(open_in_root("/", "etc", force="userspace"))
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    assert cells(data) == {
        ("path.resolve", "openat2"): "broken",
        ("path.resolve", "userspace"): "works",
    }
    (warned,) = [t for t in data["tests"] if t["strategy"] == "openat2"]
    assert "the kernel reported a bug" in warned["message"]
    assert any("WARNING: CPU: 0 PID: 1" in line for line in warned["kernel_log"])


def test_a_path_the_kernel_never_saw_is_broken(pytester: pytest.Pytester) -> None:
    """A library whose raw layer notes an openat2 it never makes (it walks in userspace and
    says otherwise): its own notes pass the path, the kernel's syscall trace does not."""
    pytester.makeconftest(
        f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from mountcompat.testing.plugin import register_paths
from suites.paths import PATHS

def pytest_configure(config):
    register_paths(config, PATHS)
"""
    )
    _, data = run(
        pytester,
        """
from mountcompat import _syscalls as sys_, _constants as C

def test_lies(monkeypatch):
    def fake_openat2(dfd, path, how):
        sys_.note("openat2", None, flags=how.flags, resolve=how.resolve)
        return os.open(path, how.flags, dir_fd=dfd)
    monkeypatch.setattr(sys_, "openat2", fake_openat2)
    os.close(open_in_root("/", "etc", force="openat2"))

test_lies = pytest.mark.strategy("path.resolve", "openat2")(test_lies)
""",
    )
    assert "the kernel's syscall tracepoints" in data["witness"]
    (lied,) = data["tests"]
    assert lied["verdict"] == "broken", lied
    assert "the kernel's trace does not show: openat2" in lied["message"]


def test_trace_lines_of_every_format_parse() -> None:
    """As the kernels of the matrix print them: hex with 0x, and a decimal with a leading zero
    (openat's mode on 7.3 arm64), which Python's int(x, 0) refuses."""
    from mountcompat.testing.kernel_trace import parse_trace

    text = (
        "  python3-99  [000] .....  1.0: sys_openat(dfd: ffffff9c, filename: 0x1, "
        "flags: 0x200000, mode: 0666)\n"
        "  python3-99  [000] .....  1.1: sys_openat -> 0x3\n"
        "  python3-99  [000] .....  1.2: sys_fsconfig(fd: 0x3, cmd: 0x8, _key: 0x0, "
        "_value: 0x0, aux: 0x0)\n"
        "  python3-99  [000] .....  1.3: sys_fsconfig -> 0xffffffffffffffa1\n"
    )
    opened, configured = parse_trace(text)
    assert (opened.syscall, opened.args["flags"], opened.args["mode"], opened.ok) == (
        "openat",
        0x200000,
        666,
        True,
    )
    assert (configured.args["cmd"], configured.ok) == (8, False)


def test_trace_values_take_the_base_of_their_print_format() -> None:
    """5.10 prints hex without 0x ("flags: 2a0000"): read as decimal, O_PATH|O_NOFOLLOW would
    never be found (seen: every userspace walk broken on 5.10). The base comes from the
    event's own format file."""
    from mountcompat.testing.kernel_trace import parse_trace, print_bases

    fmt_510 = (
        'print fmt: "dfd: %lx, filename: %lx, flags: %lx, mode: %lx", ((unsigned long)(REC->dfd))'
    )
    fmt_618 = 'print fmt: "dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx", x'
    assert print_bases(fmt_510) == {"dfd": 16, "filename": 16, "flags": 16, "mode": 16}
    assert print_bases(fmt_618)["flags"] == 16
    line = (
        "  python-168 [000] .... 20.9: sys_openat(dfd: e, filename: 7f9c9f07a210, "
        "flags: 2a0000, mode: 0)\n"
    )
    (call,) = parse_trace(
        line + "  python-168 [000] .... 21.0: sys_openat -> 0xf\n", {"openat": print_bases(fmt_510)}
    )
    assert call.args["flags"] == 0x2A0000 and call.args["dfd"] == 0xE and call.ret == 0xF
    with open("/sys/kernel/tracing/events/syscalls/sys_enter_openat/format") as real:
        assert print_bases(real.read())["flags"] == 16  # this host's own
