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
    value is at most 256 bytes, and before 6.5 (the legacy context) no value may hold a comma
    and all options share one page.
``mount2-data``
    mount(2) with the escaped data string: every kernel, one page in all.

Layers passed as fds show up in mountinfo as ``lowerdir+=/``-like options: the paths are lost
there (a known quirk), so tests check content, not the option string.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat.errors import OverlayOptionsTooLong
from mountcompat.fscontext import FsContext
from mountcompat.mountapi import create_superblock
from mountcompat.mounts import AttachedMount, MountAttr, ms_flags
from mountcompat.strategy import Strategy, Unsupported, feature


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


@contextlib.contextmanager
def _data_only_refusal(spec: OverlaySpec) -> Iterator[None]:
    """Before 6.5 overlayfs has no data-only layers and refuses ``::`` with EINVAL: for a
    request that has them, that EINVAL means "not on this kernel"."""
    try:
        yield
    except OSError as exc:
        if spec.data and exc.errno == errno.EINVAL:
            raise Unsupported(
                errno.EINVAL,
                "data-only layers (::) refused: "
                + "; ".join(getattr(exc, "kernel_messages", []) or [str(exc)]),
            ) from exc
        raise


def _finish(ctx: FsContext, spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    ctx.set_options(spec.options)
    create_superblock(ctx)
    with ctx.mount(attrs) as detached:
        return detached.attach(target)


def _per_layer(
    spec: OverlaySpec,
    target: Path,
    attrs: MountAttr,
    set_param: Callable[[FsContext, str, Path], None],
) -> AttachedMount:
    """Every layer as a parameter of its own (lowerdir+, datadir+, upperdir, workdir)."""
    with FsContext.open("overlay") as ctx:
        for layer in spec.lower:
            set_param(ctx, "lowerdir+", layer)
        for layer in spec.data:
            set_param(ctx, "datadir+", layer)
        if spec.upper is not None and spec.work is not None:
            set_param(ctx, "upperdir", spec.upper)
            set_param(ctx, "workdir", spec.work)
        return _finish(ctx, spec, target, attrs)


def _with_fds(spec: OverlaySpec, target: Path, attrs: MountAttr, mode: int) -> AttachedMount:
    with ExitStack() as stack:

        def set_fd(ctx: FsContext, key: str, path: Path) -> None:
            fd = os.open(path, mode | os.O_DIRECTORY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            ctx.set_fd(key, fd)

        return _per_layer(spec, target, attrs, set_fd)


def _set_path_string(ctx: FsContext, key: str, path: Path) -> None:
    # upperdir and workdir are unescaped by the kernel, lowerdir+ and datadir+ are not.
    literal = key in ("lowerdir+", "datadir+")
    ctx.set_string(key, os.fspath(path) if literal else escape_backslashes(path))


def _fd_opath(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """Layers as O_PATH fds (6.15; stable backports to 6.13.y/6.14.y). Before 6.5 the legacy
    context refuses any fd parameter: EOPNOTSUPP (seen on 5.10); 6.5 to 6.12 have no fd
    layers: EINVAL, "Bad value for lowerdir+"; 6.13 and 6.14 take only real opened files:
    EBADF. Preferred: no path is parsed, so no escaping, no length limit, and
    the layer cannot be swapped between check and use."""
    return _with_fds(spec, target, attrs, os.O_PATH)


def _fd_reopen(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """Layers as fds opened O_RDONLY (6.13, 6.14, where O_PATH fds give EBADF). Before 6.13:
    EINVAL, or EOPNOTSUPP before 6.5, as for fd-opath."""
    return _with_fds(spec, target, attrs, os.O_RDONLY)


def _lowerdir_plus(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """One ``lowerdir+``/``datadir+`` string per layer (6.7, backported to 6.6.23). Before:
    EINVAL for the unknown key (6.5, 6.6), or at CMD_CREATE from the legacy context (before 6.5,
    "unrecognized mount option"). Needed on 6.7 to 6.12, where fd layers are refused: each layer
    is its own parameter, so the 256-byte value and one-page limits apply per path only."""
    return _per_layer(spec, target, attrs, _set_path_string)


def _lowerdir_string(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """One escaped ``lowerdir=a:b::c`` through fsconfig (5.2 on). fsconfig copies at most 256
    bytes of a value (EINVAL beyond); before 6.5 overlayfs sits on the legacy context, which
    rejects a value holding a comma ("Legacy: Option contained comma", EINVAL) and data-only
    layers. Needed on 5.2 to 6.6 kernels where lowerdir+ is unknown."""
    with _data_only_refusal(spec), FsContext.open("overlay") as ctx:
        ctx.set_string("lowerdir", lowerdir_value(spec))
        if spec.upper is not None and spec.work is not None:
            ctx.set_string("upperdir", escape_layer(spec.upper))
            ctx.set_string("workdir", escape_layer(spec.work))
        return _finish(ctx, spec, target, attrs)


def _mount2_data(spec: OverlaySpec, target: Path, attrs: MountAttr) -> AttachedMount:
    """mount(2) with one escaped data string: every kernel. Needed where fsopen is missing or
    a path holds a comma before 6.5. The data is one page: longer options raise
    OverlayOptionsTooLong instead of reaching the kernel, which would cut them off."""
    data = data_string(spec)
    if len(data.encode()) >= C.PAGE_SIZE:
        raise OverlayOptionsTooLong("mount2-data", len(data.encode()), C.PAGE_SIZE)
    with _data_only_refusal(spec):
        sys_.mount("overlay", target, "overlay", ms_flags(attrs), data)
    return AttachedMount(target)


_NO_FSOPEN = frozenset({errno.ENOSYS})
OVERLAY_LAYERS = feature(
    "overlay.layers",
    "pass overlayfs its layers",
    [
        Strategy(
            "fd-opath",
            _fd_opath,
            unsupported=frozenset({errno.EINVAL, errno.EBADF, errno.EOPNOTSUPP, errno.ENOSYS}),
            cache_on=_NO_FSOPEN,
        ),
        Strategy(
            "fd-reopen",
            _fd_reopen,
            unsupported=frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS}),
            cache_on=_NO_FSOPEN,
        ),
        Strategy(
            "lowerdir-plus",
            _lowerdir_plus,
            unsupported=frozenset({errno.EINVAL, errno.ENOSYS}),
            cache_on=_NO_FSOPEN,
        ),
        Strategy(
            "lowerdir-string",
            _lowerdir_string,
            unsupported=frozenset({errno.EINVAL, errno.ENOSYS}),
            cache_on=_NO_FSOPEN,
        ),
        Strategy("mount2-data", _mount2_data),
    ],
)


def mount_overlay(
    spec: OverlaySpec,
    target: str | os.PathLike[str],
    attrs: MountAttr = MountAttr.none(),
    force: str | None = None,
) -> AttachedMount:
    return OVERLAY_LAYERS(spec, Path(target), attrs, force=force)
