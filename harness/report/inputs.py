"""What the report accepts from the files it reads, checked before a value of them is used.

Each check is derived from matrix.json's own schema (harness/report/schema.json): a value that
the report copies into the matrix must already be one the matrix's schema allows there (a
kernel status, a cell outcome, a test verdict, a package's sha256...). A value outside it names
its file and its field (a JSON path) in one line, as an :class:`UnreadableResult`; the kernel
is then unreadable and the report is built for the rest, instead of failing at the end on the
whole matrix with no report at all.

The files and their schemas (docs/results-schema.md, "The files it is built from"):
outcomes.json names its own (``schema``: 1, written by mountcompat.testing.plugin), checked by
:func:`check_outcomes_schema`; kernel.json, guest.json and facts.json name none (their keys
have only been added to), and each value is checked here. previous-matrix.json and
history.json carry the matrix's schema, which harness.report checks before
:func:`baseline_file` and :func:`history_file` check their shape.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from harness.errors import UnreadableResult

# The only schema of outcomes.json ever written (mountcompat/testing/plugin.py).
OUTCOMES_SCHEMA = 1
# Keys of kernel.json that the report copies into a kernel of matrix.json as they are.
KERNEL_COPIED = ("name", "status", "arch", "accelerator", "evidence", "timeline", "run_id")
# Keys of a cell of outcomes.json that become its evidence in matrix.json.
EVIDENCE_COPIED = ("tests", "errno", "errname", "message", "limits", "path")
SHOWN = 300  # characters of a refused value's description


@functools.cache
def matrix_schema() -> dict[str, Any]:
    text = resources.files("harness").joinpath("report", "schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


@functools.cache
def kernel_file() -> dict[str, Any]:
    """kernel.json, as far as the matrix takes its values."""
    kernel = matrix_schema()["$defs"]["kernel"]["properties"]
    packages = json.loads(json.dumps(kernel["packages"]))
    packages["items"]["properties"]["version"] = {"type": "string"}
    return {
        "type": "object",
        "required": ["name", "status"],
        "properties": {
            **{key: kernel[key] for key in KERNEL_COPIED},
            "packages": packages,
            "upstream_release": kernel["upstream_release"],
            "tags": _strings(),
            # Not constrained by the matrix's schema, but read as these by the report.
            "command": {"anyOf": [_strings(), {"type": "null"}]},
            "provenance": {
                "type": ["object", "null"],
                "properties": {"library": {"type": ["object", "null"]}},
            },
        },
    }


@functools.cache
def outcomes_file() -> dict[str, Any]:
    """outcomes.json, as far as the matrix takes its values."""
    top = matrix_schema()["properties"]
    cell = matrix_schema()["$defs"]["cell"]["properties"]
    evidence = cell["evidence"]["properties"]
    default = top["defaults"]["items"]["properties"]
    return {
        "type": "object",
        "required": ["cells"],
        "properties": {
            "features": top["features"],
            "cells": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["feature", "strategy", "outcome"],
                    "properties": {
                        "feature": {"type": "string"},
                        "strategy": {"type": "string"},
                        "outcome": cell["outcome"],
                        "backings": cell["backings"],
                        **{key: evidence[key] for key in EVIDENCE_COPIED},
                    },
                },
            },
            "tests": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["nodeid"],
                    "properties": {
                        "records": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
            "defaults": {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "strategy": default["strategy"],
                                "by_backing": default["by_backing"],
                            },
                        },
                    ]
                },
            },
            "selection": {"type": "object"},
            "witness": {"type": ["string", "null"]},
        },
    }


FACTS_FILE: dict[str, Any] = {"type": "object", "properties": {"symbols": _strings()}}
GUEST_FILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "scratch": {
            "type": ["object", "null"],
            "required": ["fstype", "path"],
            "properties": {"fstype": {"type": "string"}, "path": {"type": "string"}},
        },
    },
}


@functools.cache
def baseline_file() -> dict[str, Any]:
    """previous-matrix.json of this schema, as far as the comparison reads it (a matrix of an
    earlier revision of schema 2 lacks keys added since, which the comparison does not read)."""
    outcome = matrix_schema()["$defs"]["cell"]["properties"]["outcome"]
    return {
        "type": "object",
        "required": ["cells", "kernels"],
        "properties": {
            "generated": {"type": ["string", "null"]},
            "cells": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kernel", "feature", "strategy", "outcome"],
                    "properties": {
                        **{key: {"type": "string"} for key in ("kernel", "feature", "strategy")},
                        "outcome": outcome,
                    },
                },
            },
            "kernels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "packages": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    }


@functools.cache
def history_file() -> dict[str, Any]:
    """history.json of this schema: what history.analyse reads of each run."""
    outcome = matrix_schema()["$defs"]["cell"]["properties"]["outcome"]
    return {
        "type": "object",
        "required": ["runs"],
        "properties": {
            "runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "generated", "kernels", "cells"],
                    "properties": {
                        "id": {"type": "string"},
                        "generated": {"type": "string"},
                        "kernels": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["sha256"],
                                "properties": {"sha256": {"type": "array"}},
                            },
                        },
                        "cells": {"type": "object", "additionalProperties": outcome},
                    },
                },
            },
        },
    }


def errors(data: Any, schema: dict[str, Any]) -> list[jsonschema.ValidationError]:
    """Every place where ``data`` leaves ``schema``, in the order of the document."""
    found = jsonschema.Draft202012Validator(schema).iter_errors(data)
    return sorted(
        found,
        key=lambda e: [
            (0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path
        ],
    )


def in_words(error: jsonschema.ValidationError) -> str:
    """One line: the field, as a JSON path, and what is wrong with its value."""
    message = " ".join(error.message.split())
    if len(message) > SHOWN:
        message = message[: SHOWN - 3] + "..."
    return f"field {error.json_path}: {message}"


def check(path: Path, data: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it is if it fits ``schema``; else an UnreadableResult naming the file and
    the first field that does not (and how many more)."""
    found = errors(data, schema)
    if not found:
        return data
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise UnreadableResult(path, in_words(found[0]) + more)


