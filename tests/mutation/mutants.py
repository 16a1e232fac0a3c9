"""The wrong libraries, each a change made in the running process before the suites start.

Two kinds, from the registry and the kernel's ABI:

``swap``  strategy A of a feature runs strategy B's code under A's name (every ordered pair);
``drop``  strategy A runs its own code with one defining flag dropped (AT_RECURSIVE, O_PATH,
          LO_FLAGS_DIRECT_IO...) or one step left out.

Each mutant names the cell whose tests must kill it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mountcompat import _constants as C
from mountcompat import _syscalls as sys_
from mountcompat import loop, overlay

Patch = Callable[[], None]


@dataclass(frozen=True)
class Mutant:
    id: str
    feature: str
    strategy: str
    what: str
    apply: Patch


def _replace_run(feature: str, strategy: str, run: Callable[..., Any]) -> None:
    from mountcompat.features import FEATURES

    strategies = FEATURES[feature].strategies
    index = next(i for i, s in enumerate(strategies) if s.name == strategy)
    strategies[index] = dataclasses.replace(strategies[index], run=run)


def _swap(feature: str, victim: str, donor: str) -> Patch:
    def apply() -> None:
        from mountcompat.features import FEATURES

        _replace_run(feature, victim, FEATURES[feature].strategy(donor).run)

    return apply


def _during(
    feature: str, strategy: str, owner: Any, name: str, change: Callable[..., Any]
) -> Patch:
    """While ``strategy`` runs, ``owner.name`` is ``change(original)``."""

    def apply() -> None:
        from mountcompat.features import FEATURES

        original_run = FEATURES[feature].strategy(strategy).run
        original = getattr(owner, name)

        @functools.wraps(original_run)
        def run(*args: Any, **kwargs: Any) -> Any:
            setattr(owner, name, change(original))
            try:
                return original_run(*args, **kwargs)
            finally:
                setattr(owner, name, original)

        _replace_run(feature, strategy, run)

    return apply


def _drop_flag(position: int, flag: int) -> Callable[..., Any]:
    """A syscall wrapper whose argument at ``position`` loses ``flag``."""

    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            args = (*args[:position], args[position] & ~flag, *args[position + 1 :])
            return original(*args, **kwargs)

        return call

    return change


def _add_flag(position: int, flag: int) -> Callable[..., Any]:
    """A syscall wrapper whose argument at ``position`` gains ``flag``."""

    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            args = (*args[:position], args[position] | flag, *args[position + 1 :])
            return original(*args, **kwargs)

        return call

    return change


def _openat2_without(resolve: int) -> Callable[..., Any]:
    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(dfd: int, path: Any, how: sys_.OpenHow) -> int:
            how.resolve &= ~resolve
            return int(original(dfd, path, how))

        return call

    return change


def _loop_flags_without(name: str) -> Callable[..., Any]:
    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(read_only: bool, autoclear: bool, direct_io: bool) -> int:
            wanted = {"read_only": read_only, "autoclear": autoclear, "direct_io": direct_io}
            wanted[name] = False
            return int(original(**wanted))

        return call

    return change


def _ioctl_skipping(request: int) -> Callable[..., Any]:
    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(fd: int, req: int, arg: Any, name: str) -> int:
            return 0 if req == request else int(original(fd, req, arg, name))

        return call

    return change


def _layer_mode(add: int = 0, remove: int = 0) -> Callable[..., Any]:
    def change(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, mode: int) -> int:
            return int(original(path, (mode | add) & ~remove))

        return call

    return change


def _recursion(feature: str, strategy: str, always: bool) -> Patch:
    """The strategy's own code, always asked for a whole tree, or for one mount only."""

    def apply() -> None:
        from mountcompat.features import FEATURES

        original_run = FEATURES[feature].strategy(strategy).run

        @functools.wraps(original_run)
        def run(path: Any, set_: Any, clear: Any, recursive: bool) -> Any:
            return original_run(path, set_, clear, always)

        _replace_run(feature, strategy, run)

    return apply


