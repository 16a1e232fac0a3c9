"""The report: results/<kernel>/ directories -> results/matrix.json and results/report.html."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import UnreadableResult, UsageError
from harness.files import load_json_object, locked, read_json_object, write_json, write_text
from harness.report import history, inputs
from harness.report.collect import SCHEMA, build_matrix, find_kernel_dirs
from harness.report.render import render_report
from harness.run.expectations import load_expectations

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_EXPECTATIONS = REPO / "expectations.yaml"


def _read_optional(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A JSON object the report can do without, but whose damage it names."""
    try:
        return load_json_object(path)
    except UnreadableResult as exc:
        problems.append(str(exc))
        return None


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts of two provenances that differ, in words."""
    found = []
    if a.get("kernels_yaml_sha256") != b.get("kernels_yaml_sha256"):
        found.append("kernels.yaml")
    if a.get("expectations_sha256") != b.get("expectations_sha256"):
        found.append("expectations.yaml")
    if a.get("suites_sha256") != b.get("suites_sha256"):
        found.append("the suites")
    library_a, library_b = a.get("library") or {}, b.get("library") or {}
    same_files = library_a.get("sha256") and library_a.get("sha256") == library_b.get("sha256")
    if not same_files and (
        library_a.get("version"),
        library_a.get("commit"),
        library_a.get("sha256"),
    ) != (
        library_b.get("version"),
        library_b.get("commit"),
        library_b.get("sha256"),
    ):
        found.append(
            f"the library ({library_a.get('version')} {library_a.get('commit') or '?'} against "
            f"{library_b.get('version')} {library_b.get('commit') or '?'})"
        )
    return found


class MergeRefused(UsageError):
    """Result directories whose runs differ in what their verdicts depend on."""


def root_provenance(root: Path, run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run and run.get("provenance"):
        return dict(run["provenance"])
    for kernel in sorted(root.glob("*/kernel.json")) or [root / "kernel.json"]:
        info = read_json_object(kernel)
        if info.get("provenance"):
            return dict(info["provenance"])
    return None


def check_merge(roots: list[Path], runs: list[dict[str, Any] | None]) -> None:
    """Several result directories make one report only if they come from the same
    kernels.yaml, expectations and library; else say which differ, and where."""
    known = [(root, root_provenance(root, run)) for root, run in zip(roots, runs, strict=True)]
    first_root, first = known[0]
    for root, other in known[1:]:
        if first is None or other is None:
            missing = first_root if first is None else root
            raise MergeRefused(f"{missing}: no provenance recorded (run by an older harness?)")
        found = differences(first, other)
        if found:
            raise MergeRefused(
                f"{root} and {first_root} differ in {', '.join(found)}; "
                "give --allow-mixed to merge them all the same"
            )


def merged_run(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The facts of several runs as one: the first one's, with every run's kernels, statuses
    and attempts."""
    present = [r for r in runs if r]
    if not present:
        return None
    merged = dict(present[0])
    for key in ("statuses", "attempts"):
        merged[key] = {k: v for r in present for k, v in (r.get(key) or {}).items()}
    merged["kernels"] = [k for r in present for k in r.get("kernels", [])]
    merged["wall_seconds"] = max((r.get("wall_seconds") or 0) for r in present) or None
    return merged


