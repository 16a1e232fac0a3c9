"""The report: results/<kernel>/ directories -> results/matrix.json and results/report.html."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from harness.files import read_json_object, write_json, write_text
from harness.report.collect import build_matrix, find_kernel_dirs
from harness.report.expectations import load_expectations
from harness.report.render import render_report

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_EXPECTATIONS = REPO / "expectations.yaml"


def library_strategies() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Every (feature, strategy) the library has, in its own order: the matrix's rows."""
    from mountcompat.features import ordered

    features = ordered()
    pairs = [(f.id, s.name) for f in features for s in f.strategies]
    return pairs, {f.id: f.summary for f in features}


def write_report(
    roots: Iterable[Path], out_dir: Path, expectations_path: Path = DEFAULT_EXPECTATIONS
) -> dict[str, Any]:
    """Build matrix.json and report.html in ``out_dir`` from the kernel directories under
    ``roots``; the previous matrix.json there becomes the comparison baseline."""
    roots = list(roots)
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies, summaries = library_strategies()
    # The run's facts: from the output directory, else from the first root that has them.
    runs = [read_json_object(d / "run.json") for d in (out_dir, *roots)]
    run = next((r for r in runs if r), None)
    previous = read_json_object(out_dir / "previous-matrix.json") or None
    matrix = build_matrix(
        find_kernel_dirs(roots),
        strategies,
        summaries,
        load_expectations(expectations_path),
        out_dir,
        run,
        previous,
    )
    write_json(out_dir / "matrix.json", matrix)
    write_text(out_dir / "report.html", render_report(matrix, out_dir))
    return matrix


def validate(matrix: dict[str, Any]) -> None:
    """matrix.json against its documented schema: a mismatch is a bug here, said at once."""
    import jsonschema

    schema = json.loads(resources.files("harness").joinpath("report", "schema.json").read_text())
    jsonschema.validate(matrix, schema)


def surprise_lines(matrix: dict[str, Any]) -> list[str]:
    return [
        f"{c['kernel']}: {c['feature']}/{c['strategy']} is {c['outcome']}, expected "
        f"{c['expected']} ({c['expected_because']})"
        for c in matrix["surprises"]
    ]
