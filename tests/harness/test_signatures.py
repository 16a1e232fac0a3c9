"""Whether an archive index's signature was checked is recorded per package, shown on the
report's first screen when it was not, and an error with --require-signatures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guests import fetch_kernel
from reportdata import kernel_dir

from harness.fetch.archive import index_dir
from harness.fetch.kernels import default_cache
from harness.fetch.mirror import debian_mirror
from harness.report import write_report

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9/debian"


def test_an_unverified_index_is_on_the_first_screen(tmp_path: Path) -> None:
    d = kernel_dir(tmp_path, "k", "6.1.0-50-cloud-amd64", {}, ["__x64_sys_fsopen"])
    info = json.loads((d / "kernel.json").read_text())
    info["packages"][0]["index_signature"] = "not verified: gpgv is not installed"
    (d / "kernel.json").write_text(json.dumps(info))
    matrix = write_report([tmp_path], tmp_path)
    assert matrix["kernels"][0]["signatures"] == ["not verified: gpgv is not installed"]
    header = (tmp_path / "report.html").read_text().split("<main>", 1)[0]
    assert "not verified" in header and "gpgv is not installed" in header


def offline_cache(tmp_path: Path) -> Path:
    """bullseye's index, packages and tree from the real cache; the index a week old, so
    that the unreachable mirror is asked (and found gone) first."""
    fetch_kernel()  # bullseye's index, packages and tree, if no test fetched them before
    real = default_cache()
    cache = tmp_path / "cache"
    # The index as the (now unreachable) mirror served it: the real one's, under its name.
    where = index_dir(cache, UNREACHABLE, "bullseye")
    shutil.copytree(index_dir(real, debian_mirror(None), "bullseye"), where)
    for shared in ("kernels", "debs", "tools"):
        (cache / shared).symlink_to(real / shared)
    old = time.time() - 7 * 24 * 3600
    os.utime(where / "InRelease", (old, old))
    return cache


# A whole run that parses bullseye's index: 15 s alone, over 20 s beside other tests.
@pytest.mark.timeout(180)
def test_require_signatures_refuses_to_boot_an_unverified_kernel(tmp_path: Path) -> None:
    cache = offline_cache(tmp_path)
    config = tmp_path / "kernels.yaml"
    config.write_text(
        "kernels:\n  - name: k\n    note: n\n    source:\n      debian: {suite: bullseye, "
        f'package: "linux-image-5.10.0-*-cloud-amd64", mirror: "{UNREACHABLE}"}}\n'
    )
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--config",
            str(config),
            "--results",
            str(results),
            "--cache",
            str(cache),
            "--require-signatures",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "MOUNTCOMPAT_ARCHIVE_KEYRING": str(tmp_path / "no-keyring.gpg")},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    info = json.loads((results / "k" / "kernel.json").read_text())
    assert info["status"] == "fetch-failed"
    assert "--require-signatures" in info["detail"] and "no keyring" in info["detail"]
    assert all(p["index_stale"] for p in info["packages"])  # offline: the cached index
    assert not (results / "k" / "console.log").exists(), "it booted"
