"""Each mirror's index is its own in the cache: a mirror that cannot be reached never
resolves kernels from another mirror's cached index, and --refresh-index fetches InRelease
anew for --list --json --resolve as for a run.

The mirrors are real HTTP servers on 127.0.0.1 serving a small archive of their own (an
unsigned InRelease, a Packages.xz and a kernel package built with dpkg-deb); the harness is
run as a process, as CI runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakearchive import publish, serve
from test_cache_faults import UNREACHABLE, fake_kernel_deb

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
PACKAGE = "linux-image-test"


@pytest.fixture
def mirror_a(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, directory) of an archive served on 127.0.0.1 while the test runs."""
    archive = tmp_path / "archive-a"
    publish(archive, SUITE, [fake_kernel_deb(tmp_path)])
    with serve(archive) as url:
        yield url, archive


def resolve(tmp_path: Path, mirror: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / f"kernels-{hashlib.sha256(mirror.encode()).hexdigest()[:8]}.yaml"
    config.write_text(
        "kernels:\n  - name: k\n    note: n\n    source:\n"
        f'      debian: {{suite: {SUITE}, package: "{PACKAGE}", mirror: "{mirror}"}}\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "MOUNTCOMPAT_DEBIAN_MIRROR"}
    env["MOUNTCOMPAT_ARCHIVE_KEYRING"] = str(tmp_path / "no-keyring.gpg")  # unsigned archive
    cache = tmp_path / "cache"
    argv = ["--config", str(config), "--cache", str(cache), "--list", "--json", "--resolve"]
    return subprocess.run(
        [sys.executable, "-m", "harness", *argv, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def versions(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [p["version"] for p in json.loads(done.stdout)[0]["packages"]]


def test_an_unreachable_mirror_does_not_resolve_from_another_mirrors_index(
    tmp_path: Path, mirror_a: tuple[str, Path]
) -> None:
    url_a, _ = mirror_a
    assert versions(resolve(tmp_path, url_a)) == ["9.9.9-1"]  # the cache now holds A's index
    url_b = UNREACHABLE
    done = resolve(tmp_path, url_b)
    assert done.returncode == 4, f"resolved from A's index: {done.stdout}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download" in lines[0] and url_b in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_refresh_index_fetches_inrelease_anew_with_list_resolve(
    tmp_path: Path, mirror_a: tuple[str, Path]
) -> None:
    url_a, archive = mirror_a
    assert versions(resolve(tmp_path, url_a)) == ["9.9.9-1"]
    newer = fake_kernel_deb(tmp_path / "newer", version="9.9.10-1")
    publish(archive, SUITE, [newer])  # the mirror moves on
    assert versions(resolve(tmp_path, url_a)) == ["9.9.9-1"], "the index is cached for a day"
    assert versions(resolve(tmp_path, url_a, "--refresh-index")) == ["9.9.10-1"]
