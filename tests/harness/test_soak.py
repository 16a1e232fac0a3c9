"""The soak: the matrix again and again with nothing changed, and every answer that changed
anyway named as a flake, with both runs' evidence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from guests import REPO, fetch_kernel, our_processes, write_config

# Works in the first run and breaks in the second: the runs' results directories differ,
# and the test can see its own (the plugin's results file is in it).
FLAKY = """
import os
import pytest
from mountcompat import open_in_root

@pytest.mark.strategy("path.resolve", "userspace")
def test_flaky(request, tmp_path):
    (tmp_path / "file").write_text("data")
    os.close(open_in_root(tmp_path, "file", force="userspace"))
    assert "/run-2/" not in request.config.getoption("--mountcompat-results")
"""


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_a_soak_names_the_answer_that_changed_and_keeps_both_sides(tmp_path: Path) -> None:
    kernel = fetch_kernel()
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "kernels.yaml"
    write_config(config, kernel, tag, {"soaked": ""})
    suites = tmp_path / "suites"
    shutil.copytree(REPO / "suites", suites, ignore=shutil.ignore_patterns("__pycache__"))
    (suites / "test_flaky.py").write_text(FLAKY)
    out = tmp_path / "soak"
    soak = [sys.executable, "-m", "harness.soak", "2", f"--out={out}", f"--config={config}"]
    done = subprocess.run(
        [*soak, f"--suites={suites}", "--allow-surprises", "--", "-k", "test_flaky or test_plain"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    record = json.loads((out / "soak.json").read_text())
    assert [r["exit_status"] for r in record["runs"]] == [0, 0], record["runs"]
    (flake,) = record["flakes"]
    assert flake["what"] == f"cell soaked-{tag} path.resolve userspace", flake
    first, second = flake["runs"]
    assert (first["run"], first["answer"]) == (1, "works")
    assert (second["run"], second["answer"]) == (2, "broken")
    assert "run-2" in json.dumps(second["evidence"]), "the broken side's evidence is its own"
    for side in (first, second):
        assert (Path(side["results"]) / "outcomes.json").exists()
    assert f"flake: cell soaked-{tag} path.resolve userspace: run 1: works, run 2: broken" in (
        done.stdout
    )
    assert our_processes(tag) == []


def test_an_answer_only_one_run_gave_is_a_flake_too(tmp_path: Path) -> None:
    from harness.soak import Run, flakes

    kernel = {"name": "k", "status": "ok", "packages": [{"sha256": "a"}], "provenance": {}}
    cell = {"kernel": "k", "feature": "f", "strategy": "s", "outcome": "works"}
    both = {"kernels": [kernel], "cells": [cell], "defaults": []}
    fewer = {"kernels": [kernel], "cells": [], "defaults": []}
    (flake,) = flakes(Run(1, tmp_path, 0, 1.0, both), Run(2, tmp_path, 0, 1.0, fewer))
    assert flake["what"] == "cell k f s"
    assert [side["answer"] for side in flake["runs"]] == ["works", "absent"]
    # The same inputs are what makes it a flake: other packages make it none.
    other = {**fewer, "kernels": [{**kernel, "packages": [{"sha256": "b"}]}]}
    assert list(flakes(Run(1, tmp_path, 0, 1.0, both), Run(2, tmp_path, 0, 1.0, other))) == []
