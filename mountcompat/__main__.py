"""``python -m mountcompat probe [--json]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _no_default(probe: dict[str, Any]) -> str:
    """A default is named only when the library was seen to use it; when the probe could
    not tell, it names none."""
    if probe["default_state"] == "none works":
        return "none works"
    errname = probe["default_run"]["errname"]
    return f"unknown (could not tell: {errname})" if errname else "unknown (could not tell)"


def render_text(result: dict[str, Any]) -> str:
    lines = [f"kernel {result['kernel']}"]
    for feature_id, probe in result["features"].items():
        default = probe["default"] or _no_default(probe)
        lines.append(f"{feature_id:<16} default: {default}")
        for name, s in probe["strategies"].items():
            if s["supported"]:
                state = "supported"
            elif s["supported"] is False:
                state = f"unsupported ({s['errname']}: {s['message']})"
            else:
                state = f"could not tell ({s['errname'] or '-'}: {s['message']})"
            lines.append(f"  {name:<20} {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mountcompat")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("probe", help="what this kernel supports, feature by feature")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.add_argument(
        "--scratch",
        help="a directory on a disk-backed or shared filesystem "
        "for image files (default: $MOUNTCOMPAT_SCRATCH or /var/tmp)",
    )
    args = parser.parse_args(argv)
    from mountcompat.errors import ForcingRefused, UnknownStrategy
    from mountcompat.probe import ENV_SCRATCH, probe_all

    if args.scratch:
        os.environ[ENV_SCRATCH] = args.scratch
    try:
        result = probe_all()
    except PermissionError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 2
    except (UnknownStrategy, ForcingRefused) as exc:  # MOUNTCOMPAT_FORCE, as the library says
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
