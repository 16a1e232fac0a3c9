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
import lzma
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_cache_faults import fake_kernel_deb

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
PACKAGE = "linux-image-test"


def publish(archive: Path, deb: Path, version: str) -> None:
    """``deb`` as ``version`` of linux-image-test in the archive's one suite, with its
    Packages.xz and an InRelease giving that index's SHA256."""
    pool = archive / "pool" / f"{PACKAGE}_{version}_amd64.deb"
    pool.parent.mkdir(parents=True, exist_ok=True)
    pool.write_bytes(deb.read_bytes())
    data = pool.read_bytes()
    stanza = (
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: amd64\n"
        f"Filename: pool/{pool.name}\nSize: {len(data)}\n"
        f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
    )
    packages = archive / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz"
    packages.parent.mkdir(parents=True, exist_ok=True)
    packages.write_bytes(lzma.compress(stanza.encode()))
    index = packages.read_bytes()
    (archive / "dists" / SUITE / "InRelease").write_text(
        f"Origin: test\nSuite: {SUITE}\nCodename: {SUITE}\nSHA256:\n"
        f" {hashlib.sha256(index).hexdigest()} {len(index)} main/binary-amd64/Packages.xz\n"
    )


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def mirror_a(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, directory) of an archive served on 127.0.0.1 while the test runs."""
    archive = tmp_path / "archive-a"
    publish(archive, fake_kernel_deb(tmp_path), "9.9.9-1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(archive)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", archive
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    url_b = f"http://127.0.0.1:{closed_port()}"
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
    publish(archive, fake_kernel_deb(tmp_path / "newer"), "9.9.10-1")  # the mirror moves on
    assert versions(resolve(tmp_path, url_a)) == ["9.9.9-1"], "the index is cached for a day"
    assert versions(resolve(tmp_path, url_a, "--refresh-index")) == ["9.9.10-1"]
