"""A kernel behind a network this machine does not reach: only one that kernels.yaml marks
``needs_network`` ends ``unreachable``, named with its reason on the report's first screen,
and it fails no local run; a merge that promises the network (--require-complete) fails on it.
Every other fetch failure stays ``fetch-failed``, exit 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fakearchive import serve

from harness.errors import Unreachable
from harness.fetch import download

REPO = Path(__file__).resolve().parents[2]
# Nothing listens on the discard port: the connection is refused, as a repository out of
# reach refuses it (or never answers). Four attempts with backoff: 14 s.
NOWHERE = "http://127.0.0.1:9/el9/"
KEY = REPO / "keys" / "RPM-GPG-KEY-CentOS-Official-SHA256.asc"

pytestmark = pytest.mark.timeout(300)


def kernel(name: str, url: str, needs_network: bool) -> str:
    marker = "    needs_network: true\n" if needs_network else ""
    return (
        f"  - name: {name}\n    note: n\n{marker}"
        f"    source:\n      rpm: {{repo: '{url}', key: '{KEY}'}}\n"
    )


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "--cache", str(tmp_path / "cache"), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def matrix(tmp_path: Path, kernels: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    config, results = tmp_path / "kernels.yaml", tmp_path / "results"
    config.write_text("kernels:\n" + kernels)
    return run(tmp_path, "--config", str(config), "--results", str(results)), results


def status(results: Path, name: str) -> str:
    return str(json.loads((results / name / "kernel.json").read_text())["status"])


def test_a_network_kernel_out_of_reach_is_unreachable_and_fails_no_local_run(
    tmp_path: Path,
) -> None:
    done, results = matrix(tmp_path, kernel("el9", NOWHERE, needs_network=True))
    assert done.returncode == 0, done.stdout + done.stderr
    assert status(results, "el9") == "unreachable"
    assert "unreachable (needs its network, fails no local run): el9" in done.stderr
    report = json.loads((results / "matrix.json").read_text())
    assert [u["kernel"] for u in report["unreachable"]] == ["el9"]
    assert "127.0.0.1:9" in report["unreachable"][0]["why"]
    # Its cells are not-run with the status as the reason, not a first screen of "unknown".
    assert report["unknown_expectations"] == []
    header = (results / "report.html").read_text().split("<main>", 1)[0]
    assert 'id="unreachable"' in header and "127.0.0.1:9" in header
    assert not (results / "el9" / "console.log").exists(), "it booted"
    # The nightly's merge promises the network: there it is a kernel that did not complete.
    merged = subprocess.run(
        [sys.executable, "-m", "harness.report", str(results), "--out", str(tmp_path / "m")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    required = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.report",
            str(results),
            "--out",
            str(tmp_path / "m2"),
            "--require-complete",
            "--summary",
            str(tmp_path / "summary.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert required.returncode == 1, required.stderr
    assert "did not complete: el9" in required.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "**Unreachable:** el9: cannot download http://127.0.0.1:9/el9/" in summary


def test_every_other_fetch_failure_stays_fetch_failed(tmp_path: Path) -> None:
    """Unmarked and out of reach; marked, but the server answers (404: no repodata)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as url:
        done, results = matrix(
            tmp_path,
            kernel("local", NOWHERE, needs_network=False)
            + kernel("answers", url + "/", needs_network=True),
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert status(results, "local") == "fetch-failed"
    assert status(results, "answers") == "fetch-failed"
    assert (
        "HTTP Error 404" in json.loads((results / "answers" / "kernel.json").read_text())["detail"]
    )


def test_the_plan_lists_a_network_kernel_out_of_reach_and_refuses_any_other(
    tmp_path: Path,
) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text("kernels:\n" + kernel("el9", NOWHERE, needs_network=True))
    done = run(tmp_path, "--config", str(config), "--list", "--json", "--resolve")
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    assert entry["cache_key"] == "x86_64-unreachable"
    assert "127.0.0.1:9" in entry["unreachable"]
    config.write_text("kernels:\n" + kernel("el9", NOWHERE, needs_network=False))
    done = run(tmp_path, "--config", str(config), "--list", "--json", "--resolve")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "cannot download http://127.0.0.1:9/el9/repodata/repomd.xml" in done.stderr


def resolver_answer(host: str) -> int | None:
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as exc:
        return exc.errno
    return None


def test_a_name_that_does_not_resolve_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolver's "no such name" is final: four attempts spent 14 s on it per kernel, on
    every offline run. A refused connection (a server restarting) still backs off."""
    host = "el9.mountcompat.invalid"  # RFC 6761: no name under .invalid ever resolves
    if resolver_answer(host) != socket.EAI_NONAME:
        pytest.skip(f"this machine's resolver does not answer NXDOMAIN for {host}")
    waits: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    with pytest.raises(Unreachable, match="Name or service not known"):
        download.download(f"https://{host}/repodata/repomd.xml", tmp_path / "repomd.xml")
    assert waits == []
    with pytest.raises(Unreachable, match="Connection refused"):
        download.download(NOWHERE + "repodata/repomd.xml", tmp_path / "repomd.xml")
    assert waits == [2, 4, 8]
    assert list(tmp_path.iterdir()) == []
