"""Verdicts of the suites: per test, and per (feature, strategy) cell. Pure functions.

A test names the cells it is evidence for (``@pytest.mark.strategy(feature, strategy)``). Its
verdict for each cell is:

``works``        it passed, and the choice log shows the strategy really ``used``;
``unsupported``  the library raised StrategyUnsupported for that cell: the kernel refused with
                 the errno the strategy documents for "not here";
``broken``       anything else: a failure, an unexpected errno, a leak, a pass without the
                 strategy ever being used;
``expected-failure``  it passed, and the strategy only failed, with the error the test expects
                 (a symlink loop gives ELOOP): evidence of a correct refusal, never of ``works``;
``not-run``      skipped for another reason (a tool missing), or deselected.

A cell's outcome over all its tests: ``broken`` if any is broken; else ``works`` if any works
(tests that found it unsupported for their input are listed as its limits); else
``unsupported`` if any is; else ``not-run`` (a cell whose tests were all skipped, or only
expected failures, has no evidence that it works).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

VERDICTS = ("works", "unsupported", "broken", "not-run", "expected-failure")


@dataclass
class TestEvidence:
    nodeid: str
    feature: str
    strategy: str
    verdict: str
    errno: int | None = None
    errname: str | None = None
    message: str = ""
    backing: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    kernel_log: list[str] = field(default_factory=list)
    duration: float = 0.0
    missing: bool = False  # for "unsupported": the library found the strategy absent outright
    # The calls that define the strategy, as seen during the test's attempts of it ("" where
    # the suites name no paths), and what of other strategies' paths was not seen.
    path: str = ""
    notes: list[str] = field(default_factory=list)  # what the test says it exercised

    def to_json(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, which deep-copies every record again.
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Cell:
    feature: str
    strategy: str
    outcome: str
    tests: list[dict[str, Any]]
    limits: list[str] = field(default_factory=list)
    backings: list[str] = field(default_factory=list)
    errno: int | None = None
    errname: str | None = None
    message: str = ""
    path: str = ""  # the evidence of the path, from the first test that shows it working
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _first(evidence: list[TestEvidence], verdict: str) -> TestEvidence | None:
    return next((e for e in evidence if e.verdict == verdict), None)


def contradiction(evidence: list[TestEvidence]) -> TestEvidence | None:
    """A test for which the library found the strategy missing outright, in a cell that
    another test shows working on the same kernel: one of the two verdicts is wrong."""
    if not any(e.verdict == "works" for e in evidence):
        return None
    return next((e for e in evidence if e.verdict == "unsupported" and e.missing), None)


def cell_outcome(feature: str, strategy: str, evidence: list[TestEvidence]) -> Cell:
    verdicts = {e.verdict for e in evidence}
    for outcome in ("broken", "works", "unsupported", "not-run"):
        if outcome in verdicts:
            break
    else:
        outcome = "not-run"
    clash = contradiction(evidence)
    if clash is not None:
        outcome = "broken"
        clash.message = (
            "the library found this strategy missing here, while another test of this kernel "
            f"used it: {clash.message}"
        )
    telling = clash or _first(evidence, outcome if outcome != "works" else "unsupported")
    limits = (
        [f"{e.nodeid}: {e.errname}" for e in evidence if e.verdict == "unsupported"]
        if outcome == "works"
        else []
    )
    return Cell(
        feature=feature,
        strategy=strategy,
        outcome=outcome,
        tests=[
            {
                "nodeid": e.nodeid,
                "verdict": e.verdict,
                "errname": e.errname,
                "message": e.message[:2000],
                "backing": e.backing,
                "kernel_log": e.kernel_log,
                "path": e.path,
                "notes": e.notes,
            }
            for e in evidence
        ],
        limits=limits,
        backings=sorted({e.backing for e in evidence if e.backing}),
        errno=telling.errno if telling and outcome != "works" else None,
        errname=telling.errname if telling and outcome != "works" else None,
        message=telling.message[:2000] if telling and outcome != "works" else "",
        path=next((e.path for e in evidence if e.verdict == "works" and e.path), ""),
        notes=[n for e in evidence for n in e.notes],
    )


def aggregate(
    evidence: Iterable[TestEvidence], known_cells: Iterable[tuple[str, str]] = ()
) -> list[Cell]:
    """Cells for every (feature, strategy) with evidence, plus ``known_cells`` as not-run."""
    by_cell: dict[tuple[str, str], list[TestEvidence]] = {c: [] for c in known_cells}
    for e in evidence:
        by_cell.setdefault((e.feature, e.strategy), []).append(e)
    return [cell_outcome(f, s, ev) for (f, s), ev in sorted(by_cell.items())]


def defaults_from(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per feature, the strategy the library used on its own (unforced), per backing
    filesystem where that changes the answer; ``strategy`` prefers the disk-backed answer."""
    chosen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("outcome") != "used" or r.get("forced"):
            continue
        entry = chosen.setdefault(str(r["feature"]), {"strategy": None, "by_backing": {}})
        backing = str(r.get("backing") or "any")
        entry["by_backing"].setdefault(backing, str(r["strategy"]))
    for entry in chosen.values():
        by_backing = entry["by_backing"]
        disk = [s for b, s in by_backing.items() if b.startswith("disk")]
        entry["strategy"] = disk[0] if disk else next(iter(by_backing.values()))
    return chosen
