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


TIMELINE_LABELS = {
    "console-first-line": "QEMU start",
    "command-started": "kernel boot",
    "python-started": "Python start-up",
    "modules-loaded": "modprobe",
    "facts-collected": "kallsyms",
    "scratch-ready": "scratch disk",
    "pytest-started": "pytest start-up",
    "collection-done": "collection",
    "suites-done": "pytest summary",
    "probe-done": "probe",
    "dmesg-collected": "dmesg",
    "results-written": "results",
    "guest-exit": "shutdown",
}


def timeline_segments(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kernel's timeline as bar segments: each one the time up to an event, named after
    the work it measured (a test file by its name)."""
    points = sorted(timeline, key=lambda p: float(p.get("seconds", 0)))
    if not points:
        return []
    total = max(float(points[-1]["seconds"]), 0.01)
    segments = []
    previous = 0.0
    for point in points:
        at = float(point["seconds"])
        event = str(point["event"])
        if event == "file-done":
            label = Path(str(point.get("detail", ""))).name or "test file"
        else:
            label = TIMELINE_LABELS.get(event, event)
        seconds = at - previous
        if seconds > 0:
            segments.append(
                {
                    "label": label,
                    "start": round(previous, 1),
                    "seconds": round(seconds, 1),
                    "percent": round(100 * seconds / total, 2),
                    "kind": "test" if event == "file-done" else event,
                }
            )
        previous = at
    return segments


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
        cell_history=matrix.get("history", {}).get("cells", {}),
        timelines={k["name"]: timeline_segments(k.get("timeline", [])) for k in matrix["kernels"]},
        unverified=[
            (k["name"], s)
            for k in matrix["kernels"]
            for s in k.get("signatures", [])
            if s != "verified"
        ],
        css=_static("report.css"),
        js=_static("report.js"),
    )