def fitting(
    path: Path, data: dict[str, Any], schema: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    """``data`` without the top-level keys that do not fit ``schema``, each of them named in
    ``problems`` once: what can still be read of a damaged file (a kernel's name, its
    packages) is kept for the report's column, which says the kernel is unreadable."""
    found = errors(data, schema)
    if not found:
        return data
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    problems.append(str(UnreadableResult(path, in_words(found[0]) + more)))
    if any(not e.absolute_path for e in found):
        return {}  # the document as a whole does not fit
    bad = {e.absolute_path[0] for e in found}
    return {key: value for key, value in data.items() if key not in bad}


def check_outcomes_schema(path: Path, data: dict[str, Any]) -> None:
    """outcomes.json names its schema: 1, the only one the plugin has written. Any other is
    refused, since no conversion from it is defined. A file of schema 1 without ``witness``
    is refused too: the number was never raised, but since commit 581c8f5 (2026-12-01) a
    ``works`` verdict needs every attempt to follow the strategy's own path, with the kernel's
    trace agreeing where it has one, and every file since names that ``witness``. An older
    file's ``works`` cannot be told apart from one that would now be ``broken``, so it is
    not converted."""
    expected = f"this report reads outcomes schema {OUTCOMES_SCHEMA}"
    if "schema" not in data:
        raise UnreadableResult(path, f"field $.schema: missing (no schema named); {expected}")
    schema = data["schema"]
    if schema != OUTCOMES_SCHEMA or isinstance(schema, bool):
        raise UnreadableResult(
            path, f"field $.schema: outcomes schema {json.dumps(schema)[:40]}; {expected}"
        )
    if "witness" not in data:
        raise UnreadableResult(
            path,
            f"field $.witness: missing: outcomes schema {OUTCOMES_SCHEMA} as written before "
            "commit 581c8f5 (2026-12-01), whose works verdicts were not checked against the "
            f"strategy's path; {expected} as written since, with its witness",
        )
