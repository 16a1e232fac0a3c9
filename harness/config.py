"""kernels.yaml: declarative kernel specs, validated when loaded.

A kernel's *source* says where its image and modules come from. Each kind of source is a small
frozen dataclass registered in ``SOURCE_KINDS`` with the keys it accepts; adding a kind (a local
RHEL ``kernel-core`` + ``kernel-modules`` RPM pair, say) means adding one dataclass, one entry in
that table and one installer in :mod:`harness.kernels`, without reshaping the file format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from harness.errors import ConfigError

DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid")
DEBIAN_ALIASES = ("oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental")
DEBIAN_SUITE_SUFFIXES = ("", "-updates", "-backports", "-backports-sloppy", "-proposed-updates")
KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MEMORY = re.compile(r"^[0-9]+[MG]$")


def known_debian_suites() -> tuple[str, ...]:
    suites = [c + s for c in DEBIAN_CODENAMES if c != "sid" for s in DEBIAN_SUITE_SUFFIXES]
    return (*suites, "sid", *DEBIAN_ALIASES)


@dataclass(frozen=True)
class DebianSource:
    """A package (or a glob, resolved to the newest match) in a suite of a Debian mirror."""

    suite: str
    package: str
    mirror: str | None = None
    kind: str = "debian"

    def describe(self) -> str:
        return f"{self.package} from Debian {self.suite}"


@dataclass(frozen=True)
class DebFilesSource:
    """Local .deb files: an image package, plus its modules package where they are split."""

    files: tuple[Path, ...]
    kind: str = "deb"

    def describe(self) -> str:
        return ", ".join(p.name for p in self.files)


@dataclass(frozen=True)
class LocalSource:
    """A vmlinuz and the modules directory that belongs to it, used in place."""

    vmlinuz: Path
    modules: Path
    config: Path | None = None
    kind: str = "local"

    def describe(self) -> str:
        return str(self.vmlinuz)


KernelSource = DebianSource | DebFilesSource | LocalSource


@dataclass(frozen=True)
class KernelSpec:
    name: str
    note: str
    source: KernelSource
    tags: tuple[str, ...] = ()
    timeout: float = 1200.0
    boot_timeout: float = 300.0
    memory: str = "2G"
    cpus: int = 2
    append: str = ""
    tcg_cpu: str = "max,-cx16"


@dataclass(frozen=True)
class MatrixConfig:
    path: Path
    kernels: tuple[KernelSpec, ...]
    mirror: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def select(self, names: list[str]) -> list[KernelSpec]:
        if not names:
            return list(self.kernels)
        by_name = {k.name: k for k in self.kernels}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                str(self.path),
                unknown[0],
                None,
                f"no such kernel; known: {', '.join(by_name)}",
            )
        return [by_name[n] for n in names]


class _Checker:
    """Reads one mapping of the file, naming the place of every problem it finds."""

    def __init__(self, path: Path, kernel: str | None, prefix: str, data: object) -> None:
        self.path, self.kernel, self.prefix = path, kernel, prefix
        if not isinstance(data, dict):
            self.fail(None, f"expected a mapping, found {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, key: str | None, problem: str) -> NoReturn:
        name = self.prefix + (key or "") if key or self.prefix else None
        raise ConfigError(str(self.path), self.kernel, name.rstrip(".") if name else None, problem)

    def only(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(str(key), f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def get(
        self,
        key: str,
        kind: type,
        default: Any = ...,
        check: Callable[[Any], bool] | None = None,
        expect: str = "",
    ) -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.fail(key, f"expected {kind.__name__}, found {value!r}")
        if check is not None and not check(value):
            self.fail(key, f"{value!r} is not {expect}")
        return value

    def child(self, key: str) -> _Checker:
        return _Checker(self.path, self.kernel, f"{self.prefix}{key}.", self.data.get(key))


def _relative(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base.parent / p).resolve()


def _debian_source(c: _Checker) -> DebianSource:
    c.only({"suite", "package", "mirror"})
    suite = c.get("suite", str)
    if suite not in known_debian_suites():
        c.fail("suite", f"unknown suite {suite!r}; known: {', '.join(known_debian_suites())}")
    return DebianSource(
        suite=suite, package=c.get("package", str), mirror=c.get("mirror", str, None)
    )


def _deb_source(c: _Checker) -> DebFilesSource:
    c.only({"files"})
    files = c.get(
        "files",
        list,
        check=lambda v: bool(v) and all(isinstance(f, str) for f in v),
        expect="a non-empty list of paths",
    )
    return DebFilesSource(files=tuple(_relative(c.path, f) for f in files))


def _local_source(c: _Checker) -> LocalSource:
    c.only({"vmlinuz", "modules", "config"})
    config = c.get("config", str, None)
    return LocalSource(
        vmlinuz=_relative(c.path, c.get("vmlinuz", str)),
        modules=_relative(c.path, c.get("modules", str)),
        config=_relative(c.path, config) if config else None,
    )


SOURCE_KINDS: dict[str, Callable[[_Checker], KernelSource]] = {
    "debian": _debian_source,
    "deb": _deb_source,
    "local": _local_source,
}

KERNEL_KEYS = {
    "name",
    "note",
    "tags",
    "source",
    "timeout",
    "boot_timeout",
    "memory",
    "cpus",
    "append",
    "tcg_cpu",
}


def _source(c: _Checker) -> KernelSource:
    if len(c.data) != 1:
        c.fail(None, f"give exactly one source kind of: {', '.join(SOURCE_KINDS)}")
    (kind,) = c.data
    if kind not in SOURCE_KINDS:
        c.fail(str(kind), f"unknown source kind; known: {', '.join(SOURCE_KINDS)}")
    return SOURCE_KINDS[kind](c.child(kind))


def _kernel(path: Path, index: int, raw: object, defaults: Mapping[str, Any]) -> KernelSpec:
    name = raw.get("name") if isinstance(raw, dict) else None
    label = name if isinstance(name, str) else f"#{index + 1}"
    c = _Checker(path, label, "", raw)
    c.only(KERNEL_KEYS)
    name = c.get(
        "name",
        str,
        check=lambda v: bool(KERNEL_NAME.match(v)),
        expect="a name of letters, digits, . _ -",
    )
    merged = {**defaults, **c.data}
    d = _Checker(path, label, "", merged)
    tags = d.get(
        "tags",
        list,
        [],
        check=lambda v: all(isinstance(t, str) for t in v),
        expect="a list of strings",
    )
    return KernelSpec(
        name=name,
        note=c.get("note", str),
        source=_source(c.child("source")),
        tags=tuple(tags),
        timeout=d.get("timeout", float, 1200.0, check=lambda v: v > 0, expect="positive"),
        boot_timeout=d.get("boot_timeout", float, 300.0, check=lambda v: v > 0, expect="positive"),
        memory=d.get(
            "memory", str, "2G", check=lambda v: bool(MEMORY.match(v)), expect="like 2G or 1536M"
        ),
        cpus=d.get("cpus", int, 2, check=lambda v: v > 0, expect="positive"),
        append=d.get("append", str, ""),
        tcg_cpu=d.get("tcg_cpu", str, "max,-cx16"),
    )


def parse_config(path: Path, text: str) -> MatrixConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, None, f"not valid YAML: {exc}") from exc
    top = _Checker(path, None, "", data)
    top.only({"mirror", "defaults", "kernels"})
    defaults = top.child("defaults") if "defaults" in top.data else None
    if defaults is not None:
        defaults.only({"timeout", "boot_timeout", "memory", "cpus", "tags", "append", "tcg_cpu"})
    raw_kernels = top.get("kernels", list, check=bool, expect="a non-empty list")
    kernels = [
        _kernel(path, i, k, defaults.data if defaults else {}) for i, k in enumerate(raw_kernels)
    ]
    seen: set[str] = set()
    for k in kernels:
        if k.name in seen:
            raise ConfigError(str(path), k.name, "name", "defined twice")
        seen.add(k.name)
    return MatrixConfig(
        path=path,
        kernels=tuple(kernels),
        mirror=top.get("mirror", str, None),
        defaults=defaults.data if defaults else {},
    )


def load_config(path: Path) -> MatrixConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
    return parse_config(path, text)
