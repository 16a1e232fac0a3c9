"""A small Debian-shaped archive served over real HTTP on 127.0.0.1, for the tests of the
fetching code: packages built with dpkg-deb, a Packages.xz listing them and an unsigned
InRelease giving that index's SHA256 (the tests name a keyring that is not there, so the
index is recorded "not verified" rather than refused)."""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def build_deb(
    where: Path, name: str, version: str, files: dict[str, bytes | Path], depends: str = ""
) -> Path:
    """A .deb of ``name`` holding ``files`` (path in the package: bytes, or a file to copy
    with its mode)."""
    root = where / f"{name}_{version}"
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, path)
        else:
            path.write_bytes(content)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "Maintainer: nobody <nobody@example.org>\nDescription: test package\n"
    )
    deb = where / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def _control(deb: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def publish(archive: Path, suite: str, debs: list[Path]) -> None:
    """``debs`` as the whole of ``suite``'s main/binary-amd64 (replacing what was there)."""
    stanzas = []
    for deb in debs:
        fields = _control(deb)
        pool = archive / "pool" / f"{fields['Package']}_{fields['Version']}_amd64.deb"
        pool.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, pool)
        data = pool.read_bytes()
        kept = {
            k: fields[k] for k in ("Package", "Version", "Architecture", "Depends") if k in fields
        }
        kept |= {
            "Filename": f"pool/{pool.name}",
            "Size": str(len(data)),
            "SHA256": hashlib.sha256(data).hexdigest(),
        }
        stanzas.append("".join(f"{k}: {v}\n" for k, v in kept.items()))
    packages = archive / "dists" / suite / "main" / "binary-amd64" / "Packages.xz"
    packages.parent.mkdir(parents=True, exist_ok=True)
    packages.write_bytes(lzma.compress("\n".join(stanzas).encode()))
    index = packages.read_bytes()
    (archive / "dists" / suite / "InRelease").write_text(
        f"Origin: test\nSuite: {suite}\nCodename: {suite}\nSHA256:\n"
        f" {hashlib.sha256(index).hexdigest()} {len(index)} main/binary-amd64/Packages.xz\n"
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(archive: Path) -> Iterator[str]:
    """The URL of ``archive`` served on 127.0.0.1 until the block ends."""
    handler = partial(_QuietHandler, directory=str(archive))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
