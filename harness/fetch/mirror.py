"""Which Debian mirror to fetch kernels from.

The project never names a mirror itself: the choice is, in order, the environment variable
``MOUNTCOMPAT_DEBIAN_MIRROR``, the ``mirror:`` key of kernels.yaml, the first Debian archive
(not the security archive) named in this host's apt sources, and last the default mirror that
the host's debootstrap gives a Debian suite. That last one is for hosts whose apt sources name
no Debian archive at all, an Ubuntu CI runner for one: debootstrap is the archive's own tool for
fetching Debian from anywhere, and its package carries the archive's default mirror, so the
mirror still comes from the host's own configuration.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config import DEBIAN_ALIASES, DEBIAN_CODENAMES, is_mirror_url
from harness.errors import FetchError, PrerequisiteError
from harness.host.prereqs import Tool, ensure_tools

ENV_VAR = "MOUNTCOMPAT_DEBIAN_MIRROR"
DEBOOTSTRAP = Tool(
    "debootstrap",
    "names the Debian archive's default mirror on a host whose apt sources name none",
    "debootstrap",
    "debootstrap",
    "debootstrap",
)
# Every suite of one archive shares its mirror; bookworm is the suite the guest roots come from.
DEFAULT_SUITE = "bookworm"


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


@dataclass(frozen=True)
class Debootstrap:
    """Where debootstrap keeps its per-suite scripts and its own program."""

    scripts: Path = Path("/usr/share/debootstrap/scripts")
    program: Path = Path("/usr/sbin/debootstrap")


_TOP_LEVEL_DEFAULT = re.compile(r"^default_mirror\s+(\S+)\s*$", re.MULTILINE)
_PROGRAM_DEFAULT = re.compile(r'^DEF_MIRROR="?([^"\s]+)"?\s*$', re.MULTILINE)


def debootstrap_default(suite: str, where: Debootstrap) -> str | None:
    """The mirror debootstrap would fetch ``suite`` from when given none.

    A suite's script may name its own (``default_mirror URL`` at its top level: archived suites
    do); otherwise debootstrap's ``DEF_MIRROR`` holds, as it does for every current Debian suite."""
    try:
        script = (where.scripts / suite).read_text()
        program = where.program.read_text()
    except OSError:
        return None
    found = _TOP_LEVEL_DEFAULT.search(script) or _PROGRAM_DEFAULT.search(program)
    if found is None or not found.group(1).startswith(("http://", "https://")):
        return None
    return found.group(1).rstrip("/")


def _no_mirror(etc_apt: Path, why: str) -> FetchError:
    return FetchError(
        f"no Debian mirror found in {etc_apt}/sources.list or sources.list.d/, {why}; "
        f"set {ENV_VAR}=<mirror URL> or the 'mirror:' key in kernels.yaml"
    )


@functools.cache
def _debootstrap_mirror(etc_apt: Path, where: Debootstrap) -> str:
    if not where.program.exists():
        try:
            ensure_tools((DEBOOTSTRAP,), lambda message: print(message, file=sys.stderr))
        except PrerequisiteError as exc:
            # One line: the prerequisite's own message spreads its command over several.
            said = " ".join(str(exc).split())
            why = f"and debootstrap, whose default would do, is missing ({said})"
            raise _no_mirror(etc_apt, why) from exc
    mirror = debootstrap_default(DEFAULT_SUITE, where)
    if mirror is None:
        raise _no_mirror(etc_apt, f"nor a default one for {DEFAULT_SUITE} in {where.scripts}")
    print(
        f"the apt sources in {etc_apt} name no Debian archive: using debootstrap's default "
        f"mirror for {DEFAULT_SUITE}, {mirror}",
        file=sys.stderr,
    )
    return mirror


def debian_mirror(
    configured: str | None,
    etc_apt: Path = Path("/etc/apt"),
    debootstrap: Debootstrap = Debootstrap(),
) -> str:
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
    return _debootstrap_mirror(etc_apt, debootstrap)