def write_report(
    roots: Iterable[Path],
    out_dir: Path,
    expectations_path: Path = DEFAULT_EXPECTATIONS,
    *,
    allow_mixed: bool = False,
    history_from: Path | None = None,
    history_size: int = history.DEFAULT_SIZE,
) -> dict[str, Any]:
    """Build matrix.json, history.json and report.html in ``out_dir`` from the kernel
    directories under ``roots``; the previous matrix.json there becomes the comparison
    baseline, and the run is added to the history (``history_from``, else the one in
    ``out_dir``). Two builds into the same directory take turns, so the files always match."""
    roots = list(roots)
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir, ".report.lock"):
        problems: list[str] = []
        root_runs = [_read_optional(d / "run.json", problems) for d in roots]
        if len(roots) > 1 and not allow_mixed:
            check_merge(roots, root_runs)
        # The run's facts: from the output directory, else from the roots.
        own = _read_optional(out_dir / "run.json", problems) if out_dir not in roots else None
        run = own or merged_run(root_runs)
        not_used: list[str] = []
        previous = _baseline(out_dir / "previous-matrix.json", problems, not_used)
        matrix = build_matrix(
            find_kernel_dirs(roots, problems),
            load_expectations(expectations_path),
            out_dir,
            run,
            previous,
            problems,
        )
        runs = _history(history_from or out_dir / history.FILE, out_dir, problems, not_used)
        runs = history.extended(runs, history.run_entry(matrix), history_size)
        matrix["history"] = history.summary(runs)
        matrix["problems"] = problems + [p for p in matrix["problems"] if p not in problems]
        matrix["not_used"] = not_used
        validate(matrix)
        write_json(
            out_dir / history.FILE,
            {"schema": SCHEMA, "size": history_size, "runs": runs},
        )
        write_json(out_dir / "matrix.json", matrix)
        write_text(out_dir / "report.html", render_report(matrix, out_dir))
    return matrix


def _schema_words(schema: object) -> str:
    return f"matrix schema {json.dumps(schema)[:40]}; this report writes schema {SCHEMA}"


def _baseline(path: Path, problems: list[str], not_used: list[str]) -> dict[str, Any] | None:
    """The previous matrix, the baseline of "changed since the last run": none if there is
    none, if it is damaged (named in ``problems``), or if it is of another schema (named in
    ``not_used``: its outcomes are not comparable, and no conversion is defined)."""
    data = _read_optional(path, problems)
    if data is None:
        return None
    schema = data.get("schema")
    if schema != SCHEMA:  # (True == 1, but SCHEMA is 2)
        said = (
            _schema_words(schema)
            if "schema" in data
            else f"no schema; this report writes schema {SCHEMA}"
        )
        not_used.append(f"{path}: {said}, so no changes since the last run are shown")
        return None
    try:
        return inputs.check(path, data, inputs.baseline_file())
    except UnreadableResult as exc:
        problems.append(str(exc))
        return None


def _history(
    path: Path, out_dir: Path, problems: list[str], not_used: list[str]
) -> list[dict[str, Any]]:
    """The runs so far; a damaged file is named and kept aside (never overwritten), and the
    history starts again from this run. So does a history of another schema, named in
    ``not_used``: it is set aside only where this build would overwrite it."""
    try:
        return history.load(path)
    except history.OtherSchema as exc:
        kept = path
        if path.resolve() == (out_dir / history.FILE).resolve():
            tag = re.sub(r"[^A-Za-z0-9.-]", "_", json.dumps(exc.schema))[:20]
            kept = path.with_name(f"{path.name}.schema-{tag}")
            path.rename(kept)
        not_used.append(
            f"{path}: {_schema_words(exc.schema)}, so the history starts again with this run "
            f"(the old one is kept as {kept})"
        )
        return []
    except UnreadableResult as exc:
        problems.append(str(exc))
        if path.exists():
            path.rename(path.with_name(f"{path.name}.damaged"))
        return []


def validate(matrix: dict[str, Any]) -> None:
    """matrix.json against its documented schema, before every write: a mismatch is a bug
    here, said at once rather than found by a reader."""
    import jsonschema

    jsonschema.validate(matrix, inputs.matrix_schema())


def surprise_lines(matrix: dict[str, Any]) -> list[str]:
    """Cells against their expectation, and tests that failed (a failure outside any cell is
    a surprise too: the suites' checks of defaults and wrong requests are in no cell)."""
    cells = [
        f"{c['kernel']}: {c['feature']}/{c['strategy']} is {c['outcome']}, expected "
        f"{c['expected']} ({c['expected_because']})"
        for c in matrix["surprises"]
    ]
    defaults = [
        f"{d['kernel']}: {d['feature']} chose {d['strategy']} unforced, expected "
        f"{d['expected']} ({d['expected_because']})"
        for d in matrix.get("defaults", [])
        if d.get("surprise")
    ]
    tests = [
        f"{t['kernel']}: test {t['test']} {t['kind']}: {t['message'].splitlines()[0][:200]}"
        if t["message"]
        else f"{t['kernel']}: test {t['test']} {t['kind']}"
        for t in matrix.get("failed_tests", [])
    ]
    return cells + defaults + tests


