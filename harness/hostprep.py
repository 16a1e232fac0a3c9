"""``python -m harness.hostprep --for tests|matrix``: install or name the host tools a session needs."""

from __future__ import annotations

import argparse
import sys

from harness.errors import HarnessError
from harness.prereqs import MATRIX_TOOLS, SUITE_TOOLS, ensure_tools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.hostprep")
    p.add_argument("--for", dest="purpose", choices=("tests", "matrix"), default="tests")
    args = p.parse_args(argv)
    tools = SUITE_TOOLS if args.purpose == "tests" else (*MATRIX_TOOLS, *SUITE_TOOLS)
    try:
        ensure_tools(tools, lambda message: print(message, file=sys.stderr))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
