"""A small signed yum repository built on this machine with Debian's rpm tools (rpmbuild,
rpmsign, createrepo_c, gpg), served over real HTTP on 127.0.0.1, for the tests of the code
that fetches RHEL-style kernels: one binary RPM per package, each signed by a throwaway GPG
key, and repodata/repomd.xml with a detached armored signature by the same key."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakearchive

_PAYLOADS = {"xz": "w2.xzdio", "zstd": "w19.zstdio"}


@dataclass(frozen=True)
class RpmRepo:
    root: Path  # the directory to serve: holds repodata/ and the .rpm files
    key: Path  # the signing key's ASCII-armored public key (a file)
    packages: dict[str, Path]  # package name -> its .rpm file under root
    version: str  # e.g. "5.14.0"
    release: str  # the RPM Release, e.g. "503.el9"
    kernel_release: str  # the uname -r inside, e.g. "5.14.0-503.el9.x86_64"


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _gpg_env(gnupghome: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(gnupghome)}


def _stop_agent(gnupghome: Path) -> None:
    """gpg leaves a gpg-agent behind for its home; the tests must not."""
    subprocess.run(
        ["gpgconf", "--kill", "all"], env=_gpg_env(gnupghome), capture_output=True, check=False
    )


def _fingerprint(key: Path) -> str:
    out = _run(["gpg", "--batch", "--with-colons", "--show-keys", str(key)])
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr":
            return fields[9]
    raise RuntimeError(f"no fingerprint in {key}")


def make_key(workdir: Path, name: str = "mountcompat test key") -> tuple[Path, Path]:
    """A throwaway RSA GPG key (no passphrase) in a GNUPGHOME under workdir; returns
    (gnupghome, armored public key file)."""
    gnupghome = workdir / "gnupg"
    gnupghome.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = _gpg_env(gnupghome)
    try:
        _run(
            [
                "gpg",
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-generate-key",
                name,
                "rsa2048",
                "sign",
                "never",
            ],
            env,
        )
        key = workdir / "key.asc"
        _run(["gpg", "--batch", "--armor", "--output", str(key), "--export", name], env)
    finally:
        _stop_agent(gnupghome)
    return gnupghome, key


def _spec(packages: dict[str, list[str]], staging: Path, version: str, release: str) -> str:
    lines = [
        "Name: mountcompat-test-repo",
        f"Version: {version}",
        f"Release: {release}",
        "Summary: test packages",
        "License: none",
        "AutoReqProv: no",
        "",
        "%description",
        "Test packages.",
        "",
        "%install",
        "mkdir -p %{buildroot}",
        f"cp -a '{staging}/.' %{{buildroot}}/",
        "",
    ]
    for pkg, paths in packages.items():
        lines += [
            f"%package -n {pkg}",
            f"Summary: {pkg} test package",
            "AutoReqProv: no",
            "",
            f"%description -n {pkg}",
            f"Test package {pkg}.",
            "",
            f"%files -n {pkg}",
            "%defattr(-,root,root,-)",
            *(f'"/{path.replace("%", "%%")}"' for path in paths),
            "",
        ]
    return "\n".join(lines)


def build_repo(
    dest: Path,
    files: dict[str, dict[str, bytes]],
    *,
    gnupghome: Path,
    key: Path,
    version: str = "5.14.0",
    release: str = "503.el9",
    arch: str = "x86_64",
    sign: bool = True,
    sign_metadata: bool = True,
    payload: str = "xz",
    metadata: str = "gz",
    kernel_release: str | None = None,
) -> RpmRepo:
    """files maps a package name (e.g. "kernel-core", "kernel-modules-core", "kernel-modules")
    to {path inside the package relative to /: content bytes}; "{kr}" in a path is replaced by
    the kernel release. One binary RPM per package (one rpmbuild of a generated spec with a
    subpackage each), signed with rpmsign when ``sign``, then createrepo_c on ``dest`` and, when
    ``sign_metadata``, repodata/repomd.xml.asc by the same key. ``metadata``: the compression
    of the indexes (createrepo_c's gz, xz, bz2 or zstd). Built again into the same ``dest``
    with another release, the repository holds both versions. ``kernel_release``: the
    directory under lib/modules/ ("{kr}"), where the kernel packed is not RHEL's own (a Debian
    kernel's uname -r), by default RHEL's version-release.arch."""
    if payload not in _PAYLOADS:
        raise ValueError(f"payload must be one of {sorted(_PAYLOADS)}, not {payload!r}")
    kr = kernel_release or f"{version}-{release}.{arch}"
    dest.mkdir(parents=True, exist_ok=True)
    packages: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix=".rpmbuild-", dir=dest.parent) as tmp:
        top = Path(tmp)
        staging = top / "staging"
        staging.mkdir()
        listed: dict[str, list[str]] = {}
        for pkg, content in files.items():
            listed[pkg] = []
            for rel, data in content.items():
                path = rel.replace("{kr}", kr).lstrip("/")
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                listed[pkg].append(path)
        spec = top / "repo.spec"
        spec.write_text(_spec(listed, staging, version, release))
        defines = {
            "_topdir": str(top),
            "_tmppath": str(top / "tmp"),
            "_builddir": str(top / "BUILD"),
            "_rpmdir": str(top / "RPMS"),
            "debug_package": "%{nil}",
            "__os_install_post": "%{nil}",
            "__arch_install_post": "%{nil}",
            "_build_id_links": "none",
            "_binary_payload": _PAYLOADS[payload],
            "_buildhost": "localhost",
        }
        (top / "tmp").mkdir()
        argv = ["rpmbuild", "-bb", "--nodeps", "--quiet", "--target", arch]
        for name, value in defines.items():
            argv += ["--define", f"{name} {value}"]
        _run([*argv, str(spec)])
        for pkg in files:
            rpm = top / "RPMS" / arch / f"{pkg}-{version}-{release}.{arch}.rpm"
            packages[pkg] = dest / rpm.name
            shutil.copyfile(rpm, packages[pkg])
    fingerprint = _fingerprint(key)
    env = _gpg_env(gnupghome)
    try:
        if sign and packages:
            _run(
                [
                    "rpmsign",
                    "--addsign",
                    "--define",
                    f"_gpg_name {fingerprint}",
                    "--define",
                    f"_gpg_path {gnupghome}",
                    "--define",
                    # Debian's rpm names gpg2, which Debian does not ship under that name.
                    f"__gpg {shutil.which('gpg') or '/usr/bin/gpg'}",
                    "--define",
                    "_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ''",
                    *(str(p) for p in packages.values()),
                ],
                env,
            )
        _run(
            [
                "createrepo_c",
                "--quiet",
                "--no-database",
                f"--general-compress-type={metadata}",
                str(dest),
            ]
        )
        if sign_metadata:
            repomd = dest / "repodata" / "repomd.xml"
            _run(
                [
                    "gpg",
                    "--batch",
                    "--yes",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                    "--local-user",
                    fingerprint,
                    "--detach-sign",
                    "--armor",
                    "--output",
                    f"{repomd}.asc",
                    str(repomd),
                ],
                env,
            )
    finally:
        _stop_agent(gnupghome)
    return RpmRepo(dest, key, packages, version, release, kr)


def kernel_files(
    vmlinuz: bytes, modules: dict[str, bytes], config: bytes = b"CONFIG_VIRTIO_FS=y\n"
) -> dict[str, dict[str, bytes]]:
    """RHEL 9's layout: kernel-core holds vmlinuz, config, System.map and modules.order under
    lib/modules/{kr}/; kernel-modules-core and kernel-modules hold lib/modules/{kr}/kernel/...
    (``modules``: path relative to that directory -> already-compressed bytes), the first half
    (in sorted order, the larger half when odd) in kernel-modules-core and the rest in
    kernel-modules. modules.order lists them as depmod does: "kernel/<path>" without ".xz"."""
    base = "lib/modules/{kr}"
    names = sorted(modules)
    half = (len(names) + 1) // 2
    order = "".join(f"kernel/{name.removesuffix('.xz')}\n" for name in names).encode()
    return {
        "kernel-core": {
            f"{base}/vmlinuz": vmlinuz,
            f"{base}/config": config,
            f"{base}/System.map": b"",
            f"{base}/modules.order": order,
        },
        "kernel-modules-core": {f"{base}/kernel/{n}": modules[n] for n in names[:half]},
        "kernel-modules": {f"{base}/kernel/{n}": modules[n] for n in names[half:]},
    }


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """The URL (ending in "/", as yum's baseurls do) of ``directory`` served on 127.0.0.1."""
    with fakearchive.serve(directory) as url:
        yield url + "/"
