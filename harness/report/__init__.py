"""The report: results/<kernel>/ directories -> results/matrix.json and results/report.html."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import UnreadableResult
from harness.files import load_json_object, locked, write_json, write_text
from harness.report.collect import build_matrix, find_kernel_dirs
from harness.report.expectations import load_expectations
from harness.report.render import render_report

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_EXPECTATIONS = REPO / "expectations.yaml"


def _read_optional(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A JSON object the report can do without, but whose damage it names."""
    try:
        return load_json_object(path)
    except UnreadableResult as exc:
        problems.append(str(exc))
        return None


def write_report(
    roots: Iterable[Path], out_dir: Path, expectations_path: Path = DEFAULT_EXPECTATIONS
) -> dict[str, Any]:
    """Build matrix.json and report.html in ``out_dir`` from the kernel directories under
    ``roots``; the previous matrix.json there becomes the comparison baseline. Two builds
    into the same directory take turns, so matrix.json and report.html always match."""
    roots = list(roots)
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir, ".report.lock"):
        problems: list[str] = []
        # The run's facts: from the output directory, else from the first root that has them.
        runs = [_read_optional(d / "run.json", problems) for d in (out_dir, *roots)]
        run = next((r for r in runs if r), None)
        previous = _read_optional(out_dir / "previous-matrix.json", problems)
        matrix = build_matrix(
            find_kernel_dirs(roots),
            load_expectations(expectations_path),
            out_dir,
            run,
            previous,
            problems,
        )
        validate(matrix)
        write_json(out_dir / "matrix.json", matrix)
        write_text(out_dir / "report.html", render_report(matrix, out_dir))
    return matrix


def validate(matrix: dict[str, Any]) -> None:
    """matrix.json against its documented schema, before every write: a mismatch is a bug
    here, said at once rather than found by a reader."""
    import jsonschema

    schema = json.loads(resources.files("harness").joinpath("report", "schema.json").read_text())
    jsonschema.validate(matrix, schema)


def surprise_lines(matrix: dict[str, Any]) -> list[str]:
    return [
        f"{c['kernel']}: {c['feature']}/{c['strategy']} is {c['outcome']}, expected "
        f"{c['expected']} ({c['expected_because']})"
        for c in matrix["surprises"]
    ]


def problem_lines(matrix: dict[str, Any]) -> list[str]:
    return list(matrix.get("problems", []))
