"""matrix.json -> one self-contained report.html (Jinja2 template, CSS and JS inlined)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

CONSOLE_HEAD, CONSOLE_TAIL = 60, 400


def _static(name: str) -> str:
    return resources.files("harness").joinpath("static", name).read_text()


def console_excerpt(path: Path) -> dict[str, Any] | None:
    """The console log's start and end; a whole TCG boot log is too long for one page."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    if len(lines) <= CONSOLE_HEAD + CONSOLE_TAIL:
        return {"text": "\n".join(lines), "lines": len(lines), "cut": False}
    text = "\n".join(
        [
            *lines[:CONSOLE_HEAD],
            f"[... {len(lines) - CONSOLE_HEAD - CONSOLE_TAIL} lines cut: see console.log ...]",
            *lines[-CONSOLE_TAIL:],
        ]
    )
    return {"text": text, "lines": len(lines), "cut": True}


def render_report(matrix: dict[str, Any], out_dir: Path) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    cells = {(c["kernel"], c["feature"], c["strategy"]): c for c in matrix["cells"]}
    cell_ids = {key: i for i, key in enumerate(cells)}
    defaults = {(d["kernel"], d["feature"]): d["strategy"] for d in matrix["defaults"]}
    consoles = {}
    for k in matrix["kernels"]:
        rel = k["files"].get("console.log")
        consoles[k["name"]] = console_excerpt(out_dir / rel) if rel else None
    template = env.get_template("report.html.j2")
    return template.render(
        m=matrix,
        cells=cells,
        cell_ids=cell_ids,
        defaults=defaults,
        consoles=consoles,
        kernel_files={k["name"]: k["files"] for k in matrix["kernels"]},
        css=_static("report.css"),
        js=_static("report.js"),
    )
