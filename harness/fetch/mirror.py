"""Which Debian mirror to fetch kernels from.

The project never names a mirror itself: the choice is, in order, the environment variable
``MOUNTCOMPAT_DEBIAN_MIRROR``, the ``mirror:`` key of kernels.yaml, and the first Debian
archive (not the security archive) named in this host's apt sources.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config import DEBIAN_ALIASES, DEBIAN_CODENAMES, is_mirror_url
from harness.errors import FetchError

ENV_VAR = "MOUNTCOMPAT_DEBIAN_MIRROR"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_one_line_sources(text: str) -> Iterator[AptSource]:
    """``deb [options] uri suite [component...]`` lines of a sources.list file."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield AptSource(uri=words[0], suites=(words[1],))


def parse_deb822_sources(text: str) -> Iterator[AptSource]:
    """Stanzas of a ``.sources`` file (deb822 format), skipping disabled ones."""
    from debian.deb822 import Deb822

    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    for stanza in Deb822.iter_paragraphs(lines):
        if "deb" not in stanza.get("Types", "").split():
            continue
        if stanza.get("Enabled", "yes").lower() == "no":
            continue
        suites = tuple(stanza.get("Suites", "").split())
        for uri in stanza.get("URIs", "").split():
            yield AptSource(uri=uri, suites=suites)


def _is_debian_archive(source: AptSource) -> bool:
    names = DEBIAN_CODENAMES + DEBIAN_ALIASES
    return (
        any(s.split("-")[0] in names and not s.endswith("-security") for s in source.suites)
        and "security" not in source.uri
    )


def pick_debian_mirror(sources: Iterable[AptSource]) -> str | None:
    for source in sources:
        if _is_debian_archive(source) and source.uri.startswith(("http://", "https://")):
            return source.uri.rstrip("/")
    return None


def read_host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    found: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.name.endswith(".sources"):
            found.extend(parse_deb822_sources(text))
        elif path.name.endswith(".list"):
            found.extend(parse_one_line_sources(text))
    return found


def debian_mirror(configured: str | None, etc_apt: Path = Path("/etc/apt")) -> str:
    """The mirror to use, or a FetchError that says how to name one."""
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        if not is_mirror_url(from_env):
            raise FetchError(f"{ENV_VAR}={from_env!r} is not an http://, https:// or file:// URL")
        return from_env.rstrip("/")
    if configured:
        return configured.rstrip("/")
    host = pick_debian_mirror(read_host_sources(etc_apt))
    if host:
        return host
    raise FetchError(
        f"no Debian mirror found in {etc_apt}/sources.list or sources.list.d/; "
        f"set {ENV_VAR}=<mirror URL> or the 'mirror:' key in kernels.yaml"
    )
