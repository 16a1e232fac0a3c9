"""``python -m harness.host.prep --for tests|matrix``: install, or name, the host tools needed."""

from __future__ import annotations

import argparse
import sys

from harness.errors import HarnessError
from harness.host.prereqs import (
    MATRIX_TOOLS,
    REPORT_TOOLS,
    RPM_REPO_TOOLS,
    RPM_TOOLS,
    SUITE_TOOLS,
    ensure_tools,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.host.prep")
    p.add_argument("--for", dest="purpose", choices=("tests", "matrix"), default="tests")
    args = p.parse_args(argv)
    # The tests boot guests too (the harness's robustness tests) and open the report.
    tools = (
        (*MATRIX_TOOLS, *SUITE_TOOLS)
        if args.purpose == "matrix"
        else (*MATRIX_TOOLS, *SUITE_TOOLS, *REPORT_TOOLS, *RPM_TOOLS, *RPM_REPO_TOOLS)
    )
    try:
        ensure_tools(tools, lambda message: print(message, file=sys.stderr))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
