"""The report: results/<kernel>/ directories -> results/matrix.json and results/report.html."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(
    roots: Iterable[Path], out_dir: Path, expectations_path: Path = DEFAULT_EXPECTATIONS
) -> dict[str, Any]:
    """Build matrix.json and report.html in ``out_dir`` from the kernel directories under
    ``roots``; the previous matrix.json there becomes the comparison baseline."""
    roots = list(roots)
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies, summaries = library_strategies()
    run = _read_json(out_dir / "run.json") or next(
        (r for r in (_read_json(root / "run.json") for root in roots) if r), None
    )
    previous = _read_json(out_dir / "previous-matrix.json")
    matrix = build_matrix(
        find_kernel_dirs(roots),
        strategies,
        summaries,
        load_expectations(expectations_path),
        out_dir,
        run,
        previous,
    )
    _write(out_dir / "matrix.json", json.dumps(matrix, indent=2, sort_keys=True))
    _write(out_dir / "report.html", render_report(matrix, out_dir))
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