def _drops() -> Iterator[Mutant]:
    rec = C.AT_RECURSIVE
    table: list[tuple[str, str, str, Patch]] = [
        (
            "mount.attr",
            "mount-setattr",
            "mount_setattr without AT_RECURSIVE",
            _during("mount.attr", "mount-setattr", sys_, "mount_setattr", _drop_flag(2, rec)),
        ),
        (
            "mount.attr",
            "remount",
            "remounts the top mount only",
            _recursion("mount.attr", "remount", always=False),
        ),
        (
            "mount.attr",
            "remount",
            "remounts the submounts always",
            _recursion("mount.attr", "remount", always=True),
        ),
        (
            "mount.attr",
            "mount-setattr",
            "mount_setattr with AT_RECURSIVE always",
            _during("mount.attr", "mount-setattr", sys_, "mount_setattr", _add_flag(2, rec)),
        ),
        (
            "tree.attr",
            "open-tree-attr",
            "open_tree_attr without AT_RECURSIVE",
            _during("tree.attr", "open-tree-attr", sys_, "open_tree_attr", _drop_flag(2, rec)),
        ),
        (
            "tree.attr",
            "open-tree-setattr",
            "open_tree without AT_RECURSIVE",
            _during("tree.attr", "open-tree-setattr", sys_, "open_tree", _drop_flag(2, rec)),
        ),
        (
            "tree.attr",
            "open-tree-setattr",
            "mount_setattr without AT_RECURSIVE",
            _during("tree.attr", "open-tree-setattr", sys_, "mount_setattr", _drop_flag(2, rec)),
        ),
        (
            "mount.detached",
            "direct",
            "open_tree without AT_RECURSIVE",
            _during("mount.detached", "direct", sys_, "open_tree", _drop_flag(2, rec)),
        ),
        (
            "mount.detached",
            "tmpdir",
            "open_tree without AT_RECURSIVE",
            _during("mount.detached", "tmpdir", sys_, "open_tree", _drop_flag(2, rec)),
        ),
        (
            "overlay.layers",
            "fd-opath",
            "layers opened without O_PATH",
            _during(
                "overlay.layers",
                "fd-opath",
                overlay,
                "_open_layer",
                _layer_mode(add=os.O_RDONLY, remove=os.O_PATH),
            ),
        ),
        (
            "overlay.layers",
            "fd-reopen",
            "layers opened O_PATH",
            _during(
                "overlay.layers", "fd-reopen", overlay, "_open_layer", _layer_mode(add=os.O_PATH)
            ),
        ),
        (
            "loop.attach",
            "loop-configure",
            "LOOP_CONFIGURE without LO_FLAGS_DIRECT_IO",
            _during(
                "loop.attach",
                "loop-configure",
                loop,
                "loop_flags",
                _loop_flags_without("direct_io"),
            ),
        ),
        (
            "loop.attach",
            "loop-configure",
            "LOOP_CONFIGURE without LO_FLAGS_AUTOCLEAR",
            _during(
                "loop.attach",
                "loop-configure",
                loop,
                "loop_flags",
                _loop_flags_without("autoclear"),
            ),
        ),
        (
            "loop.attach",
            "loop-configure",
            "LOOP_CONFIGURE without LO_FLAGS_READ_ONLY",
            _during(
                "loop.attach",
                "loop-configure",
                loop,
                "loop_flags",
                _loop_flags_without("read_only"),
            ),
        ),
        (
            "loop.attach",
            "set-fd-status",
            "LOOP_SET_STATUS64 without LO_FLAGS_AUTOCLEAR",
            _during(
                "loop.attach", "set-fd-status", loop, "loop_flags", _loop_flags_without("autoclear")
            ),
        ),
        (
            "loop.attach",
            "set-fd-status",
            "no LOOP_SET_DIRECT_IO",
            _during(
                "loop.attach",
                "set-fd-status",
                loop,
                "_ioctl",
                _ioctl_skipping(C.LOOP_SET_DIRECT_IO),
            ),
        ),
        (
            "path.resolve",
            "openat2",
            "openat2 without RESOLVE_IN_ROOT",
            _during(
                "path.resolve", "openat2", sys_, "openat2", _openat2_without(C.RESOLVE_IN_ROOT)
            ),
        ),
        (
            "path.resolve",
            "openat2",
            "openat2 without RESOLVE_NO_MAGICLINKS",
            _during(
                "path.resolve",
                "openat2",
                sys_,
                "openat2",
                _openat2_without(C.RESOLVE_NO_MAGICLINKS),
            ),
        ),
        (
            "path.resolve",
            "userspace",
            "components opened without O_NOFOLLOW",
            _during("path.resolve", "userspace", sys_, "openat", _drop_flag(2, os.O_NOFOLLOW)),
        ),
        (
            "mount.api",
            "fsmount",
            "fsmount without the mount attributes",
            _during("mount.api", "fsmount", sys_, "fsmount", _drop_flag(2, 0xFFFFFFFF)),
        ),
        (
            "mount.api",
            "mount2",
            "mount(2) without the MS_ flags",
            _during("mount.api", "mount2", sys_, "mount", _drop_flag(3, 0xFFFFFFFF)),
        ),
    ]
    for feature, strategy, what, apply in table:
        slug = what.replace(" ", "-").replace("(", "").replace(")", "").lower()
        yield Mutant(f"drop:{feature}:{strategy}:{slug}", feature, strategy, what, apply)


def _swaps() -> Iterator[Mutant]:
    from mountcompat.features import ordered

    for feature in ordered():
        names = [s.name for s in feature.strategies]
        for victim in names:
            for donor in names:
                if donor != victim:
                    yield Mutant(
                        f"swap:{feature.id}:{victim}:{donor}",
                        feature.id,
                        victim,
                        f"runs {donor}'s code",
                        _swap(feature.id, victim, donor),
                    )


def all_mutants() -> list[Mutant]:
    return [*_swaps(), *_drops()]


def by_id(mutant_id: str) -> Mutant:
    for mutant in all_mutants():
        if mutant.id == mutant_id:
            return mutant
    raise LookupError(f"no mutant {mutant_id!r}")