def kernel_lines(matrix: dict[str, Any]) -> list[str]:
    """One compact line per kernel: its status and its cells' outcomes and surprises."""
    lines = []
    for k in matrix["kernels"]:
        cells = [c for c in matrix["cells"] if c["kernel"] == k["name"]]
        count = {o: sum(1 for c in cells if c["outcome"] == o) for o in ("works", "unsupported")}
        broken = sum(1 for c in cells if c["outcome"] == "broken")
        surprises = sum(1 for c in cells if c["surprise"]) + sum(
            1 for d in matrix.get("defaults", []) if d["kernel"] == k["name"] and d.get("surprise")
        )
        surprises += sum(1 for t in matrix.get("failed_tests", []) if t["kernel"] == k["name"])
        lines.append(
            f"{k['name']}: {k['status']}, {count['works']} works, {count['unsupported']} "
            f"unsupported, {broken} broken, {surprises} surprises"
        )
    return lines


def problem_lines(matrix: dict[str, Any]) -> list[str]:
    return list(matrix.get("problems", []))


def not_used_lines(matrix: dict[str, Any]) -> list[str]:
    """A previous matrix or a history the report found and did not use (another schema)."""
    return list(matrix.get("not_used", []))


INCOMPLETE = ("ok",)


def markdown_summary(matrix: dict[str, Any]) -> str:
    """The run in a few lines of Markdown (GitHub's job summary): a table of the kernels,
    then what needs a person: surprises, kernels that did not complete, damaged files."""
    lines = [
        "| kernel | arch | release | status | works | unsupported | broken | not-run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in matrix["kernels"]:
        counts = {o: 0 for o in ("works", "unsupported", "broken", "not-run")}
        for c in matrix["cells"]:
            if c["kernel"] == k["name"]:
                counts[c["outcome"]] += 1
        status = k["status"] if k["status"] == "ok" else f"**{k['status']}**"
        lines.append(
            f"| {k['name']} | {k['arch']} | {k['release'] or k['package_release'] or '?'} "
            f"| {status} | {counts['works']} | {counts['unsupported']} | {counts['broken']} "
            f"| {counts['not-run']} |"
        )
    incomplete = [k["name"] for k in matrix["kernels"] if k["status"] not in INCOMPLETE]
    if incomplete:
        lines += ["", f"**Did not complete:** {', '.join(incomplete)}"]
    for u in matrix.get("unreachable", []):
        lines += ["", f"**Unreachable:** {u['kernel']}: {u['why']}"]
    surprises = surprise_lines(matrix)
    if surprises:
        lines += ["", "**Surprises:**", ""]
        lines += [f"- {line}" for line in surprises]
    unknown = matrix.get("unknown_expectations", [])
    if unknown:
        lines += ["", f"**Expectations unknown** (cells not judged): {len(unknown)}", ""]
        lines += [f"- {u['kernel']}: {u['cell']}: {u['why']}" for u in unknown[:20]]
    if matrix["problems"]:
        lines += ["", "**Damaged result files:**", ""]
        lines += [f"- `{p}`" for p in matrix["problems"]]
    if matrix.get("not_used"):
        lines += ["", "**Not used (another schema):**", ""]
        lines += [f"- `{line}`" for line in matrix["not_used"]]
    changes = matrix.get("history", {}).get("kernel_changes", [])
    if changes:
        last = changes[-1]
        moved = ", ".join(f"{c['cell']} {c['was']} -> {c['now']}" for c in last["cells"])
        lines += [
            "",
            f"Last kernel change: {last['kernel']} {last['was']} -> {last['now']}"
            + (f" ({moved})" if moved else ""),
        ]
    return "\n".join(lines) + "\n"
