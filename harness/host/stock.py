"""``python -m harness.host.stock`` (``./nox -s stock``): the README's test command on a stock
Debian 12, made for the occasion.

A minimal bookworm root is built with the archive's own tool (mmdebstrap, from the mirror of
this host's apt sources) holding only what a fresh Debian 12 has plus git: its own Python
3.11.2, marked externally managed, no pip, no venv module. A clean clone of this checkout goes
in, and ``./nox -s tests`` runs inside it as root, with /dev, /proc and /sys of the host, in a
private mount namespace that takes every mount with it when it ends. The root is removed
afterwards unless ``--keep``. The wall time and the exit status are what the check is for.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.fetch.archive import mmdebstrap_keyring
from harness.fetch.mirror import debian_mirror
from harness.host.prereqs import Tool, ensure_tools

REPO = Path(__file__).resolve().parent.parent.parent
MMDEBSTRAP = Tool(
    "mmdebstrap", "builds the stock Debian root", "mmdebstrap", "mmdebstrap", "mmdebstrap"
)
# What the root holds beyond minbase: the certificates pip and apt need, python3 (the stock
# one), and git to clone the checkout. Nothing of Python's packaging.
INCLUDE = "ca-certificates,python3,git"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INSIDE = """set -eu
mount --make-rprivate /
mount --bind "$ROOT" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --bind "$REPO" "$ROOT/mnt"
exec chroot "$ROOT" env -i HOME=/root TERM=dumb LANG=C.UTF-8 \\
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt PIP_CERT=/etc/ssl/certs/host-ca.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca.crt \\
    sh -c 'git clone -q /mnt /root/mountcompat && cd /root/mountcompat \\
        && python3 --version && ./nox -s tests'
"""


def build_root(root: Path, mirror: str) -> None:
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            *mmdebstrap_keyring(),
            f"--include={INCLUDE}",
            "bookworm",
            str(root),
            mirror,
        ],
        check=True,
    )
    # This machine reaches the registries through its own certificate authority; a machine on
    # the open internet would not need the copy.
    if CA_BUNDLE.exists():
        shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/host-ca.crt")
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")


def run_inside(root: Path) -> int:
    env = {"ROOT": str(root), "REPO": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["unshare", "-m", "sh", "-c", INSIDE], env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.host.stock")
    parser.add_argument("--keep", action="store_true", help="keep the root afterwards")
    args = parser.parse_args(argv)
    try:
        ensure_tools((MMDEBSTRAP,), lambda m: print(m, file=sys.stderr))
        mirror = debian_mirror(None)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    root = Path(tempfile.mkdtemp(prefix="mountcompat-stock.", dir="/var/tmp"))
    started = time.monotonic()
    try:
        build_root(root, mirror)
        built = time.monotonic() - started
        print(f"stock bookworm root built in {built:.0f} s: {root}", file=sys.stderr)
        status = run_inside(root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.monotonic() - started
    verdict = "passed" if status == 0 else f"FAILED (exit {status})"
    print(
        f"stock Debian 12: {shlex.join(['./nox', '-s', 'tests'])} {verdict}; "
        f"root built in {built:.0f} s, {wall:.0f} s in all",
        file=sys.stderr,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
