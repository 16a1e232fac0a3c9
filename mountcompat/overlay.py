"""Overlayfs, with the layer-passing strategies of every kernel generation.

Feature ``overlay.layers``, preferred strategy first:

``fd-opath``
    each layer an O_PATH fd through FSCONFIG_SET_FD, ``lowerdir+``/``datadir+``/``upperdir``/
    ``workdir``: needs 6.13 for fd layers and 6.15 for O_PATH fds (EBADF on 6.13/6.14).
``fd-reopen``
    the same with the directories opened O_RDONLY: 6.13 and 6.14.
``lowerdir-plus``
    one ``lowerdir+`` (``datadir+``) string per layer: 6.7 (and 6.6.23). No length limit on
    the whole, each path on its own.
``lowerdir-string``
    one escaped ``lowerdir=a:b::c`` string through fsconfig: every kernel with fsopen, but each
    value is at most 255 bytes, and before 6.5 (the legacy context) no value may hold a comma
    and all options share one page.
``mount2-data``
    mount(2) with the escaped data string: every kernel, one page in all.

overlayfs answers EINVAL both for a layer mode it lacks and for a wrong request (one lower
layer and no upper, a file as a layer, more than 500 layers, a workdir inside the upperdir):
each strategy's probe, a throwaway overlay of empty directories on a private tmpfs, tells
which. A wrong request is raised with the kernel's reason, from the context fd or, where
overlayfs only logs it, the kernel log.

Layers passed as fds show up in mountinfo as ``lowerdir+=/``-like options: the paths are lost
there (a known quirk), so tests check content, not the option string.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.errors import OverlayOptionsTooLong
from mountcompat.fscontext import FsContext
from mountcompat.mountapi import create_superblock, fsmount_attributes_known
from mountcompat.mounts import AttachedMount, MountAttr, check_attrs, ms_flags
from mountcompat.scratch import privately
from mountcompat.strategy import Probe, Strategy, Unsupported, feature


@dataclass(frozen=True)
class OverlaySpec:
    lower: tuple[Path, ...]
    upper: Path | None = None
    work: Path | None = None
    data: tuple[Path, ...] = ()  # data-only lower layers (6.5): reachable only by redirects
    options: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lower:
            raise ValueError("an overlay needs at least one lower layer")
        if (self.upper is None) != (self.work is None):
            raise ValueError("upper and work go together")


def escape_layer(path: str | os.PathLike[str]) -> str:
    """Escape a path for overlayfs option strings: backslash, comma and colon."""
    text = os.fspath(path)
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def escape_backslashes(path: str | os.PathLike[str]) -> str:
    """``upperdir`` and ``workdir`` strings are unescaped by the kernel (ovl_mount_dir), one
    path each: only a backslash needs escaping there. ``lowerdir+`` and ``datadir+`` are
    taken literally (seen on 6.18: an escaped backslash there gives ENOENT)."""
    return os.fspath(path).replace("\\", "\\\\")


def lowerdir_value(spec: OverlaySpec) -> str:
    value = ":".join(escape_layer(p) for p in spec.lower)
    if spec.data:
        value += "::" + "::".join(escape_layer(p) for p in spec.data)
    return value


def data_string(spec: OverlaySpec) -> str:
    words = [f"lowerdir={lowerdir_value(spec)}"]
    if spec.upper is not None and spec.work is not None:
        words += [f"upperdir={escape_layer(spec.upper)}", f"workdir={escape_layer(spec.work)}"]
    words += [k if v is None else f"{k}={v}" for k, v in spec.options.items()]
    return ",".join(words)


# --- how each strategy fills a context -----------------------------------------------------

SetParam = Callable[[FsContext, str, Path], None]
Filler = Callable[[FsContext, OverlaySpec, ExitStack], None]
# What overlayfs logs starts with one of these ("overlayfs: ..." from pr_err, "overlay: ..."
# from the context log of a mount(2) call).
LOG_PREFIXES = ("overlayfs:", "overlay:")


def _open_layer(path: Path, mode: int) -> int:
    return os.open(path, mode | os.O_DIRECTORY | os.O_CLOEXEC)


def _fd_setter(mode: int, fds: ExitStack) -> SetParam:
    def set_fd(ctx: FsContext, key: str, path: Path) -> None:
        fd = _open_layer(path, mode)
        fds.callback(os.close, fd)
        ctx.set_fd(key, fd)

    return set_fd


def _fitting(key: str, value: str) -> str:
    """A value fsconfig can carry: a longer one is refused with a bare EINVAL, which would
    look like a wrong request. Said here instead, as a limit of the strategy."""
    size = len(os.fsencode(value))
    if size > sys_.FSCONFIG_VALUE_MAX:
        raise Unsupported(
            errno.E2BIG,
            f"{key} is {size} bytes; fsconfig takes at most {sys_.FSCONFIG_VALUE_MAX} bytes "
            "of a value (lowerdir+ takes one path per value; mount(2) one page in all)",
        )
    return value


def _set_path_string(ctx: FsContext, key: str, path: Path) -> None:
    # upperdir and workdir are unescaped by the kernel, lowerdir+ and datadir+ are not.
    literal = key in ("lowerdir+", "datadir+")
    ctx.set_string(key, _fitting(key, os.fspath(path) if literal else escape_backslashes(path)))


def _fill_per_layer(ctx: FsContext, spec: OverlaySpec, set_param: SetParam) -> None:
    """Every layer as a parameter of its own (lowerdir+, datadir+, upperdir, workdir)."""
    for layer in spec.lower:
        set_param(ctx, "lowerdir+", layer)
    for layer in spec.data:
        set_param(ctx, "datadir+", layer)
    if spec.upper is not None and spec.work is not None:
        set_param(ctx, "upperdir", spec.upper)
        set_param(ctx, "workdir", spec.work)


def _fill_fd_opath(ctx: FsContext, spec: OverlaySpec, fds: ExitStack) -> None:
    _fill_per_layer(ctx, spec, _fd_setter(os.O_PATH, fds))


def _fill_fd_reopen(ctx: FsContext, spec: OverlaySpec, fds: ExitStack) -> None:
    _fill_per_layer(ctx, spec, _fd_setter(os.O_RDONLY, fds))


def _fill_lowerdir_plus(ctx: FsContext, spec: OverlaySpec, fds: ExitStack) -> None:
    _fill_per_layer(ctx, spec, _set_path_string)


def _fill_lowerdir_string(ctx: FsContext, spec: OverlaySpec, fds: ExitStack) -> None:
    ctx.set_string("lowerdir", _fitting("lowerdir", lowerdir_value(spec)))
    if spec.upper is not None and spec.work is not None:
        ctx.set_string("upperdir", _fitting("upperdir", escape_layer(spec.upper)))
        ctx.set_string("workdir", _fitting("workdir", escape_layer(spec.work)))


@contextlib.contextmanager
def _reason_from_kernel_log() -> Iterator[None]:
    """overlayfs gives many refusals only to the kernel log (pr_err), and a mount(2) call has
    no context fd at all: the lines it logged during the attempt go into the error."""
    with sys_.KernelLogCursor() as log:
        try:
            yield
        except OSError as exc:
            sys_.add_kernel_messages(exc, log.lines(LOG_PREFIXES))
            raise


def _through_context(
    fill: Filler, spec: OverlaySpec, target: Path, attrs: MountAttr
) -> AttachedMount:
    with _reason_from_kernel_log(), ExitStack() as fds, FsContext.open("overlay") as ctx:
        fill(ctx, spec, fds)
        ctx.set_options(spec.options)
        create_superblock(ctx)
        with ctx.mount(attrs) as detached:
            return detached.attach(target)


# --- the strategies ---------------------------------------------------------------------


def _fd_opath(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """Layers as O_PATH fds (6.15; stable backports to 6.13.y/6.14.y). Before 6.5 the legacy
    context refuses any fd parameter: EOPNOTSUPP (seen on 5.10); 6.5 to 6.12 have no fd
    layers: EINVAL, "Bad value for lowerdir+"; 6.12 to 6.14 refuse O_PATH fds: EBADF. EINVAL
    and EBADF are also what a wrong request gets, so a throwaway overlay decides. Preferred:
    no path is parsed, so no escaping, no length limit, and the layer cannot be swapped
    between check and use."""
    return _through_context(_fill_fd_opath, spec, target, attrs)


def _fd_reopen(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """Layers as fds opened O_RDONLY (6.13, 6.14, where O_PATH fds give EBADF). Before 6.13:
    EINVAL (decided by a throwaway overlay), or EOPNOTSUPP before 6.5, as for fd-opath."""
    return _through_context(_fill_fd_reopen, spec, target, attrs)


def _lowerdir_plus(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """One ``lowerdir+``/``datadir+`` string per layer (6.7, backported to 6.6.23). Before:
    EINVAL for the unknown key (6.5, 6.6), or at CMD_CREATE from the legacy context (before 6.5,
    "unrecognized mount option"); a throwaway overlay tells that from a wrong request. Needed
    on 6.7 to 6.12, where fd layers are refused: each layer is its own parameter, so the
    255-byte value and one-page limits apply per path only."""
    return _through_context(_fill_lowerdir_plus, spec, target, attrs)


def _lowerdir_string(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """One escaped ``lowerdir=a:b::c`` through fsconfig (5.2 on). fsconfig copies at most 255
    bytes of a value (a longer one is refused here, E2BIG, before the kernel's bare EINVAL);
    before 6.5 overlayfs sits on the legacy context, which rejects a value holding a comma
    ("Legacy: Option contained comma", EINVAL) and data-only layers: throwaway overlays with a
    comma, with a data-only layer, tell those from a wrong request. Needed on 5.2 to 6.6
    kernels where lowerdir+ is unknown."""
    return _through_context(_fill_lowerdir_string, spec, target, attrs)


def _mount2_data(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """mount(2) with one escaped data string: every kernel. Needed where fsopen is missing or
    a path holds a comma before 6.5. The data is one page: longer options raise
    OverlayOptionsTooLong instead of reaching the kernel, which would cut them off. Data-only
    layers before 6.5 get EINVAL, told apart from a wrong request by a throwaway mount."""
    data = data_string(spec)
    size = len(os.fsencode(data))  # as the kernel will get it: any name, UTF-8 or not
    if size >= C.PAGE_SIZE:
        raise OverlayOptionsTooLong("mount2-data", size, C.PAGE_SIZE)
    with _reason_from_kernel_log():
        sys_.mount("overlay", target, "overlay", ms_flags(attrs), data)
    return AttachedMount(target)


# --- probes: throwaway overlays on a private tmpfs ---------------------------------------

# What a kernel without the probed way of passing layers answers a valid request with.
_MISSING = frozenset({errno.EINVAL, errno.EBADF, errno.EOPNOTSUPP, errno.ENOSYS})


@contextlib.contextmanager
def _scratch_tmpfs() -> Iterator[Path]:
    """A tmpfs of its own on a fresh private directory, detached and removed afterwards: the
    caller's filesystems may be overlay themselves, or read-only, or full."""
    base = Path(tempfile.mkdtemp(prefix="mountcompat-probe."))
    try:
        flags = C.MS_NOSUID | C.MS_NODEV | C.MS_NOEXEC
        sys_.mount("mountcompat-probe", base, "tmpfs", flags, "size=1m,mode=0700")
        try:
            yield base
        finally:
            sys_.umount2(base, C.MNT_DETACH)
    finally:
        os.rmdir(base)


def _scratch_spec(base: Path, data: bool, comma: bool) -> OverlaySpec:
    """Two empty lower layers (one alone, without an upper, is refused), a comma in a name if
    asked, and a data-only layer with metacopy=on (6.12 requires it) if asked."""
    names = ["lower,1" if comma else "lower1", "lower2", *(["data"] if data else [])]
    for name in names:
        (base / name).mkdir()
    return OverlaySpec(
        lower=(base / names[0], base / names[1]),
        data=(base / "data",) if data else (),
        options={"metacopy": "on"} if data else {},
    )


# The probes' scratch tmpfs and overlay are mounted in a private namespace of a helper
# thread (mountcompat.scratch): no other process, nor a peer namespace, sees them.


@privately
def _context_works(fill: Filler, data: bool, comma: bool) -> bool:
    """Filled as the strategy fills it, up to CMD_CREATE and no further: the superblock is
    never mounted and goes with the context."""
    with _scratch_tmpfs() as base, ExitStack() as fds:
        spec = _scratch_spec(base, data, comma)
        try:
            with FsContext.open("overlay") as ctx:
                fill(ctx, spec, fds)
                ctx.set_options(spec.options)
                ctx.create()
        except OSError as exc:
            if exc.errno in _MISSING:
                return False
            raise
    return True


@privately
def _mount2_works(data: bool, comma: bool) -> bool:
    with _scratch_tmpfs() as base:
        spec = _scratch_spec(base, data, comma)
        target = base / "merged"
        target.mkdir()
        try:
            sys_.mount("overlay", target, "overlay", 0, data_string(spec))
        except OSError as exc:
            if exc.errno in _MISSING:
                return False
            raise
        sys_.umount2(target, C.MNT_DETACH)
    return True


@dataclass(frozen=True)
class _LayerProbes:
    """What one strategy asks the kernel: its way of passing layers at all (``base``), with
    data-only layers, with a comma in a path (only where strings carry the paths)."""

    base: Probe | None
    data: Probe
    comma: Probe | None = None

    def for_request(self, spec: OverlaySpec, target: Path, attrs: MountAttr) -> list[Probe]:
        probes = [self.data] if spec.data else []
        if self.comma is not None and _has_comma(spec):
            probes.append(self.comma)
        if self.base is not None:  # through fsmount, whose attributes may be unknown
            probes.extend(fsmount_attributes_known(attrs))
        return probes


def _has_comma(spec: OverlaySpec) -> bool:
    paths = [*spec.lower, *spec.data, *(p for p in (spec.upper, spec.work) if p is not None)]
    return any("," in os.fspath(p) for p in paths)


def _context_probes(how: str, fill: Filler, comma: bool = False) -> _LayerProbes:
    def probe(what: str, data: bool, with_comma: bool) -> Probe:
        return Probe(what, functools.partial(_context_works, fill, data, with_comma))

    return _LayerProbes(
        base=probe(f"overlay layers {how}", False, False),
        data=probe(f"overlay data-only layers {how}", True, False),
        comma=probe(f"a comma in an overlay path {how}", False, True) if comma else None,
    )


FD_OPATH_PROBES = _context_probes("as O_PATH fds (6.15)", _fill_fd_opath)
FD_REOPEN_PROBES = _context_probes("as opened fds (6.13)", _fill_fd_reopen)
LOWERDIR_PLUS_PROBES = _context_probes("as lowerdir+ strings (6.7)", _fill_lowerdir_plus)
LOWERDIR_STRING_PROBES = _context_probes(
    "in one lowerdir string", _fill_lowerdir_string, comma=True
)
MOUNT2_PROBES = _LayerProbes(
    base=None,
    data=Probe(
        "overlay data-only layers through mount(2) (6.5)", lambda: _mount2_works(True, False)
    ),
)


def _strategy(
    name: str,
    run: Callable[[OverlaySpec, Path, MountAttr], AttachedMount],
    probes: _LayerProbes,
    ambiguous: frozenset[int],
    unsupported: frozenset[int] = frozenset({errno.ENOSYS}),
) -> Strategy[AttachedMount]:
    return Strategy(
        name,
        run,
        unsupported=unsupported,
        # Both mean the kernel lacks the strategy outright (no fsopen; a legacy context).
        cache_on=unsupported,
        ambiguous=ambiguous,
        probe=probes.base,
        request_probes=probes.for_request,
    )


_EINVAL = frozenset({errno.EINVAL})
OVERLAY_LAYERS = feature(
    "overlay.layers",
    "pass overlayfs its layers",
    [
        # EOPNOTSUPP can only be the legacy context (before 6.5) refusing SET_FD: fs/fsopen.c
        # answers every fd parameter of a legacy context so, and overlayfs itself never
        # returns it for a parameter.
        _strategy(
            "fd-opath",
            _fd_opath,
            FD_OPATH_PROBES,
            ambiguous=frozenset({errno.EINVAL, errno.EBADF}),
            unsupported=frozenset({errno.EOPNOTSUPP, errno.ENOSYS}),
        ),
        _strategy(
            "fd-reopen",
            _fd_reopen,
            FD_REOPEN_PROBES,
            ambiguous=_EINVAL,
            unsupported=frozenset({errno.EOPNOTSUPP, errno.ENOSYS}),
        ),
        _strategy("lowerdir-plus", _lowerdir_plus, LOWERDIR_PLUS_PROBES, ambiguous=_EINVAL),
        _strategy("lowerdir-string", _lowerdir_string, LOWERDIR_STRING_PROBES, ambiguous=_EINVAL),
        _strategy(
            "mount2-data", _mount2_data, MOUNT2_PROBES, ambiguous=_EINVAL, unsupported=frozenset()
        ),
    ],
)


def mount_overlay(
    spec: OverlaySpec,
    target: str | os.PathLike[str],
    attrs: MountAttr = MountAttr.none(),
    force: str | None = None,
) -> AttachedMount:
    check_attrs(attrs)
    return OVERLAY_LAYERS(spec, Path(target), attrs, force=force)
