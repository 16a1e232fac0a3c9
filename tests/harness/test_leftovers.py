"""A command that exits while a process it started holds its output pipe: the run ends at the
command's exit, and the process left behind is killed and named."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Leaves a sleep in a session of its own, holding the pipe it was given as stdout.
LEAVES = (
    "import subprocess; "
    "subprocess.Popen(['sleep', '86400'], start_new_session=True); "
    "print('started it', flush=True)"
)

RUNNER = f"""
import json, sys
from harness.leftovers import run_to_exit
with open(sys.argv[1], "w") as log:
    status, leaked = run_to_exit([sys.executable, "-c", {LEAVES!r}], log, lambda line: None)
print(json.dumps({{"status": status, "leaked": leaked}}))
"""


def test_the_end_is_the_commands_exit_and_what_it_left_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "log")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 30, "it waited for the pipe's end"
    result = json.loads(done.stdout)
    assert result["status"] == 0
    (leak,) = result["leaked"]
    assert leak["cmdline"] == "sleep 86400"
    assert not Path(f"/proc/{leak['pid']}").exists(), "killed, and reaped"
    assert (tmp_path / "log").read_text() == "started it\n"
