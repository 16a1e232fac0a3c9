"""The probe's checks hold under ``python -O``, which strips ``assert`` statements: a strategy
whose operation succeeds without doing what it should is never reported working."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    from mountcompat import listing, probe
    from mountcompat.mounts import private_mount_namespace

    assert False, "this interpreter keeps asserts"  # stripped by -O: the check below is not
    private_mount_namespace()
    listing.list_mounts = lambda force=None: []  # a wrong library: lists nothing, no error
    found = probe.probe_feature("mounts.list").strategies
    print(json.dumps({name: p.supported for name, p in found.items()}))
    """
)


def test_a_failed_check_is_not_working_under_python_o() -> None:
    done = subprocess.run(
        [sys.executable, "-O", "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    supported = json.loads(done.stdout)
    assert supported == {"statmount": None, "mountinfo": None}, supported
