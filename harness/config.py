"""kernels.yaml: declarative kernel specs, validated when loaded.

A kernel's *source* says where its image and modules come from. Each kind of source is a small
frozen dataclass registered in ``SOURCE_KINDS`` with the keys it accepts; adding a kind (a local
RHEL ``kernel-core`` + ``kernel-modules`` RPM pair, say) means adding one dataclass, one entry in
that table and one installer in :mod:`harness.fetch.kernels`, without reshaping the file format.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from harness.errors import ConfigError

DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid")
DEBIAN_ALIASES = ("oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental")
DEBIAN_SUITE_SUFFIXES = ("", "-updates", "-backports", "-backports-sloppy", "-proposed-updates")
KERNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # used with fullmatch: no trailing \n
# A name is a directory of results/ (and ".<name>.old" beside it while swapped in), and part
# of the guest's temporary directory, /tmp/mountcompat-<name>.XXXXXXXX, where virtme-ng makes
# virtiofsd's socket, virtmeXXXXXXXX. A socket's path holds at most 107 bytes: with /tmp, a
# name of 66 bytes at most. A longer one would pass the check and fail only in the run.
MAX_NAME_BYTES = 64
MEMORY = re.compile(r"([0-9]+)([MG])")
# Names a kernel cannot have: the host tests' column, and the files and folders a results
# directory holds beside the kernels' own.
RESERVED_NAMES = frozenset(
    {
        "host",
        "matrix.json",
        "previous-matrix.json",
        "run.json",
        "report.html",
        "report-screenshot.png",
        "bench.json",
        "history.json",
        "attempts",
    }
)
ARCHITECTURES = ("x86_64", "arm64")
# QEMU's CPU under TCG, per architecture, measured old against new (docs/performance.md).
# x86_64: qemu64 with SSSE3, SSE4.1, SSE4.2 and POPCNT, an x86-64-v2 without AVX and without
# cx16. No AVX: glibc and Python take their SSE paths, which TCG emulates with less work than
# AVX2's (bare boot x0.77, full run x0.89 against "max,-cx16", every cell the same). No cx16:
# bookworm's QEMU 7.2 emulates cmpxchg16b wrongly under multi-threaded TCG, and 6.12's SLUB,
# which uses it on every allocation, oopses at boot (double fault in __kmalloc_noprof, 3 boots
# in 3). RDRAND and RDSEED, which "max" had and plain qemu64 lacks: without them 5.10's random
# pool is not ready for seconds, and each getrandom() of mkfs.ext4 or mkfs.erofs waits for it
# (rhel9-era's run 80.7 -> 42.1 s). No SVM: it only makes udev load kvm_amd in every guest.
# arm64: "max" with pauth-impdef=on: pointer authentication stays, with QEMU's cheap hash
# instead of the architected QARMA5, which is slow to emulate (x0.51 boot, x0.47 run).
TCG_CPU = {
    "x86_64": "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+rdrand,+rdseed,-svm",
    "arm64": "max,pauth-impdef=on",
}
# What an x86_64 guest is spared of the machine QEMU and vng give it, under KVM and TCG alike
# (bare boot of 6.12 under TCG x0.91 and x0.94 more; docs/performance.md): -nodefaults drops
# q35's empty CD-ROM (no ATAPI probe, no sr_mod and cdrom modules); the blacklist keeps udev
# from loading drivers of hardware nothing in the guest uses: ahci (q35's SATA controller,
# with no disk on it: the suites' disk is virtio), i6300esb (the watchdog vng adds, never
# opened) and powernow_k8 (frequency scaling of an emulated AMD CPU).
QEMU_OPTS = {"x86_64": "-nodefaults", "arm64": ""}
GUEST_APPEND = {"x86_64": "modprobe.blacklist=ahci,i6300esb,powernow_k8", "arm64": ""}
PICKS = ("newest", "oldest")
MAX_CONFIG_BYTES = 1 << 20  # kernels.yaml is a few KiB; a file this large is not one
FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
MIN_MEMORY_MIB = 256  # below this no Debian cloud kernel boots with virtme-ng's initramfs
MAX_CPUS = 255  # QEMU's limit for x86 "pc" and arm "virt" guests with virtme-ng's setup


def memory_mib(text: str) -> int:
    match = MEMORY.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not like 2G or 1536M")
    return int(match.group(1)) * (1024 if match.group(2) == "G" else 1)


def known_debian_suites() -> tuple[str, ...]:
    suites = [c + s for c in DEBIAN_CODENAMES if c != "sid" for s in DEBIAN_SUITE_SUFFIXES]
    return (*suites, "sid", *DEBIAN_ALIASES)


@dataclass(frozen=True)
class DebianSource:
    """A package (or a glob, resolved to the newest match) in a suite of a Debian mirror, or
    in the first of several suites that has the newest (oldest) match."""

    suite: str | tuple[str, ...]
    package: str
    mirror: str | None = None
    pick: str = "newest"  # of the packages the glob matches: the newest or the oldest version
    kind: str = "debian"

    def describe(self) -> str:
        which = f" ({self.pick} match)" if self.pick != "newest" else ""
        return f"{self.package}{which} from Debian {' or '.join(self.suites)}"

    @property
    def suites(self) -> tuple[str, ...]:
        return (self.suite,) if isinstance(self.suite, str) else self.suite


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


@dataclass(frozen=True)
class RpmSource:
    """A kernel from a yum/dnf repository, as RPM-based distributions ship it: ``package``
    (kernel-core) holds vmlinuz under /lib/modules/<release>/, and ``modules`` (kernel-modules-core,
    kernel-modules) hold the modules, all of one version-release. ``version`` is a glob on
    "version-release"; of its matches the newest (or oldest) by rpm's own ordering is taken.
    ``key`` is the distribution's ASCII-armored signing key: every RPM must carry a signature
    that verifies against it, and so must repodata/repomd.xml where the repository signs it."""

    repo: str
    key: Path
    package: str = "kernel-core"
    modules: tuple[str, ...] = ("kernel-modules-core", "kernel-modules")
    version: str = "*"
    pick: str = "newest"
    kind: str = "rpm"

    def describe(self) -> str:
        which = f" ({self.pick} match)" if self.pick != "newest" else ""
        return f"{self.package} {self.version}{which} from {self.repo}"


KernelSource = DebianSource | DebFilesSource | LocalSource | RpmSource


@dataclass(frozen=True)
class KernelSpec:
    name: str
    note: str
    source: KernelSource
    tags: tuple[str, ...] = ()
    timeout: float = 1200.0
    boot_timeout: float = 300.0
    memory: str = "2G"
    cpus: int = 1
    append: str = GUEST_APPEND["x86_64"]
    tcg_cpu: str = TCG_CPU["x86_64"]
    qemu_opts: str = QEMU_OPTS["x86_64"]  # added to vng's QEMU command line
    arch: str = "x86_64"
    # Fetched from a network this machine may not reach (a distribution's own repository):
    # when it cannot be reached the kernel ends "unreachable", which fails no local run.
    needs_network: bool = False
    # The kernels this one stands in for (rhel9-era for the real el9): the report says
    # which cells of the two differ, once a run has had both.
    stands_in_for: tuple[str, ...] = ()


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
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(str(self.path), twice[0], None, "named more than once")
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


def is_mirror_url(text: str) -> bool:
    return bool(re.fullmatch(r"(https?|file)://[^\s]+", text))


def _mirror(c: _Checker, key: str) -> str | None:
    value: str | None = c.get(
        key, str, None, check=is_mirror_url, expect="an http://, https:// or file:// URL"
    )
    return value


def _debian_source(c: _Checker) -> DebianSource:
    c.only({"suite", "package", "mirror", "pick"})
    raw = c.data.get("suite")
    suites = raw if isinstance(raw, list) else [c.get("suite", str)]
    if not suites or not all(isinstance(s, str) for s in suites):
        c.fail("suite", "give a suite, or a non-empty list of suites")
    for suite in suites:
        if suite not in known_debian_suites():
            c.fail("suite", f"unknown suite {suite!r}; known: {', '.join(known_debian_suites())}")
    return DebianSource(
        suite=suites[0] if len(suites) == 1 else tuple(suites),
        package=c.get("package", str),
        mirror=_mirror(c, "mirror"),
        pick=c.get("pick", str, "newest", check=lambda v: v in PICKS, expect=" or ".join(PICKS)),
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


def _rpm_source(c: _Checker) -> RpmSource:
    c.only({"repo", "key", "package", "modules", "version", "pick"})
    modules = c.get(
        "modules",
        list,
        ["kernel-modules-core", "kernel-modules"],
        check=lambda v: all(isinstance(m, str) and m for m in v),
        expect="a list of package names",
    )
    repo: str = c.get(
        "repo", str, check=is_mirror_url, expect="an http://, https:// or file:// URL"
    )
    return RpmSource(
        repo=repo if repo.endswith("/") else repo + "/",
        key=_relative(c.path, c.get("key", str)),
        package=c.get("package", str, "kernel-core", check=bool, expect="a package name"),
        modules=tuple(modules),
        version=c.get("version", str, "*", check=bool, expect="a glob on version-release"),
        pick=c.get("pick", str, "newest", check=lambda v: v in PICKS, expect=" or ".join(PICKS)),
    )


SOURCE_KINDS: dict[str, Callable[[_Checker], KernelSource]] = {
    "debian": _debian_source,
    "rpm": _rpm_source,
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
    "qemu_opts",
    "arch",
    "needs_network",
    "stands_in_for",
}
DEFAULT_KEYS = {
    "timeout",
    "boot_timeout",
    "memory",
    "cpus",
    "tags",
    "append",
    "tcg_cpu",
    "qemu_opts",
    "arch",
}


def _name(c: _Checker) -> str:
    name: str = c.get(
        "name",
        str,
        check=lambda v: bool(KERNEL_NAME.fullmatch(v)),
        expect="a name of letters, digits, . _ - (no spaces or control characters)",
    )
    if name in RESERVED_NAMES:
        c.fail("name", f"{name!r} is reserved (results/ uses it); choose another name")
    if len(name.encode()) > MAX_NAME_BYTES:
        c.fail("name", f"{len(name.encode())} bytes long; at most {MAX_NAME_BYTES}")
    return name


def _append(value: str) -> bool:
    # vng passes its own init= to start its guest; one given here would be dropped silently.
    return not any(word.startswith("init=") for word in value.split())


# Options the harness or vng set themselves: the CPU is tcg_cpu's, the accelerator the probe's,
# the kernel, its command line and the machine vng's.
_OWN_OPTIONS = {"cpu", "accel", "enable-kvm", "machine", "M", "kernel", "append", "initrd"}
# vng pastes --qemu-opts into a shell command unquoted: nothing a shell would read as more.
_QEMU_WORD = re.compile(r"[A-Za-z0-9_.,=:/+@%-]+")


def _qemu_opts(value: str) -> bool:
    words = value.split()
    if not all(_QEMU_WORD.fullmatch(w) for w in words):
        return False
    # A first word without its dash would be taken by QEMU for a disk image.
    if words and not words[0].startswith("-"):
        return False
    return not any(w.lstrip("-") in _OWN_OPTIONS for w in words if w.startswith("-"))


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


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
    if len(label) > MAX_NAME_BYTES:
        label = f"#{index + 1} ({label[:20]}...)"
    c = _Checker(path, label, "", raw)
    c.only(KERNEL_KEYS)
    name = _name(c)
    merged = {**defaults, **c.data}
    d = _Checker(path, label, "", merged)
    arch = d.get(
        "arch", str, "x86_64", check=lambda v: v in ARCHITECTURES, expect=" or ".join(ARCHITECTURES)
    )
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
        timeout=d.get("timeout", float, 1200.0, check=_finite_positive, expect="a positive number"),
        boot_timeout=d.get(
            "boot_timeout", float, 300.0, check=_finite_positive, expect="a positive number"
        ),
        memory=d.get(
            "memory",
            str,
            "2G",
            check=lambda v: bool(MEMORY.fullmatch(v)) and memory_mib(v) >= MIN_MEMORY_MIB,
            expect=f"like 2G or 1536M, at least {MIN_MEMORY_MIB}M",
        ),
        cpus=d.get("cpus", int, 1, check=lambda v: 0 < v <= MAX_CPUS, expect=f"1 to {MAX_CPUS}"),
        append=d.get(
            "append",
            str,
            GUEST_APPEND[arch],
            check=_append,
            expect="free of init= (vng sets its own init)",
        ),
        tcg_cpu=d.get("tcg_cpu", str, TCG_CPU.get(arch, "max")),
        qemu_opts=d.get(
            "qemu_opts",
            str,
            QEMU_OPTS[arch],
            check=_qemu_opts,
            expect="QEMU options in plain words, none of -cpu, -accel, -machine, -kernel, -append",
        ),
        arch=arch,
        needs_network=c.get("needs_network", bool, False),
        stands_in_for=tuple(
            c.get(
                "stands_in_for",
                list,
                [],
                check=lambda v: all(isinstance(n, str) and KERNEL_NAME.fullmatch(n) for n in v),
                expect="a list of kernel names",
            )
        ),
    )


class DuplicateKey(yaml.constructor.ConstructorError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error. PyYAML
    keeps the last one silently: a kernel's second ``timeout``, or a second ``kernels:`` list
    that drops the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self._check_unique(node)
        return super().construct_mapping(node, deep=deep)

    def _check_unique(self, node: yaml.MappingNode) -> None:
        # Checked before the merge keys (<<) are flattened in: a key may override a merged one.
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            if key in first:
                raise DuplicateKey(
                    problem=f"key {key!r} given twice (first on line {first[key]})",
                    problem_mark=key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line, where PyYAML's own message quotes the offending lines below it."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem is None:
        return f"not valid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}: " if mark else ""
    what = "" if isinstance(exc, DuplicateKey) else "not valid YAML: "
    return f"{where}{what}{exc.problem}"


def parse_config(path: Path, text: str) -> MatrixConfig:
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, None, yaml_problem(exc)) from exc
    top = _Checker(path, None, "", data)
    top.only({"mirror", "defaults", "kernels"})
    defaults = top.child("defaults") if "defaults" in top.data else None
    if defaults is not None:
        defaults.only(DEFAULT_KEYS)
    raw_kernels = top.get("kernels", list, check=bool, expect="a non-empty list")
    kernels = [
        _kernel(path, i, k, defaults.data if defaults else {}) for i, k in enumerate(raw_kernels)
    ]
    seen: set[str] = set()
    for k in kernels:
        if k.name in seen:
            raise ConfigError(str(path), k.name, "name", "defined twice")
        seen.add(k.name)
    for k in kernels:
        for real in k.stands_in_for:
            if real not in seen or real == k.name:
                raise ConfigError(
                    str(path), k.name, "stands_in_for", f"{real!r} is not another kernel here"
                )
    return MatrixConfig(
        path=path,
        kernels=tuple(kernels),
        mirror=_mirror(top, "mirror"),
        defaults=defaults.data if defaults else {},
    )


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. Anything else is refused before
    it is read: a FIFO would block the run until a writer came, /dev/zero never ends."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
            raise ConfigError(str(path), None, None, f"{kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise ConfigError(str(path), None, None, f"larger than {limit >> 20} MiB")
    return raw


def load_config(path: Path) -> MatrixConfig:
    raw = _read_regular(path, MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, None, f"not UTF-8 (byte {exc.start})") from exc
    return parse_config(path, text)
