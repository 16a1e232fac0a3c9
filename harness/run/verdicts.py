"""Whether a run of the suites gave verdicts: the one rule for a guest and for the host.

``ok`` only if pytest ran the suites (exit 0, or 1 for failed tests), wrote its outcomes, gave
at least one strategy a verdict, and, for a whole run (not narrowed to some tests), gave
every (feature, strategy) of its library a verdict. Anything else is ``no-verdicts``.
"""

from __future__ import annotations

from typing import Any

PYTEST_EXITS = {
    2: "interrupted or a collection error",
    3: "internal error",
    4: "usage error",
    5: "no tests collected",
}
VERDICTS = ("works", "unsupported", "broken")


def narrowed(outcomes: dict[str, Any]) -> bool:
    """Whether pytest ran only part of the suites (deselected tests, or named files or
    tests), as the plugin recorded it: other pytest arguments (-v, --timeout) narrow nothing."""
    selection = outcomes.get("selection")
    return bool(selection.get("narrowed")) if isinstance(selection, dict) else False


def missing_cells(outcomes: dict[str, Any]) -> list[tuple[str, str]]:
    present = {
        (c.get("feature"), c.get("strategy"))
        for c in outcomes.get("cells", [])
        if isinstance(c, dict) and c.get("outcome") in VERDICTS
    }
    wanted = [
        (f["id"], s)
        for f in outcomes.get("features", [])
        if isinstance(f, dict)
        for s in f.get("strategies", [])
    ]
    return [cell for cell in wanted if cell not in present]


def judge(
    pytest_exit: object, outcomes: dict[str, Any] | None, facts: dict[str, Any] | None = None
) -> tuple[str, str]:
    """The kernel's status and why. ``facts`` (facts.json) that say they cannot be trusted
    (kallsyms unreadable, its control symbol missing) leave no verdict: every expectation
    read from them would be wrong, and a library refusing everything would match them."""
    if facts is not None and facts.get("error"):
        return "no-verdicts", f"kernel symbols unusable: {facts['error']}"
    if facts is not None and not isinstance(facts.get("symbols"), list):
        return "no-verdicts", "kernel symbols unusable: facts.json lists no symbols"
    if pytest_exit not in (0, 1):
        meaning = PYTEST_EXITS.get(pytest_exit, "?") if isinstance(pytest_exit, int) else "?"
        return "no-verdicts", f"pytest exited {pytest_exit} ({meaning})"
    if outcomes is None:
        return "no-verdicts", "pytest wrote no outcomes.json"
    missing = missing_cells(outcomes)
    if len(missing) == len(missing_cells({"features": outcomes.get("features", [])})):
        return "no-verdicts", "no strategy got a verdict"
    if missing and not narrowed(outcomes):
        shown = ", ".join(f"{f}/{s}" for f, s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return "no-verdicts", f"no verdict for {shown}{more}"
    return "ok", "the suites ran to the end"
