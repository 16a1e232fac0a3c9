"""``python -m mountcompat probe``: which strategies of each feature work on this kernel.

Each feature is exercised once per strategy, forced, on a scratch tmpfs in a private mount
namespace of this process, and once unforced to see the library's own choice. The answer is
what the kernel did, with the errno of every refusal; nothing is inferred from the version.
A default is named only when the unforced run was seen to use it; "none works" only when the
library refused every strategy as unsupported; any other failure (EPERM or EACCES in a user
namespace, a tool missing) leaves it unknown ("could not tell", ``default_state`` in JSON).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mountcompat import attrs, detached, images, listing, loop, mountapi, overlay, resolve
from mountcompat.choices import LOG, environment_forcing
from mountcompat.errors import (
    MountCompatError,
    NoStrategyWorked,
    StrategyUnsupported,
    errno_name,
)
from mountcompat.fscontext import FsContext
from mountcompat.mounts import MountAttr, private_mount_namespace, unmount
from mountcompat.strategy import FEATURES

Scenario = Callable[[Path, str | None], None]
ENV_SCRATCH = "MOUNTCOMPAT_SCRATCH"


def disk_scratch() -> str:
    """A directory on a disk-backed or shared filesystem (not tmpfs), for image files."""
    return os.environ.get(ENV_SCRATCH, "/var/tmp")


@dataclass
class StrategyProbe:
    supported: bool | None  # None: could not be tried (a tool missing, say)
    errno: int | None = None
    errname: str | None = None
    message: str = ""


DefaultState = Literal["chosen", "none works", "could not tell"]


@dataclass
class FeatureProbe:
    summary: str
    default: str | None  # the strategy the library used unforced; None: see default_state
    strategies: dict[str, StrategyProbe]
    # "chosen": default names it. "none works": unforced, the library said so of this very
    # feature, and every strategy, forced, was refused as unsupported. "could not tell": the
    # unforced run failed otherwise (EPERM in a user namespace, a tool missing, a nested
    # feature failing): no default can be named.
    default_state: DefaultState
    default_run: StrategyProbe  # the unforced run: why it failed, when it did


class ProbeCheckFailed(MountCompatError):
    """An operation that succeeded but did not do what it should (a real error, not an
    ``assert``: ``python -O`` would drop the check and report the strategy working)."""


def _check(holds: bool, what: str) -> None:
    if not holds:
        raise ProbeCheckFailed(what)


def _dirs(base: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        (base / name).mkdir(parents=True, exist_ok=True)
        made.append(base / name)
    return made


def _mount_api(base: Path, force: str | None) -> None:
    (target,) = _dirs(base, "m")
    with mountapi.mount_fs("tmpfs", "probe", target, {"size": "1m"}, force=force):
        (target / "f").write_text("x")


def _fs_create(base: Path, force: str | None) -> None:
    with FsContext.open("tmpfs") as ctx:
        mountapi.create_superblock(ctx, force=force)


def _overlay(base: Path, force: str | None) -> None:
    lower, upper, work, target = _dirs(base, "l", "u", "w", "m")
    (lower / "f").write_text("x")
    spec = overlay.OverlaySpec(lower=(lower,), upper=upper, work=work)
    with overlay.mount_overlay(spec, target, force=force):
        _check((target / "f").read_text() == "x", "the overlay does not show its layer's file")


def _erofs(base: Path, force: str | None) -> None:
    if shutil.which("mkfs.erofs") is None:
        raise FileNotFoundError(errno.ENOENT, "mkfs.erofs not installed")
    content, target = _dirs(base, "c", "m")
    (content / "f").write_text("x")
    # On a disk-backed (or shared) directory: erofs cannot use a file on tmpfs as its source.
    with tempfile.TemporaryDirectory(prefix="mountcompat-probe.", dir=disk_scratch()) as d:
        image = Path(d) / "i.erofs"
        subprocess.run(["mkfs.erofs", "--quiet", str(image), str(content)], check=True)
        with images.mount_erofs(image, target, force=force):
            _check((target / "f").read_text() == "x", "the image's file is not read back")


def _loop(base: Path, force: str | None) -> None:
    backing = base / "backing"
    backing.write_bytes(b"\0" * (1 << 20))
    with loop.attach(backing, force=force) as device:
        bound = loop.sysfs_loop(device.number).get("backing_file")
        _check(bound == str(backing), f"the device is bound to {bound!r}, not {backing}")


def _detached(base: Path, force: str | None) -> None:
    with mountapi.open_fs("tmpfs", "probe") as source, detached.clone_detached(source, force=force):
        pass


def _mount_attr(base: Path, force: str | None) -> None:
    (target,) = _dirs(base, "m")
    with mountapi.mount_fs("tmpfs", "probe", target):
        attrs.set_mount_attrs(target, MountAttr.RDONLY | MountAttr.NOSUID, force=force)
        entry = listing.find_mount(target)
        _check(entry is not None and entry.readonly, "the mount table shows it writable")


def _tree_attr(base: Path, force: str | None) -> None:
    (target,) = _dirs(base, "m")
    with (
        mountapi.mount_fs("tmpfs", "probe", target),
        attrs.clone_tree(target, MountAttr.RDONLY, force=force),
    ):
        pass


def _mounts_list(base: Path, force: str | None) -> None:
    entries = listing.list_mounts(force=force)
    _check(any(e.mountpoint == str(base) for e in entries), f"{base} is not in the list")


def _path_resolve(base: Path, force: str | None) -> None:
    (base / "f").write_text("x")
    os.symlink("/f", base / "link")
    fd = resolve.open_in_root(base, "link", force=force)
    os.close(fd)


SCENARIOS: dict[str, Scenario] = {
    "mount.api": _mount_api,
    "fs.create": _fs_create,
    "overlay.layers": _overlay,
    "erofs.source": _erofs,
    "loop.attach": _loop,
    "mount.detached": _detached,
    "mount.attr": _mount_attr,
    "tree.attr": _tree_attr,
    "mounts.list": _mounts_list,
    "path.resolve": _path_resolve,
}


@contextlib.contextmanager
def scratch_tmpfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="mountcompat-probe."))
    try:
        # mount(2) on purpose: the probe must not depend on what it probes.
        from mountcompat import _syscalls as sys_

        sys_.mount("probe", base, "tmpfs", 0, "size=64m")
        try:
            yield base
        finally:
            unmount(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _try(
    feature_id: str, scenario: Scenario, force: str | None
) -> tuple[StrategyProbe, Exception | None]:
    """One run of the scenario: what it showed, and what it raised, if anything."""
    with scratch_tmpfs() as base:
        try:
            scenario(base, force)
        except (OSError, MountCompatError, subprocess.CalledProcessError) as exc:
            err = getattr(exc, "errno", None)
            # Unsupported only for this feature's own refusal: another feature's, forced by
            # MOUNTCOMPAT_FORCE and refused inside this scenario (its tmpfs mount, say), says
            # nothing of this feature's strategy.
            if isinstance(exc, StrategyUnsupported) and exc.feature == feature_id:
                return StrategyProbe(False, err, errno_name(err), exc.message), exc
            return StrategyProbe(None, err, errno_name(err), f"{type(exc).__name__}: {exc}"), exc
    return StrategyProbe(True), None


def probe_feature(feature_id: str) -> FeatureProbe:
    feature = FEATURES[feature_id]
    scenario = SCENARIOS[feature_id]
    strategies = {s.name: _try(feature_id, scenario, s.name)[0] for s in feature.strategies}
    feature.reset()
    mark = LOG.mark()
    default_probe, failed = _try(feature_id, scenario, None)
    used = [r.strategy for r in LOG.since(mark) if r.feature == feature_id and r.outcome == "used"]
    if default_probe.supported and used:
        return FeatureProbe(feature.summary, used[0], strategies, "chosen", default_probe)
    if default_probe.supported:
        default_probe = StrategyProbe(None, message=f"no strategy of {feature_id} was used")
    refused_all = (
        isinstance(failed, NoStrategyWorked)
        and failed.feature == feature_id
        and all(p.supported is False for p in strategies.values())
    )
    state: DefaultState = "none works" if refused_all else "could not tell"
    return FeatureProbe(feature.summary, None, strategies, state, default_probe)


def probe_all() -> dict[str, Any]:
    # MOUNTCOMPAT_FORCE refused at once, as any use of the library would: unchecked, every
    # feature's unforced run fails on it, and the probe would report that as the kernel's.
    environment_forcing()
    if os.geteuid() != 0:
        raise PermissionError(errno.EPERM, "the probe mounts: run it as root")
    private_mount_namespace()
    return {
        "kernel": os.uname().release,
        "features": {fid: asdict(probe_feature(fid)) for fid in SCENARIOS},
    }
