"""Every example of docs/library.md runs, as a user would run it: its own process, as root, in
a private mount namespace, and leaves no mount behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
# Each example in a mount namespace of its own, as a tool that mounts would run.
PRELUDE = "from mountcompat import private_mount_namespace\nprivate_mount_namespace()\n"


def test_there_are_examples_for_every_topic() -> None:
    text = DOC.read_text()
    for topic in (
        "mount_fs",
        "mount_overlay",
        "mount_erofs",
        "attach_loop",
        "set_mount_attrs",
        "clone_tree",
        "clone_detached",
        "list_mounts",
        "open_in_root",
        "forced",
        "LOG",
    ):
        assert any(topic in example for example in EXAMPLES), topic
    assert len(EXAMPLES) >= 10 and "```python" in text


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_example_runs(example: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + example],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
