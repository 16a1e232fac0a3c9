"""Programs of a newer Debian suite, with the shared libraries they need, in the harness's
cache: run through their own libc's dynamic loader, so the host's libc and apt sources stay as
they are (a Debian bookworm host runs trixie's virtiofsd and QEMU so).

Each copy is one directory under ``<cache>/tools``, named by its program's package and version,
made whole in a temporary directory and renamed into place; ``provenance.json`` in it lists
every package (name, version, SHA256 from the suite's signed index) it was made of.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from harness.errors import FetchError
from harness.fetch.archive import SuiteIndex
from harness.fetch.download import download
from harness.fetch.kernels import extract_deb
from harness.files import write_text

Say = Callable[[str], None]
PROVENANCE = "provenance.json"


def _depends(stanza: dict[str, str]) -> list[str]:
    """The first alternative of each dependency, by package name."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        for dependency in stanza.get(field, "").split(","):
            first = dependency.split("|")[0].split("(")[0].split(":")[0].strip()
            if first:
                names.append(first)
    return names


def _is_library(name: str) -> bool:
    return name.startswith(("lib", "zlib"))


def library_closure(index: SuiteIndex, programs: Iterable[str]) -> list[str]:
    """``programs`` and every library package they need, directly or through another
    library: what their own loader must find. Dependencies that are not libraries (adduser,
    a configuration package) are what installing them would run, not what they run."""
    wanted: list[str] = []
    todo = list(programs)
    while todo:
        name = todo.pop(0)
        if name in wanted:
            continue
        stanzas = index.stanzas(name)
        if not stanzas:
            raise FetchError(f"no package {name} in {index.suite}")
        wanted.append(name)
        todo += [n for n in _depends(stanzas[-1]) if _is_library(n) and n not in wanted]
    if "libc6" not in wanted:
        wanted.append("libc6")
    return wanted


def write_wrapper(wrapper: Path, text: str) -> Path:
    """The copy's wrapper script at ``wrapper``, written anew (atomically, executable before
    it is in place) if it is not ``text``: a wrapper names no absolute path, so the copy runs
    wherever the cache is moved or restored."""
    try:
        if wrapper.read_text() == text:
            return wrapper
    except (OSError, ValueError):
        pass
    wrapper.parent.mkdir(exist_ok=True)
    write_text(wrapper, text, mode=0o755)
    return wrapper


def recorded(copy: Path) -> tuple[dict[str, str], ...]:
    try:
        return tuple(json.loads((copy / PROVENANCE).read_text()))
    except (OSError, ValueError):
        return ()


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One maker of private copies at a time in ``cache``: runs side by side (the tests'
    workers, two harnesses) would otherwise each make the same copy and replace the other's
    under its feet."""
    (cache / "tools").mkdir(parents=True, exist_ok=True)
    with open(cache / "tools" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(index: SuiteIndex, cache: Path, final: Path, packages: Iterable[str]) -> None:
    """``packages`` of ``index`` extracted into ``final`` (replacing what was there), each
    checked against the index's SHA256; the whole copy appears at once or not at all."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        used = []
        for name in packages:
            pkg = index.stanzas(name)[-1]
            deb = cache / "debs" / f"{name}_{pkg['Version']}_{pkg.get('Architecture', 'amd64')}.deb"
            download(f"{index.mirror}/{pkg['Filename']}", deb, sha256=pkg["SHA256"])
            extract_deb(deb, tmp)
            used.append({"name": name, "version": pkg["Version"], "sha256": pkg["SHA256"]})
        (tmp / PROVENANCE).write_text(json.dumps(used, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
