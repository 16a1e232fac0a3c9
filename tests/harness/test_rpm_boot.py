"""A kernel booted through the rpm source, end to end: Debian's 5.10 packed as RHEL 9 packs
its kernel (vmlinuz in lib/modules/<release>/, every module compressed to .ko.xz and split
between kernel-modules-core and kernel-modules), signed, indexed, served on 127.0.0.1, and
run by the harness as any kernels.yaml entry is: a column with evidence, and the NEVRAs and
signature states in its kernel.json."""

from __future__ import annotations

import json
import lzma
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from guests import fetch_kernel, harness, our_processes
from rpmrepo import RpmRepo, build_repo, make_key, serve

from harness.fetch.kernels import KernelTree

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("rpmbuild", "rpmsign", "createrepo_c", "rpm2archive")),
        reason="the RPM tools are not installed (python -m harness.host.prep --for tests)",
    ),
]

# What RHEL's kernel-core carries beside vmlinuz (modules.dep and its kin are made on install).
CORE_FILES = ("config", "System.map", "modules.order", "modules.builtin", "modules.builtin.modinfo")
# The boot's own drivers (virtio, virtio-fs, the block devices) in kernel-modules-core, and
# overlayfs with everything else in kernel-modules: the guest boots only if the first package
# was unpacked, and an overlay cell works only if the second one was too.
CORE_DIRS = ("kernel/fs/", "kernel/drivers/virtio/", "kernel/drivers/block/")
IN_MODULES = "kernel/fs/overlayfs/"


def _xz(path: Path) -> bytes:
    # CRC32 as the kernel's own xz modules carry it; preset 1: the test's time, not size.
    return lzma.compress(path.read_bytes(), preset=1, check=lzma.CHECK_CRC32)


def rhel_layout(tree: KernelTree) -> dict[str, dict[str, bytes]]:
    base = "lib/modules/{kr}"
    core = {f"{base}/vmlinuz": tree.vmlinuz.read_bytes()}
    for name in CORE_FILES:
        source = tree.config if name == "config" and tree.config else tree.modules / name
        if name == "System.map":
            source = tree.vmlinuz.parent / f"System.map-{tree.release}"
        if source.exists():
            core[f"{base}/{name}"] = source.read_bytes()
    modules = sorted(tree.modules.rglob("*.ko"))
    with ThreadPoolExecutor() as pool:
        packed = dict(zip(modules, pool.map(_xz, modules), strict=True))
    split: dict[str, dict[str, bytes]] = {"kernel-modules-core": {}, "kernel-modules": {}}
    for path, data in packed.items():
        rel = path.relative_to(tree.modules).as_posix()
        boots = rel.startswith(CORE_DIRS) and not rel.startswith(IN_MODULES)
        package = "kernel-modules-core" if boots else "kernel-modules"
        split[package][f"{base}/{rel}.xz"] = data
    return {"kernel-core": core, **split}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[RpmRepo, KernelTree]:
    tree = fetch_kernel()
    work = tmp_path_factory.mktemp("el")
    home, key = make_key(work / "key")
    built = build_repo(
        work / "repo",
        rhel_layout(tree),
        gnupghome=home,
        key=key,
        version="5.10.0",
        release="32.el9",
        kernel_release=tree.release,
    )
    return built, tree


def test_a_kernel_from_a_signed_yum_repository_boots_and_gives_a_column(
    tmp_path: Path, repository: tuple[RpmRepo, KernelTree]
) -> None:
    built, tree = repository
    tag = f"el{tmp_path.name[-6:]}".replace("_", "")
    name = f"el9-local-{tag}"
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    with serve(built.root) as url:
        config.write_text(
            "kernels:\n"
            f"  - name: {name}\n"
            "    note: Debian's 5.10 in RHEL's layout, from a yum repository on 127.0.0.1\n"
            "    tags: [el9, backported]\n"
            "    source:\n"
            f"      rpm: {{repo: '{url}', key: '{built.key}', version: '5.10.0-*'}}\n"
        )
        proc = harness(config, results, pytest_args=[])
        out, _ = proc.communicate(timeout=800)
    assert proc.returncode == 0, out
    kernel = json.loads((results / name / "kernel.json").read_text())
    assert kernel["status"] == "ok", kernel.get("detail")
    assert kernel["package_release"] == tree.release
    assert [p["nevra"] for p in kernel["packages"]] == [
        f"{n}-5.10.0-32.el9.x86_64"
        for n in ("kernel-core", "kernel-modules-core", "kernel-modules")
    ]
    assert all(p["signature"] == "verified" for p in kernel["packages"])
    # The guest ran the kernel it was given, and read its modules from the .ko.xz files.
    guest = json.loads((results / name / "guest.json").read_text())
    assert guest["release"] == tree.release
    matrix = json.loads((results / "matrix.json").read_text())
    cells = [c for c in matrix["cells"] if c["kernel"] == name]
    assert cells and all(c["outcome"] != "not-run" for c in cells), cells
    overlay = [c for c in cells if c["feature"] == "overlay.layers" and c["outcome"] == "works"]
    assert overlay, "overlay.ko.xz (kernel-modules) was never loaded: no overlay cell works"
    assert all(c["evidence"] for c in cells)
    assert our_processes(tag) == []
