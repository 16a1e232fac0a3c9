"""Downloads that verify what they fetch and never leave a partial file under its final name."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FetchError, Unreachable

ProgressCallback = Callable[[int, int | None], None]
CHUNK = 1 << 20
ATTEMPTS = 4


@dataclass
class TransferCounter:
    """Bytes really fetched from the network in this process: how a cached run proves itself."""

    bytes: int = 0
    files: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.bytes += size
            self.files += 1


TRANSFERS = TransferCounter()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# The resolver's final answers: the name does not exist, or has no address. Backing off for
# 14 s does not change them (an offline machine whose resolver answers NXDOMAIN waited out
# the retries on every run, once per such kernel); "try again" (EAI_AGAIN) is still retried.
_NAME_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, socket.gaierror):
        return exc.reason.errno not in _NAME_NOT_FOUND
    return isinstance(exc, urllib.error.URLError | TimeoutError | ConnectionError)


def is_network_error(exc: BaseException | None) -> bool:
    """The mirror could not be reached at all (as opposed to answering with an error)."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    return isinstance(exc, urllib.error.URLError | TimeoutError | ConnectionError | OSError)


def _download_error(url: str, exc: Exception) -> FetchError:
    """Unreachable when an http(s) server never answered; a file:// URL that fails is a
    missing file, not a network."""
    remote = url.startswith(("http://", "https://"))
    kind = Unreachable if remote and is_network_error(exc) else FetchError
    return kind(f"cannot download {url}: {exc}")


def _fetch_once(url: str, tmp: Path, progress: ProgressCallback | None) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
        total = getattr(response, "length", None)  # file:// answers have no length
        done = 0
        while block := response.read(CHUNK):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    TRANSFERS.add(done)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    attempts: int = ATTEMPTS,
) -> bool:
    """Fetch ``url`` to ``dest``; True if bytes were downloaded, False if ``dest`` was good.

    With ``sha256`` given, an existing ``dest`` with that digest is kept, and a download
    with another digest is an error. Transient network errors are retried with backoff,
    ``attempts`` times in all (once where the caller has a cached copy to fall back on).
    """
    if sha256 and dest.exists() and sha256_of(dest) == sha256:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        for attempt in range(1, attempts + 1):
            try:
                got = _fetch_once(url, tmp, progress)
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if not _is_transient(exc) or attempt == attempts:
                    raise _download_error(url, exc) from exc
                time.sleep(2**attempt)
        if sha256 and got != sha256:
            raise FetchError(f"{url}: SHA256 is {got}, the index says {sha256}")
        os.replace(tmp, dest)
        return True
    finally:
        tmp.unlink(missing_ok=True)
